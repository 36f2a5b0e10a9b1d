"""The verdict on an Autobahn|Testsuite run: scripts/autobahn.sh's judge.

    autobahn-verdict.py REPORTS RETRY_FILE

Prints the counts and every case with a wrong outcome or close. Exits 0
when there is none, 1 when there is, and 3 when every wrong case was
decided by one of the fuzzing client's own timers; those cases go to
RETRY_FILE, one per line, for a rerun. The client's close-handshake and
TCP-drop timeouts (1 s) are txaio batched timers, which truncate their
deadline to a whole second: they fire anywhere from 0 to 1 s after they
are set, so a close answered in a tenth of a millisecond can still lose
the race (seen in a packet capture: docs/conformance.md). A server that is
really slow fails the rerun too.
"""
import collections
import json
import os
import sys

reports, retry_file = sys.argv[1], sys.argv[2]
idx = json.load(open(os.path.join(reports, "index.json")))


def key(x):
    return [int(p) for p in x.split(".")]


bad = {}  # case -> what is wrong
timed = set()  # the cases where one of the client's timers decided
counts = collections.Counter()
for agent, cases in idx.items():
    for cid in sorted(cases, key=key):
        c = cases[cid]
        counts[c["behavior"]] += 1
        why = []
        if c["behavior"] in ("FAILED", "UNIMPLEMENTED"):
            why.append(c["behavior"])
        if c["behaviorClose"] not in ("OK", "INFORMATIONAL"):
            why.append(f"close {c['behaviorClose']}")
        detail = json.load(open(os.path.join(reports, c["reportfile"])))
        exp = detail.get("expectedClose") or {}
        code = c["remoteCloseCode"]
        # The server was to fail the connection: it must say why in a close
        # frame, with a code the case allows (the suite also accepts a drop).
        if c["behavior"] != "INFORMATIONAL" and exp.get("closedByMe") is False:
            if code is None:
                why.append("TCP dropped without a close frame")
            elif code not in exp.get("closeCode", [code]):
                why.append("wrong close code")
        if why:
            timer = [n for n, hit in (
                ("close-handshake timeout", detail.get("wasCloseHandshakeTimeout")),
                ("TCP-drop timeout", detail.get("wasServerConnectionDropTimeout")),
                ("kill timer", any(e[0] == "KLE" for e in detail.get("wirelog") or [])),
            ) if hit]
            if timer and why == [f"close {c['behaviorClose']}"]:
                timed.add(cid)
                why.append("the client's " + " and ".join(timer) + " fired")
            bad[cid] = f"{'; '.join(why)} (close code {code}, want {exp.get('closeCode')})"
print("autobahn:", ", ".join(f"{k} {counts[k]}" for k in ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED")),
      f"of {sum(counts.values())} cases; {len(bad)} with a wrong outcome or close")
for cid, why in bad.items():
    print(f"  wrong: {cid}: {why}")
if not bad:
    sys.exit(0)
if set(bad) == timed:
    with open(retry_file, "w") as f:
        f.write("".join(f"{cid}\n" for cid in bad))
    sys.exit(3)
sys.exit(1)

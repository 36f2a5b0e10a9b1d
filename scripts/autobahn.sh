#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzing client against an echo server built on
# transport/ (transport/internal/echoserver), prints the counts and fails on
# any FAILED case or wrong close behaviour. See docs/conformance.md.
#
#   scripts/autobahn.sh            # full run: cases 1-7, 9.1, 9.2, 10 (~15 s)
#   scripts/autobahn.sh --quick    # 1-7, 10 and four 9.1/9.2 cases (~8 s; make test runs it)
#   scripts/autobahn.sh --cases '["9.*"]'   # any case list (JSON)
#
# The suite is ../shared/tools/autobahn/run beside the clone (AUTOBAHN_RUN
# overrides it); it needs Debian packages, installed here when missing
# (scripts/deps.sh installs them too). Reports (HTML, JSON) go to
# tmp/autobahn/ (AUTOBAHN_OUT overrides it).
#
# It exits non-zero when a case is FAILED or UNIMPLEMENTED, when a close is
# not as the case expects (wrong code, unclean where it must be clean), and
# when the server was to fail the connection but dropped TCP without a
# close frame, or sent a code the case does not allow (1002 for protocol
# errors, 1007 for invalid UTF-8). NON-STRICT and INFORMATIONAL cases are
# listed, not failed: the suite allows them. A case that only the fuzzing
# client's own timers failed runs again, up to twice, and passes if a rerun
# does (scripts/autobahn-verdict.py says why).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

default_cases='["1.*","2.*","3.*","4.*","5.*","6.*","7.*","9.1.*","9.2.*","10.*"]'
quick_cases='["1.*","2.*","3.*","4.*","5.*","6.*","7.*","10.*","9.1.1","9.1.2","9.2.1","9.2.2"]'
cases=$default_cases
name=full
while (($#)); do
	case $1 in
	--quick) cases=$quick_cases name=quick ;;
	--cases) cases=$2 name=custom; shift ;;
	-h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "autobahn: unknown argument $1 (try --help)" >&2; exit 2 ;;
	esac
	shift
done

run=${AUTOBAHN_RUN:-$repo/../shared/tools/autobahn/run}
if [ ! -x "$run" ]; then
	msg="autobahn: the fuzzing client is not at $run (set AUTOBAHN_RUN)"
	if [ "${SPINDLE_REQUIRE_TOOLS:-}" = 1 ]; then
		echo "$msg; SPINDLE_REQUIRE_TOOLS=1" >&2
		exit 1
	fi
	echo "$msg; skipped" >&2
	exit 0
fi

# The Debian packages the client needs (named in $run).
pkgs=(python3-autobahn python3-twisted python3-jinja2 python3-openssl python3-service-identity python3-txaio)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "autobahn: installing ${missing[*]} from Debian" >&2
	sudo=
	[ "$(id -u)" = 0 ] || sudo=sudo
	export DEBIAN_FRONTEND=noninteractive
	$sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
	$sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

out=${AUTOBAHN_OUT:-$repo/tmp/autobahn}/$name
rm -rf "$out"
mkdir -p "$out"
go build -o "$out/echoserver" ./transport/internal/echoserver

# The echo server picks a free port and says which.
"$out/echoserver" -addr 127.0.0.1:0 -path / >"$out/echoserver.out" 2>"$out/echoserver.log" &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true' EXIT
addr=
for _ in $(seq 100); do
	addr=$(sed -n 's/^listening on //p' "$out/echoserver.out")
	[ -n "$addr" ] && break
	kill -0 "$pid" 2>/dev/null || { cat "$out/echoserver.log" >&2; echo "autobahn: the echo server did not start" >&2; exit 1; }
	sleep 0.1
done
[ -n "$addr" ] || { echo "autobahn: the echo server did not say where it listens" >&2; exit 1; }

echo "autobahn: $name run, cases $cases, against ws://$addr/ (reports in $out/reports)" >&2
start=$(date +%s)
if ! timeout 900 "$run" "ws://$addr/" "$out" "$cases"; then
	echo "autobahn: the fuzzing client failed; see $out/wstest.log" >&2
	exit 1
fi
[ -f "$out/reports/index.json" ] || { tail -20 "$out/wstest.log" >&2; echo "autobahn: no report" >&2; exit 1; }
kill -0 "$pid" 2>/dev/null || { echo "autobahn: the echo server died during the run" >&2; cat "$out/echoserver.log" >&2; exit 1; }
echo "autobahn: $(($(date +%s) - start)) s" >&2

# The verdict; the cases that only a timer of the client's decided run
# once more, up to twice (why: scripts/autobahn-verdict.py).
verdict=0
/usr/bin/python3 scripts/autobahn-verdict.py "$out/reports" "$out/retry" || verdict=$?
for again in 1 2; do
	[ "$verdict" = 3 ] || break
	retry=$(/usr/bin/python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().split()))' <"$out/retry")
	echo "autobahn: rerun $again of $retry: only the client's own timers failed them" >&2
	if ! timeout 300 "$run" "ws://$addr/" "$out/rerun$again" "$retry" >/dev/null; then
		echo "autobahn: the fuzzing client failed; see $out/rerun$again/wstest.log" >&2
		exit 1
	fi
	verdict=0
	/usr/bin/python3 scripts/autobahn-verdict.py "$out/rerun$again/reports" "$out/retry" || verdict=$?
done
exit $((verdict == 0 ? 0 : 1))

#!/usr/bin/env bash
# Runs scenarios against `spindle serve`, against the gorilla baseline hub and
# against the floor (`spindle floor-hub`: one write per delivery, no queues),
# one server after the other on the same machine, and compares the results:
# Spindle against the baseline, then Spindle against the floor.
#   bench/compare.sh OUTDIR SCENARIO [SCENARIO...]
# The scenarios run at the same time against each server; the first is the
# one measured and compared, the others are load beside it (a connection
# storm). Each writes OUTDIR/{spindle,baseline,floor}[-N].{json,html}.
# SPINDLE_FLAGS, BASELINE_FLAGS and FLOOR_FLAGS add flags to `spindle serve`,
# `spindle baseline-hub` (e.g. --max-connections 2000) and `spindle
# floor-hub` (e.g. --writers 1); FLOOR=0 leaves the floor out. SERVER_CPUS and
# BENCH_CPUS (taskset lists, e.g. 0 and 1) pin the server and the bench to
# their own cores, so that the bench's work does not show up as the
# server's latency; the scenarios after the first (the load beside it)
# run as SCHED_IDLE (chrt --idle), below the one that measures: they get a
# core only when the measuring bench does not want it.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$1
shift
scenarios=("$@")
mkdir -p "$out"
go build -o "$out/spindle" ./cmd/spindle
bin=$out/spindle
server_cpu=() bench_cpu=()
[ -n "${SERVER_CPUS:-}" ] && server_cpu=(taskset -c "$SERVER_CPUS")
[ -n "${BENCH_CPUS:-}" ] && bench_cpu=(taskset -c "$BENCH_CPUS")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# shellcheck source=bench/lib.sh
source bench/lib.sh

run() { # name pid ws api [extra bench flags]
	local name=$1 pid=$2 ws=$3 api=$4
	shift 4
	local runs=() i
	for i in "${!scenarios[@]}"; do
		local tag=$name
		((i > 0)) && tag=$name-$i
		local prio=()
		((i > 0)) && prio=(chrt --idle 0)
		"${bench_cpu[@]}" "${prio[@]}" "$bin" bench run "${scenarios[$i]}" --url "$ws" --api "$api" --api-key key --hmac-secret secret \
			--server-pid "$pid" --out "$out/$tag.json" --html "$out/$tag.html" --quiet "$@" &
		runs+=($!)
	done
	for i in "${runs[@]}"; do wait "$i"; done
	kill -0 "$pid" 2>/dev/null || { echo "compare: $name died during the run" >&2; return 1; }
}

# shellcheck disable=SC2086 # the flags are meant to split
"${server_cpu[@]}" "$bin" serve --listen 127.0.0.1:18000 --admin-listen 127.0.0.1:19000 --api-key key \
	--token-hmac-secret secret --log-level warn --max-connections 19500 ${SPINDLE_FLAGS:-} >"$out/serve.log" 2>&1 &
pids+=($!)
wait_http http://127.0.0.1:19000/readyz
echo "== spindle serve"
run spindle "${pids[0]}" ws://127.0.0.1:18000/connection/websocket http://127.0.0.1:18000/api \
	--server-metrics http://127.0.0.1:19000/metrics
kill "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true

# shellcheck disable=SC2086
"${server_cpu[@]}" "$bin" baseline-hub --listen 127.0.0.1:18100 --api-key key --token-hmac-secret secret ${BASELINE_FLAGS:-} >"$out/baseline.log" 2>&1 &
pids+=($!)
wait_http http://127.0.0.1:18100/
echo "== baseline-hub (gorilla/websocket, goroutine pair per connection)"
run baseline "${pids[1]}" ws://127.0.0.1:18100/connection/websocket http://127.0.0.1:18100/api
kill "${pids[1]}"; wait "${pids[1]}" 2>/dev/null || true

if [ "${FLOOR:-1}" != 0 ]; then
	# shellcheck disable=SC2086
	"${server_cpu[@]}" "$bin" floor-hub --listen 127.0.0.1:18200 --api-key key ${FLOOR_FLAGS:-} >"$out/floor.log" 2>&1 &
	pids+=($!)
	wait_http http://127.0.0.1:18200/
	echo "== floor-hub (one write per delivery, no queues)"
	run floor "${pids[2]}" ws://127.0.0.1:18200/connection/websocket http://127.0.0.1:18200/api
	kill "${pids[2]}"; wait "${pids[2]}" 2>/dev/null || true
fi

echo "== spindle (a) vs baseline (b)"
"$bin" bench compare "$out/spindle.json" "$out/baseline.json"
if [ "${FLOOR:-1}" != 0 ]; then
	echo "== spindle (a) vs floor (b)"
	"$bin" bench compare "$out/spindle.json" "$out/floor.json"
fi

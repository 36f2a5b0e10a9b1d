#!/usr/bin/env bash
# Runs one scenario against `spindle serve` and against the gorilla baseline
# hub, one after the other on the same machine, and compares the results.
#   bench/fanout-compare.sh [SCENARIO] [OUTDIR]
# Writes OUTDIR/{spindle,baseline}.{json,html} and prints `bench compare`.
set -euo pipefail
cd "$(dirname "$0")/.."
scenario=${1:-bench/scenarios/fanout.yaml}
out=${2:-/tmp/spindle-fanout}
mkdir -p "$out"
go build -o "$out/spindle" ./cmd/spindle
bin=$out/spindle
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

run() { # name pid ws api
	"$bin" bench run "$scenario" --url "$3" --api "$4" --api-key key --hmac-secret secret \
		--server-pid "$2" --out "$out/$1.json" --html "$out/$1.html" --quiet
}

"$bin" serve --listen 127.0.0.1:18000 --admin-listen 127.0.0.1:19000 --api-key key \
	--token-hmac-secret secret --log-level warn --max-connections 19500 >"$out/serve.log" 2>&1 &
pids+=($!)
sleep 1
echo "== spindle serve"
run spindle "${pids[0]}" ws://127.0.0.1:18000/connection/websocket http://127.0.0.1:18000/api
kill "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true

"$bin" baseline-hub --listen 127.0.0.1:18100 --api-key key --token-hmac-secret secret >"$out/baseline.log" 2>&1 &
pids+=($!)
sleep 1
echo "== baseline-hub (gorilla/websocket, goroutine pair per connection)"
run baseline "${pids[1]}" ws://127.0.0.1:18100/connection/websocket http://127.0.0.1:18100/api
kill "${pids[1]}"; wait "${pids[1]}" 2>/dev/null || true

echo "== spindle (a) vs baseline (b)"
"$bin" bench compare "$out/spindle.json" "$out/baseline.json"

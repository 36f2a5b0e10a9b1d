#!/usr/bin/env bash
# Cross-node benchmark: runs scenarios against one `spindle serve` with the
# memory broker, one with the Redis broker, and three on one Redis (the
# bench's connections go round-robin over the three nodes' URLs; it
# publishes through node 1's API), one configuration after the other on
# the same machine, each on freshly started servers.
#   bench/cross-node.sh OUTDIR [SCENARIO...]
# Default scenarios: bench/scenarios/cross-node-fanout.yaml and
# cross-node-channels.yaml. Each run writes
# OUTDIR/{memory-1,redis-1,redis-3}-SCENARIO.{json,html}. It starts its own
# redis-server (no persistence) on REDIS_PORT (default 16379) and stops it;
# node i listens on PORT_BASE+i (default 28000) and its admin listener on
# PORT_BASE+1000+i.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$1
shift
scenarios=("$@")
((${#scenarios[@]})) || scenarios=(bench/scenarios/cross-node-fanout.yaml bench/scenarios/cross-node-channels.yaml)
mkdir -p "$out"
go build -o "$out/spindle" ./cmd/spindle
bin=$out/spindle
redis_port=${REDIS_PORT:-16379}
base=${PORT_BASE:-28000}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# shellcheck source=bench/lib.sh
source bench/lib.sh

redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --loglevel warning >"$out/redis.log" 2>&1 &
redis_pid=$!
pids+=("$redis_pid")
for _ in $(seq 100); do
	redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
	sleep 0.1
done
redis-cli -p "$redis_port" ping >/dev/null

# nodes NAME COUNT BROKER_FLAGS...: starts COUNT nodes and runs every
# scenario against them, then stops them.
nodes() {
	local name=$1 count=$2
	shift 2
	local node_pids=() urls=() i
	for ((i = 0; i < count; i++)); do
		"$bin" serve --listen 127.0.0.1:$((base + i)) --admin-listen 127.0.0.1:$((base + 1000 + i)) --api-key key \
			--token-hmac-secret secret --log-level warn --max-connections 19500 "$@" >"$out/$name-serve-$i.log" 2>&1 &
		node_pids+=($!)
		pids+=($!)
		urls+=("ws://127.0.0.1:$((base + i))/connection/websocket")
	done
	for ((i = 0; i < count; i++)); do wait_http "http://127.0.0.1:$((base + 1000 + i))/readyz"; done
	local url_list
	url_list=$(IFS=,; echo "${urls[*]}")
	local sc tag
	for sc in "${scenarios[@]}"; do
		tag=$name-$(basename "$sc" .yaml)
		echo "== $tag ($count node(s): $*)"
		"$bin" bench run "$sc" --url "$url_list" --api http://127.0.0.1:$base/api --api-key key --hmac-secret secret \
			--server-pid "${node_pids[0]}" --server-metrics "http://127.0.0.1:$((base + 1000))/metrics" \
			--out "$out/$tag.json" --html "$out/$tag.html" --quiet
	done
	for p in "${node_pids[@]}"; do
		kill -0 "$p" 2>/dev/null || { echo "cross-node: a node of $name died during the run" >&2; return 1; }
		kill "$p"
		wait "$p" 2>/dev/null || true
	done
}

nodes memory-1 1 --broker memory
nodes redis-1 1 --broker redis --redis-address 127.0.0.1:"$redis_port" --redis-prefix bench1
nodes redis-3 3 --broker redis --redis-address 127.0.0.1:"$redis_port" --redis-prefix bench3
kill "$redis_pid"
wait "$redis_pid" 2>/dev/null || true

for sc in "${scenarios[@]}"; do
	s=$(basename "$sc" .yaml)
	echo "== $s: one node, memory (a) vs three nodes on Redis (b)"
	"$bin" bench compare "$out/memory-1-$s.json" "$out/redis-3-$s.json"
	echo "== $s: one node on Redis (a) vs three nodes on Redis (b)"
	"$bin" bench compare "$out/redis-1-$s.json" "$out/redis-3-$s.json"
done

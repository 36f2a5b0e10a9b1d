#!/usr/bin/env bash
# Runs every test: the concurrent packages under the race detector, the rest
# plainly. SPINDLE_REQUIRE_TOOLS=1 turns "tool missing" skips into failures.
#
# nbio hands each accepted connection from its accept goroutine to a poller
# through epoll, an edge the race detector cannot see; transport/race.go
# makes it visible in race builds, so whole gateways (server/) run with -race.
set -euo pipefail
cd "$(dirname "$0")/.."
export SPINDLE_REQUIRE_TOOLS=1

race_pkgs=()
for p in gateway transport broker api server client proxy guard bench; do
	[ -d "$p" ] && race_pkgs+=("./$p/...")
done
all=$(go list ./...)
plain=()
for pkg in $all; do
	skip=
	for p in gateway transport broker api server client proxy guard bench; do
		case "$pkg" in */spindle/$p|*/spindle/$p/*) skip=1 ;; esac
	done
	[ -z "$skip" ] && plain+=("$pkg")
done

status=0
if ((${#race_pkgs[@]})); then
	go test -race -count=1 -timeout 12m "${race_pkgs[@]}" || status=$?
fi
go test -count=1 -timeout 12m "${plain[@]}" || status=$?
# The transport's WebSocket conformance: a quick part of the Autobahn|Testsuite
# (about 10 s); the full run is scripts/autobahn.sh, see docs/conformance.md.
bash scripts/autobahn.sh --quick || status=$?
exit $status

#!/usr/bin/env bash
# The connection-storm benchmark: 1,000 subscribers at 100 publications/s
# while 6,000 connections storm a node configured for 2,000, against
# `spindle serve` (memory limit 256 MiB) and the gorilla baseline (the same
# connection cap).
#   bench/storm-compare.sh [OUTDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
SPINDLE_FLAGS="--max-connections 2000 --memory-limit 256MiB ${SPINDLE_FLAGS:-}" \
BASELINE_FLAGS="--max-connections 2000 ${BASELINE_FLAGS:-}" \
	exec bench/compare.sh "${1:-/tmp/spindle-storm}" bench/scenarios/storm-subscribers.yaml bench/scenarios/storm-flood.yaml

#!/usr/bin/env bash
# Runs one scenario against `spindle serve` and against the gorilla baseline
# hub and compares the results (bench/compare.sh with one scenario).
#   bench/fanout-compare.sh [SCENARIO] [OUTDIR]
set -euo pipefail
exec "$(dirname "$0")/compare.sh" "${2:-/tmp/spindle-fanout}" "${1:-bench/scenarios/fanout.yaml}"

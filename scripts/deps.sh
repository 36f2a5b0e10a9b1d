#!/usr/bin/env bash
# Installs what the test suite needs on a fresh machine: Node's packages for the
# interop tests, and Debian packages (redis-server, chromium) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if ((${#need_apt[@]})); then
	echo "deps: installing ${need_apt[*]} from Debian" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# npm ci installs exactly what interop/package-lock.json pins and fails when
# the lock and package.json disagree. No fallback to `npm install`: that would
# rewrite the lock and test other SDK versions than the committed ones, and
# hiding npm's errors left interop tests skipping for no visible reason.
if [ -f interop/package.json ]; then
	echo "deps: npm ci in interop/" >&2
	(cd interop && npm ci --no-audit --no-fund --loglevel=error)
fi

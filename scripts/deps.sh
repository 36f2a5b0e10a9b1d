#!/usr/bin/env bash
# Installs what the test suite needs on a fresh machine: Node's packages for the
# interop tests and the Dockerfile linter, and Debian packages (redis-server,
# chromium, prometheus for promtool, kubernetes-client for kubectl, the Python
# packages of the Autobahn|Testsuite client) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# apt_wait runs apt-get, waiting (up to 10 minutes) for a lock held by
# another apt or dpkg on a busy machine instead of failing on it.
apt_wait() {
	local out
	for _ in $(seq 60); do
		if out=$(apt-get -o DPkg::Lock::Timeout=600 "$@" 2>&1); then
			return 0
		fi
		if ! grep -q "Could not get lock\|Unable to lock\|is another process using it" <<<"$out"; then
			echo "$out" >&2
			return 1
		fi
		echo "deps: apt is busy; waiting for its lock" >&2
		sleep 10
	done
	echo "$out" >&2
	return 1
}

need_apt=()
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
# promtool and kubectl, for deploy/'s alert-rule and manifest tests (Debian's
# kubectl is old, 1.20, and enough for `create --dry-run=client`).
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v kubectl >/dev/null 2>&1 || need_apt+=(kubernetes-client)
# The Autobahn|Testsuite fuzzing client that scripts/autobahn.sh runs.
for p in python3-autobahn python3-twisted python3-jinja2 python3-openssl python3-service-identity python3-txaio; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$p")
done
if ((${#need_apt[@]})); then
	echo "deps: installing ${need_apt[*]} from Debian" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt_wait update -qq
	apt_wait install -y -qq --no-install-recommends "${need_apt[@]}"
fi

# npm ci installs exactly what interop/package-lock.json pins and fails when
# the lock and package.json disagree. No fallback to `npm install`: that would
# rewrite the lock and test other SDK versions than the committed ones, and
# hiding npm's errors left interop tests skipping for no visible reason.
if [ -f interop/package.json ]; then
	echo "deps: npm ci in interop/" >&2
	(cd interop && npm ci --no-audit --no-fund --loglevel=error)
fi
# The Dockerfile linter deploy/dockerfile_test.go runs (pinned the same way).
if [ -f deploy/lint/package.json ]; then
	echo "deps: npm ci in deploy/lint/" >&2
	(cd deploy/lint && npm ci --no-audit --no-fund --loglevel=error)
fi

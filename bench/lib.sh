# Shell helpers of the bench scripts (compare.sh, cross-node.sh); source it.

# wait_http URL: until the server answers (at most 10 s).
wait_http() {
	for _ in $(seq 100); do
		curl -s -o /dev/null "$1" && return 0
		sleep 0.1
	done
	echo "$(basename "$0"): $1 does not answer" >&2
	return 1
}

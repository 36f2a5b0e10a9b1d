package admission

import (
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// SetMemoryLimit sets the Go memory limit the heap signal is measured
// against: limit when positive (the config's), else GOMEMLIMIT when the
// environment sets it (the runtime already applied it), else 90 % of the
// cgroup's memory limit (a container's). It returns the limit in force;
// math.MaxInt64 when none.
func SetMemoryLimit(limit int64) int64 {
	if limit <= 0 && os.Getenv("GOMEMLIMIT") != "" {
		return debug.SetMemoryLimit(-1)
	}
	if limit <= 0 {
		if c := cgroupLimit(); c > 0 {
			limit = c / 10 * 9
		}
	}
	if limit > 0 {
		debug.SetMemoryLimit(limit)
	}
	return debug.SetMemoryLimit(-1)
}

// cgroupLimit reads the memory limit of this process's cgroup (v2, then
// v1); 0 when there is none.
func cgroupLimit() int64 {
	for _, f := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		s := strings.TrimSpace(string(data))
		if s == "max" {
			return 0
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err == nil && n > 0 && n < 1<<60 {
			return n
		}
	}
	return 0
}

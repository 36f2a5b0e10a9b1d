package server_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/spindlehq/spindle/guard/task"
)

// The admin listener lists the gateway's named goroutines, and closing the
// server ends every one of them.
func TestDebugTasks(t *testing.T) {
	srv := startServer(t, nil)
	resp, err := http.Get("http://" + srv.AdminAddr() + "/debug/tasks")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Tasks []task.Info `json:"tasks"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	names := map[string]int{}
	for _, i := range out.Tasks {
		names[i.Name] = i.Count
		if i.OldestStart.IsZero() {
			t.Errorf("task %s without a start", i.Name)
		}
	}
	for _, want := range []string{"gateway.writer", "gateway.heartbeat", "broker.memory.janitor", "admin.http"} {
		if names[want] == 0 {
			t.Errorf("/debug/tasks has no %s: %v", want, names)
		}
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	for _, i := range task.List() {
		t.Errorf("after Close, task %s still runs (%d)", i.Name, i.Count)
	}
}

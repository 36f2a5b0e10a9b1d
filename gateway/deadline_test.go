package gateway

import (
	"context"
	"testing"
	"time"
)

func TestDeadlinesShareAndNeverEndEarly(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	d := deadlines{parent: parent, timeout: time.Second}
	before := time.Now()
	a := d.context()
	b := d.context()
	after := time.Now()
	for _, c := range []context.Context{a, b} {
		end, ok := c.Deadline()
		if !ok || end.Before(before.Add(time.Second)) || end.After(after.Add(time.Second+deadlineStep)) {
			t.Fatalf("deadline %v (ok %v) outside [%v, %v]", end, ok, before.Add(time.Second), after.Add(time.Second+deadlineStep))
		}
	}
	if after.Sub(before) < deadlineStep/2 && a != b {
		t.Fatal("two commands asked within one step got two contexts")
	}

	// Past the step a later end is needed: a new context, the old one still running.
	time.Sleep(deadlineStep + 10*time.Millisecond)
	c := d.context()
	if c == a {
		t.Fatal("a context that ends too soon was handed out again")
	}
	if a.Err() != nil {
		t.Fatal("the older shared context ended early")
	}
	cancel()
	for _, x := range []context.Context{a, c} {
		<-x.Done()
	}
}

func TestDeadlinesEnd(t *testing.T) {
	d := deadlines{parent: context.Background(), timeout: 20 * time.Millisecond}
	c := d.context()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a shared deadline did not end")
	}
	if c.Err() != context.DeadlineExceeded {
		t.Fatalf("err %v, want deadline exceeded", c.Err())
	}
}

package gateway

import (
	"slices"
	"testing"

	"github.com/spindlehq/spindle/broker"
)

// A user's sessions are found together and each one leaves alone, from the
// head, the middle or the tail of the user's list.
func TestRegistryUserSessions(t *testing.T) {
	r := newRegistry()
	var ss []*session
	for _, id := range []string{"a", "b", "c", "d"} {
		s := &session{id: id, ci: &broker.ClientInfo{ClientID: id, UserID: "u"}}
		s.flags.Or(flagAuthed)
		r.add(s)
		r.addUser(s)
		ss = append(ss, s)
	}
	other := &session{id: "x", ci: &broker.ClientInfo{ClientID: "x", UserID: "v"}}
	other.flags.Or(flagAuthed)
	r.add(other)
	r.addUser(other)

	ids := func(user, client string) []string {
		var out []string
		for _, s := range r.find(user, client) {
			out = append(out, s.id)
		}
		slices.Sort(out)
		return out
	}
	if got := ids("u", ""); !slices.Equal(got, []string{"a", "b", "c", "d"}) {
		t.Fatalf("sessions of u: %v", got)
	}
	if got := ids("u", "c"); !slices.Equal(got, []string{"c"}) {
		t.Fatalf("u narrowed to c: %v", got)
	}
	for _, step := range []struct {
		gone *session
		want []string
	}{{ss[2], []string{"a", "b", "d"}}, {ss[3], []string{"a", "b"}}, {ss[0], []string{"b"}}, {ss[1], nil}} {
		if removed, _ := r.remove(step.gone); !removed {
			t.Fatalf("%s not removed", step.gone.id)
		}
		if got := ids("u", ""); !slices.Equal(got, step.want) {
			t.Fatalf("after %s left: %v, want %v", step.gone.id, got, step.want)
		}
	}
	if r.numUsers() != 1 || r.count() != 1 || len(r.find("v", "")) != 1 {
		t.Fatalf("users %d, sessions %d: want only v's", r.numUsers(), r.count())
	}
	if removed, _ := r.remove(ss[0]); removed {
		t.Fatal("removed twice")
	}
}

// Walking every session makes no garbage: the heartbeat loop does it
// several times a second on an idle node.
func TestRegistryEachWithoutGarbage(t *testing.T) {
	r := newRegistry()
	for i := range 1000 {
		r.add(&session{id: string(rune('a'+i%26)) + string(rune(i))})
	}
	n := 0
	r.each(func(*session) { n++ })
	if n != 1000 {
		t.Fatalf("each saw %d sessions, want 1000", n)
	}
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items on purpose")
	}
	if a := testing.AllocsPerRun(50, func() { r.each(func(*session) {}) }); a != 0 {
		t.Errorf("%v allocations per walk, want none", a)
	}
}

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

// The registry files sessions by hashes: a new session whose id hashes like
// another's takes a new id, and a user's list skips the sessions of a user
// whose hash is the same.
func TestRegistryHashCollisions(t *testing.T) {
	r := newRegistry()
	first := &session{id: "first"}
	h := r.hash("same")
	r.idShard(h).m[h] = first // as if "first" hashed like "same"
	s := &session{id: "same"}
	r.add(s)
	if s.id == "same" {
		t.Fatal("the colliding session kept its id")
	}
	if got := r.find("", s.id); len(got) != 1 || got[0] != s {
		t.Fatalf("found %v by the new id, want the session", got)
	}
	if got := r.find("", "same"); len(got) != 0 {
		t.Fatalf("found %v by a hash shared with another id", got)
	}

	u := &session{id: "u1", ci: &broker.ClientInfo{ClientID: "u1", UserID: "u"}}
	u.flags.Or(flagAuthed)
	r.add(u)
	r.addUser(u)
	w := &session{id: "w1", ci: &broker.ClientInfo{ClientID: "w1", UserID: "w"}}
	w.flags.Or(flagAuthed)
	uh := r.hash("u")
	w.userNext = r.userShard(uh).m[uh] // as if "w" hashed like "u"
	r.userShard(uh).m[uh] = w
	if got := r.find("u", ""); len(got) != 1 || got[0] != u {
		t.Fatalf("sessions of u: %v, want only u1", got)
	}
	if got := r.find("w", ""); len(got) != 0 {
		t.Fatalf("sessions of w under its own hash: %v, want none", got)
	}
	if removed, _ := r.remove(u); !removed {
		t.Fatal("u1 not removed")
	}
	if got := r.userShard(uh).m[uh]; got != w || w.userNext != nil {
		t.Fatal("removing u1 broke the chain it shares with w1")
	}
}

package transport

import "sync/atomic"

// A Conn's flags, each set by whoever ends the state it names and read
// from any goroutine. They share one word: a Conn is what an idle node
// holds per client.
const (
	flagClosing   uint32 = 1 << iota // a close frame was sent or received: nothing more is owed to the peer
	flagLingering                    // Close waits for the close frame to be written, see close.go
	flagGone                         // OnClose ran: what was not written left srv.pending
	flagDrain                        // AwaitDrain asked for one DrainHandler call (drained.go)
	flagClosed                       // closeWith ran: the close frame was written once
	flagEnded                        // end ran: the socket was closed once, flushed or reset
)

// connFlags is a set of the flags above.
type connFlags struct{ v atomic.Uint32 }

func (f *connFlags) has(flag uint32) bool { return f.v.Load()&flag != 0 }
func (f *connFlags) set(flag uint32)      { f.v.Or(flag) }

// take sets flag and reports whether this call set it: of concurrent
// callers, exactly one is first.
func (f *connFlags) take(flag uint32) bool { return f.v.Or(flag)&flag == 0 }

// clear unsets flag and reports whether it was set.
func (f *connFlags) clear(flag uint32) bool { return f.v.And(^flag)&flag != 0 }

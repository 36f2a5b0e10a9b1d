package transport

import "sync/atomic"

// A Conn's state bits, in one word (Conn.flags): a Conn is what an idle
// node holds per client. Every bit is read from any goroutine; who sets it:
const (
	// flagClosing: a close frame was sent or received, nothing more is owed
	// to the peer (Pending is 0). Set by closeWith, and by peerClose on the
	// event loop when the peer's close frame was read.
	flagClosing uint32 = 1 << iota
	// flagFlushing: Close waits for the close frame to be written (close.go).
	// Set by closeWith, after the close grace timer is stored.
	flagFlushing
	// flagHalfClose: once the close frame is written the socket half-closes
	// and waits for the peer's FIN (a close the server began). Set by
	// closeWith before it writes the frame.
	flagHalfClose
	// flagGone: OnClose ran, what was not written left srv.pending. Taken
	// by Server.closed, on the event loop.
	flagGone
	// flagDrain: AwaitDrain asked for one DrainHandler call (drained.go).
	// Set by AwaitDrain from any goroutine; cleared by the written-bytes
	// callback on the event loop, which then makes the call.
	flagDrain
	// flagClosed: closeWith sent the close frame; taken by its first caller
	// (Close from any goroutine, or the frame check's close on the
	// connection's executor), later callers return at once.
	flagClosed
	// flagEnded: end half-closed or closed the socket once its close frame
	// was written; taken by its first caller (closeWith or the closer
	// goroutine), later callers return at once. Set by reset too.
	flagEnded
)

// connFlags is a set of the bits above, changed atomically.
type connFlags struct{ v atomic.Uint32 }

func (f *connFlags) has(flag uint32) bool { return f.v.Load()&flag != 0 }
func (f *connFlags) set(flag uint32)      { f.v.Or(flag) }

// take sets flag and reports whether this call set it: of concurrent
// callers, exactly one is first. Unlike sync.Once, the others do not wait
// for the first to finish what the flag guards, and none needs to: Close
// promises the socket's close only for later, and the other callers of
// closeWith and end do nothing after them.
func (f *connFlags) take(flag uint32) bool { return f.v.Or(flag)&flag == 0 }

// clear unsets flag and reports whether it was set.
func (f *connFlags) clear(flag uint32) bool { return f.v.And(^flag)&flag != 0 }

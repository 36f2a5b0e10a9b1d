package transport

// DrainHandler is optional: a Handler that implements it is told when a
// connection that asked (Conn.AwaitDrain) has had every byte handed to it
// taken by the kernel. A writer that holds its frames back while the
// socket is backed up learns from it when to write again.
type DrainHandler interface {
	// OnDrained runs on the event loop, under nbio's lock of the
	// connection: it must be brief and must not write to c.
	OnDrained(c *Conn)
}

// AwaitDrain asks for one OnDrained call once Pending is 0. The call
// comes from the event loop when the kernel takes the last pending bytes;
// when nothing is pending as AwaitDrain returns, none may come, so a
// caller checks Pending after asking.
func (c *Conn) AwaitDrain() { c.flags.set(flagDrain) }

// drained is the written-bytes callback's part for a connection that asked:
// once nothing is pending, the Handler is told, once per AwaitDrain.
func (s *Server) drained(c *Conn) {
	if c.handed.Load() != c.written.Load() || !c.flags.clear(flagDrain) {
		return
	}
	if dh, ok := s.h.(DrainHandler); ok {
		dh.OnDrained(c)
	}
}

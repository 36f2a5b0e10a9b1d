package transport

import (
	"net"
	"syscall"

	"github.com/lesismal/nbio"
)

// takeOver makes c a connection of the event loop: nbio duplicates its
// socket and closes c. The duplicate is made without close-on-exec, so it
// gets it here, under syscall.ForkLock, before any process can be started:
// a child that inherited a session's socket would hold it open after the
// server closed it, and the peer would never see the end.
func takeOver(c net.Conn) (*nbio.Conn, error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	nbc, err := nbio.NBConn(c)
	if err != nil {
		return nil, err
	}
	syscall.CloseOnExec(nbc.Hash()) // Hash is the descriptor
	return nbc, nil
}

// addToLoop gives nc, its session and data handler set, to the event loop.
func (s *Server) addToLoop(nc *nbio.Conn) error {
	if s.raceHandOff != nil {
		s.raceHandOff()
	}
	return s.engine.AddTransferredConn(nc)
}

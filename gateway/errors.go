package gateway

import (
	"errors"
	"fmt"

	"github.com/centrifugal/protocol"
)

// Error is an error a client or a server API caller is told about: a code
// from Centrifugo's table, its message, and whether retrying may help. The
// gateway and the API wrap it with context for logs (fmt.Errorf with %w);
// callers find it again with errors.As, or compare codes with errors.Is.
type Error struct {
	Code      uint32
	Message   string
	Temporary bool
}

// Error returns the message, e.g. "unknown channel".
func (e *Error) Error() string { return e.Message }

// Is reports whether target is an *Error with the same code, so that
// errors.Is(err, ErrUnknownChannel) holds for any wrapping.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Errors of the client protocol and the server API (Centrifugo's numbering).
var (
	ErrInternal              = &Error{Code: 100, Message: "internal server error", Temporary: true}
	ErrUnknownChannel        = &Error{Code: 102, Message: "unknown channel"}
	ErrPermissionDenied      = &Error{Code: 103, Message: "permission denied"}
	ErrMethodNotFound        = &Error{Code: 104, Message: "method not found"}
	ErrAlreadySubscribed     = &Error{Code: 105, Message: "already subscribed"}
	ErrLimitExceeded         = &Error{Code: 106, Message: "limit exceeded"}
	ErrBadRequest            = &Error{Code: 107, Message: "bad request"}
	ErrNotAvailable          = &Error{Code: 108, Message: "not available"}
	ErrTokenExpired          = &Error{Code: 109, Message: "token expired"}
	ErrTooManyRequests       = &Error{Code: 111, Message: "too many requests", Temporary: true}
	ErrUnrecoverablePosition = &Error{Code: 112, Message: "unrecoverable position"}
)

// AsError returns the *Error in err's chain; any other error is internal.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return ErrInternal
}

// protoError is err as the client protocol's error reply.
func protoError(err error) *protocol.Error {
	e := AsError(err)
	return &protocol.Error{Code: e.Code, Message: e.Message, Temporary: e.Temporary}
}

// errorf wraps code with context: errorf(ErrBadRequest, "publish %q: data is not JSON", ch)
// reads "publish "x": data is not JSON: bad request" in logs.
func errorf(code *Error, format string, a ...any) error {
	return fmt.Errorf(format+": %w", append(a, code)...)
}

package gateway

import "github.com/centrifugal/protocol"

// Client protocol error codes (Centrifugo's numbering).
var (
	errInternal              = &protocol.Error{Code: 100, Message: "internal server error", Temporary: true}
	errUnknownChannel        = &protocol.Error{Code: 102, Message: "unknown channel"}
	errPermissionDenied      = &protocol.Error{Code: 103, Message: "permission denied"}
	errMethodNotFound        = &protocol.Error{Code: 104, Message: "method not found"}
	errAlreadySubscribed     = &protocol.Error{Code: 105, Message: "already subscribed"}
	errLimitExceeded         = &protocol.Error{Code: 106, Message: "limit exceeded"}
	errBadRequest            = &protocol.Error{Code: 107, Message: "bad request"}
	errNotAvailable          = &protocol.Error{Code: 108, Message: "not available"}
	errTokenExpired          = &protocol.Error{Code: 109, Message: "token expired"}
	errTooManyRequests       = &protocol.Error{Code: 111, Message: "too many requests", Temporary: true}
	errUnrecoverablePosition = &protocol.Error{Code: 112, Message: "unrecoverable position"}
)

// Disconnect is a reason to close a client connection: a WebSocket close
// code in the 3000–3999 range and a short reason. Codes below 3500 tell the
// client to reconnect, codes from 3500 tell it not to.
type Disconnect struct {
	Code   int
	Reason string
}

// Disconnects the gateway sends (Centrifugo's numbering, so SDKs react right).
var (
	DisconnectShutdown        = Disconnect{3001, "shutdown"}
	DisconnectServerError     = Disconnect{3004, "internal server error"}
	DisconnectExpired         = Disconnect{3005, "connection expired"}
	DisconnectSlow            = Disconnect{3008, "slow"}
	DisconnectWriteError      = Disconnect{3009, "write error"}
	DisconnectForceReconnect  = Disconnect{3011, "force reconnect"}
	DisconnectNoPong          = Disconnect{3012, "no pong"}
	DisconnectTooManyRequests = Disconnect{3013, "too many requests"}
	DisconnectInvalidToken    = Disconnect{3500, "invalid token"}
	DisconnectBadRequest      = Disconnect{3501, "bad request"}
	DisconnectStale           = Disconnect{3502, "stale"}
	DisconnectForce           = Disconnect{3503, "force disconnect"}
	DisconnectConnectionLimit = Disconnect{3504, "connection limit"}
	DisconnectChannelLimit    = Disconnect{3505, "channel limit"}
)

// Unsubscribe push codes.
const (
	unsubscribeServer = 2000
)

package gateway

// Disconnect is a reason to close a client connection: a WebSocket close
// code in the 3000–3999 range and a short reason. Codes below 3500 tell the
// client to reconnect, codes from 3500 tell it not to.
type Disconnect struct {
	Code   int
	Reason string
}

// Disconnects the gateway sends (Centrifugo's numbering, so SDKs react right).
var (
	DisconnectConnectionClosed = Disconnect{3000, "connection closed"}
	DisconnectShutdown         = Disconnect{3001, "shutdown"}
	DisconnectServerError      = Disconnect{3004, "internal server error"}
	DisconnectExpired          = Disconnect{3005, "connection expired"}
	DisconnectSlow             = Disconnect{3008, "slow"}
	DisconnectWriteError       = Disconnect{3009, "write error"}
	DisconnectNoPong           = Disconnect{3012, "no pong"}
	DisconnectInvalidToken     = Disconnect{3500, "invalid token"}
	DisconnectBadRequest       = Disconnect{3501, "bad request"}
	DisconnectStale            = Disconnect{3502, "stale"}
	DisconnectForce            = Disconnect{3503, "force disconnect"}
)

// Codes of unsubscribe pushes: the server decided; the node missed
// publications, so the client should resubscribe and recover (the SDKs
// resubscribe on codes from 2500); or the subscription's expire_at passed.
const (
	unsubscribeServer            = 2000
	unsubscribeInsufficientState = 2500
	unsubscribeExpired           = 2501
)

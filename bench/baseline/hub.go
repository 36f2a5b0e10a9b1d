package baseline

import (
	"encoding/json"
	"fmt"
	"sync/atomic"

	"github.com/centrifugal/protocol"
)

// hub maintains the registered clients and their channel subscriptions and
// fans publications out to subscribers. Like the hub of gorilla/websocket's
// chat example it is one goroutine (run) owning all its maps; every other
// goroutine talks to it through the channels below. It is also the only
// goroutine that sends on or closes a client's send channel, so a client is
// never written to after it has been dropped.
type hub struct {
	// clients maps each registered client to the channels it subscribed to.
	clients map[*client]map[string]struct{}
	// channels maps a channel name to its subscribers.
	channels map[string]map[*client]struct{}
	// offsets is the last publication offset of each channel.
	offsets map[string]uint64

	register    chan *client
	unregister  chan leave
	subscribe   chan subscription
	unsubscribe chan subscription
	broadcast   chan publication
	reply       chan reply

	quit chan struct{} // closed to stop run
	done chan struct{} // closed when run has returned

	// startPumps is called by run for each client it registers, so the
	// pump goroutines are accounted for before run can return.
	startPumps func(*client)

	dropped atomic.Int64 // clients dropped because their send channel was full
	count   atomic.Int64 // clients registered now
}

// subscription asks the hub to (un)subscribe a client; the hub queues the
// reply itself, so it is ordered with the channel's publications: nothing
// published before the reply reaches the client, everything after does.
type subscription struct {
	c       *client
	channel string
	id      uint32
}

// publication is one message for every subscriber of a channel; from, when
// set, is the publishing client, which gets the reply id'd fromID.
type publication struct {
	channel string
	data    []byte
	from    *client
	fromID  uint32
}

// leave unregisters a client; closeMsg is the payload of the close frame
// its write pump sends, empty for none.
type leave struct {
	c        *client
	closeMsg []byte
}

// reply is an encoded frame for one client.
type reply struct {
	c     *client
	frame []byte
}

func newHub() *hub {
	return &hub{
		clients:     make(map[*client]map[string]struct{}),
		channels:    make(map[string]map[*client]struct{}),
		offsets:     make(map[string]uint64),
		register:    make(chan *client),
		unregister:  make(chan leave),
		subscribe:   make(chan subscription),
		unsubscribe: make(chan subscription),
		broadcast:   make(chan publication),
		reply:       make(chan reply),
		quit:        make(chan struct{}),
		done:        make(chan struct{}),
	}
}

// run serves the hub's channels until quit is closed; then it closes every
// client's send channel, which makes the write pumps close the connections.
func (h *hub) run() {
	defer close(h.done)
	for {
		select {
		case c := <-h.register:
			h.clients[c] = make(map[string]struct{})
			h.count.Add(1)
			h.startPumps(c)
		case l := <-h.unregister:
			if _, ok := h.clients[l.c]; ok {
				l.c.closeMsg = l.closeMsg
				h.drop(l.c)
			}
		case s := <-h.subscribe:
			h.doSubscribe(s)
		case s := <-h.unsubscribe:
			h.doUnsubscribe(s)
		case p := <-h.broadcast:
			h.doPublish(p)
		case r := <-h.reply:
			if _, ok := h.clients[r.c]; ok {
				h.send(r.c, r.frame)
			}
		case <-h.quit:
			for c := range h.clients {
				h.drop(c)
			}
			return
		}
	}
}

// send queues frame for c or, when c's send channel is full, drops c, as
// the chat example does with a client that does not keep up.
func (h *hub) send(c *client, frame []byte) {
	select {
	case c.send <- frame:
	default:
		h.dropped.Add(1)
		h.drop(c)
	}
}

// drop unregisters c and closes its send channel; the write pump then sends
// a close frame and closes the connection.
func (h *hub) drop(c *client) {
	chans, ok := h.clients[c]
	if !ok {
		return
	}
	for ch := range chans {
		h.removeSubscriber(ch, c)
	}
	delete(h.clients, c)
	h.count.Add(-1)
	close(c.send)
}

func (h *hub) removeSubscriber(ch string, c *client) {
	subs := h.channels[ch]
	delete(subs, c)
	if len(subs) == 0 {
		delete(h.channels, ch)
	}
}

func (h *hub) doSubscribe(s subscription) {
	chans, ok := h.clients[s.c]
	if !ok {
		return
	}
	if _, already := chans[s.channel]; already {
		h.send(s.c, mustEncode(&protocol.Reply{Id: s.id, Error: errAlreadySubscribed}))
		return
	}
	chans[s.channel] = struct{}{}
	subs := h.channels[s.channel]
	if subs == nil {
		subs = make(map[*client]struct{})
		h.channels[s.channel] = subs
	}
	subs[s.c] = struct{}{}
	h.send(s.c, mustEncode(&protocol.Reply{Id: s.id, Subscribe: &protocol.SubscribeResult{}}))
}

func (h *hub) doUnsubscribe(s subscription) {
	chans, ok := h.clients[s.c]
	if !ok {
		return
	}
	if _, subscribed := chans[s.channel]; subscribed {
		delete(chans, s.channel)
		h.removeSubscriber(s.channel, s.c)
	}
	h.send(s.c, mustEncode(&protocol.Reply{Id: s.id, Unsubscribe: &protocol.UnsubscribeResult{}}))
}

// doPublish encodes the push once and queues it for every subscriber.
func (h *hub) doPublish(p publication) {
	h.offsets[p.channel]++
	frame, err := json.Marshal(&protocol.Reply{Push: &protocol.Push{
		Channel: p.channel,
		Pub:     &protocol.Publication{Data: protocol.Raw(p.data), Offset: h.offsets[p.channel]},
	}})
	if p.from != nil {
		rep := &protocol.Reply{Id: p.fromID, Publish: &protocol.PublishResult{}}
		if err != nil {
			rep = &protocol.Reply{Id: p.fromID, Error: errInternal}
		}
		if _, ok := h.clients[p.from]; ok {
			h.send(p.from, mustEncode(rep))
		}
	}
	if err != nil {
		return // the data was validated as JSON before; nothing to deliver
	}
	for c := range h.channels[p.channel] {
		h.send(c, frame)
	}
}

// mustEncode encodes a reply made only of protocol types with no raw data,
// which cannot fail.
func mustEncode(rep *protocol.Reply) []byte {
	b, err := json.Marshal(rep)
	if err != nil {
		panic(fmt.Sprintf("baseline: encode reply: %v", err))
	}
	return b
}

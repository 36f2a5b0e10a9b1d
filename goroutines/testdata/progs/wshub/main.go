// Command wshub is a plain net/http + gorilla/websocket broadcast server
// built the way the gorilla chat example builds one (a read pump and a write
// pump goroutine per connection, one hub goroutine), holding -clients real
// loopback WebSocket clients in the same process, each with a reader
// goroutine. Once every client is connected and the hub has published -msgs
// messages it writes its goroutine dump to stdout and exits.
//
//	wshub [-clients 500] [-msgs 80] [-leak N] [-out debug2|debug1]
//
// With -leak N, N clients stop reading and the hub, instead of dropping a
// message for a client whose send buffer is full, hands it to a new
// goroutine that blocks until the buffer has room: those goroutines pile up,
// N×(msgs-sendBuffer) of them.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

const sendBuffer = 16

type client struct {
	id   string // the dialling client's index, from the URL
	conn *websocket.Conn
	send chan []byte
}

// readPump reads until the connection fails, like the chat example's.
func (c *client) readPump(h *hub) {
	defer func() { h.unregister <- c }()
	for {
		if _, _, err := c.conn.ReadMessage(); err != nil {
			return
		}
	}
}

// writePump writes queued messages and pings.
func (c *client) writePump() {
	ping := time.NewTicker(time.Hour)
	defer ping.Stop()
	for {
		select {
		case msg, ok := <-c.send:
			if !ok {
				c.conn.WriteMessage(websocket.CloseMessage, nil)
				return
			}
			if err := c.conn.WriteMessage(websocket.TextMessage, msg); err != nil {
				return
			}
		case <-ping.C:
			if err := c.conn.WriteMessage(websocket.PingMessage, nil); err != nil {
				return
			}
		}
	}
}

// hub owns the set of clients (only its run goroutine touches clients).
type hub struct {
	leak       bool
	clients    map[*client]bool
	register   chan *client
	unregister chan *client
	broadcast  chan []byte
	direct     chan directMsg
	registered atomic.Int64 // clients registered so far
	pending    atomic.Int64 // deliverLater goroutines not yet done
}

type directMsg struct {
	to  string // client id
	msg []byte
}

func (h *hub) run() {
	byID := map[string]*client{}
	for {
		select {
		case c := <-h.register:
			h.clients[c] = true
			byID[c.id] = c
			h.registered.Add(1)
		case c := <-h.unregister:
			if h.clients[c] {
				delete(h.clients, c)
				close(c.send)
			}
		case d := <-h.direct:
			byID[d.to].send <- d.msg
		case msg := <-h.broadcast:
			for c := range h.clients {
				select {
				case c.send <- msg:
				default:
					if h.leak {
						h.pending.Add(1)
						go h.deliverLater(c, msg) // the leak: blocks while the client is stuck
					}
				}
			}
		}
	}
}

// deliverLater waits for room in the client's send buffer.
func (h *hub) deliverLater(c *client, msg []byte) {
	defer h.pending.Add(-1)
	c.send <- msg
}

var upgrader = websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 1024}

func serveWs(h *hub, w http.ResponseWriter, r *http.Request) {
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	if tc, ok := conn.NetConn().(*net.TCPConn); ok {
		tc.SetWriteBuffer(4096) // a client that stops reading blocks the writer soon
	}
	c := &client{id: r.URL.Query().Get("id"), conn: conn, send: make(chan []byte, sendBuffer)}
	h.register <- c
	go c.writePump()
	go c.readPump(h)
}

// clientReader is a client's reader goroutine: it counts every message.
func clientReader(conn *websocket.Conn, got *atomic.Int64) {
	for {
		if _, _, err := conn.ReadMessage(); err != nil {
			return
		}
		got.Add(1)
	}
}

// waitFor polls cond until it holds, failing after 20 seconds.
func waitFor(what func() string, cond func() bool) {
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			fail(fmt.Errorf("timed out waiting for %s", what()))
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "wshub:", err)
	os.Exit(1)
}

func main() {
	nclients := flag.Int("clients", 500, "WebSocket clients")
	msgs := flag.Int("msgs", 80, "messages broadcast once all clients are connected")
	leak := flag.Int("leak", 0, "clients that stop reading, with the leaky hub")
	out := flag.String("out", "debug2", "debug2 or debug1")
	flag.Parse()

	h := &hub{leak: *leak > 0, clients: map[*client]bool{}, register: make(chan *client),
		unregister: make(chan *client), broadcast: make(chan []byte), direct: make(chan directMsg)}
	go h.run()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) { serveWs(h, w, r) })
	go http.Serve(ln, mux)

	url := "ws://" + ln.Addr().String() + "/ws"
	var got atomic.Int64 // messages received by the reading clients
	var conns []*websocket.Conn
	for i := 0; i < *nclients; i++ {
		stuck := i < *leak
		d := websocket.Dialer{NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if tc, ok := c.(*net.TCPConn); ok && stuck {
				tc.SetReadBuffer(4096)
			}
			return c, err
		}}
		conn, _, err := d.Dial(fmt.Sprintf("%s?id=%d", url, i), nil)
		if err != nil {
			fail(err)
		}
		conns = append(conns, conn)
		if !stuck {
			go clientReader(conn, &got)
		}
	}
	waitFor(func() string { return fmt.Sprintf("clients to register (%d)", h.registered.Load()) }, func() bool { return h.registered.Load() == int64(*nclients) })
	for i := 0; i < *leak; i++ {
		// A message far larger than both socket buffers: the stuck client's
		// writer blocks in the write and never takes from its buffer again.
		h.direct <- directMsg{to: fmt.Sprint(i), msg: make([]byte, 4<<20)}
	}
	// Publish in steps of half a send buffer, each read by every reading
	// client before the next: only the stuck clients' buffers overflow.
	readers := int64(*nclients - *leak)
	for sent := 0; sent < *msgs; {
		for k := 0; k < sendBuffer/2 && sent < *msgs; k++ {
			h.broadcast <- []byte(fmt.Sprintf("message %d", sent))
			sent++
		}
		waitFor(func() string { return fmt.Sprintf("clients to read (%d)", got.Load()) }, func() bool { return got.Load() == readers*int64(sent) })
	}
	want := int64(*leak * (*msgs - sendBuffer))
	waitFor(func() string { return fmt.Sprintf("%d delivery goroutines to block (%d)", want, h.pending.Load()) }, func() bool { return h.pending.Load() == want })
	time.Sleep(200 * time.Millisecond) // let every goroutine park
	debug := 2
	if *out == "debug1" {
		debug = 1
	}
	pprof.Lookup("goroutine").WriteTo(os.Stdout, debug)
	runtime.KeepAlive(conns) // a collected client conn would be closed by its finalizer
}

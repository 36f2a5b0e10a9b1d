package gateway

import (
	"encoding/binary"
	"testing"

	"github.com/centrifugal/protocol"
)

func FuzzDecodeFrame(f *testing.F) {
	seeds := []string{
		`{"id":1,"connect":{"token":"x","name":"js"}}`,
		`{"id":1,"connect":{}}` + "\n" + `{"id":2,"subscribe":{"channel":"news","recover":true,"offset":3,"epoch":"abc"}}`,
		`{}`,
		`{"id":3,"publish":{"channel":"chat:1","data":{"text":"hi"}}}`,
		`{"id":4,"history":{"channel":"a","limit":-1,"since":{"offset":1,"epoch":"e"},"reverse":true}}`,
		`{"id":5,"presence":{"channel":"a"}}` + "\n" + `{"id":6,"presence_stats":{"channel":"a"}}`,
		`{"id":7,"refresh":{"token":"t"}}`,
		`{"id":8,"rpc":{"method":"m","data":null}}`,
		"\n\n",
		`{"id":-1}`,
		`{"id":1,"subscribe":{"channel":"\u0000\ud800"}}`,
		`[1,2,3]`,
		`{"id":1,"connect":{"token":"x"}}` + "\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cmds, err := decodeFrame(encJSON, data)
		checkPong(t, encJSON, data, cmds, err)
		if err != nil {
			if cmds != nil {
				t.Fatalf("error %v with %d commands", err, len(cmds))
			}
			return
		}
		if len(cmds) > maxFrameCommands {
			t.Fatalf("%d commands decoded, limit %d", len(cmds), maxFrameCommands)
		}
		for _, c := range cmds {
			if c == nil {
				t.Fatal("nil command without error")
			}
			_ = commandMethod(c) // must classify every command without panicking
		}
	})
}

// FuzzDecodeProtobufFrame feeds the Protobuf decoding path what a client
// could send in a binary frame; seeds are well-formed frames (here and in
// testdata/fuzz) and their corruptions. A frame decodes entirely or not at
// all, within the command limit, and every command it yields encodes back
// and decodes to the same command.
func FuzzDecodeProtobufFrame(f *testing.F) {
	frames := [][]*protocol.Command{
		{{Id: 1, Connect: &protocol.ConnectRequest{Token: "x", Name: "js"}}},
		{{Id: 1, Connect: &protocol.ConnectRequest{}}, {Id: 2, Subscribe: &protocol.SubscribeRequest{Channel: "news", Recover: true, Offset: 3, Epoch: "abc"}}},
		{{}}, // a pong
		{{Id: 3, Publish: &protocol.PublishRequest{Channel: "chat:1", Data: protocol.Raw(`{"text":"hi"}`)}}},
		{{Id: 4, History: &protocol.HistoryRequest{Channel: "a", Limit: -1, Since: &protocol.StreamPosition{Offset: 1, Epoch: "e"}, Reverse: true}}},
		{{Id: 5, Presence: &protocol.PresenceRequest{Channel: "a"}}, {Id: 6, PresenceStats: &protocol.PresenceStatsRequest{Channel: "a"}}},
		{{Id: 7, Refresh: &protocol.RefreshRequest{Token: "t"}}, {Id: 8, Rpc: &protocol.RPCRequest{Method: "m"}}},
	}
	for _, cmds := range frames {
		var b []byte
		for _, c := range cmds {
			m, err := c.MarshalCF()
			if err != nil {
				f.Fatal(err)
			}
			b = binary.AppendUvarint(b, uint64(len(m)))
			b = append(b, m...)
		}
		f.Add(b)
		f.Add(b[:len(b)-1])
	}
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		cmds, err := decodeFrame(encProtobuf, data)
		checkPong(t, encProtobuf, data, cmds, err)
		if err != nil {
			if cmds != nil {
				t.Fatalf("error %v with %d commands", err, len(cmds))
			}
			return
		}
		if len(data) > 0 && len(cmds) == 0 {
			t.Fatalf("%d bytes decoded to no command and no error", len(data))
		}
		if len(cmds) > maxFrameCommands {
			t.Fatalf("%d commands decoded, limit %d", len(cmds), maxFrameCommands)
		}
		for _, c := range cmds {
			if c == nil {
				t.Fatal("nil command without error")
			}
			_ = commandMethod(c)
			m, err := c.MarshalCF()
			if err != nil {
				t.Fatalf("re-encode: %v", err)
			}
			var back protocol.Command
			if err := back.UnmarshalCF(m); err != nil || commandMethod(&back) != commandMethod(c) || back.Id != c.Id {
				t.Fatalf("round trip: %+v -> %+v (%v)", c, &back, err)
			}
		}
	})
}

// checkPong holds the pong shortcut to the decoder: a frame isPong takes
// decodes to one command, and that command is a pong.
func checkPong(t *testing.T, enc encoding, data []byte, cmds []*protocol.Command, err error) {
	t.Helper()
	if isPong(enc, data) && (err != nil || len(cmds) != 1 || commandMethod(cmds[0]) != "pong") {
		t.Fatalf("isPong(%q) but the decoder gives %d commands, %v", data, len(cmds), err)
	}
}

// The SDKs' pongs take the shortcut; nothing else does.
func TestIsPong(t *testing.T) {
	for _, c := range []struct {
		enc  encoding
		data string
		want bool
	}{
		{encJSON, "{}", true},
		{encJSON, " {}\n", false},
		{encJSON, "{}\n ", false},
		{encJSON, "{}\n{}", false},
		{encJSON, `{"id":1}`, false},
		{encJSON, `{"id":1,"ping":{}}`, false},
		{encProtobuf, "\x00", true},
		{encProtobuf, "\x00\x00", false},
		{encProtobuf, "{}", false},
		{encJSON, "\x00", false},
	} {
		if got := isPong(c.enc, []byte(c.data)); got != c.want {
			t.Errorf("isPong(%v, %q) = %v, want %v", c.enc, c.data, got, c.want)
		}
		cmds, err := decodeFrame(c.enc, []byte(c.data))
		checkPong(t, c.enc, []byte(c.data), cmds, err)
	}
}

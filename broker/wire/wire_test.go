package wire

import (
	"encoding/json"
	"maps"
	"testing"

	"go.uber.org/goleak"

	"github.com/spindlehq/spindle/broker"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A body reads back as the publication written, data bytes as given
// (newlines included), and a ClientInfo as itself.
func TestRoundTrip(t *testing.T) {
	info := &broker.ClientInfo{ClientID: "c", UserID: "u", ConnInfo: `{"a":1}`, ChanInfo: `[2]`}
	data := json.RawMessage("{\n \"x\": \"a\\nb\"\n}")
	body, err := EncodeBody(data, broker.PublishOptions{Info: info, Tags: map[string]string{"k": "v"}}, 1234)
	if err != nil {
		t.Fatal(err)
	}
	p, err := DecodeBody(body, 7)
	if err != nil {
		t.Fatal(err)
	}
	if p.Offset != 7 || string(p.Data) != string(data) || p.Time != 1234 || !maps.Equal(p.Tags, map[string]string{"k": "v"}) || !same(p.Info, info) {
		t.Fatalf("read back %+v (info %+v)", p, p.Info)
	}
	body, _ = EncodeBody(json.RawMessage(`1`), broker.PublishOptions{}, 0)
	if p, err := DecodeBody(body, 1); err != nil || p.Info != nil || p.Tags != nil {
		t.Fatalf("server publication read back as %+v, %v", p, err)
	}
	s, _ := EncodeInfo(info)
	if got, err := DecodeInfo(s); err != nil || !same(got, info) {
		t.Fatalf("info read back as %+v, %v", got, err)
	}
	if s, _ := EncodeInfo(nil); s != "{}" {
		t.Fatalf("nil info written as %s", s)
	}
}

func same(a, b *broker.ClientInfo) bool {
	return a != nil && b != nil && a.ClientID == b.ClientID && a.UserID == b.UserID &&
		string(a.ConnInfo) == string(b.ConnInfo) && string(a.ChanInfo) == string(b.ChanInfo)
}

func TestMalformed(t *testing.T) {
	for _, body := range []string{"", "no newline", "{bad json\n1"} {
		if _, err := DecodeBody(body, 1); err == nil {
			t.Errorf("body %q decoded", body)
		}
	}
	if _, err := DecodeInfo("["); err == nil {
		t.Error("bad info decoded")
	}
}

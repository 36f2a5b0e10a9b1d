package gateway

import (
	"testing"
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
		cmds, err := decodeFrame(data)
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

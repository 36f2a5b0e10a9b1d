package server_test

import (
	"bufio"
	"context"
	"fmt"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/spindlehq/spindle/auth"
)

// curl -N reads both unidirectional streams of a running server: the
// connect push first, then a publication through the server API.
func TestUniStreamsWithCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("no curl")
	}
	srv := startServer(t, nil)
	tok, err := auth.MintConnect(secret, auth.ConnectClaims{UserID: "7", Channels: []string{"news"}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	base := strings.Replace(strings.Replace(srv.WebSocketURL(), "ws://", "http://", 1), "/connection/websocket", "", 1)
	req := fmt.Sprintf(`{"token":%q}`, tok)
	for _, tc := range []struct {
		name   string
		args   []string
		prefix string // of each push line
	}{
		{"uni_sse", []string{base + "/connection/uni_sse?cf_connect=" + url.QueryEscape(req)}, "data: "},
		{"uni_http_stream", []string{"-X", "POST", "-H", "Content-Type: application/json", "--data-binary", req, base + "/connection/uni_http_stream"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, curl, append([]string{"-sN"}, tc.args...)...)
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { cancel(); _ = cmd.Wait() }()
			lines := make(chan string, 64)
			go func() {
				sc := bufio.NewScanner(out)
				for sc.Scan() {
					lines <- sc.Text()
				}
				close(lines)
			}()
			want := func(what, prefix string) {
				t.Helper()
				for {
					select {
					case l, ok := <-lines:
						if !ok {
							t.Fatalf("curl's output ended before %s", what)
						}
						if strings.HasPrefix(l, prefix) {
							return
						}
					case <-ctx.Done():
						t.Fatalf("no %s from curl", what)
					}
				}
			}
			want("connect push", tc.prefix+`{"connect":{`)
			publish(t, srv, "news", `{"n":1}`)
			want("publication", tc.prefix+`{"channel":"news","pub":{"data":{"n":1}`)
		})
	}
}

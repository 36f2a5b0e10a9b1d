package goroutines

import (
	"bufio"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// Decompress returns r unchanged, or a gunzipping reader when r starts with
// the gzip magic bytes.
func Decompress(r io.Reader) (io.Reader, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, err := br.Peek(2)
	if err != nil || magic[0] != 0x1f || magic[1] != 0x8b {
		return br, nil // short or plain input: let the parser see it
	}
	zr, err := gzip.NewReader(br)
	if err != nil {
		return nil, fmt.Errorf("opening gzip stream: %w", err)
	}
	return zr, nil
}

// Source is an opened dump: its reader plus the time it was taken when known
// (fetch time for URLs).
type Source struct {
	io.Reader
	Name   string
	Time   time.Time
	closer io.Closer
}

// Close releases the underlying file or HTTP body.
func (s *Source) Close() error {
	if s.closer == nil {
		return nil
	}
	return s.closer.Close()
}

// Open opens a dump from a file path, "-" for stdin, or an http(s) URL;
// gzip is unwrapped. For a URL without a debug parameter, debug=2 is asked for.
func Open(ctx context.Context, name string, client *http.Client) (*Source, error) {
	var rc io.ReadCloser
	src := &Source{Name: name}
	switch {
	case name == "-":
		rc = io.NopCloser(os.Stdin)
		src.Name = "stdin"
	case strings.HasPrefix(name, "http://") || strings.HasPrefix(name, "https://"):
		body, err := fetch(ctx, name, client)
		if err != nil {
			return nil, err
		}
		rc = body
		src.Time = time.Now()
	default:
		f, err := os.Open(name)
		if err != nil {
			return nil, fmt.Errorf("opening dump: %w", err)
		}
		rc = f
	}
	r, err := Decompress(rc)
	if err != nil {
		rc.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	src.Reader, src.closer = r, rc
	return src, nil
}

// DumpURL adds debug=2 to a pprof goroutine URL that names no debug level.
func DumpURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("parsing URL: %w", err)
	}
	q := u.Query()
	if q.Get("debug") == "" {
		q.Set("debug", "2")
		u.RawQuery = q.Encode()
	}
	return u.String(), nil
}

func fetch(ctx context.Context, raw string, client *http.Client) (io.ReadCloser, error) {
	if client == nil {
		client = http.DefaultClient
	}
	u, err := DumpURL(raw)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("building request for %s: %w", u, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching dump: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("fetching dump from %s: %s", u, resp.Status)
	}
	return resp.Body, nil
}

package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/spindlehq/spindle/config"
	"github.com/spindlehq/spindle/server"
)

// compatRows are the rows of the table under "## heading" in
// docs/compatibility.md: each backticked name of a row's first cell, with
// the row's status (supported, differs or not yet).
func compatRows(t *testing.T, doc, heading string) map[string]string {
	t.Helper()
	i := strings.Index(doc, "\n## "+heading+"\n")
	if i < 0 {
		t.Fatalf("docs/compatibility.md has no section %q", heading)
	}
	section := doc[i+len(heading)+5:]
	if j := strings.Index(section, "\n## "); j >= 0 {
		section = section[:j]
	}
	rows := map[string]string{}
	for _, line := range strings.Split(section, "\n") {
		cells := strings.Split(line, " | ")
		if !strings.HasPrefix(line, "| `") || len(cells) < 3 {
			continue
		}
		status := strings.TrimSpace(cells[1])
		if status != "supported" && status != "differs" && status != "not yet" {
			t.Errorf("docs/compatibility.md, %s: row %q has status %q, not supported, differs or not yet", heading, cells[0], status)
		}
		for _, m := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(cells[0], -1) {
			rows[m[1]] = status
		}
	}
	if len(rows) == 0 {
		t.Fatalf("docs/compatibility.md, %s: no table rows", heading)
	}
	return rows
}

// switchCases are the string cases of the `switch method` in the function
// fn of a Go source file: the methods the code routes.
func switchCases(t *testing.T, file, fn string) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Name.Name != fn {
			continue
		}
		ast.Inspect(fd.Body, func(n ast.Node) bool {
			sw, ok := n.(*ast.SwitchStmt)
			if !ok {
				return true
			}
			if id, ok := sw.Tag.(*ast.Ident); !ok || id.Name != "method" {
				return true
			}
			for _, c := range sw.Body.List {
				for _, e := range c.(*ast.CaseClause).List {
					if lit, ok := e.(*ast.BasicLit); ok && lit.Kind == token.STRING {
						s, _ := strconv.Unquote(lit.Value)
						out = append(out, s)
					}
				}
			}
			return false
		})
	}
	if len(out) == 0 {
		t.Fatalf("%s: found no `switch method` cases in %s", file, fn)
	}
	sort.Strings(out)
	return out
}

func readCompatDoc(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../docs/compatibility.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Every server API method api.Handler routes has a row in the
// compatibility table; on a running gateway every method the table calls
// supported or differs is answered (not 404), and every one it calls not
// yet is 404 "method not found".
func TestCompatibilityServerAPITable(t *testing.T) {
	rows := compatRows(t, readCompatDoc(t), "Server API methods")
	routed := switchCases(t, "../../api/api.go", "call")
	for _, m := range routed {
		if _, ok := rows[m]; !ok {
			t.Errorf("the API routes %q, which docs/compatibility.md's server API table does not list", m)
		}
	}
	cfg := config.Default()
	cfg.Listen, cfg.AdminListen = "127.0.0.1:0", ""
	cfg.APIKey, cfg.TokenHMACSecret = "key", "secret"
	cfg.CaptureDir = t.TempDir()
	srv, err := server.Run(cfg, server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	for m, status := range rows {
		req, _ := http.NewRequest(http.MethodPost, srv.APIURL()+"/"+m, strings.NewReader(`{}`))
		req.Header.Set("X-API-Key", "key")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case status == "not yet" && (resp.StatusCode != 404 || !strings.Contains(string(body), `"code":104`)):
			t.Errorf("docs/compatibility.md says %s is not yet there, but /api/%s answered %d %s", m, m, resp.StatusCode, body)
		case status != "not yet" && resp.StatusCode == 404:
			t.Errorf("docs/compatibility.md says %s is %s, but /api/%s answered 404 %s", m, status, m, body)
		}
		if status != "not yet" && !slices.Contains(routed, m) {
			t.Errorf("docs/compatibility.md says %s is %s; api.go does not route it", m, status)
		}
	}
}

// Every client command the gateway dispatches has a row in the client
// commands table, and every command the table calls supported or differs
// is dispatched.
func TestCompatibilityClientCommandTable(t *testing.T) {
	rows := compatRows(t, readCompatDoc(t), "Client commands")
	routed := switchCases(t, "../../gateway/dispatch.go", "handleCommand")
	for _, m := range routed {
		if _, ok := rows[m]; !ok {
			t.Errorf("the gateway dispatches %q, which docs/compatibility.md's client command table does not list", m)
		}
	}
	for m, status := range rows {
		if in := slices.Contains(routed, m); in != (status != "not yet") {
			t.Errorf("docs/compatibility.md says client command %s is %s; dispatched by gateway/dispatch.go: %v", m, status, in)
		}
	}
}

// A proxy event is supported in the table exactly when a
// proxy_<event>_endpoint setting exists to send it to.
func TestCompatibilityProxyTable(t *testing.T) {
	rows := compatRows(t, readCompatDoc(t), "Proxy events")
	keys := map[string]bool{}
	for _, s := range config.Settings() {
		if ev, ok := strings.CutPrefix(s.Key, "proxy_"); ok && strings.HasSuffix(ev, "_endpoint") {
			keys[strings.TrimSuffix(ev, "_endpoint")] = true
		}
	}
	for ev, status := range rows {
		if strings.Contains(ev, " ") {
			continue // not an event name
		}
		if (status == "supported") != keys[ev] {
			t.Errorf("docs/compatibility.md says proxy event %s is %s; a proxy_%s_endpoint setting exists: %v", ev, status, ev, keys[ev])
		}
	}
	for ev := range keys {
		if _, ok := rows[ev]; !ok {
			t.Errorf("proxy_%s_endpoint exists; docs/compatibility.md's proxy table has no row %s", ev, ev)
		}
	}
}

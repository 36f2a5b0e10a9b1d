package goroutines

import (
	"bytes"
	"strconv"
)

// parseLabels appends the labels in b, which starts with '{' and holds
// Go-quoted pairs: {"k":"v", "k2": "v2"}. Malformed text ends the parse
// silently; whatever was parsed before it is kept.
func (p *Parser) parseLabels(dst []Label, b []byte) []Label {
	dst = dst[:0]
	if len(b) == 0 || b[0] != '{' {
		return dst
	}
	b = b[1:]
	for len(dst) < maxLabels {
		b = bytes.TrimLeft(b, " ")
		if len(b) == 0 || b[0] == '}' {
			return dst
		}
		key, rest, ok := quoted(b)
		if !ok {
			return dst
		}
		rest = bytes.TrimLeft(rest, " ")
		if len(rest) == 0 || rest[0] != ':' {
			return dst
		}
		val, rest, ok := quoted(bytes.TrimLeft(rest[1:], " "))
		if !ok {
			return dst
		}
		dst = append(dst, Label{Key: p.str(key), Value: p.str(val)})
		rest = bytes.TrimLeft(rest, " ")
		if len(rest) > 0 && rest[0] == ',' {
			rest = rest[1:]
		}
		b = rest
	}
	return dst
}

// quoted reads one Go-quoted string at the start of b.
func quoted(b []byte) (val, rest []byte, ok bool) {
	if len(b) < 2 || b[0] != '"' {
		return nil, nil, false
	}
	esc := false
	for i := 1; i < len(b); i++ {
		switch {
		case esc:
			esc = false
		case b[i] == '\\':
			esc = true
		case b[i] == '"':
			raw := b[:i+1]
			if bytes.IndexByte(raw, '\\') < 0 {
				return raw[1:i], b[i+1:], true
			}
			s, err := strconv.Unquote(string(raw))
			if err != nil {
				return nil, nil, false
			}
			return []byte(s), b[i+1:], true
		}
	}
	return nil, nil, false
}

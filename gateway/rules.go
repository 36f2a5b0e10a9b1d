package gateway

import (
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/spindlehq/spindle/config"
)

// rules resolves a channel name to its namespace's options. It is built
// once by New and only read after: a map lookup per call, no scan.
type rules struct {
	plain      *config.ChannelOptions
	namespaces map[string]*config.ChannelOptions
	maxLen     int
}

func newRules(c *Config) rules {
	r := rules{plain: &c.Channel, namespaces: make(map[string]*config.ChannelOptions, len(c.Namespaces)), maxLen: c.MaxChannelLength}
	for name, o := range c.Namespaces {
		r.namespaces[name] = &o
	}
	return r
}

// resolve checks the channel name and returns the options of its namespace
// (the part before the first ':'), or of plain channels. The options are
// shared: callers must not change them.
func (r *rules) resolve(ch string) (*config.ChannelOptions, error) {
	if ch == "" || len(ch) > r.maxLen || !utf8.ValidString(ch) {
		return nil, errorf(ErrBadRequest, "channel %.64q: empty, longer than %d bytes or not UTF-8", ch, r.maxLen)
	}
	ns, _, found := strings.Cut(ch, ":")
	if !found {
		return r.plain, nil
	}
	if o, ok := r.namespaces[ns]; ok {
		return o, nil
	}
	return nil, errorf(ErrUnknownChannel, "channel %q: namespace %q", ch, ns)
}

// userAllowed applies user-limited channels: "dialog#42,43" admits users 42 and 43 only.
func userAllowed(ch, user string) bool {
	_, users, ok := strings.Cut(ch, "#")
	if !ok {
		return true
	}
	return user != "" && slices.Contains(strings.Split(users, ","), user)
}

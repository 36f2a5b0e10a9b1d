package auth

import (
	"crypto/subtle"
	"net/http"
	"strings"
)

// APIKeyMatches reports whether r presents key, in the X-API-Key header or
// as "Authorization: apikey KEY", compared in constant time. An empty key
// matches nothing.
func APIKeyMatches(r *http.Request, key string) bool {
	got := r.Header.Get("X-API-Key")
	if got == "" {
		got, _ = strings.CutPrefix(r.Header.Get("Authorization"), "apikey ")
	}
	return key != "" && subtle.ConstantTimeCompare([]byte(got), []byte(key)) == 1
}

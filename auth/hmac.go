package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"hash"
	"sync"

	"github.com/golang-jwt/jwt/v5"
)

// hmacKey is the HMAC secret the verifier hands to golang-jwt: it keeps one
// pool of keyed hashers per algorithm, so checking a token builds no HMAC.
type hmacKey struct {
	pools [3]sync.Pool // HS256, HS384, HS512: *hmacHasher keyed with the secret
}

type hmacHasher struct {
	h   hash.Hash
	sum [sha512.Size]byte
	buf [256]byte // the signing string goes through here: hash.Write takes bytes
}

func newHMACKey(secret []byte) *hmacKey {
	k := &hmacKey{}
	for i, newHash := range [3]func() hash.Hash{sha256.New, sha512.New384, sha512.New} {
		k.pools[i].New = func() any { return &hmacHasher{h: hmac.New(newHash, secret)} }
	}
	return k
}

// pooledHMAC is golang-jwt's HMAC method with the hasher taken from the
// key's pool; it replaces the stock HS256/384/512 for parsing (signing
// goes through jwt.SigningMethodHS256 and its kin, which stay as they are).
type pooledHMAC struct {
	*jwt.SigningMethodHMAC
	pool int // index into hmacKey.pools
}

func init() {
	for i, m := range []*jwt.SigningMethodHMAC{jwt.SigningMethodHS256, jwt.SigningMethodHS384, jwt.SigningMethodHS512} {
		p := &pooledHMAC{SigningMethodHMAC: m, pool: i}
		jwt.RegisterSigningMethod(m.Alg(), func() jwt.SigningMethod { return p })
	}
}

// Verify checks sig over signingString. A key other than *hmacKey goes to
// the stock method.
func (m *pooledHMAC) Verify(signingString string, sig []byte, key any) error {
	k, ok := key.(*hmacKey)
	if !ok {
		return m.SigningMethodHMAC.Verify(signingString, sig, key)
	}
	hh := k.pools[m.pool].Get().(*hmacHasher)
	defer k.pools[m.pool].Put(hh)
	hh.h.Reset()
	for s := signingString; len(s) > 0; {
		n := copy(hh.buf[:], s)
		hh.h.Write(hh.buf[:n])
		s = s[n:]
	}
	if !hmac.Equal(sig, hh.h.Sum(hh.sum[:0])) {
		return jwt.ErrSignatureInvalid
	}
	return nil
}

// Package auth verifies the JWTs clients present — connection tokens and
// subscription tokens, HS256/RS256/ES256 — and mints HS256 ones for tests
// and the load generator; and it checks the server API's key.
package auth

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Config says which keys verify tokens. Any non-empty combination is allowed.
type Config struct {
	HMACSecret     string // HS256/HS384/HS512
	RSAPublicKey   string // PEM (PKIX or PKCS1) for RS256/384/512
	ECDSAPublicKey string // PEM for ES256/384/512
	Audience       string // checked when non-empty
	Issuer         string // checked when non-empty
}

// Leeway is the clock skew tolerated on exp and nbf.
const Leeway = 2 * time.Second

// Verifier checks token signatures and claims.
type Verifier struct {
	cfg    Config
	hmac   *hmacKey
	rsa    *rsa.PublicKey
	ecdsa  *ecdsa.PublicKey
	algs   []string
	parser *jwt.Parser
}

// ErrTokenExpired is returned (wrapped) for a token past its exp.
var ErrTokenExpired = errors.New("token expired")

// ErrInvalidToken is returned (wrapped) for bad signatures, algorithms,
// malformed tokens and wrong audience or issuer.
var ErrInvalidToken = errors.New("invalid token")

// NewVerifier parses the configured keys.
func NewVerifier(cfg Config) (*Verifier, error) {
	v := &Verifier{cfg: cfg}
	if cfg.HMACSecret != "" {
		v.hmac = newHMACKey([]byte(cfg.HMACSecret))
		v.algs = append(v.algs, "HS256", "HS384", "HS512")
	}
	if cfg.RSAPublicKey != "" {
		k, err := jwt.ParseRSAPublicKeyFromPEM([]byte(cfg.RSAPublicKey))
		if err != nil {
			return nil, fmt.Errorf("rsa public key: %w", err)
		}
		v.rsa = k
		v.algs = append(v.algs, "RS256", "RS384", "RS512")
	}
	if cfg.ECDSAPublicKey != "" {
		k, err := jwt.ParseECPublicKeyFromPEM([]byte(cfg.ECDSAPublicKey))
		if err != nil {
			return nil, fmt.Errorf("ecdsa public key: %w", err)
		}
		v.ecdsa = k
		v.algs = append(v.algs, "ES256", "ES384", "ES512")
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods(v.algs), jwt.WithLeeway(Leeway)}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	v.parser = jwt.NewParser(opts...)
	return v, nil
}

// Enabled is true when at least one key is configured.
func (v *Verifier) Enabled() bool { return len(v.algs) > 0 }

// The key is chosen by the token's algorithm family, so an HS256 token can
// never be checked against an RSA public key used as an HMAC secret.
func (v *Verifier) key(t *jwt.Token) (any, error) {
	switch t.Method.(type) {
	case *pooledHMAC:
		if v.hmac != nil {
			return v.hmac, nil
		}
	case *jwt.SigningMethodRSA:
		if v.rsa != nil {
			return v.rsa, nil
		}
	case *jwt.SigningMethodECDSA:
		if v.ecdsa != nil {
			return v.ecdsa, nil
		}
	}
	return nil, fmt.Errorf("no key for algorithm %v", t.Header["alg"])
}

// claims are the Centrifugo token claims both token kinds use. They are
// decoded once per connect, so the dates are read in place (jwt.NumericDate
// decodes each through a json.Unmarshal of its own).
type claims struct {
	Subject   string           `json:"sub,omitempty"`
	Issuer    string           `json:"iss,omitempty"`
	Audience  jwt.ClaimStrings `json:"aud,omitempty"`
	ExpiresAt date             `json:"exp"`
	NotBefore date             `json:"nbf"`
	IssuedAt  date             `json:"iat"`
	Info      json.RawMessage  `json:"info,omitempty"`
	B64Info   string           `json:"b64info,omitempty"`
	Channels  []string         `json:"channels,omitempty"`
	Channel   string           `json:"channel,omitempty"`
}

func (c *claims) GetExpirationTime() (*jwt.NumericDate, error) { return c.ExpiresAt.get() }
func (c *claims) GetNotBefore() (*jwt.NumericDate, error)      { return c.NotBefore.get() }
func (c *claims) GetIssuedAt() (*jwt.NumericDate, error)       { return c.IssuedAt.get() }
func (c *claims) GetIssuer() (string, error)                   { return c.Issuer, nil }
func (c *claims) GetSubject() (string, error)                  { return c.Subject, nil }
func (c *claims) GetAudience() (jwt.ClaimStrings, error)       { return c.Audience, nil }

// date is a NumericDate claim: seconds since the epoch, fractions allowed.
type date struct {
	d   jwt.NumericDate
	set bool
}

func (t *date) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*t = date{}
		return nil
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fmt.Errorf("date claim %.32q: not a number", b)
	}
	sec, frac := math.Modf(f)
	t.d = jwt.NumericDate{Time: time.Unix(int64(sec), int64(frac*1e9))}
	t.set = true
	return nil
}

func (t *date) get() (*jwt.NumericDate, error) {
	if !t.set {
		return nil, nil
	}
	return &t.d, nil
}

func (v *Verifier) parse(token, kind string) (*claims, error) {
	if !v.Enabled() {
		return nil, fmt.Errorf("verify %s token: no key configured: %w", kind, ErrInvalidToken)
	}
	var c claims
	_, err := v.parser.ParseWithClaims(token, &c, v.key)
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return nil, fmt.Errorf("verify %s token: %w", kind, ErrTokenExpired)
	case err != nil:
		return nil, fmt.Errorf("verify %s token: %v: %w", kind, err, ErrInvalidToken)
	}
	if c.B64Info != "" {
		raw, err := base64.StdEncoding.DecodeString(c.B64Info)
		if err != nil {
			return nil, fmt.Errorf("verify %s token: b64info: %v: %w", kind, err, ErrInvalidToken)
		}
		c.Info = raw
	}
	if len(c.Info) > 0 && !json.Valid(c.Info) {
		return nil, fmt.Errorf("verify %s token: info is not JSON: %w", kind, ErrInvalidToken)
	}
	return &c, nil
}

// ConnectClaims are the claims of a connection token.
type ConnectClaims struct {
	UserID   string          // "sub"; empty is an anonymous user with a token
	ExpireAt int64           // unix seconds from "exp" (0 = never)
	Info     json.RawMessage // "info" (or decoded "b64info")
	Channels []string        // "channels": server-side subscriptions made on connect
}

// SubscribeClaims are the claims of a subscription token.
type SubscribeClaims struct {
	UserID   string          // "sub"
	Channel  string          // "channel", required
	ExpireAt int64           // "exp"
	Info     json.RawMessage // "info"
}

func expireAt(c *claims) int64 {
	if !c.ExpiresAt.set {
		return 0
	}
	return c.ExpiresAt.d.Unix()
}

// VerifyConnect checks a connection token.
func (v *Verifier) VerifyConnect(token string) (ConnectClaims, error) {
	c, err := v.parse(token, "connection")
	if err != nil {
		return ConnectClaims{}, err
	}
	return ConnectClaims{UserID: c.Subject, ExpireAt: expireAt(c), Info: c.Info, Channels: c.Channels}, nil
}

// VerifySubscribe checks a subscription token.
func (v *Verifier) VerifySubscribe(token string) (SubscribeClaims, error) {
	c, err := v.parse(token, "subscription")
	if err != nil {
		return SubscribeClaims{}, err
	}
	if c.Channel == "" {
		return SubscribeClaims{}, fmt.Errorf("verify subscription token: no channel claim: %w", ErrInvalidToken)
	}
	return SubscribeClaims{UserID: c.Subject, Channel: c.Channel, ExpireAt: expireAt(c), Info: c.Info}, nil
}

// mintClaims are claims as minted: golang-jwt's registered claims encode the dates.
type mintClaims struct {
	jwt.RegisteredClaims
	Info     json.RawMessage `json:"info,omitempty"`
	Channels []string        `json:"channels,omitempty"`
	Channel  string          `json:"channel,omitempty"`
}

func mint(secret string, c mintClaims, ttl time.Duration) (string, error) {
	if secret == "" {
		return "", errors.New("mint token: empty secret")
	}
	now := time.Now()
	c.IssuedAt = jwt.NewNumericDate(now)
	if ttl != 0 {
		c.ExpiresAt = jwt.NewNumericDate(now.Add(ttl))
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(secret))
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	return s, nil
}

// MintConnect creates an HS256 connection token; ttl 0 means no expiry, a
// negative ttl an already expired token (for tests).
func MintConnect(secret string, c ConnectClaims, ttl time.Duration) (string, error) {
	return mint(secret, mintClaims{RegisteredClaims: jwt.RegisteredClaims{Subject: c.UserID}, Info: c.Info, Channels: c.Channels}, ttl)
}

// MintSubscribe creates an HS256 subscription token for c.Channel.
func MintSubscribe(secret string, c SubscribeClaims, ttl time.Duration) (string, error) {
	if c.Channel == "" {
		return "", errors.New("mint subscription token: empty channel")
	}
	return mint(secret, mintClaims{RegisteredClaims: jwt.RegisteredClaims{Subject: c.UserID}, Info: c.Info, Channel: c.Channel}, ttl)
}

// Package apikey is the format of Orbit's secrets: API keys ("ok_") and
// satellite deploy keys ("odk_"). A key is <kind>_<prefix>_<secret>; the
// prefix finds its record (contexts, docs/contexts.md) and only a SHA-256 of
// the whole key is ever stored, compared in constant time.
package apikey

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"errors"
	"strings"
)

// Kinds of key.
const (
	KindAPI    = "ok"
	KindDeploy = "odk"
)

const (
	prefixLen = 8
	secretLen = 32
	// MaxLen bounds a presented key; anything longer is refused unread.
	MaxLen = 64
)

var enc = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// ErrMalformed means the text is not a key of the expected kind.
var ErrMalformed = errors.New("malformed key")

// Generate returns a new key of kind.
func Generate(kind string) string {
	b := make([]byte, 25)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	s := enc.EncodeToString(b)
	return kind + "_" + s[:prefixLen] + "_" + s[prefixLen:prefixLen+secretLen]
}

// Prefix returns the lookup prefix of a key of kind.
func Prefix(kind, key string) (string, error) {
	if len(key) > MaxLen {
		return "", ErrMalformed
	}
	rest, ok := strings.CutPrefix(key, kind+"_")
	if !ok {
		return "", ErrMalformed
	}
	prefix, secret, ok := strings.Cut(rest, "_")
	if !ok || len(prefix) != prefixLen || len(secret) != secretLen {
		return "", ErrMalformed
	}
	return prefix, nil
}

// Hash is what records store.
func Hash(key string) []byte {
	h := sha256.Sum256([]byte(key))
	return h[:]
}

// Matches reports whether key hashes to stored, in constant time.
func Matches(key string, stored []byte) bool {
	return subtle.ConstantTimeCompare(Hash(key), stored) == 1
}

// Package logstream holds the log broker's conventions — how a tenant's
// stream maps onto JetStream names, subjects, headers and metadata — the
// checked construction of a message, and Publisher, which publishes
// straight to JetStream under those conventions without a hop through the
// broker (docs/logbroker.md). The broker service and its clients share it.
package logstream

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
)

// NATS subject and JetStream name layout.
const (
	// SubjectPrefix.<tenant>.<subject>: what a stream captures. Plain NATS
	// publishers publish here too.
	SubjectPrefix = "lb"
	// KeyedPrefix.<tenant>.<stream>.<key>: keyed messages of a compacted
	// stream, so JetStream keeps the newest per key (MaxMsgsPerSubject 1).
	KeyedPrefix = "lbk"
	// CursorPrefix.<tenant>.<stream>.<consumer>: cursors.
	CursorPrefix = "lbcur"
	// CursorStream is the compacted JetStream stream holding cursors.
	CursorStream = "LB_CURSORS"

	HdrKey     = "Orbit-Key"     // the message key, base64
	HdrSubject = "Orbit-Subject" // the publisher's subject of a keyed message

	MetaTenant  = "orbit.tenant"
	MetaName    = "orbit.stream"
	MetaSubject = "orbit.subject"
	MetaCompact = "orbit.compact"

	// MaxNameBytes bounds a stream name.
	MaxNameBytes = 40
	// MaxSubjectBytes bounds a stream's or a message's subject.
	MaxSubjectBytes = 256
)

// ValidName: 1–40 of [A-Za-z0-9_-].
func ValidName(kind, n string) error {
	if n == "" || len(n) > MaxNameBytes {
		return fmt.Errorf("%s must be 1 to %d characters", kind, MaxNameBytes)
	}
	for _, r := range n {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return fmt.Errorf("%s %q: only letters, digits, '-' and '_'", kind, n)
		}
	}
	return nil
}

// JSName is the JetStream stream of a tenant's stream. The tenant is hashed
// (tenant IDs may contain '_'); the stream's metadata names the tenant and
// every lookup checks it.
func JSName(tenant, name string) string {
	h := sha256.Sum256([]byte(tenant))
	return "LB_" + hex.EncodeToString(h[:8]) + "_" + name
}

// ValidSubject checks a dot-separated subject; wildcards ('*' tokens and a
// final '>') only where allowed.
func ValidSubject(s string, wildcards bool) error {
	if s == "" || len(s) > MaxSubjectBytes {
		return fmt.Errorf("subject must be 1 to %d bytes", MaxSubjectBytes)
	}
	toks := strings.Split(s, ".")
	for i, t := range toks {
		switch {
		case t == "":
			return fmt.Errorf("subject %q has an empty token", s)
		case t == "*" || t == ">":
			if !wildcards {
				return fmt.Errorf("subject %q: wildcards are for stream subjects, not messages", s)
			}
			if t == ">" && i != len(toks)-1 {
				return fmt.Errorf("subject %q: '>' must be the last token", s)
			}
		default:
			for _, r := range t {
				if r <= ' ' || r == 0x7f || r == '*' || r == '>' {
					return fmt.Errorf("subject %q: no spaces, control characters or wildcards inside a token", s)
				}
			}
		}
	}
	return nil
}

func Literal(subject string) bool {
	return !strings.Contains("."+subject+".", ".*.") && !strings.HasSuffix("."+subject, ".>")
}

// matches reports whether a literal subject falls under pattern.
func Matches(pattern, subject string) bool {
	p, s := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, t := range p {
		if t == ">" {
			return len(s) > i
		}
		if i >= len(s) || (t != "*" && t != s[i]) {
			return false
		}
	}
	return len(p) == len(s)
}

func NATSSubject(tenant, subject string) string {
	return SubjectPrefix + "." + tenant + "." + subject
}

func UserSubject(tenant, natsSubj string) string {
	return strings.TrimPrefix(natsSubj, SubjectPrefix+"."+tenant+".")
}

func KeyedSubject(tenant, stream string, key []byte) string {
	return KeyedPrefix + "." + tenant + "." + stream + "." + base64.RawURLEncoding.EncodeToString(key)
}

func KeyedPattern(tenant, stream string) string {
	return KeyedPrefix + "." + tenant + "." + stream + ".*"
}

func CursorSubject(tenant, stream, consumer string) string {
	return CursorPrefix + "." + tenant + "." + stream + "." + consumer
}

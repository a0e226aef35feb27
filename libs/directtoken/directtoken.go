// Package directtoken issues and verifies the short-lived tokens of direct
// mode (docs/direct.md): a gateway signs one (Ed25519 JWT) for one satellite
// of the caller's tenant; the satellite accepts it only if the signature is
// from its region's key (delivered over its link), the audience is its own
// ID, the tenant is its own and it has not expired.
package directtoken

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/orbitplane/orbit/libs/etcdkv"
)

// Key is where the region's signing key (an Ed25519 seed, base64) lives in
// its etcd; the first gateway or connector to start creates it.
const Key = "/orbit/direct/v1/signing-key"

// Issuer names Orbit's gateways in the token.
const Issuer = "orbit-gateway"

// Limits (docs/limits.md).
const (
	DefaultTTL = time.Minute
	MaxTTL     = 15 * time.Minute
	// Leeway tolerates clock skew between gateway and satellite.
	Leeway = 5 * time.Second
)

// LoadOrCreate returns the region's signing key, creating it if no one has
// (create-if-absent: every replica agrees on one).
func LoadOrCreate(ctx context.Context, kv clientv3.KV) (ed25519.PrivateKey, error) {
	seed := make([]byte, ed25519.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		return nil, err
	}
	created, existing, err := etcdkv.CreateIfAbsent(ctx, kv, Key, []byte(base64.StdEncoding.EncodeToString(seed)))
	if err != nil {
		return nil, fmt.Errorf("directtoken: %w", err)
	}
	if !created {
		if existing == nil {
			return nil, errors.New("directtoken: the signing key was deleted while loading; try again")
		}
		seed, err = base64.StdEncoding.DecodeString(string(existing))
		if err != nil || len(seed) != ed25519.SeedSize {
			return nil, errors.New("directtoken: the stored signing key is malformed")
		}
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// Claims of a direct-mode token.
type Claims struct {
	Tenant string `json:"tenant"`
	jwt.RegisteredClaims
}

// Issue signs a token for one satellite of one tenant, valid for ttl
// (capped at MaxTTL).
func Issue(key ed25519.PrivateKey, satelliteID, tenantID string, ttl time.Duration) (string, time.Time, error) {
	if satelliteID == "" || tenantID == "" {
		return "", time.Time{}, errors.New("directtoken: satellite and tenant are required")
	}
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	ttl = min(ttl, MaxTTL)
	now := time.Now()
	exp := now.Add(ttl)
	c := Claims{Tenant: tenantID, RegisteredClaims: jwt.RegisteredClaims{
		Issuer: Issuer, Subject: tenantID, Audience: jwt.ClaimStrings{satelliteID},
		IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(exp), ID: uuid.NewString(),
	}}
	s, err := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c).SignedString(key)
	return s, exp, err
}

// ErrInvalid wraps every refusal; the message says why.
var ErrInvalid = errors.New("direct token refused")

// Verify checks a token for this satellite and tenant against the accepted
// public keys.
func Verify(token string, keys []ed25519.PublicKey, satelliteID, tenantID string) (*Claims, error) {
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: this satellite has no gateway keys yet (not linked)", ErrInvalid)
	}
	var last error
	for _, k := range keys {
		var c Claims
		_, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return k, nil },
			jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}), jwt.WithAudience(satelliteID),
			jwt.WithIssuer(Issuer), jwt.WithExpirationRequired(), jwt.WithLeeway(Leeway))
		if err != nil {
			last = err
			if errors.Is(err, jwt.ErrTokenSignatureInvalid) {
				continue // maybe another accepted key
			}
			break
		}
		if c.Tenant != tenantID {
			return nil, fmt.Errorf("%w: issued for another tenant", ErrInvalid)
		}
		return &c, nil
	}
	return nil, fmt.Errorf("%w: %v", ErrInvalid, last)
}

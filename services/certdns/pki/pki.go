// Package pki is the platform CA of a region and the certificates it issues
// for satellite names (<uuid>.satellites.<domain>). The CA is an operator's
// (files) or generated once and kept in the region's etcd with
// create-if-absent, so every certdns replica signs with the same one.
package pki

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/orbitplane/orbit/libs/etcdkv"
)

// CAKey is where a generated CA lives in the region's etcd.
const CAKey = "/orbit/certdns/v1/ca"

// CALifetime is how long a generated CA is valid.
const CALifetime = 10 * 365 * 24 * time.Hour

// CA signs satellite certificates.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	key     *ecdsa.PrivateKey
}

type stored struct {
	CertPEM string `json:"cert_pem"`
	KeyPEM  string `json:"key_pem"`
}

// Parse reads a CA from PEM certificate and (EC) private key.
func Parse(certPEM, keyPEM []byte) (*CA, error) {
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, errors.New("pki: CA certificate is not a PEM CERTIFICATE")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: CA certificate: %w", err)
	}
	if !cert.IsCA {
		return nil, errors.New("pki: the certificate is not a CA (basicConstraints CA:FALSE)")
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, errors.New("pki: CA key is not PEM")
	}
	var key *ecdsa.PrivateKey
	switch kb.Type {
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(kb.Bytes)
	case "PRIVATE KEY":
		var k any
		k, err = x509.ParsePKCS8PrivateKey(kb.Bytes)
		if err == nil {
			var ok bool
			if key, ok = k.(*ecdsa.PrivateKey); !ok {
				err = errors.New("only ECDSA CA keys are supported")
			}
		}
	default:
		err = fmt.Errorf("unsupported PEM block %q", kb.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("pki: CA key: %w", err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, errors.New("pki: the CA key does not match the CA certificate")
	}
	return &CA{Cert: cert, CertPEM: certPEM, key: key}, nil
}

// Generate makes a new self-signed CA for a domain.
func Generate(domain string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "Orbit platform CA (" + domain + ")", Organization: []string{"Orbit"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CALifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		// The CA only vouches for the satellites zone.
		PermittedDNSDomainsCritical: true,
		PermittedDNSDomains:         []string{"satellites." + domain},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}

// LoadOrCreate returns the region's CA from etcd, generating and storing it
// first if no replica has yet (create-if-absent: concurrent replicas agree
// on one).
func LoadOrCreate(ctx context.Context, kv clientv3.KV, domain string) (*CA, error) {
	certPEM, keyPEM, err := Generate(domain)
	if err != nil {
		return nil, fmt.Errorf("pki: generate CA: %w", err)
	}
	raw, _ := json.Marshal(stored{CertPEM: string(certPEM), KeyPEM: string(keyPEM)})
	created, existing, err := etcdkv.CreateIfAbsent(ctx, kv, CAKey, raw)
	if err != nil {
		return nil, err
	}
	if !created {
		if existing == nil {
			return nil, errors.New("pki: the CA key was deleted while starting; start again")
		}
		var s stored
		if err := json.Unmarshal(existing, &s); err != nil {
			return nil, fmt.Errorf("pki: stored CA: %w", err)
		}
		certPEM, keyPEM = []byte(s.CertPEM), []byte(s.KeyPEM)
	}
	return Parse(certPEM, keyPEM)
}

// Issued is a leaf certificate with its key, in PEM.
type Issued struct {
	DNSName   string
	CertPEM   []byte
	KeyPEM    []byte
	Serial    string
	NotAfter  time.Time
	NotBefore time.Time
}

// Issue signs a certificate for one name under the CA's zone, good for
// serving (direct mode) and for mutual TLS as a client (the satellite link).
func (ca *CA) Issue(dnsName string, lifetime time.Duration) (Issued, error) {
	return ca.IssueFor(dnsName, nil, lifetime)
}

// IssueFor is Issue with IP addresses too (a service reached by IP, such as
// a connector on loopback in orbit dev).
func (ca *CA) IssueFor(dnsName string, ips []net.IP, lifetime time.Duration) (Issued, error) {
	for _, zone := range ca.Cert.PermittedDNSDomains {
		if !strings.HasSuffix(dnsName, "."+zone) {
			return Issued{}, fmt.Errorf("pki: %s is outside the CA's zone %s", dnsName, zone)
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Issued{}, err
	}
	// Certificates hold whole seconds; so does Issued, so a stored NotAfter
	// equals the one a holder reads from the certificate.
	now := time.Now().Truncate(time.Second)
	sn := serial()
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: dnsName},
		DNSNames:     []string{dnsName},
		NotBefore:    now.Add(-min(5*time.Minute, lifetime/10)), // clock skew
		NotAfter:     now.Add(lifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return Issued{}, fmt.Errorf("pki: sign %s: %w", dnsName, err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return Issued{}, err
	}
	return Issued{
		DNSName: dnsName, Serial: sn.Text(16), NotBefore: tmpl.NotBefore, NotAfter: tmpl.NotAfter,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
	}, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n.Add(n, big.NewInt(1))
}

// Revoked names one revoked certificate for a CRL.
type Revoked struct {
	Serial    string // hex, as Issued.Serial
	RevokedAt time.Time
}

// CRL signs a certificate revocation list (DER) of the given certificates,
// valid for validity.
func (ca *CA) CRL(revoked []Revoked, number int64, validity time.Duration) ([]byte, error) {
	now := time.Now()
	tmpl := &x509.RevocationList{Number: big.NewInt(number), ThisUpdate: now, NextUpdate: now.Add(validity)}
	for _, r := range revoked {
		sn, ok := new(big.Int).SetString(r.Serial, 16)
		if !ok {
			continue
		}
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: sn, RevocationTime: r.RevokedAt})
	}
	return x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.key)
}

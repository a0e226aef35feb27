package satellite

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/orbitplane/orbit/libs/connectclient"
	"github.com/orbitplane/orbit/libs/obslog"
	connectorv1 "github.com/orbitplane/orbit/proto/orbit/connector/v1"
)

// heldCert is the certificate the satellite serves direct mode with and
// presents to the connector (mutual TLS). It lives in <data-dir>/tls.
type heldCert struct {
	tls       *tls.Certificate
	dnsName   string
	serial    string
	notBefore time.Time
	notAfter  time.Time
}

// renewAt is when the satellite asks for a new certificate: at 2/3 of the
// lifetime.
func (h *heldCert) renewAt() time.Time {
	return h.notBefore.Add(h.notAfter.Sub(h.notBefore) * 2 / 3)
}

const (
	certFile = "cert.pem"
	keyFile  = "key.pem"
	caFile   = "ca.pem"
)

func tlsDir(dataDir string) string { return filepath.Join(dataDir, "tls") }

// parseHeld checks a certificate and its key belong together and reads its
// name and validity.
func parseHeld(certPEM, keyPEM []byte) (*heldCert, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("satellite: certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("satellite: certificate: %w", err)
	}
	if len(leaf.DNSNames) == 0 {
		return nil, errors.New("satellite: certificate names no DNS name")
	}
	pair.Leaf = leaf
	return &heldCert{tls: &pair, dnsName: leaf.DNSNames[0], serial: leaf.SerialNumber.Text(16),
		notBefore: leaf.NotBefore, notAfter: leaf.NotAfter}, nil
}

// loadHeld reads the certificate kept in the data dir; nil if there is none.
func loadHeld(dataDir string) (*heldCert, error) {
	dir := tlsDir(dataDir)
	certPEM, err := os.ReadFile(filepath.Join(dir, certFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("satellite: certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, keyFile))
	if err != nil {
		return nil, fmt.Errorf("satellite: certificate key: %w", err)
	}
	return parseHeld(certPEM, keyPEM)
}

// writeAtomic writes each file via a temporary and a rename, key first, so
// a crash leaves either the old pair or a new key with the old certificate
// (which parseHeld refuses, and the satellite then asks again).
func writeAtomic(dir string, names []string, data map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, name := range names {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path+".tmp", data[name], 0o600); err != nil {
			return err
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			return err
		}
	}
	return nil
}

// onCertificate takes a delivered certificate: checked, saved to the data
// dir, then served from the next handshake on (hot reload, no restart).
func (a *Agent) onCertificate(ctx context.Context, d *connectorv1.CertificateDelivery) error {
	h, err := parseHeld(d.CertPem, d.KeyPem)
	if err != nil {
		return err
	}
	if len(d.CaPem) > 0 {
		roots, err := connectclient.CertPool(d.CaPem)
		if err != nil {
			return fmt.Errorf("satellite: delivered CA: %w", err)
		}
		if _, err := h.tls.Leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: h.dnsName}); err != nil {
			return fmt.Errorf("satellite: delivered certificate does not verify against the delivered CA: %w", err)
		}
	}
	if err := writeAtomic(tlsDir(a.cfg.DataDir), []string{keyFile, certFile, caFile},
		map[string][]byte{keyFile: d.KeyPem, certFile: d.CertPem, caFile: d.CaPem}); err != nil {
		return fmt.Errorf("satellite: save certificate: %w", err)
	}
	prev := a.cert.Swap(h)
	a.log.InfoContext(ctx, "certificate installed", obslog.Event("satellite.certificate"), "dns_name", h.dnsName, "serial", h.serial,
		"not_after", h.notAfter.UTC().Format(time.RFC3339), "renewal", prev != nil)
	return nil
}

// Certificate reports the certificate held (empty name if none).
func (a *Agent) Certificate() (dnsName, serial string, notAfter time.Time) {
	h := a.cert.Load()
	if h == nil {
		return "", "", time.Time{}
	}
	return h.dnsName, h.serial, h.notAfter
}

// clientCertificate presents the held certificate to the connector.
func (a *Agent) clientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if h := a.cert.Load(); h != nil && time.Now().Before(h.notAfter) {
		return h.tls, nil
	}
	// None yet, or expired (the connector renews it): the deploy key.
	return &tls.Certificate{}, nil
}

// serverCertificate serves direct mode with the held certificate.
func (a *Agent) serverCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if h := a.cert.Load(); h != nil {
		return h.tls, nil
	}
	return nil, errors.New("satellite: no certificate yet (direct mode starts once the cloud delivers one)")
}

// renewLoop asks for a new certificate over the link once the held one is
// past 2/3 of its lifetime, and again every retry while none arrived.
func (a *Agent) renewLoop(ctx context.Context, l *linkState) {
	var asked string // serial a renewal was requested for
	var askedAt time.Time
	for {
		wait := time.Second // no certificate yet: look again soon
		if h := a.cert.Load(); h != nil {
			life := h.notAfter.Sub(h.notBefore)
			check := min(max(life/100, 50*time.Millisecond), time.Minute)
			now := time.Now()
			if !now.Before(h.renewAt()) && (asked != h.serial || now.Sub(askedAt) > 20*check) {
				if err := l.send(&connectorv1.ConnectRequest{Frame: &connectorv1.ConnectRequest_Renew{Renew: &connectorv1.RenewCertificate{Serial: h.serial}}}); err != nil {
					return
				}
				a.log.InfoContext(ctx, "certificate renewal requested", obslog.Event("satellite.renew"), "serial", h.serial, "not_after", h.notAfter.UTC().Format(time.RFC3339))
				asked, askedAt = h.serial, now
			}
			wait = check
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

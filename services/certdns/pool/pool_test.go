package pool_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orbitplane/orbit/libs/testing/testetcd"
	"github.com/orbitplane/orbit/libs/testing/testwait"
	certdnsv1 "github.com/orbitplane/orbit/proto/orbit/certdns/v1"
	"github.com/orbitplane/orbit/services/certdns/pki"
	"github.com/orbitplane/orbit/services/certdns/pool"
)

const domain = "orbit.test"

// TestOneCAForEveryReplica: replicas starting at once on one etcd agree on
// one generated CA.
func TestOneCAForEveryReplica(t *testing.T) {
	_, cli := testetcd.Start(t)
	cas := make([]*pki.CA, 5)
	var wg sync.WaitGroup
	for i := range cas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ca, err := pki.LoadOrCreate(context.Background(), cli, domain)
			if err != nil {
				t.Error(err)
				return
			}
			cas[i] = ca
		}()
	}
	wg.Wait()
	for i, ca := range cas {
		if ca == nil || string(ca.CertPEM) != string(cas[0].CertPEM) {
			t.Fatalf("replica %d has another CA", i)
		}
	}
	if !cas[0].Cert.IsCA || cas[0].Cert.PermittedDNSDomains[0] != "satellites."+domain {
		t.Fatalf("CA %v: want a CA constrained to satellites.%s", cas[0].Cert.Subject, domain)
	}
}

func TestOperatorCA(t *testing.T) {
	certPEM, keyPEM, err := pki.Generate(domain)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.Parse(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Issue("x.satellites."+domain, time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Issue("x.example.com", time.Hour); err == nil {
		t.Fatal("issued a name outside the CA's zone")
	}
	_, otherKey, _ := pki.Generate(domain)
	if _, err := pki.Parse(certPEM, otherKey); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("a key of another CA: %v", err)
	}
	if _, err := pki.Parse([]byte("junk"), keyPEM); err == nil {
		t.Fatal("junk accepted as a CA certificate")
	}
}

func newPool(t *testing.T, size, low int) (*pool.Pool, *pki.CA, func() []*pool.Pool) {
	t.Helper()
	_, cli := testetcd.Start(t)
	ca, err := pki.LoadOrCreate(context.Background(), cli, domain)
	if err != nil {
		t.Fatal(err)
	}
	mk := func() *pool.Pool {
		p, err := pool.New(pool.Config{Domain: domain, Size: size, LowWatermark: low, Lifetime: 24 * time.Hour}, cli, ca, pool.NewMetrics())
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := mk()
	return p, ca, func() []*pool.Pool { return []*pool.Pool{mk(), mk(), mk(), mk(), mk()} }
}

// TestConcurrentRegistrationsNeverShareACertificate: 100 registrations at
// once through five replicas, against a pool of 50: every satellite gets
// its own name and serial (50 from the pool, the rest issued on the spot),
// and asking again returns the same certificate.
func TestConcurrentRegistrationsNeverShareACertificate(t *testing.T) {
	p, _, replicas := newPool(t, 50, 10)
	if err := p.Fill(context.Background()); err != nil {
		t.Fatal(err)
	}
	rs := replicas()
	got := make([]*certdnsv1.Certificate, 100)
	var wg sync.WaitGroup
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := rs[i%len(rs)].Assign(context.Background(), fmt.Sprintf("sat-%03d", i))
			if err != nil {
				t.Error(err)
				return
			}
			got[i] = c
		}()
	}
	wg.Wait()
	names, serials := map[string]int{}, map[string]int{}
	for i, c := range got {
		if c == nil {
			t.Fatalf("satellite %d got no certificate", i)
		}
		if j, dup := names[c.DnsName]; dup {
			t.Fatalf("satellites %d and %d share %s", j, i, c.DnsName)
		}
		if j, dup := serials[c.Serial]; dup {
			t.Fatalf("satellites %d and %d share serial %s", j, i, c.Serial)
		}
		names[c.DnsName], serials[c.Serial] = i, i
	}
	again, err := rs[3].Assign(context.Background(), "sat-007")
	if err != nil || again.Serial != got[7].Serial {
		t.Fatalf("asking again gave %v (%v), want serial %s", again.GetSerial(), err, got[7].Serial)
	}
	if n, _ := p.Assigned(context.Background()); n != 100 {
		t.Fatalf("%d assignments recorded, want 100", n)
	}
}

// TestPoolRefillsAfterExhaustion: 25 claims on a pool of 10 (low
// watermark 3) all succeed, and the background refill brings the pool back
// to its size.
func TestPoolRefillsAfterExhaustion(t *testing.T) {
	p, _, _ := newPool(t, 10, 3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx, 50*time.Millisecond)
	testwait.For(t, "the first fill", 10*time.Second, func() bool { n, _ := p.Available(ctx); return n >= 10 })
	for i := range 25 {
		if _, err := p.Assign(ctx, fmt.Sprintf("sat-%d", i)); err != nil {
			t.Fatalf("claim %d: %v", i, err)
		}
	}
	// Refilled above its low watermark; 25 assigned plus what waits is
	// more than the first fill made, so the refill ran.
	var n int
	testwait.For(t, "the pool refilled above its low watermark", 10*time.Second, func() bool { n, _ = p.Available(ctx); return n > 3 })
	if a, _ := p.Assigned(ctx); a != 25 || a+n <= 10 {
		t.Fatalf("%d assigned, %d available: want 25 assigned and the pool refilled", a, n)
	}
	if _, err := p.Assign(ctx, ""); err == nil {
		t.Fatal("an empty satellite ID was accepted")
	}
}

// TestTLSHandshakeVerifiedAgainstTheCA: a satellite serving its assigned
// certificate passes full verification against the platform CA for its
// name, and fails for any other name.
func TestTLSHandshakeVerifiedAgainstTheCA(t *testing.T) {
	p, ca, _ := newPool(t, 2, 1)
	c, err := p.Assign(context.Background(), "sat-tls")
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(c.CertPem, c.KeyPem)
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() { _ = conn.(*tls.Conn).Handshake(); conn.Close() }()
		}
	}()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(c.CaPem) || string(c.CaPem) != string(ca.CertPEM) {
		t.Fatal("the assigned certificate does not carry the platform CA")
	}
	dial := func(name string) error {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", l.Addr().String(), &tls.Config{RootCAs: roots, ServerName: name})
		if err == nil {
			conn.Close()
		}
		return err
	}
	if err := dial(c.DnsName); err != nil {
		t.Fatalf("handshake for %s: %v", c.DnsName, err)
	}
	if err := dial("other.satellites." + domain); err == nil {
		t.Fatal("the certificate verified for another name")
	}
	if err := dial(c.DnsName); err != nil {
		t.Fatal(err)
	}
	// And not against a CA the client does not trust.
	other, _, _ := pki.Generate(domain)
	foreign := x509.NewCertPool()
	foreign.AppendCertsFromPEM(other)
	conn, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{RootCAs: foreign, ServerName: c.DnsName})
	if err == nil {
		conn.Close()
		t.Fatal("verified against a foreign CA")
	}
}

// TestStalePooledCertificatesAreNotHandedOut: a certificate that waited in
// the pool past a third of its lifetime is dropped at claim time, so a new
// satellite never starts with one it must renew at once.
func TestStalePooledCertificatesAreNotHandedOut(t *testing.T) {
	_, cli := testetcd.Start(t)
	ca, err := pki.LoadOrCreate(context.Background(), cli, domain)
	if err != nil {
		t.Fatal(err)
	}
	const life = 3 * time.Second
	p, err := pool.New(pool.Config{Domain: domain, Size: 4, LowWatermark: 1, Lifetime: life}, cli, ca, pool.NewMetrics())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := p.Fill(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(life/3 + 200*time.Millisecond)
	c, err := p.Assign(ctx, "sat-late")
	if err != nil {
		t.Fatal(err)
	}
	if left := time.Until(c.NotAfter.AsTime()); left < life*2/3 {
		t.Fatalf("assigned a certificate with %v of %v left; a stale pooled one", left, life)
	}
	if n, _ := p.Available(ctx); n != 0 {
		t.Fatalf("%d stale certificates still pooled", n)
	}
}

package certdns_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/miekg/dns"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/orbitplane/orbit/libs/connectclient"
	"github.com/orbitplane/orbit/libs/testing/testetcd"
	"github.com/orbitplane/orbit/libs/testing/testrun"
	"github.com/orbitplane/orbit/libs/testing/testwait"
	certdnsv1 "github.com/orbitplane/orbit/proto/orbit/certdns/v1"
	"github.com/orbitplane/orbit/proto/orbit/certdns/v1/certdnsv1connect"
	registryv1 "github.com/orbitplane/orbit/proto/orbit/registry/v1"
	"github.com/orbitplane/orbit/services/certdns/certdns"
	"github.com/orbitplane/orbit/services/registry/registry"
)

// resolver is Go's own DNS client (not cgo, not /etc/hosts) pointed at the
// server under test.
func resolver(addr string) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
}

// putSatellite writes a satellite record the way the registry does.
func putSatellite(t *testing.T, cli *clientv3.Client, id, addr string) {
	t.Helper()
	b, _ := proto.Marshal(&registryv1.Satellite{Id: id, TenantId: "t1", Address: addr, Status: registryv1.SatelliteStatus_SATELLITE_STATUS_HEALTHY})
	if _, err := cli.Put(context.Background(), registry.SatellitePrefix+id, string(b)); err != nil {
		t.Fatal(err)
	}
}

func lookup(r *net.Resolver, name string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return r.LookupHost(ctx, name)
}

// TestDNSFollowsAddressesAndDeletion: a satellite's name resolves, through a
// real resolver, to the address of its latest record; a changed address
// follows; deleting the satellite revokes its certificate (listed in the
// CRL) and its name stops resolving; other names are NXDOMAIN and names
// outside the zone are refused.
func TestDNSFollowsAddressesAndDeletion(t *testing.T) {
	ctx := context.Background()
	_, cli := testetcd.Start(t)
	svc, err := certdns.New(ctx, certdns.Config{Domain: "orbit.test", PoolSize: 3, LowWatermark: 1, Lifetime: time.Hour,
		RefillInterval: time.Second, DNSAddr: "127.0.0.1:0", DNSTTL: 2 * time.Second}, certdns.Deps{Etcd: cli})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Listen(); err != nil {
		t.Fatal(err)
	}
	testrun.Start(t, "certdns", svc.Run)
	c := certdnsv1connect.NewCertDNSServiceClient(connectclient.HTTPClient(nil), svc.URL())
	r := resolver(svc.DNSAddr())

	putSatellite(t, cli, "sat-1", "127.0.0.7:8443")
	a, err := c.AssignCertificate(ctx, connect.NewRequest(&certdnsv1.AssignCertificateRequest{SatelliteId: "sat-1", TenantId: "t1"}))
	if err != nil {
		t.Fatal(err)
	}
	name := a.Msg.Certificate.DnsName
	testwait.For(t, name+" resolves to 127.0.0.7", 5*time.Second, func() bool {
		addrs, err := lookup(r, name)
		return err == nil && slices.Equal(addrs, []string{"127.0.0.7"})
	})
	putSatellite(t, cli, "sat-1", "[::1]:8443")
	testwait.For(t, name+" follows to ::1", 5*time.Second, func() bool {
		addrs, err := lookup(r, name)
		return err == nil && slices.Equal(addrs, []string{"::1"})
	})

	// An unknown name in the zone is NXDOMAIN, authoritative, with the SOA.
	m := new(dns.Msg)
	m.SetQuestion("no-such-satellite.satellites.orbit.test.", dns.TypeA)
	m.RecursionDesired = true
	in, err := dns.Exchange(m, svc.DNSAddr())
	if err != nil || in.Rcode != dns.RcodeNameError || !in.Authoritative || len(in.Ns) != 1 || in.RecursionAvailable {
		t.Fatalf("unknown name: %v, %v; want authoritative NXDOMAIN with the SOA, no recursion", in, err)
	}
	// Outside the zone: refused, never recursed.
	m.SetQuestion("example.com.", dns.TypeA)
	if in, err = dns.Exchange(m, svc.DNSAddr()); err != nil || in.Rcode != dns.RcodeRefused {
		t.Fatalf("outside the zone: %v, %v; want REFUSED", in, err)
	}
	// SOA and NS at the apex, over TCP too.
	tc := &dns.Client{Net: "tcp"}
	m.SetQuestion("satellites.orbit.test.", dns.TypeSOA)
	if in, _, err = tc.Exchange(m, svc.DNSAddr()); err != nil || len(in.Answer) != 1 || in.Answer[0].Header().Rrtype != dns.TypeSOA {
		t.Fatalf("SOA over TCP: %v, %v", in, err)
	}
	m.SetQuestion("satellites.orbit.test.", dns.TypeNS)
	if in, err = dns.Exchange(m, svc.DNSAddr()); err != nil || len(in.Answer) != 1 || in.Answer[0].(*dns.NS).Ns != "ns.satellites.orbit.test." {
		t.Fatalf("NS: %v, %v", in, err)
	}
	if in.Answer[0].Header().Ttl != 2 {
		t.Fatalf("TTL %d, want the configured 2 s", in.Answer[0].Header().Ttl)
	}

	// The registry deletes the satellite: certificate revoked, name gone.
	if _, err := cli.Delete(ctx, registry.SatellitePrefix+"sat-1"); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, name+" stops resolving", 5*time.Second, func() bool {
		_, err := lookup(r, name)
		var de *net.DNSError
		return errors.As(err, &de) && de.IsNotFound
	})
	testwait.For(t, "the CRL lists the certificate", 5*time.Second, func() bool {
		return slices.Contains(crlSerials(t, svc.URL(), a.Msg.Certificate.CaPem), a.Msg.Certificate.Serial)
	})
	if st, err := c.GetPoolStatus(ctx, connect.NewRequest(&certdnsv1.GetPoolStatusRequest{})); err != nil || st.Msg.Assigned != 0 {
		t.Fatalf("after deletion: %v, %v; want nothing assigned", st, err)
	}
}

// crlSerials fetches /crl, checks its signature against the CA and returns
// the revoked serials (hex).
func crlSerials(t *testing.T, base string, caPEM []byte) []string {
	t.Helper()
	resp, err := http.Get(base + "/crl")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	der, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/pkix-crl" {
		t.Fatalf("/crl: %s %s", resp.Status, der)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(caPEM)
	ca, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(ca); err != nil {
		t.Fatalf("CRL signature: %v", err)
	}
	var out []string
	for _, e := range crl.RevokedCertificateEntries {
		out = append(out, e.SerialNumber.Text(16))
	}
	return out
}

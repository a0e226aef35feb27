package certdns_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/miekg/dns"

	"github.com/orbitplane/orbit/libs/connectclient"
	"github.com/orbitplane/orbit/libs/testing/testbind"
	"github.com/orbitplane/orbit/libs/testing/testetcd"
	"github.com/orbitplane/orbit/libs/testing/testrun"
	"github.com/orbitplane/orbit/libs/testing/testwait"
	certdnsv1 "github.com/orbitplane/orbit/proto/orbit/certdns/v1"
	"github.com/orbitplane/orbit/proto/orbit/certdns/v1/certdnsv1connect"
	"github.com/orbitplane/orbit/services/certdns/certdns"
	"github.com/orbitplane/orbit/services/registry/registry"
)

// TestRFC2136UpdatesAnOperatorsServer: with --rfc2136-server, a real BIND
// (Debian's bind9) that accepts TSIG-signed updates for the zone answers
// for satellites too: the name appears with the satellite's address,
// follows a new address, and disappears when the satellite is deleted. An
// update signed with the wrong key never reaches the zone.
func TestRFC2136UpdatesAnOperatorsServer(t *testing.T) {
	ctx := context.Background()
	bind := testbind.Start(t, "satellites.orbit.test")
	_, cli := testetcd.Start(t)
	svc, err := certdns.New(ctx, certdns.Config{Domain: "orbit.test", PoolSize: 2, LowWatermark: 1, Lifetime: time.Hour, RefillInterval: time.Second,
		DNSTTL: 5 * time.Second, RFC2136Server: bind.Addr, RFC2136KeyName: bind.KeyName, RFC2136KeySecret: bind.Secret}, certdns.Deps{Etcd: cli})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Listen(); err != nil {
		t.Fatal(err)
	}
	testrun.Start(t, "certdns", svc.Run)
	c := certdnsv1connect.NewCertDNSServiceClient(connectclient.HTTPClient(nil), svc.URL())

	putSatellite(t, cli, "sat-1", "127.0.0.9:8443")
	a, err := c.AssignCertificate(ctx, connect.NewRequest(&certdnsv1.AssignCertificateRequest{SatelliteId: "sat-1", TenantId: "t1"}))
	if err != nil {
		t.Fatal(err)
	}
	name := a.Msg.Certificate.DnsName
	r := resolver(bind.Addr) // BIND, not certdns
	testwait.For(t, "BIND answers "+name, 10*time.Second, func() bool {
		addrs, err := lookup(r, name)
		return err == nil && slices.Equal(addrs, []string{"127.0.0.9"})
	})
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	if in, err := dns.Exchange(m, bind.Addr); err != nil || len(in.Answer) != 1 || in.Answer[0].Header().Ttl != 5 {
		t.Fatalf("BIND's record: %v, %v; want one A with TTL 5", in, err)
	}
	putSatellite(t, cli, "sat-1", "127.0.0.10:8443")
	testwait.For(t, "BIND follows the new address", 10*time.Second, func() bool {
		addrs, err := lookup(r, name)
		return err == nil && slices.Equal(addrs, []string{"127.0.0.10"})
	})
	if _, err := cli.Delete(ctx, registry.SatellitePrefix+"sat-1"); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "BIND forgets the name", 10*time.Second, func() bool {
		in, err := dns.Exchange(m, bind.Addr)
		return err == nil && in.Rcode == dns.RcodeNameError
	})

	// A wrong key: BIND refuses; the name is kept and retried.
	_, cli2 := testetcd.Start(t)
	bad, err := certdns.New(ctx, certdns.Config{Domain: "orbit.test", PoolSize: 2, LowWatermark: 1, Lifetime: time.Hour, RefillInterval: time.Second,
		RFC2136Server: bind.Addr, RFC2136KeyName: bind.KeyName, RFC2136KeySecret: "d3Jvbmcgc2VjcmV0IHdyb25nIHNlY3JldCB3cm9uZyE="}, certdns.Deps{Etcd: cli2})
	if err != nil {
		t.Fatal(err)
	}
	if err := bad.Listen(); err != nil {
		t.Fatal(err)
	}
	testrun.Start(t, "certdns-bad-key", bad.Run)
	c2 := certdnsv1connect.NewCertDNSServiceClient(connectclient.HTTPClient(nil), bad.URL())
	putSatellite(t, cli2, "sat-2", "127.0.0.11:8443")
	b, err := c2.AssignCertificate(ctx, connect.NewRequest(&certdnsv1.AssignCertificateRequest{SatelliteId: "sat-2", TenantId: "t1"}))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	m.SetQuestion(dns.Fqdn(b.Msg.Certificate.DnsName), dns.TypeA)
	if in, err := dns.Exchange(m, bind.Addr); err != nil || in.Rcode != dns.RcodeNameError {
		t.Fatalf("an update signed with the wrong key reached BIND: %v, %v", in, err)
	}
}

package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/golang-jwt/jwt/v5"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/orbitplane/orbit/libs/connectclient"
	"github.com/orbitplane/orbit/libs/directclient"
	"github.com/orbitplane/orbit/libs/directtoken"
	"github.com/orbitplane/orbit/libs/testing/testwait"
	certdnsv1 "github.com/orbitplane/orbit/proto/orbit/certdns/v1"
	"github.com/orbitplane/orbit/proto/orbit/certdns/v1/certdnsv1connect"
	connectorv1 "github.com/orbitplane/orbit/proto/orbit/connector/v1"
	"github.com/orbitplane/orbit/proto/orbit/connector/v1/connectorv1connect"
	gatewayv1 "github.com/orbitplane/orbit/proto/orbit/gateway/v1"
	"github.com/orbitplane/orbit/proto/orbit/gateway/v1/gatewayv1connect"
	queryv1 "github.com/orbitplane/orbit/proto/orbit/query/v1"
	"github.com/orbitplane/orbit/proto/orbit/query/v1/queryv1connect"
	registryv1 "github.com/orbitplane/orbit/proto/orbit/registry/v1"
	"github.com/orbitplane/orbit/services/certdns/pki"
	"github.com/orbitplane/orbit/services/certdns/pool"
	"github.com/orbitplane/orbit/services/registry/registry"
)

func (s *system) gatewayAPI(tenant string) gatewayv1connect.GatewayServiceClient {
	opts, _ := connectclient.Options(nil)
	return gatewayv1connect.NewGatewayServiceClient(s.client, s.gateway.URL(), append(opts, connect.WithInterceptors(connectclient.Bearer(s.tenants[tenant].APIKey)))...)
}

// directQuery runs sql on a satellite in direct mode, verifying its
// certificate against the platform CA and resolving its name through
// certdns's DNS server.
func (s *system) directQuery(ep *gatewayv1.GetDirectEndpointResponse, sql string) (*result, error) {
	roots, _ := directclient.Roots(s.caPEM)
	qc, err := directclient.QueryClient(directclient.HTTPClient(roots, s.certdns.DNSAddr()), ep)
	if err != nil {
		return nil, err
	}
	stream, err := qc.ExecuteQuery(context.Background(), connect.NewRequest(&queryv1.ExecuteQueryRequest{Sql: sql}))
	if err != nil {
		return nil, err
	}
	return collect(stream, false, nil)
}

// waitCertificate waits until the satellite holds a certificate, the
// registry shows it, and the registry's record in etcd (what connectors
// check) has it too.
func (s *system) waitCertificate(sa *sat) string {
	s.t.Helper()
	var name string
	testwait.For(s.t, "certificate delivered and reported", 10*time.Second, func() bool {
		name, _, _ = sa.agent.Certificate()
		if name == "" {
			return false
		}
		id := sa.agent.State().SatelliteID
		resp, err := s.satellites("tenant-a").GetSatellite(context.Background(), connect.NewRequest(&registryv1.GetSatelliteRequest{Satellite: id}))
		if err != nil || resp.Msg.Satellite.DnsName != name || resp.Msg.Satellite.CertNotAfter == nil {
			return false
		}
		rec, err := s.etcd.Get(context.Background(), registry.SatellitePrefix+id)
		var stored registryv1.Satellite
		return err == nil && len(rec.Kvs) == 1 && proto.Unmarshal(rec.Kvs[0].Value, &stored) == nil && stored.DnsName == name
	})
	return name
}

func lookupVia(dnsAddr, name string) ([]string, error) {
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, dnsAddr)
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return r.LookupHost(ctx, name)
}

// TestDirectMode: a satellite gets a certificate over its link and keeps it
// in its data dir; its name resolves through certdns's DNS to its address;
// the gateway's GetDirectEndpoint gives name, port and a token; a query
// over HTTPS, verified against the platform CA only, returns what
// passthrough returns. Tokens that are expired, for another satellite or of
// another tenant are refused.
func TestDirectMode(t *testing.T) {
	s := newSystem(t, options{tls: true})
	a := s.startSatellite(satOptions{name: "alpha"})
	b := s.startSatellite(satOptions{name: "beta"})
	name := s.waitCertificate(a)
	s.waitCertificate(b)
	if _, err := os.Stat(filepath.Join(a.dir, "tls", "cert.pem")); err != nil {
		t.Fatalf("certificate not kept in the data dir: %v", err)
	}
	addrs, err := lookupVia(s.certdns.DNSAddr(), name)
	if err != nil || !slices.Equal(addrs, []string{"127.0.0.1"}) {
		t.Fatalf("%s resolves to %v (%v), want 127.0.0.1", name, addrs, err)
	}

	ctx := context.Background()
	gw := s.gatewayAPI("tenant-a")
	ep, err := gw.GetDirectEndpoint(ctx, connect.NewRequest(&gatewayv1.GetDirectEndpointRequest{Satellite: "alpha"}))
	if err != nil {
		t.Fatal(err)
	}
	if ep.Msg.DnsName != name || ep.Msg.Port <= 0 || ep.Msg.Token == "" || time.Until(ep.Msg.ExpiresAt.AsTime()) > directtoken.MaxTTL {
		t.Fatalf("endpoint %v", ep.Msg)
	}
	const sql = "SELECT range AS i, 'row ' || range AS label FROM range(3000)"
	direct, err := s.directQuery(ep.Msg, sql)
	if err != nil {
		t.Fatalf("direct query: %v", err)
	}
	stream, err := s.query("tenant-a").ExecuteQuery(ctx, connect.NewRequest(&queryv1.ExecuteQueryRequest{Target: &queryv1.ExecuteQueryRequest_Satellite{Satellite: "alpha"}, Sql: sql}))
	if err != nil {
		t.Fatal(err)
	}
	pass, err := collect(stream, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	id := a.agent.State().SatelliteID
	if direct.rows[id] != 3000 || direct.summary.GetRows() != 3000 || direct.done[id].GetOutcome() != queryv1.SatelliteOutcome_SATELLITE_OUTCOME_OK {
		t.Fatalf("direct answer: rows %v, summary %v, done %v", direct.rows, direct.summary, direct.done)
	}
	if pass.rows[id] != direct.rows[id] || !proto.Equal(pass.schemas[id], direct.schemas[id]) {
		t.Fatalf("direct %v %v, passthrough %v %v: want the same answer", direct.rows, direct.schemas[id], pass.rows, pass.schemas[id])
	}
	// Bad SQL is the same clear error as through the gateway.
	if _, err := s.directQuery(ep.Msg, "CREATE TABLE x (i INTEGER)"); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("write SQL in direct mode: %v, want InvalidArgument", err)
	}

	// Without the platform CA the certificate is not trusted: no code path
	// skips verification.
	qc, _ := directclient.QueryClient(directclient.HTTPClient(x509.NewCertPool(), s.certdns.DNSAddr()), ep.Msg)
	st, err := qc.ExecuteQuery(ctx, connect.NewRequest(&queryv1.ExecuteQueryRequest{Sql: sql}))
	if err == nil {
		_, err = collect(st, false, nil)
	}
	var ua x509.UnknownAuthorityError
	if !errors.As(err, &ua) {
		t.Fatalf("untrusted CA: %v, want an unknown-authority error", err)
	}

	refused := func(what string, token string) {
		t.Helper()
		bad := &gatewayv1.GetDirectEndpointResponse{DnsName: ep.Msg.DnsName, Port: ep.Msg.Port, Token: token}
		if _, err := s.directQuery(bad, sql); connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Fatalf("%s: %v, want Unauthenticated", what, err)
		}
	}
	key, err := directtoken.LoadOrCreate(ctx, s.etcd)
	if err != nil {
		t.Fatal(err)
	}
	expired := directtoken.Claims{Tenant: "tenant-a", RegisteredClaims: jwt.RegisteredClaims{Issuer: directtoken.Issuer, Audience: jwt.ClaimStrings{id},
		ExpiresAt: jwt.NewNumericDate(time.Now().Add(-time.Minute)), IssuedAt: jwt.NewNumericDate(time.Now().Add(-2 * time.Minute))}}
	tok, _ := jwt.NewWithClaims(jwt.SigningMethodEdDSA, expired).SignedString(key)
	refused("an expired token", tok)
	other, err := gw.GetDirectEndpoint(ctx, connect.NewRequest(&gatewayv1.GetDirectEndpointRequest{Satellite: "beta"}))
	if err != nil {
		t.Fatal(err)
	}
	refused("a token for another satellite", other.Msg.Token)
	tok, _, _ = directtoken.Issue(key, id, "tenant-b", time.Minute)
	refused("a token of another tenant", tok)
	refused("a malformed token", "not-a-token")
	roots, _ := directclient.Roots(s.caPEM)
	bare := queryv1connect.NewQueryServiceClient(directclient.HTTPClient(roots, s.certdns.DNSAddr()), directclient.URL(ep.Msg))
	st, err = bare.ExecuteQuery(ctx, connect.NewRequest(&queryv1.ExecuteQueryRequest{Sql: sql}))
	if err == nil {
		_, err = collect(st, false, nil)
	}
	if connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("no token: %v, want Unauthenticated", err)
	}
	// And tenant B's key gets no endpoint for tenant A's satellite at all.
	if _, err := s.gatewayAPI("tenant-b").GetDirectEndpoint(ctx, connect.NewRequest(&gatewayv1.GetDirectEndpointRequest{Satellite: id})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("tenant B asking for tenant A's satellite: %v, want NotFound", err)
	}
}

// tlsLink opens a raw link over mutual TLS presenting cert (nil: none) and
// registers identity; it returns the first frame or the error.
func (s *system) tlsLink(cert *tls.Certificate, identity, name string) (*connectorv1.ConnectResponse, error) {
	roots, _ := directclient.Roots(s.caPEM)
	tc := &tls.Config{RootCAs: roots, GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		if cert == nil {
			return &tls.Certificate{}, nil
		}
		return cert, nil
	}}
	hc := connectclient.HTTPClient(tc)
	defer hc.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream := connectorv1connect.NewLinkServiceClient(hc, s.connectors[0].URL()).Connect(ctx)
	defer func() { _ = stream.CloseRequest(); _ = stream.CloseResponse() }()
	if err := stream.Send(&connectorv1.ConnectRequest{Frame: &connectorv1.ConnectRequest_Register{Register: &connectorv1.Register{
		DeployKey: s.tenants["tenant-a"].DeployKey, Identity: identity, Name: name}}}); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return stream.Receive()
}

func loadPair(t *testing.T, dir string) *tls.Certificate {
	t.Helper()
	c, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls", "cert.pem"), filepath.Join(dir, "tls", "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return &c
}

// TestMutualTLS: an enrolled satellite must present its own certificate; a
// link with its identity and deploy key but no certificate, or another
// satellite's certificate, is refused. Restarted, the satellite reuses the
// certificate from its data dir.
func TestMutualTLS(t *testing.T) {
	s := newSystem(t, options{tls: true})
	a := s.startSatellite(satOptions{name: "alpha"})
	b := s.startSatellite(satOptions{name: "beta"})
	s.waitCertificate(a)
	s.waitCertificate(b)
	_, serial, _ := a.agent.Certificate()

	for what, cert := range map[string]*tls.Certificate{"no certificate": nil, "another satellite's certificate": loadPair(t, b.dir)} {
		m, err := s.tlsLink(cert, a.agent.Identity(), "impostor")
		if err != nil || m.GetError().GetCode() != connectorv1.LinkErrorCode_LINK_ERROR_CODE_CERTIFICATE_REQUIRED {
			t.Fatalf("%s: %v, %v; want CERTIFICATE_REQUIRED", what, m, err)
		}
	}
	// A satellite whose certificate was assigned but never reported held
	// (the delivery went down with the link) is not locked out: with its
	// deploy key it links again and gets the certificate again.
	m, err := s.tlsLink(nil, "lost-delivery", "lost-delivery")
	if err != nil || m.GetRegistered() == nil {
		t.Fatalf("first link: %v, %v", m, err)
	}
	cd := certdnsv1connect.NewCertDNSServiceClient(s.client, s.certdns.URL())
	if _, err := cd.AssignCertificate(context.Background(), connect.NewRequest(&certdnsv1.AssignCertificateRequest{SatelliteId: m.GetRegistered().SatelliteId})); err != nil {
		t.Fatal(err)
	}
	if m, err := s.tlsLink(nil, "lost-delivery", "lost-delivery"); err != nil || m.GetRegistered() == nil {
		t.Fatalf("a satellite assigned a certificate it never received: %v, %v; want Registered", m, err)
	}
	// The control: the satellite's own pair is accepted.
	if m, err := s.tlsLink(loadPair(t, a.dir), a.agent.Identity(), "alpha"); err != nil || m.GetRegistered() == nil {
		t.Fatalf("own certificate: %v, %v; want Registered", m, err)
	}

	// Restart with the same data dir: same identity, same certificate.
	a.run.stop(t)
	a2 := s.startSatellite(satOptions{name: "alpha", dir: a.dir})
	testwait.For(t, "alpha back and healthy", 10*time.Second, func() bool {
		return s.status("tenant-a", a2.agent.State().SatelliteID) == registryv1.SatelliteStatus_SATELLITE_STATUS_HEALTHY
	})
	if _, again, _ := a2.agent.Certificate(); again != serial {
		t.Fatalf("after a restart the satellite holds %s, want the kept %s", again, serial)
	}
	stream, err := s.query("tenant-a").ExecuteQuery(context.Background(), connect.NewRequest(&queryv1.ExecuteQueryRequest{Target: &queryv1.ExecuteQueryRequest_Satellite{Satellite: a2.agent.State().SatelliteID}, Sql: "SELECT 1"}))
	if err == nil {
		_, err = collect(stream, false, nil)
	}
	if err != nil {
		t.Fatalf("query after the restart: %v", err)
	}
}

// TestRenewalAndDeletion: a certificate is renewed at 2/3 of its lifetime
// and served at once (hot reload, no restart), the old one revoked; deleting
// the satellite revokes its certificate and its name stops resolving.
func TestRenewalAndDeletion(t *testing.T) {
	s := newSystem(t, options{tls: true, certLifetime: 6 * time.Second})
	a := s.startSatellite(satOptions{name: "alpha"})
	name := s.waitCertificate(a)
	_, first, _ := a.agent.Certificate()
	testwait.For(t, "renewed", 10*time.Second, func() bool {
		_, serial, _ := a.agent.Certificate()
		return serial != first
	})
	// The direct server presents the renewed certificate.
	ctx := context.Background()
	testwait.For(t, "direct mode serves the renewed certificate", 5*time.Second, func() bool {
		ep, err := s.gatewayAPI("tenant-a").GetDirectEndpoint(ctx, connect.NewRequest(&gatewayv1.GetDirectEndpointRequest{Satellite: "alpha"}))
		if err != nil {
			return false
		}
		roots, _ := directclient.Roots(s.caPEM)
		d := tls.Dialer{NetDialer: &net.Dialer{Timeout: time.Second}, Config: &tls.Config{RootCAs: roots, ServerName: name}}
		host := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(ep.Msg.Port)))
		c, err := d.DialContext(ctx, "tcp", host)
		if err != nil {
			return false
		}
		defer c.Close()
		_, current, _ := a.agent.Certificate() // 6 s certificates renew every ≈ 4 s
		return current != first && c.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber.Text(16) == current
	})
	if !slices.Contains(s.crl(), first) {
		t.Fatalf("the superseded certificate %s is not in the CRL", first)
	}

	// Delete through the gateway (satellites:write).
	id := a.agent.State().SatelliteID
	if _, err := s.satellites("tenant-a").DeleteSatellite(ctx, connect.NewRequest(&registryv1.DeleteSatelliteRequest{Satellite: "alpha"})); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, name+" stops resolving", 5*time.Second, func() bool {
		_, err := lookupVia(s.certdns.DNSAddr(), name)
		var de *net.DNSError
		return errors.As(err, &de) && de.IsNotFound
	})
	// Renewals also revoke (superseded), so look for the deletion's own
	// revocation: its name, reason "satellite deleted", and in the CRL.
	testwait.For(t, "its certificate is revoked for the deletion", 5*time.Second, func() bool {
		resp, err := s.etcd.Get(ctx, pool.RevokedPrefix, clientv3.WithPrefix())
		if err != nil {
			return false
		}
		for _, kv := range resp.Kvs {
			var r pool.Revocation
			if json.Unmarshal(kv.Value, &r) == nil && r.DNSName == name && r.Reason == "satellite deleted" {
				return slices.Contains(s.crl(), r.Serial)
			}
		}
		return false
	})
	// It is gone from the tenant's list under that ID (a satellite still
	// running enrols again as a new one: its deploy key is still valid).
	testwait.For(t, "the old ID is gone", 5*time.Second, func() bool {
		_, err := s.satellites("tenant-a").GetSatellite(ctx, connect.NewRequest(&registryv1.GetSatelliteRequest{Satellite: id}))
		return connect.CodeOf(err) == connect.CodeNotFound
	})
}

// crl fetches certdns's CRL, checks its signature against the platform CA
// and returns the revoked serials (hex).
func (s *system) crl() []string {
	resp, err := http.Get(s.certdns.URL() + "/crl")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	der, _ := io.ReadAll(resp.Body)
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		s.t.Fatalf("CRL: %v", err)
	}
	block, _ := pem.Decode(s.caPEM)
	ca, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		s.t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(ca); err != nil {
		s.t.Fatalf("CRL signature: %v", err)
	}
	var out []string
	for _, e := range crl.RevokedCertificateEntries {
		out = append(out, e.SerialNumber.Text(16))
	}
	return out
}

// TestOrbitctlDirect: `orbitctl query --direct` answers from the satellite
// itself (its log says so); with a CA that does not verify the satellite it
// says so and falls back to passthrough, with the same rows.
func TestOrbitctlDirect(t *testing.T) {
	s := newSystem(t, options{tls: true})
	a := s.startSatellite(satOptions{name: "alpha"})
	s.waitCertificate(a)
	const sql = "SELECT i FROM range(4) t(i)"
	out, errOut, err := orbitctl(t, s, "tenant-a", "query", "--satellite", "alpha", "--direct", "--ca-cert", s.caFile, "--dns-server", s.certdns.DNSAddr(), "-o", "csv", sql)
	if err != nil || out != "i\n0\n1\n2\n3\n" || strings.Contains(errOut, "passthrough") {
		t.Fatalf("direct: %v\nstdout %q\nstderr %q", err, out, errOut)
	}
	if !strings.Contains(s.logs.String(), `"message":"direct query answered"`) {
		t.Fatal("the satellite logged no direct query")
	}
	other, _, _ := pki.Generate("orbit.test")
	wrongCA := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(wrongCA, other, 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, err = orbitctl(t, s, "tenant-a", "query", "--satellite", "alpha", "--direct", "--ca-cert", wrongCA, "--dns-server", s.certdns.DNSAddr(), "-o", "csv", sql)
	if err != nil || out != "i\n0\n1\n2\n3\n" || !strings.Contains(errOut, "direct mode unavailable") || !strings.Contains(errOut, "certificate") {
		t.Fatalf("fallback: %v\nstdout %q\nstderr %q", err, out, errOut)
	}
	// A query error is an answer, not a reason to fall back.
	_, errOut, err = orbitctl(t, s, "tenant-a", "query", "--satellite", "alpha", "--direct", "--ca-cert", s.caFile, "--dns-server", s.certdns.DNSAddr(), "CREATE TABLE x (i INT)")
	if err == nil || strings.Contains(errOut, "passthrough") {
		t.Fatalf("write SQL in direct mode: %v, stderr %q; want the error, no fallback", err, errOut)
	}
	name, _, _ := a.agent.Certificate()
	if out, _, err = orbitctl(t, s, "tenant-a", "satellites", "get", "alpha", "-o", "json"); err != nil || !strings.Contains(out, `"dns_name":"`+name+`"`) {
		t.Fatalf("satellites get: %v\n%s", err, out)
	}
	if _, _, err = orbitctl(t, s, "tenant-b", "satellites", "delete", a.agent.State().SatelliteID); err == nil {
		t.Fatal("tenant B deleted tenant A's satellite")
	}
	if out, _, err = orbitctl(t, s, "tenant-a", "satellites", "delete", a.agent.State().SatelliteID); err != nil || !strings.Contains(out, "deleted satellite alpha") {
		t.Fatalf("satellites delete: %v\n%s", err, out)
	}
}

// TestExpiredCertificateRenewedOnReturn: a satellite away longer than its
// certificate's lifetime comes back with its deploy key (an expired
// certificate proves nothing), and the connector renews its certificate —
// same name, new serial — instead of locking it out.
func TestExpiredCertificateRenewedOnReturn(t *testing.T) {
	s := newSystem(t, options{tls: true, certLifetime: 3 * time.Second})
	a := s.startSatellite(satOptions{name: "alpha"})
	name := s.waitCertificate(a)
	a.run.stop(t)
	id := a.agent.State().SatelliteID
	var assigned string
	testwait.For(t, "the assigned certificate expired", 10*time.Second, func() bool {
		resp, err := s.etcd.Get(context.Background(), pool.AssignedPrefix+id)
		if err != nil || len(resp.Kvs) != 1 {
			return false
		}
		c, err := pool.Decode(resp.Kvs[0].Value)
		if err != nil {
			return false
		}
		assigned = c.Serial
		return time.Now().After(c.NotAfter.AsTime())
	})
	a2 := s.startSatellite(satOptions{name: "alpha", dir: a.dir})
	testwait.For(t, "a renewed certificate for the same name", 10*time.Second, func() bool {
		n, serial, notAfter := a2.agent.Certificate()
		return n == name && serial != assigned && time.Now().Before(notAfter)
	})
	if got := a2.agent.State().SatelliteID; got != id {
		t.Fatalf("came back as %s, want its old ID %s", got, id)
	}
}

package certdns_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/orbitplane/orbit/libs/connectclient"
	"github.com/orbitplane/orbit/libs/testing/testetcd"
	"github.com/orbitplane/orbit/libs/testing/testrun"
	"github.com/orbitplane/orbit/libs/testing/testwait"
	certdnsv1 "github.com/orbitplane/orbit/proto/orbit/certdns/v1"
	"github.com/orbitplane/orbit/proto/orbit/certdns/v1/certdnsv1connect"
	"github.com/orbitplane/orbit/services/certdns/certdns"
	"github.com/orbitplane/orbit/services/certdns/pki"
)

func start(t *testing.T, cfg certdns.Config) certdnsv1connect.CertDNSServiceClient {
	t.Helper()
	_, cli := testetcd.Start(t)
	svc, err := certdns.New(context.Background(), cfg, certdns.Deps{Etcd: cli})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Listen(); err != nil {
		t.Fatal(err)
	}
	testrun.Start(t, "certdns", svc.Run)
	return certdnsv1connect.NewCertDNSServiceClient(connectclient.HTTPClient(nil), svc.URL())
}

func TestAPI(t *testing.T) {
	ctx := context.Background()
	c := start(t, certdns.Config{Domain: "orbit.test", PoolSize: 5, LowWatermark: 1, Lifetime: time.Hour, RefillInterval: time.Second})
	testwait.For(t, "the pool filled", 10*time.Second, func() bool {
		st, err := c.GetPoolStatus(ctx, connect.NewRequest(&certdnsv1.GetPoolStatusRequest{}))
		return err == nil && st.Msg.Available >= 5
	})
	a, err := c.AssignCertificate(ctx, connect.NewRequest(&certdnsv1.AssignCertificateRequest{SatelliteId: "sat-1"}))
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.AssignCertificate(ctx, connect.NewRequest(&certdnsv1.AssignCertificateRequest{SatelliteId: "sat-1"}))
	if err != nil || again.Msg.Certificate.Serial != a.Msg.Certificate.Serial {
		t.Fatalf("asking again: %v, %v; want serial %s", again, err, a.Msg.Certificate.Serial)
	}
	ca, err := c.GetCA(ctx, connect.NewRequest(&certdnsv1.GetCARequest{}))
	if err != nil || string(ca.Msg.CaPem) != string(a.Msg.Certificate.CaPem) {
		t.Fatalf("GetCA: %v; want the CA the certificate carries", err)
	}
	st, err := c.GetPoolStatus(ctx, connect.NewRequest(&certdnsv1.GetPoolStatusRequest{}))
	if err != nil || st.Msg.Assigned != 1 || st.Msg.TargetSize != 5 || st.Msg.LowWatermark != 1 {
		t.Fatalf("status %v, %v", st, err)
	}
	if _, err := c.AssignCertificate(ctx, connect.NewRequest(&certdnsv1.AssignCertificateRequest{})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("no satellite ID: %v", err)
	}
	r, err := c.RenewCertificate(ctx, connect.NewRequest(&certdnsv1.RenewCertificateRequest{SatelliteId: "sat-1"}))
	if err != nil || r.Msg.Certificate.DnsName != a.Msg.Certificate.DnsName || r.Msg.Certificate.Serial == a.Msg.Certificate.Serial {
		t.Fatalf("renew: %v, %v; want a new serial for %s", r, err, a.Msg.Certificate.DnsName)
	}
	if again, err := c.AssignCertificate(ctx, connect.NewRequest(&certdnsv1.AssignCertificateRequest{SatelliteId: "sat-1"})); err != nil || again.Msg.Certificate.Serial != r.Msg.Certificate.Serial {
		t.Fatalf("after renewal the satellite holds %v (%v), want the renewed %s", again, err, r.Msg.Certificate.Serial)
	}
	if _, err := c.RenewCertificate(ctx, connect.NewRequest(&certdnsv1.RenewCertificateRequest{SatelliteId: "sat-unknown"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("renew of a satellite with no certificate: %v, want NotFound", err)
	}
	if _, err := c.ReleaseCertificate(ctx, connect.NewRequest(&certdnsv1.ReleaseCertificateRequest{SatelliteId: "sat-1"})); err != nil {
		t.Fatal(err)
	}
	if st, err := c.GetPoolStatus(ctx, connect.NewRequest(&certdnsv1.GetPoolStatusRequest{})); err != nil || st.Msg.Assigned != 0 {
		t.Fatalf("after release: %v, %v; want nothing assigned", st, err)
	}
}

func TestOperatorCAFiles(t *testing.T) {
	certPEM, keyPEM, err := pki.Generate("orbit.test")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cf, kf := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	_ = os.WriteFile(cf, certPEM, 0o600)
	_ = os.WriteFile(kf, keyPEM, 0o600)
	c := start(t, certdns.Config{Domain: "orbit.test", PoolSize: 2, LowWatermark: 1, Lifetime: time.Hour, RefillInterval: time.Second, CACert: cf, CAKey: kf})
	ca, err := c.GetCA(context.Background(), connect.NewRequest(&certdnsv1.GetCARequest{}))
	if err != nil || string(ca.Msg.CaPem) != string(certPEM) {
		t.Fatalf("GetCA: %v; want the operator's CA", err)
	}
	_, cli := testetcd.Start(t)
	if _, err := certdns.New(context.Background(), certdns.Config{Domain: "orbit.test", PoolSize: 2, LowWatermark: 1, Lifetime: time.Hour, CACert: cf, CAKey: filepath.Join(dir, "missing")},
		certdns.Deps{Etcd: cli}); err == nil {
		t.Fatal("a missing CA key file was accepted")
	}
}

package connector

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"time"

	"connectrpc.com/connect"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/orbitplane/orbit/libs/obslog"
	"github.com/orbitplane/orbit/libs/retry"
	certdnsv1 "github.com/orbitplane/orbit/proto/orbit/certdns/v1"
	connectorv1 "github.com/orbitplane/orbit/proto/orbit/connector/v1"
	registryv1 "github.com/orbitplane/orbit/proto/orbit/registry/v1"
	"github.com/orbitplane/orbit/services/certdns/pool"
	"github.com/orbitplane/orbit/services/registry/registry"
)

type (
	peerKey struct{}
	bodyKey struct{}
)

// withPeerCertificates puts the verified client certificate of a TLS link
// (if any) into the handler's context, and the request body, which the
// link handler closes on its way out (see Connect).
func withPeerCertificates(path string, h http.Handler) (string, http.Handler) {
	return path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := context.WithValue(r.Context(), bodyKey{}, r.Body)
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			ctx = context.WithValue(ctx, peerKey{}, r.TLS.PeerCertificates[0])
		}
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}

func requestBody(ctx context.Context) io.Closer {
	b, _ := ctx.Value(bodyKey{}).(io.Closer)
	return b
}

func peerCertificate(ctx context.Context) *x509.Certificate {
	c, _ := ctx.Value(peerKey{}).(*x509.Certificate)
	return c
}

// errCertificate is a refusal of a link that did not prove, with its
// client certificate, to be the satellite it claims.
type errCertificate struct{ msg string }

func (e *errCertificate) Error() string { return e.msg }

// checkCertificate runs before registration: a satellite that holds a
// certificate (it enrolled before, under this tenant and identity, and
// reported holding it — name and expiry — in a heartbeat) must present
// exactly that one,
// verified by TLS against the platform CA. A satellite that holds none yet
// enrols with its deploy key alone. It returns what the link needs next.
//
// Two cases fall back to the deploy key: a certificate assigned but never
// reported held (its delivery was lost with the link) is delivered again,
// and one that has expired (the satellite was away longer than its
// lifetime) proves nothing either way and is renewed.
func (s *Service) checkCertificate(ctx context.Context, tenant, identity string) (certNeed, error) {
	resp, err := s.etcd.Get(ctx, registry.IdentityPrefix+registry.IdentityKey(tenant, identity))
	if err != nil {
		return 0, err
	}
	if len(resp.Kvs) == 0 {
		return needAssign, nil // never enrolled
	}
	id := string(resp.Kvs[0].Value)
	// The assignment and the registry's record, in one round trip.
	tr, err := s.etcd.Txn(ctx).Then(clientv3.OpGet(pool.AssignedPrefix+id), clientv3.OpGet(registry.SatellitePrefix+id)).Commit()
	if err != nil {
		return 0, err
	}
	kvs := tr.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return needAssign, nil
	}
	assigned, err := pool.Decode(kvs[0].Value)
	if err != nil {
		return 0, err
	}
	var held registryv1.Satellite
	if rec := tr.Responses[1].GetResponseRange().Kvs; len(rec) == 1 {
		_ = proto.Unmarshal(rec[0].Value, &held)
	}
	switch {
	case assigned.NotAfter != nil && time.Now().After(assigned.NotAfter.AsTime()):
		return needRenew, nil
	case held.DnsName != assigned.DnsName || !proto.Equal(held.CertNotAfter, assigned.NotAfter):
		return needAssign, nil // this one never reported held: deliver it again
	}
	peer := peerCertificate(ctx)
	switch {
	case !s.tls:
		return 0, &errCertificate{fmt.Sprintf("satellite %s holds a certificate, but this connector serves plaintext: enrolled satellites connect with mutual TLS", id)}
	case peer == nil:
		return 0, &errCertificate{fmt.Sprintf("satellite %s holds certificate %s (%s) and presented none: connect with it", id, assigned.Serial, assigned.DnsName)}
	case peer.SerialNumber.Text(16) != assigned.Serial:
		return 0, &errCertificate{fmt.Sprintf("the certificate presented (%s) is not the one satellite %s holds", peer.SerialNumber.Text(16), id)}
	}
	return needNothing, nil
}

// certNeed is what a link needs from certdns after registration.
type certNeed int

const (
	needNothing certNeed = iota + 1 // it presented its current certificate
	needAssign                      // it holds none: assign one
	needRenew                       // its certificate expired: renew it
)

// deliverCertificate gets the satellite its certificate from certdns (a
// new assignment, or a renewal) and sends it down the link, retrying with
// backoff while the link lives; one delivery at a time per link.
func (l *link) deliverCertificate(ctx context.Context, renew bool) {
	if !l.delivering.CompareAndSwap(false, true) {
		return
	}
	defer l.delivering.Store(false)
	get := func() (*certdnsv1.Certificate, error) {
		if renew {
			resp, err := l.s.certdns.RenewCertificate(ctx, connect.NewRequest(&certdnsv1.RenewCertificateRequest{SatelliteId: l.satID}))
			if err != nil {
				return nil, err
			}
			return resp.Msg.Certificate, nil
		}
		resp, err := l.s.certdns.AssignCertificate(ctx, connect.NewRequest(&certdnsv1.AssignCertificateRequest{SatelliteId: l.satID, TenantId: l.tenant}))
		if err != nil {
			return nil, err
		}
		return resp.Msg.Certificate, nil
	}
	var c *certdnsv1.Certificate
	err := retry.Do(ctx, retry.Backoff{Min: 500 * time.Millisecond, Max: 30 * time.Second}, func() error {
		var err error
		c, err = get()
		if code := connect.CodeOf(err); err != nil && (code == connect.CodeNotFound || code == connect.CodeInvalidArgument) {
			return nil // retrying cannot help; c is nil
		}
		return err
	}, func(err error) {
		l.s.log.WarnContext(ctx, "certdns unavailable; retrying the certificate", "satellite", l.satID, "error", err)
	})
	if err != nil || c == nil {
		if ctx.Err() == nil {
			l.s.log.WarnContext(ctx, "certificate not delivered", "satellite", l.satID, "renewal", renew)
		}
		return
	}
	if err := l.send(&connectorv1.ConnectResponse{Frame: &connectorv1.ConnectResponse_Certificate{Certificate: &connectorv1.CertificateDelivery{
		DnsName: c.DnsName, CertPem: c.CertPem, KeyPem: c.KeyPem, CaPem: c.CaPem, NotAfter: c.NotAfter, Serial: c.Serial}}}); err != nil {
		return // the link is going; the next one delivers it again (checkCertificate)
	}
	l.s.m.certs.WithLabelValues(map[bool]string{true: "renewed", false: "assigned"}[renew]).Inc()
	l.s.log.InfoContext(ctx, "certificate delivered", obslog.Event("connector.certificate"), "satellite", l.satID, "dns_name", c.DnsName, "serial", c.Serial, "renewal", renew)
}

package connector

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"time"

	"connectrpc.com/connect"

	"github.com/orbitplane/orbit/libs/obslog"
	certdnsv1 "github.com/orbitplane/orbit/proto/orbit/certdns/v1"
	connectorv1 "github.com/orbitplane/orbit/proto/orbit/connector/v1"
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

// checkCertificate runs before registration: a satellite that already holds
// a certificate (it enrolled before, under this tenant and identity) must
// present exactly that one, verified by TLS against the platform CA. A
// satellite that holds none yet enrols with its deploy key alone. It
// returns what the link needs next.
//
// An assigned certificate that has expired (the satellite was away longer
// than its lifetime) proves nothing either way: such a satellite enrols
// again with its deploy key and gets a renewed certificate.
func (s *Service) checkCertificate(ctx context.Context, tenant, identity string) (certNeed, error) {
	resp, err := s.etcd.Get(ctx, registry.IdentityPrefix+tenant+"/"+identity)
	if err != nil {
		return 0, err
	}
	if len(resp.Kvs) == 0 {
		return needAssign, nil // never enrolled
	}
	id := string(resp.Kvs[0].Value)
	assigned, err := pool.Lookup(ctx, s.etcd, id)
	if err != nil {
		return 0, err
	}
	if assigned == nil {
		return needAssign, nil
	}
	if assigned.NotAfter != nil && time.Now().After(assigned.NotAfter.AsTime()) {
		return needRenew, nil
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

// deliverCertificate gets the satellite its certificate from certdns and
// sends it down the link, retrying with backoff while the link lives.
func (l *link) deliverCertificate(ctx context.Context, renew bool) {
	if !l.renewing.CompareAndSwap(false, true) {
		return // one at a time
	}
	defer l.renewing.Store(false)
	wait := 500 * time.Millisecond
	for ctx.Err() == nil {
		var c *certdnsv1.Certificate
		var err error
		if renew {
			var resp *connect.Response[certdnsv1.RenewCertificateResponse]
			resp, err = l.s.certdns.RenewCertificate(ctx, connect.NewRequest(&certdnsv1.RenewCertificateRequest{SatelliteId: l.satID}))
			if err == nil {
				c = resp.Msg.Certificate
			}
		} else {
			var resp *connect.Response[certdnsv1.AssignCertificateResponse]
			resp, err = l.s.certdns.AssignCertificate(ctx, connect.NewRequest(&certdnsv1.AssignCertificateRequest{SatelliteId: l.satID, TenantId: l.tenant}))
			if err == nil {
				c = resp.Msg.Certificate
			}
		}
		if err == nil {
			err = l.send(&connectorv1.ConnectResponse{Frame: &connectorv1.ConnectResponse_Certificate{Certificate: &connectorv1.CertificateDelivery{
				DnsName: c.DnsName, CertPem: c.CertPem, KeyPem: c.KeyPem, CaPem: c.CaPem, NotAfter: c.NotAfter, Serial: c.Serial}}})
			if err == nil {
				l.s.m.certs.WithLabelValues(map[bool]string{true: "renewed", false: "assigned"}[renew]).Inc()
				l.s.log.InfoContext(ctx, "certificate delivered", obslog.Event("connector.certificate"), "satellite", l.satID, "dns_name", c.DnsName, "serial", c.Serial, "renewal", renew)
			}
			return
		}
		if connect.CodeOf(err) == connect.CodeNotFound || connect.CodeOf(err) == connect.CodeInvalidArgument {
			l.s.log.WarnContext(ctx, "certificate not delivered", "satellite", l.satID, "error", err)
			return
		}
		l.s.log.WarnContext(ctx, "certdns unavailable; retrying the certificate", "satellite", l.satID, "error", err, "in", wait)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(wait*2, 30*time.Second)
	}
}

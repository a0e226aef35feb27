// Package directclient calls a satellite in direct mode (docs/direct.md):
// HTTPS to <uuid>.satellites.<domain>:<port> with full certificate
// verification against the platform CA (or the system roots), the name
// resolved by the region's DNS server (or the system resolver), and the
// gateway's short-lived token as the bearer.
package directclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"connectrpc.com/connect"

	"github.com/orbitplane/orbit/libs/connectclient"
	gatewayv1 "github.com/orbitplane/orbit/proto/orbit/gateway/v1"
	"github.com/orbitplane/orbit/proto/orbit/query/v1/queryv1connect"
)

// DialTimeout bounds connecting to a satellite (resolution included), so a
// client falls back to passthrough quickly when the satellite is not
// reachable directly.
const DialTimeout = 3 * time.Second

// Roots reads a PEM CA bundle; empty input means the system roots (nil).
func Roots(caPEM []byte) (*x509.CertPool, error) {
	if len(caPEM) == 0 {
		return nil, nil
	}
	p, err := connectclient.CertPool(caPEM)
	if err != nil {
		return nil, fmt.Errorf("directclient: the CA file: %w", err)
	}
	return p, nil
}

// HTTPClient returns the HTTPS client for direct mode. dnsServer (host:port)
// resolves satellite names when set; otherwise the system resolver does.
// Certificates are always verified (the name, the chain to roots, expiry).
func HTTPClient(roots *x509.CertPool, dnsServer string) *http.Client {
	d := &net.Dialer{Timeout: DialTimeout}
	if dnsServer != "" {
		d.Resolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var nd net.Dialer
			return nd.DialContext(ctx, network, dnsServer)
		}}
	}
	t := &http.Transport{
		DialContext:         d.DialContext,
		TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots},
		TLSHandshakeTimeout: DialTimeout,
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 4,
	}
	return &http.Client{Transport: t}
}

// URL is the base URL of a satellite's direct endpoint.
func URL(ep *gatewayv1.GetDirectEndpointResponse) string {
	return "https://" + net.JoinHostPort(ep.DnsName, strconv.Itoa(int(ep.Port)))
}

// QueryClient is a QueryService client for the satellite behind ep, sending
// its token.
func QueryClient(hc *http.Client, ep *gatewayv1.GetDirectEndpointResponse) (queryv1connect.QueryServiceClient, error) {
	if ep.GetDnsName() == "" || ep.GetPort() <= 0 || ep.GetToken() == "" {
		return nil, fmt.Errorf("directclient: incomplete endpoint %v", ep)
	}
	opts, err := connectclient.Options(nil)
	if err != nil {
		return nil, err
	}
	return queryv1connect.NewQueryServiceClient(hc, URL(ep), append(opts, connect.WithInterceptors(connectclient.Bearer(ep.Token)))...), nil
}

package satellite

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orbitplane/orbit/libs/connectclient"
	"github.com/orbitplane/orbit/libs/obslog"
	"github.com/orbitplane/orbit/libs/reqctx"
	connectorv1 "github.com/orbitplane/orbit/proto/orbit/connector/v1"
	"github.com/orbitplane/orbit/proto/orbit/connector/v1/connectorv1connect"
)

// linkState is one connected stream.
type linkState struct {
	stream *connect.BidiStreamForClient[connectorv1.ConnectRequest, connectorv1.ConnectResponse]
	sendMu sync.Mutex

	mu    sync.Mutex
	execs map[string]*execution
}

func (l *linkState) send(m *connectorv1.ConnectRequest) error {
	l.sendMu.Lock()
	defer l.sendMu.Unlock()
	return l.stream.Send(m)
}

// linkError is the reason the connector gave for closing the link.
type linkError struct {
	code connectorv1.LinkErrorCode
	msg  string
}

func (e *linkError) Error() string {
	return fmt.Sprintf("connector closed the link: %s (%s)", e.msg, e.code)
}

// linkLoop dials the connector until ctx ends, with exponential backoff and
// full jitter between attempts; a link that registered resets the backoff.
func (a *Agent) linkLoop(ctx context.Context) {
	backoff := a.cfg.BackoffMin
	for ctx.Err() == nil {
		client, closeClient, err := a.linkClient()
		if err != nil {
			a.log.Error("link client", "error", err)
			return
		}
		registered, err := a.runLink(ctx, client)
		closeClient()
		if ctx.Err() != nil {
			return
		}
		if registered {
			backoff = a.cfg.BackoffMin
		}
		var le *linkError
		level := obslog.Event("satellite.link_down")
		switch {
		case errors.As(err, &le) && le.code == connectorv1.LinkErrorCode_LINK_ERROR_CODE_BAD_DEPLOY_KEY:
			a.log.Error("deploy key refused; fix --deploy-key (retrying)", level, "error", err)
		case errors.As(err, &le) && le.code == connectorv1.LinkErrorCode_LINK_ERROR_CODE_CERTIFICATE_REQUIRED:
			a.log.Error("certificate refused: this satellite enrolled before and must present its certificate ("+tlsDir(a.cfg.DataDir)+"); restore it, or delete the satellite in the cloud to enrol anew (retrying)", level, "error", err)
		default:
			a.log.Warn("link down; reconnecting", level, "error", err, "in", backoff)
		}
		// Full jitter: a fleet whose connector restarted does not come back
		// in lockstep.
		wait := time.Duration(rand.Int64N(int64(backoff)) + 1)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(backoff*2, a.cfg.BackoffMax)
	}
}

// linkClient returns the client for one link attempt. An https:// connector
// gets a fresh TLS transport per attempt, so the handshake presents the
// certificate held now (none before enrolment, the renewed one after).
func (a *Agent) linkClient() (connectorv1connect.LinkServiceClient, func(), error) {
	hc := a.deps.HTTPClient
	if hc == nil && strings.HasPrefix(a.cfg.ConnectorURL, "https://") {
		hc = connectclient.HTTPClient(&tls.Config{MinVersion: tls.VersionTLS12, RootCAs: a.connectorRoots, GetClientCertificate: a.clientCertificate})
	}
	hc2, opts, err := connectclient.For(hc, a.deps.TracerProvider)
	if err != nil {
		return nil, nil, err
	}
	closeIdle := func() {
		if a.deps.HTTPClient == nil { // a client of our own, made for this attempt
			hc2.CloseIdleConnections()
		}
	}
	return connectorv1connect.NewLinkServiceClient(hc2, a.cfg.ConnectorURL, opts...), closeIdle, nil
}

// runLink holds one link until it fails; registered says whether it got as
// far as Registered.
func (a *Agent) runLink(ctx context.Context, client connectorv1connect.LinkServiceClient) (registered bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream := client.Connect(ctx)
	// Receive does not watch ctx while the request body is open.
	stop := context.AfterFunc(ctx, func() {
		_ = stream.CloseRequest()
		_ = stream.CloseResponse()
	})
	defer stop()
	l := &linkState{stream: stream, execs: map[string]*execution{}}
	defer func() {
		l.mu.Lock()
		for _, e := range l.execs {
			e.cancel()
		}
		l.mu.Unlock()
		_ = stream.CloseRequest()
		_ = stream.CloseResponse()
	}()
	rctx, _ := reqctx.EnsureRequestID(ctx)
	if err := l.send(&connectorv1.ConnectRequest{Context: reqctx.ToCarrier(rctx), Frame: &connectorv1.ConnectRequest_Register{Register: &connectorv1.Register{
		DeployKey: a.cfg.DeployKey, Identity: a.identity, Name: a.cfg.Name, Labels: a.cfg.Labels, Version: Version, Address: a.cfg.Address,
	}}}); err != nil {
		return false, err
	}
	first, err := stream.Receive()
	if err != nil {
		return false, err
	}
	if le := first.GetError(); le != nil {
		return false, &linkError{code: le.Code, msg: le.Message}
	}
	reg := first.GetRegistered()
	if reg == nil {
		return false, errors.New("connector did not answer Register")
	}
	a.saveState(State{SatelliteID: reg.SatelliteId, TenantID: reg.TenantId, ConnectorID: reg.ConnectorId, DirectTokenKeys: reg.DirectTokenKeys})
	a.mu.Lock()
	a.link = l
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		if a.link == l {
			a.link = nil
		}
		a.mu.Unlock()
	}()
	a.log.Info("linked", obslog.Event("satellite.linked"), "satellite", reg.SatelliteId, "tenant", reg.TenantId, "connector_id", reg.ConnectorId)
	interval := a.cfg.HeartbeatInterval
	if reg.HeartbeatIntervalMs > 0 {
		interval = time.Duration(reg.HeartbeatIntervalMs) * time.Millisecond
	}
	go a.heartbeats(ctx, l, interval, cancel)
	go a.renewLoop(ctx, l)

	for {
		m, err := stream.Receive()
		if err != nil {
			return true, err
		}
		switch f := m.Frame.(type) {
		case *connectorv1.ConnectResponse_Query:
			qctx := reqctx.FromCarrier(ctx, m.Context)
			a.startQuery(qctx, l, f.Query, reg.SatelliteId)
		case *connectorv1.ConnectResponse_Credit:
			l.mu.Lock()
			e := l.execs[f.Credit.QueryId]
			l.mu.Unlock()
			if e != nil {
				e.grant(int(f.Credit.Frames))
			}
		case *connectorv1.ConnectResponse_Cancel:
			l.mu.Lock()
			e := l.execs[f.Cancel.QueryId]
			l.mu.Unlock()
			if e != nil {
				a.log.InfoContext(reqctx.FromCarrier(ctx, m.Context), "query canceled by the cloud", obslog.Event("satellite.query_canceled"), "query_id", f.Cancel.QueryId, "reason", f.Cancel.Reason)
				e.cancel()
			}
		case *connectorv1.ConnectResponse_Certificate:
			if err := a.onCertificate(ctx, f.Certificate); err != nil {
				a.log.Error("delivered certificate refused", obslog.Event("satellite.certificate_refused"), "error", err)
				continue
			}
			select {
			case a.hbNow <- struct{}{}: // tell the registry (and DNS) at once
			default:
			}
		case *connectorv1.ConnectResponse_Error:
			return true, &linkError{code: f.Error.Code, msg: f.Error.Message}
		}
	}
}

func (a *Agent) heartbeats(ctx context.Context, l *linkState, every time.Duration, fail context.CancelFunc) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		st := a.store.Stats()
		hb := &connectorv1.Heartbeat{
			Health: connectorv1.Health_HEALTH_OK, Address: a.cfg.Address, Version: Version, SentAt: timestamppb.Now(),
			Store: &connectorv1.StoreStats{Rows: st.Rows, Bytes: st.Bytes},
		}
		if !st.Oldest.IsZero() {
			hb.Store.Oldest, hb.Store.Newest = timestamppb.New(st.Oldest), timestamppb.New(st.Newest)
		}
		if h := a.cert.Load(); h != nil {
			hb.DnsName, hb.CertNotAfter = h.dnsName, timestamppb.New(h.notAfter)
		}
		if a.cfg.Store.MaxBytes > 0 && st.Bytes > a.cfg.Store.MaxBytes {
			hb.Health, hb.Detail = connectorv1.Health_HEALTH_DEGRADED, "store is over its size bound; retention is catching up"
		}
		if err := l.send(&connectorv1.ConnectRequest{Frame: &connectorv1.ConnectRequest_Heartbeat{Heartbeat: hb}}); err != nil {
			fail()
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-a.hbNow:
		}
	}
}

// Package pool keeps pre-issued certificates for satellite names in the
// region's etcd and hands each to exactly one satellite (pixie's "Approach
// 1", without its dry pool): a claim is one etcd transaction that removes
// the pooled entry only if it is unchanged and records the assignment only
// if the satellite has none, so two registrations never share a
// certificate, and asking again returns the same one. The pool is refilled
// in the background when it falls under a low watermark, and a claim on an
// empty pool issues a certificate on the spot instead of failing.
package pool

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	certdnsv1 "github.com/orbitplane/orbit/proto/orbit/certdns/v1"
	"github.com/orbitplane/orbit/services/certdns/pki"
)

// Key layout in the region's etcd.
const (
	Prefix         = "/orbit/certdns/v1/"
	PoolPrefix     = Prefix + "pool/"
	AssignedPrefix = Prefix + "assigned/"
	// RevokedPrefix + <serial> holds a revoked certificate's Revocation
	// (kept until the certificate would have expired).
	RevokedPrefix = Prefix + "revoked/"
)

// Limits (docs/limits.md).
const (
	// MaxClaimAttempts bounds retries when other claims take the entries
	// this one picked.
	MaxClaimAttempts = 32
	// claimCandidates is how many pooled entries one attempt reads to pick
	// from at random (spreads concurrent claims).
	claimCandidates = 32
)

// ErrInvalid is a bad request (e.g. no satellite ID).
var ErrInvalid = errors.New("certdns: invalid argument")

// Config configures a pool.
type Config struct {
	// Domain: names are <uuid>.satellites.<Domain>.
	Domain       string
	Size         int
	LowWatermark int
	Lifetime     time.Duration
}

// Metrics are the pool's instruments (registered by the service).
type Metrics struct {
	Available   prometheus.Gauge
	Issued      prometheus.Counter
	Assignments *prometheus.CounterVec // source: pool, spot, existing
	AssignTime  prometheus.Histogram
	Dry         prometheus.Counter
	Renewals    prometheus.Counter
	Releases    prometheus.Counter
	Stale       prometheus.Counter
}

// NewMetrics makes the pool's metrics.
func NewMetrics() Metrics {
	return Metrics{
		Available: prometheus.NewGauge(prometheus.GaugeOpts{Name: "orbit_certdns_pool_available", Help: "Pre-issued certificates waiting in the pool."}),
		Issued:    prometheus.NewCounter(prometheus.CounterOpts{Name: "orbit_certdns_issued_total", Help: "Certificates issued (pool refills and on-the-spot)."}),
		Assignments: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "orbit_certdns_assignments_total",
			Help: "Certificates assigned, by source: pool, spot (the pool was empty), existing (asked again)."}, []string{"source"}),
		AssignTime: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "orbit_certdns_assign_seconds", Help: "Assignment latency.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		Dry:      prometheus.NewCounter(prometheus.CounterOpts{Name: "orbit_certdns_pool_dry_total", Help: "Claims that found the pool empty."}),
		Renewals: prometheus.NewCounter(prometheus.CounterOpts{Name: "orbit_certdns_renewals_total", Help: "Certificates renewed (the old one revoked)."}),
		Releases: prometheus.NewCounter(prometheus.CounterOpts{Name: "orbit_certdns_releases_total", Help: "Certificates released and revoked (satellite deleted)."}),
		Stale:    prometheus.NewCounter(prometheus.CounterOpts{Name: "orbit_certdns_pool_stale_total", Help: "Pooled certificates dropped unassigned after a third of their lifetime."}),
	}
}

// Collectors lists the metrics for registration.
func (m Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.Available, m.Issued, m.Assignments, m.AssignTime, m.Dry, m.Renewals, m.Releases, m.Stale}
}

// Pool is one replica's view of the shared pool.
type Pool struct {
	cfg  Config
	kv   clientv3.KV
	ca   *pki.CA
	m    Metrics
	kick chan struct{}
}

// New returns a pool over kv signing with ca.
func New(cfg Config, kv clientv3.KV, ca *pki.CA, m Metrics) (*Pool, error) {
	if cfg.Domain == "" || cfg.Size <= 0 || cfg.LowWatermark < 0 || cfg.LowWatermark >= cfg.Size || cfg.Lifetime <= 0 {
		return nil, fmt.Errorf("certdns: pool needs a domain, size > 0, 0 <= low watermark < size and a lifetime (got %+v)", cfg)
	}
	return &Pool{cfg: cfg, kv: kv, ca: ca, m: m, kick: make(chan struct{}, 1)}, nil
}

func newName(domain string) string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6], b[8] = (b[6]&0x0f)|0x40, (b[8]&0x3f)|0x80 // UUIDv4
	h := hex.EncodeToString(b)
	return fmt.Sprintf("%s-%s-%s-%s-%s.satellites.%s", h[:8], h[8:12], h[12:16], h[16:20], h[20:], domain)
}

// issue signs a certificate for name (a new one when empty).
func (p *Pool) issue(name string) (*certdnsv1.Certificate, error) {
	if name == "" {
		name = newName(p.cfg.Domain)
	}
	is, err := p.ca.Issue(name, p.cfg.Lifetime)
	if err != nil {
		return nil, err
	}
	p.m.Issued.Inc()
	return &certdnsv1.Certificate{DnsName: is.DNSName, CertPem: is.CertPEM, KeyPem: is.KeyPEM, CaPem: p.ca.CertPEM,
		Serial: is.Serial, NotAfter: timestamppb.New(is.NotAfter)}, nil
}

// Available counts the pooled certificates.
func (p *Pool) Available(ctx context.Context) (int, error) {
	resp, err := p.kv.Get(ctx, PoolPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	p.m.Available.Set(float64(resp.Count))
	return int(resp.Count), nil
}

// Assigned counts the assigned certificates.
func (p *Pool) Assigned(ctx context.Context) (int, error) {
	resp, err := p.kv.Get(ctx, AssignedPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	return int(resp.Count), nil
}

// Fill issues certificates until the pool holds Size (or ctx ends). Several
// replicas filling at once can overshoot by a few; that is harmless.
func (p *Pool) Fill(ctx context.Context) error {
	n, err := p.Available(ctx)
	if err != nil {
		return err
	}
	for ; n < p.cfg.Size; n++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c, err := p.issue("")
		if err != nil {
			return err
		}
		raw, _ := proto.Marshal(c)
		if _, err := p.kv.Put(ctx, PoolPrefix+c.Serial, string(raw)); err != nil {
			return err
		}
	}
	p.m.Available.Set(float64(n))
	return nil
}

// Run refills the pool whenever it is under the low watermark: at start,
// after claims, and every interval; every interval it also prunes the
// records of revoked certificates that have expired.
func (p *Pool) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	first := true
	for {
		if n, err := p.Available(ctx); err == nil && (first || n <= p.cfg.LowWatermark) {
			_ = p.Fill(ctx) // a failure is retried at the next tick or claim
		}
		first = false
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.pruneRevoked(ctx)
		case <-p.kick:
		}
	}
}

// Assign gives a satellite its certificate: the one it already has, else a
// pooled one, else one issued now.
func (p *Pool) Assign(ctx context.Context, satelliteID string) (*certdnsv1.Certificate, error) {
	if satelliteID == "" || len(satelliteID) > 128 {
		return nil, fmt.Errorf("%w: satellite ID must be 1 to 128 bytes", ErrInvalid)
	}
	start := time.Now()
	defer func() { p.m.AssignTime.Observe(time.Since(start).Seconds()) }()
	defer func() {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}()
	assigned := AssignedPrefix + satelliteID
	for attempt := 0; attempt < MaxClaimAttempts; attempt++ {
		resp, err := p.kv.Txn(ctx).Then(
			clientv3.OpGet(assigned),
			clientv3.OpGet(PoolPrefix, clientv3.WithPrefix(), clientv3.WithLimit(claimCandidates)),
		).Commit()
		if err != nil {
			return nil, err
		}
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 {
			p.m.Assignments.WithLabelValues("existing").Inc()
			return Decode(kvs[0].Value)
		}
		cands := p.fresh(ctx, resp.Responses[1].GetResponseRange().Kvs)
		if len(cands) == 0 {
			p.m.Dry.Inc()
			c, err := p.issue("")
			if err != nil {
				return nil, err
			}
			raw, _ := proto.Marshal(c)
			tr, err := p.kv.Txn(ctx).If(clientv3.Compare(clientv3.Version(assigned), "=", 0)).
				Then(clientv3.OpPut(assigned, string(raw))).Commit()
			if err != nil {
				return nil, err
			}
			if tr.Succeeded {
				p.m.Assignments.WithLabelValues("spot").Inc()
				return c, nil
			}
			continue // assigned concurrently: read it
		}
		pick := cands[mrand.IntN(len(cands))]
		tr, err := p.kv.Txn(ctx).If(
			clientv3.Compare(clientv3.ModRevision(string(pick.Key)), "=", pick.ModRevision),
			clientv3.Compare(clientv3.Version(assigned), "=", 0),
		).Then(clientv3.OpDelete(string(pick.Key)), clientv3.OpPut(assigned, string(pick.Value))).Commit()
		if err != nil {
			return nil, err
		}
		if tr.Succeeded {
			p.m.Assignments.WithLabelValues("pool").Inc()
			return Decode(pick.Value)
		}
	}
	return nil, fmt.Errorf("certdns: no certificate claimed for %s after %d attempts (heavy contention); try again", satelliteID, MaxClaimAttempts)
}

// fresh drops pooled certificates that waited past a third of their
// lifetime (a satellite would have to renew one at once) and returns the
// others.
func (p *Pool) fresh(ctx context.Context, kvs []*mvccpb.KeyValue) []*mvccpb.KeyValue {
	out := kvs[:0:0]
	for _, kv := range kvs {
		c, err := Decode(kv.Value)
		if err == nil && time.Until(c.NotAfter.AsTime()) > p.cfg.Lifetime*2/3 {
			out = append(out, kv)
			continue
		}
		// Stale or unreadable: remove it if nobody took it meanwhile.
		_, _ = p.kv.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision)).
			Then(clientv3.OpDelete(string(kv.Key))).Commit()
		p.m.Stale.Inc()
	}
	return out
}

// ErrNotAssigned: the satellite holds no certificate.
var ErrNotAssigned = errors.New("certdns: the satellite holds no certificate")

// Revocation is what RevokedPrefix keys hold (JSON).
type Revocation struct {
	Serial    string    `json:"serial"`
	DNSName   string    `json:"dns_name"`
	RevokedAt time.Time `json:"revoked_at"`
	NotAfter  time.Time `json:"not_after"`
	Reason    string    `json:"reason"`
}

func revocationOp(c *certdnsv1.Certificate, reason string) clientv3.Op {
	raw, _ := json.Marshal(Revocation{Serial: c.Serial, DNSName: c.DnsName, RevokedAt: time.Now().UTC(), NotAfter: c.NotAfter.AsTime(), Reason: reason})
	return clientv3.OpPut(RevokedPrefix+c.Serial, string(raw))
}

// Renew issues a new certificate for the satellite's name, replaces the
// assignment and revokes the old one, in one transaction. It fails with
// ErrNotAssigned when the satellite holds none.
func (p *Pool) Renew(ctx context.Context, satelliteID string) (*certdnsv1.Certificate, error) {
	key := AssignedPrefix + satelliteID
	_, c, err := p.change(ctx, satelliteID, "superseded", func(old *certdnsv1.Certificate) (clientv3.Op, *certdnsv1.Certificate, error) {
		c, err := p.issue(old.DnsName)
		if err != nil {
			return clientv3.Op{}, nil, err
		}
		raw, _ := proto.Marshal(c)
		return clientv3.OpPut(key, string(raw)), c, nil
	})
	if err == nil {
		p.m.Renewals.Inc()
	}
	return c, err
}

// Release revokes the satellite's certificate and drops the assignment (its
// name stops resolving). Releasing a satellite with none is a no-op (nil).
func (p *Pool) Release(ctx context.Context, satelliteID, reason string) (*certdnsv1.Certificate, error) {
	old, _, err := p.change(ctx, satelliteID, reason, func(*certdnsv1.Certificate) (clientv3.Op, *certdnsv1.Certificate, error) {
		return clientv3.OpDelete(AssignedPrefix + satelliteID), nil, nil
	})
	switch {
	case errors.Is(err, ErrNotAssigned):
		return nil, nil
	case err != nil:
		return nil, err
	}
	p.m.Releases.Inc()
	return old, nil
}

// change replaces (or deletes) a satellite's assignment with the op next
// builds from the current one, revoking the current certificate, in one
// transaction guarded by the assignment's mod revision; it retries when
// another change won the race. ErrNotAssigned when there is none.
func (p *Pool) change(ctx context.Context, satelliteID, reason string,
	next func(old *certdnsv1.Certificate) (clientv3.Op, *certdnsv1.Certificate, error)) (old, result *certdnsv1.Certificate, err error) {
	key := AssignedPrefix + satelliteID
	for attempt := 0; attempt < MaxClaimAttempts; attempt++ {
		resp, err := p.kv.Get(ctx, key)
		if err != nil {
			return nil, nil, err
		}
		if len(resp.Kvs) == 0 {
			return nil, nil, ErrNotAssigned
		}
		old, err := Decode(resp.Kvs[0].Value)
		if err != nil {
			return nil, nil, err
		}
		op, result, err := next(old)
		if err != nil {
			return nil, nil, err
		}
		tr, err := p.kv.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision)).
			Then(op, revocationOp(old, reason)).Commit()
		if err != nil {
			return nil, nil, err
		}
		if tr.Succeeded {
			return old, result, nil
		}
	}
	return nil, nil, fmt.Errorf("certdns: changing the certificate of %s kept racing; try again", satelliteID)
}

// Revoked lists the revoked certificates not yet expired (what the CRL
// lists).
func (p *Pool) Revoked(ctx context.Context) ([]Revocation, error) {
	all, err := p.revocations(ctx)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	var out []Revocation
	for _, r := range all {
		if now.Before(r.rev.NotAfter) {
			out = append(out, r.rev)
		}
	}
	return out, nil
}

type storedRevocation struct {
	key string
	rev Revocation
}

func (p *Pool) revocations(ctx context.Context) ([]storedRevocation, error) {
	resp, err := p.kv.Get(ctx, RevokedPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	out := make([]storedRevocation, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var r Revocation
		if json.Unmarshal(kv.Value, &r) == nil {
			out = append(out, storedRevocation{key: string(kv.Key), rev: r})
		}
	}
	return out, nil
}

// pruneRevoked deletes the records of revoked certificates that have
// expired anyway (a CRL need not list them); the refill loop runs it.
func (p *Pool) pruneRevoked(ctx context.Context) {
	all, err := p.revocations(ctx)
	if err != nil {
		return
	}
	now := time.Now()
	for _, r := range all {
		if now.After(r.rev.NotAfter) {
			_, _ = p.kv.Delete(ctx, r.key)
		}
	}
}

// Decode reads a stored certificate.
func Decode(raw []byte) (*certdnsv1.Certificate, error) {
	var c certdnsv1.Certificate
	if err := proto.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("certdns: stored certificate: %w", err)
	}
	return &c, nil
}

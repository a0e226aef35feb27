package certdns

import (
	"context"
	"log/slog"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/orbitplane/orbit/libs/obslog"
	"github.com/orbitplane/orbit/libs/retry"
)

// Limits of the RFC 2136 updater (docs/limits.md).
const (
	// MaxNamesPerUpdate bounds one UPDATE message.
	MaxNamesPerUpdate = 100
	rfc2136Timeout    = 5 * time.Second
)

// updater mirrors the zone into an operator's DNS server with RFC 2136
// dynamic updates signed with TSIG (hmac-sha256): for each changed name it
// replaces the A/AAAA RRsets with the satellite's current address, or
// removes them when the name is gone. Failed names are retried with
// backoff; replicas sending the same update are harmless (each update
// states the whole answer for its names).
type updater struct {
	server, zone    string
	keyName, secret string
	ttl             uint32
	z               *zone
	log             *slog.Logger
	results         *prometheus.CounterVec

	mu    sync.Mutex
	dirty map[string]struct{}
	kick  chan struct{}
}

func newUpdater(cfg Config, z *zone, log *slog.Logger) *updater {
	zone := cfg.RFC2136Zone
	if zone == "" {
		zone = "satellites." + cfg.Domain
	}
	return &updater{
		server: cfg.RFC2136Server, zone: dns.Fqdn(strings.ToLower(zone)), keyName: dns.Fqdn(cfg.RFC2136KeyName), secret: cfg.RFC2136KeySecret,
		ttl: uint32(cfg.DNSTTL / time.Second), z: z, log: log, dirty: map[string]struct{}{}, kick: make(chan struct{}, 1),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "orbit_certdns_rfc2136_updates_total",
			Help: "RFC 2136 UPDATE messages sent to the operator's DNS server, by result."}, []string{"result"}),
	}
}

func (u *updater) mark(names ...string) {
	u.mu.Lock()
	for _, n := range names {
		if n != "" {
			u.dirty[strings.ToLower(strings.TrimSuffix(n, "."))] = struct{}{}
		}
	}
	u.mu.Unlock()
	select {
	case u.kick <- struct{}{}:
	default:
	}
}

func (u *updater) take() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make([]string, 0, min(len(u.dirty), MaxNamesPerUpdate))
	for n := range u.dirty {
		if len(out) == MaxNamesPerUpdate {
			break
		}
		out = append(out, n)
		delete(u.dirty, n)
	}
	sort.Strings(out)
	return out
}

func (u *updater) run(ctx context.Context) {
	backoff := retry.Backoff{Min: 100 * time.Millisecond, Max: 30 * time.Second}
	for {
		select {
		case <-ctx.Done():
			return
		case <-u.kick:
		}
		for names := u.take(); len(names) > 0 && ctx.Err() == nil; names = u.take() {
			if err := u.send(names); err != nil {
				u.results.WithLabelValues("error").Inc()
				u.log.Warn("RFC 2136 update failed; retrying", obslog.Event("certdns.rfc2136_failed"), "server", u.server, "names", len(names), "error", err)
				u.mark(names...)
				_ = backoff.Wait(ctx)
				continue
			}
			u.results.WithLabelValues("ok").Inc()
			backoff.Reset()
		}
	}
}

// send replaces the address records of names in one signed UPDATE.
func (u *updater) send(names []string) error {
	m := new(dns.Msg)
	m.SetUpdate(u.zone)
	var remove, insert []dns.RR
	for _, n := range names {
		fq := dns.Fqdn(n)
		if !dns.IsSubDomain(u.zone, fq) {
			continue
		}
		remove = append(remove,
			&dns.ANY{Hdr: dns.RR_Header{Name: fq, Rrtype: dns.TypeA, Class: dns.ClassANY}},
			&dns.ANY{Hdr: dns.RR_Header{Name: fq, Rrtype: dns.TypeAAAA, Class: dns.ClassANY}})
		addr, ok := u.z.lookup(n)
		if !ok {
			continue
		}
		host := addr
		if h, _, err := net.SplitHostPort(addr); err == nil {
			host = h
		}
		ip := net.ParseIP(host)
		switch {
		case ip == nil:
		case ip.To4() != nil:
			insert = append(insert, &dns.A{Hdr: dns.RR_Header{Name: fq, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: u.ttl}, A: ip.To4()})
		default:
			insert = append(insert, &dns.AAAA{Hdr: dns.RR_Header{Name: fq, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: u.ttl}, AAAA: ip})
		}
	}
	if len(remove) == 0 {
		return nil
	}
	m.RemoveRRset(remove)
	if len(insert) > 0 {
		m.Insert(insert)
	}
	c := &dns.Client{Net: "tcp", Timeout: rfc2136Timeout}
	if u.keyName != "." && u.secret != "" {
		m.SetTsig(u.keyName, dns.HmacSHA256, 300, time.Now().Unix())
		c.TsigSecret = map[string]string{u.keyName: u.secret}
	}
	in, _, err := c.Exchange(m, u.server)
	if err != nil {
		return err
	}
	if in.Rcode != dns.RcodeSuccess {
		return &rcodeError{in.Rcode}
	}
	return nil
}

type rcodeError struct{ rcode int }

func (e *rcodeError) Error() string { return "server answered " + dns.RcodeToString[e.rcode] }

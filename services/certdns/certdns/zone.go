package certdns

import (
	"context"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/orbitplane/orbit/libs/retry"
	registryv1 "github.com/orbitplane/orbit/proto/orbit/registry/v1"
	"github.com/orbitplane/orbit/services/certdns/pool"
	"github.com/orbitplane/orbit/services/registry/registry"
)

// zone is the satellites zone as the DNS server answers it: every assigned
// certificate's name, pointing at the address of the satellite's latest
// heartbeat. It follows etcd — the certificate assignments and the
// registry's satellite records (which the registry writes within its flush
// interval of an address change) — with a watch on each.
type zone struct {
	mu     sync.RWMutex
	names  map[string]string // satellite ID -> name (lower case, no trailing dot)
	byName map[string]string // name -> satellite ID
	// addrs has every satellite the registry has: ID -> host:port of its
	// latest heartbeat.
	addrs map[string]string
	// changed, when set, hears every name whose records may have changed
	// (called outside the lock).
	changed func(names ...string)
}

func newZone() *zone {
	return &zone{names: map[string]string{}, byName: map[string]string{}, addrs: map[string]string{}}
}

func (z *zone) setName(id, name string) {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if old, ok := z.names[id]; ok {
		delete(z.byName, old)
	}
	z.names[id], z.byName[name] = name, id
}

func (z *zone) dropName(id string) {
	if old, ok := z.names[id]; ok {
		delete(z.byName, old)
		delete(z.names, id)
	}
}

// lookup returns the satellite's address for a name; ok is false for a name
// the zone does not hold.
func (z *zone) lookup(name string) (addr string, ok bool) {
	z.mu.RLock()
	defer z.mu.RUnlock()
	id, ok := z.byName[strings.ToLower(strings.TrimSuffix(name, "."))]
	if !ok {
		return "", false
	}
	return z.addrs[id], true
}

func (z *zone) notify(names ...string) {
	if z.changed != nil {
		z.changed(names...)
	}
}

// applyAssignment handles a put or delete under pool.AssignedPrefix.
func (z *zone) applyAssignment(key string, value []byte, deleted bool) {
	id := strings.TrimPrefix(key, pool.AssignedPrefix)
	z.mu.Lock()
	old := z.names[id]
	if deleted {
		z.dropName(id)
		z.mu.Unlock()
		z.notify(old)
		return
	}
	c, err := pool.Decode(value)
	if err != nil {
		z.mu.Unlock()
		return
	}
	z.setName(id, c.DnsName)
	name := z.names[id]
	z.mu.Unlock()
	z.notify(old, name) // the updater ignores "" and repeats
}

// applySatellite handles a put or delete under registry.SatellitePrefix; it
// returns true when a satellite was deleted.
func (z *zone) applySatellite(key string, value []byte, deleted bool) bool {
	id := strings.TrimPrefix(key, registry.SatellitePrefix)
	z.mu.Lock()
	name := z.names[id]
	if deleted {
		delete(z.addrs, id)
		z.mu.Unlock()
		z.notify(name)
		return true
	}
	var sat registryv1.Satellite
	if proto.Unmarshal(value, &sat) != nil {
		z.mu.Unlock()
		return false
	}
	prev, had := z.addrs[id]
	z.addrs[id] = sat.Address
	z.mu.Unlock()
	if !had || prev != sat.Address {
		z.notify(name)
	}
	return false
}

// allNames lists every name the zone holds.
func (z *zone) allNames() []string {
	z.mu.RLock()
	defer z.mu.RUnlock()
	out := make([]string, 0, len(z.byName))
	for n := range z.byName {
		out = append(out, n)
	}
	return out
}

// follow loads the zone and keeps it current until ctx ends, reloading
// (with backoff) when a watch is lost or compacted. released is called for
// each satellite the registry deleted, and at load for each assignment
// whose satellite is gone.
func (z *zone) follow(ctx context.Context, cli *clientv3.Client, released func(id string)) {
	backoff := retry.Backoff{Min: 100 * time.Millisecond, Max: 10 * time.Second}
	for ctx.Err() == nil {
		rev, orphans, err := z.load(ctx, cli)
		if err == nil {
			backoff.Reset()
			for _, id := range orphans {
				released(id)
			}
			wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
			z.watch(wctx, cli, rev+1, released)
			cancel()
		}
		_ = backoff.Wait(ctx)
	}
}

func (z *zone) load(ctx context.Context, cli *clientv3.Client) (int64, []string, error) {
	resp, err := cli.Txn(ctx).Then(
		clientv3.OpGet(pool.AssignedPrefix, clientv3.WithPrefix()),
		clientv3.OpGet(registry.SatellitePrefix, clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return 0, nil, err
	}
	fresh := newZone()
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		fresh.applySatellite(string(kv.Key), kv.Value, false)
	}
	var orphans []string
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		fresh.applyAssignment(string(kv.Key), kv.Value, false)
		id := strings.TrimPrefix(string(kv.Key), pool.AssignedPrefix)
		if _, known := fresh.addrs[id]; !known {
			orphans = append(orphans, id)
		}
	}
	z.mu.Lock()
	var gone []string
	for n := range z.byName {
		if _, ok := fresh.byName[n]; !ok {
			gone = append(gone, n)
		}
	}
	z.names, z.byName, z.addrs = fresh.names, fresh.byName, fresh.addrs
	z.mu.Unlock()
	z.notify(append(gone, z.allNames()...)...)
	return resp.Header.Revision, orphans, nil
}

// watch applies both prefixes' events until ctx ends or a watch is lost.
func (z *zone) watch(ctx context.Context, cli *clientv3.Client, from int64, released func(id string)) {
	assigned := cli.Watch(ctx, pool.AssignedPrefix, clientv3.WithPrefix(), clientv3.WithRev(from))
	sats := cli.Watch(ctx, registry.SatellitePrefix, clientv3.WithPrefix(), clientv3.WithRev(from))
	for {
		select {
		case <-ctx.Done():
			return
		case wr, ok := <-assigned:
			if !ok || wr.Err() != nil {
				return
			}
			for _, ev := range wr.Events {
				z.applyAssignment(string(ev.Kv.Key), ev.Kv.Value, ev.Type == clientv3.EventTypeDelete)
			}
		case wr, ok := <-sats:
			if !ok || wr.Err() != nil {
				return
			}
			for _, ev := range wr.Events {
				if z.applySatellite(string(ev.Kv.Key), ev.Kv.Value, ev.Type == clientv3.EventTypeDelete) {
					released(strings.TrimPrefix(string(ev.Kv.Key), registry.SatellitePrefix))
				}
			}
		}
	}
}

// dnsServer answers for the satellites zone only: A/AAAA from the latest
// heartbeat address, SOA and NS at the apex, NXDOMAIN for names it does not
// hold, REFUSED for anything outside the zone (it never recurses).
type dnsServer struct {
	zone   *zone
	origin string // "satellites.<domain>." (lower case)
	ns     string // the NS name, fully qualified
	ttl    uint32
	serial uint32
}

func newDNSServer(z *zone, domain, ns string, ttl time.Duration) *dnsServer {
	origin := dns.Fqdn("satellites." + strings.ToLower(domain))
	if ns == "" {
		ns = "ns." + origin
	}
	return &dnsServer{zone: z, origin: origin, ns: dns.Fqdn(ns), ttl: uint32(ttl / time.Second), serial: uint32(time.Now().Unix())}
}

func (d *dnsServer) soa() dns.RR {
	return &dns.SOA{Hdr: dns.RR_Header{Name: d.origin, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: d.ttl},
		Ns: d.ns, Mbox: "hostmaster." + d.origin, Serial: d.serial, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: d.ttl}
}

// ServeDNS answers one query.
func (d *dnsServer) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	m.RecursionAvailable = false
	if len(r.Question) != 1 || r.Opcode != dns.OpcodeQuery {
		m.SetRcode(r, dns.RcodeRefused)
		_ = w.WriteMsg(m)
		return
	}
	q := r.Question[0]
	name := strings.ToLower(q.Name)
	if q.Qclass != dns.ClassINET || !dns.IsSubDomain(d.origin, name) {
		// Not ours: an authoritative-only server refuses rather than recurse.
		m.SetRcode(r, dns.RcodeRefused)
		_ = w.WriteMsg(m)
		return
	}
	m.Authoritative = true
	if name == d.origin {
		switch q.Qtype {
		case dns.TypeSOA:
			m.Answer = append(m.Answer, d.soa())
		case dns.TypeNS:
			m.Answer = append(m.Answer, &dns.NS{Hdr: dns.RR_Header{Name: d.origin, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: d.ttl}, Ns: d.ns})
		default:
			m.Ns = append(m.Ns, d.soa())
		}
		_ = w.WriteMsg(m)
		return
	}
	addr, ok := d.zone.lookup(name)
	if !ok {
		m.SetRcode(r, dns.RcodeNameError)
		m.Authoritative = true
		m.Ns = append(m.Ns, d.soa())
		_ = w.WriteMsg(m)
		return
	}
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	ip := net.ParseIP(host)
	hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: d.ttl}
	switch {
	case q.Qtype == dns.TypeA && ip != nil && ip.To4() != nil:
		hdr.Rrtype = dns.TypeA
		m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: ip.To4()})
	case q.Qtype == dns.TypeAAAA && ip != nil && ip.To4() == nil:
		hdr.Rrtype = dns.TypeAAAA
		m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: ip})
	default:
		// The name exists but has no record of this type (or no address
		// yet): NOERROR with the SOA, so resolvers cache the absence briefly.
		m.Ns = append(m.Ns, d.soa())
	}
	_ = w.WriteMsg(m)
}

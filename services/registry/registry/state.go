package registry

import (
	"maps"
	"sort"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	registryv1 "github.com/orbitplane/orbit/proto/orbit/registry/v1"
)

// state is the registry's memory: every satellite, its liveness, and what
// still has to reach etcd. Liveness never touches etcd; only changes of what
// a user can see (status, address, version, labels, connector) mark an entry
// dirty, and the flusher writes dirty entries in batches.
type state struct {
	mu       sync.RWMutex
	byID     map[string]*entry
	identity map[string]string // tenant + "/" + identity -> id
	dirty    map[string]struct{}
	watchers map[*watcher]struct{}
}

type entry struct {
	sat      *registryv1.Satellite
	lastSeen time.Time
}

func newState() *state {
	return &state{
		byID:     map[string]*entry{},
		identity: map[string]string{},
		dirty:    map[string]struct{}{},
		watchers: map[*watcher]struct{}{},
	}
}

// IdentityKey is the key of a satellite's identity within a tenant (under
// IdentityPrefix in etcd).
func IdentityKey(tenant, identity string) string { return tenant + "/" + identity }

// load puts a satellite read from etcd into memory.
func (s *state) load(sat *registryv1.Satellite, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.byID[sat.Id] = &entry{sat: sat, lastSeen: now}
	s.identity[IdentityKey(sat.TenantId, sat.Identity)] = sat.Id
}

// changed records a visible change of e: it goes to etcd in the next batch
// and to every matching watcher now. Call with mu held.
func (s *state) changed(e *entry) {
	s.dirty[e.sat.Id] = struct{}{}
	ev := &registryv1.WatchSatellitesResponse{
		Type:      registryv1.WatchEventType_WATCH_EVENT_TYPE_UPSERTED,
		Satellite: proto.Clone(e.sat).(*registryv1.Satellite),
	}
	for w := range s.watchers {
		if w.matches(e.sat) {
			w.send(ev)
		}
	}
}

// heartbeat applies one heartbeat; false if the satellite is unknown. Only
// Register moves a satellite to another connector.
func (s *state) heartbeat(hb *registryv1.SatelliteHeartbeat, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.byID[hb.SatelliteId]
	if !ok {
		return false
	}
	e.lastSeen = now
	sat := e.sat
	sat.LastHeartbeat = timestamppb.New(now)
	sat.StoreRows, sat.StoreBytes = hb.StoreRows, hb.StoreBytes
	status := registryv1.SatelliteStatus_SATELLITE_STATUS_HEALTHY
	if hb.Degraded {
		status = registryv1.SatelliteStatus_SATELLITE_STATUS_DEGRADED
	}
	visible := sat.Status != status || sat.StatusDetail != hb.Detail ||
		(hb.Address != "" && sat.Address != hb.Address) ||
		(hb.Version != "" && sat.Version != hb.Version) ||
		sat.DnsName != hb.DnsName || !proto.Equal(sat.CertNotAfter, hb.CertNotAfter)
	if !visible {
		return true
	}
	sat.DnsName, sat.CertNotAfter = hb.DnsName, hb.CertNotAfter
	sat.Status, sat.StatusDetail = status, hb.Detail
	if hb.Address != "" {
		sat.Address = hb.Address
	}
	if hb.Version != "" {
		sat.Version = hb.Version
	}
	s.changed(e)
	return true
}

// disconnect marks satellites DISCONNECTED if connector (when given) still
// holds them; a stale connector cannot disconnect a satellite that moved.
func (s *state) disconnect(ids []string, connector, detail string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, id := range ids {
		e, ok := s.byID[id]
		if !ok || (connector != "" && e.sat.ConnectorId != connector) {
			continue
		}
		if s.markDisconnected(e, detail) {
			n++
		}
	}
	return n
}

func (s *state) markDisconnected(e *entry, detail string) bool {
	if e.sat.Status == registryv1.SatelliteStatus_SATELLITE_STATUS_DISCONNECTED {
		return false
	}
	e.sat.Status = registryv1.SatelliteStatus_SATELLITE_STATUS_DISCONNECTED
	e.sat.StatusDetail = detail
	s.changed(e)
	return true
}

// disconnectConnector marks every satellite held by connector DISCONNECTED
// (its instance key expired: the replica died).
func (s *state) disconnectConnector(connector string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, e := range s.byID {
		if e.sat.ConnectorId == connector && s.markDisconnected(e, "connector "+connector+" is gone") {
			n++
		}
	}
	return n
}

// sweep marks satellites whose last heartbeat is older than deadline.
func (s *state) sweep(deadline time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, e := range s.byID {
		if e.lastSeen.Before(deadline) && s.markDisconnected(e, "missed heartbeats") {
			n++
		}
	}
	return n
}

// remove forgets a satellite and tells the watchers; nil if unknown.
func (s *state) remove(id string) *registryv1.Satellite {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.byID[id]
	if !ok {
		return nil
	}
	delete(s.byID, id)
	delete(s.dirty, id)
	ikey := IdentityKey(e.sat.TenantId, e.sat.Identity)
	if s.identity[ikey] == id {
		delete(s.identity, ikey)
	}
	ev := &registryv1.WatchSatellitesResponse{Type: registryv1.WatchEventType_WATCH_EVENT_TYPE_DELETED, Satellite: proto.Clone(e.sat).(*registryv1.Satellite)}
	for w := range s.watchers {
		if w.matches(e.sat) {
			w.send(ev)
		}
	}
	return e.sat
}

// takeDirty returns copies of the entries to write and clears the set.
func (s *state) takeDirty() []*registryv1.Satellite {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*registryv1.Satellite, 0, len(s.dirty))
	for id := range s.dirty {
		if e, ok := s.byID[id]; ok {
			out = append(out, proto.Clone(e.sat).(*registryv1.Satellite))
		}
	}
	clear(s.dirty)
	return out
}

// redirty puts back entries whose write failed.
func (s *state) redirty(sats []*registryv1.Satellite) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sat := range sats {
		s.dirty[sat.Id] = struct{}{}
	}
}

// get finds a satellite of tenant by ID or, failing that, by unique name.
// It returns a copy; ambiguous names report the count.
func (s *state) get(tenant, ref string) (*registryv1.Satellite, int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if e, ok := s.byID[ref]; ok && (tenant == "" || e.sat.TenantId == tenant) {
		return proto.Clone(e.sat).(*registryv1.Satellite), 1
	}
	var found *registryv1.Satellite
	n := 0
	for _, e := range s.byID {
		if e.sat.Name == ref && (tenant == "" || e.sat.TenantId == tenant) {
			found = e.sat
			n++
		}
	}
	if n != 1 {
		return nil, n
	}
	return proto.Clone(found).(*registryv1.Satellite), 1
}

// list returns copies of the matching satellites ordered by name, then ID.
func (s *state) list(f filter) []*registryv1.Satellite {
	s.mu.RLock()
	out := make([]*registryv1.Satellite, 0, len(s.byID))
	for _, e := range s.byID {
		if f.matches(e.sat) {
			out = append(out, proto.Clone(e.sat).(*registryv1.Satellite))
		}
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].Id < out[j].Id
	})
	return out
}

// filter selects satellites: tenant ("" = any), labels (all must equal) and
// statuses (empty = any).
type filter struct {
	tenant   string
	labels   map[string]string
	statuses []registryv1.SatelliteStatus
}

func (f filter) matches(sat *registryv1.Satellite) bool {
	if f.tenant != "" && sat.TenantId != f.tenant {
		return false
	}
	for k, v := range f.labels {
		if sat.Labels[k] != v {
			return false
		}
	}
	if len(f.statuses) == 0 {
		return true
	}
	for _, st := range f.statuses {
		if sat.Status == st {
			return true
		}
	}
	return false
}

func cloneLabels(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return maps.Clone(m)
}

package querybroker

import (
	"context"
	"sync"
	"time"

	"connectrpc.com/connect"

	registryv1 "github.com/orbitplane/orbit/proto/orbit/registry/v1"
)

// satCache mirrors the registry through its Watch stream, so resolving a
// query's satellite costs a map lookup instead of an RPC. A miss (a satellite
// registered a moment ago, an ambiguous name, the watch reconnecting) falls
// back to the registry's GetSatellite.
type satCache struct {
	mu     sync.RWMutex
	byID   map[string]*registryv1.Satellite
	synced bool
}

func newSatCache() *satCache { return &satCache{byID: map[string]*registryv1.Satellite{}} }

// lookup finds a satellite of tenant by ID, or by a name exactly one of the
// tenant's satellites has.
func (c *satCache) lookup(tenant, ref string) *registryv1.Satellite {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if !c.synced {
		return nil
	}
	if s, ok := c.byID[ref]; ok {
		if s.TenantId == tenant {
			return s
		}
		return nil
	}
	var found *registryv1.Satellite
	for _, s := range c.byID {
		if s.TenantId == tenant && s.Name == ref {
			if found != nil {
				return nil // ambiguous: let the registry explain
			}
			found = s
		}
	}
	return found
}

// run keeps the mirror current until ctx ends.
func (c *satCache) run(ctx context.Context, s *Service) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := c.watch(ctx, s)
		c.mu.Lock()
		c.synced = false
		clear(c.byID)
		c.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("registry watch ended; resolving through the registry until it is back", "error", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (c *satCache) watch(ctx context.Context, s *Service) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := s.registry.WatchSatellites(ctx, connect.NewRequest(&registryv1.WatchSatellitesRequest{}))
	if err != nil {
		return err
	}
	defer stream.Close()
	for stream.Receive() {
		ev := stream.Msg()
		c.mu.Lock()
		switch ev.Type {
		case registryv1.WatchEventType_WATCH_EVENT_TYPE_DELETED:
			delete(c.byID, ev.Satellite.Id)
		default:
			c.byID[ev.Satellite.Id] = ev.Satellite
		}
		// The initial state arrives first; a miss before it is complete
		// just costs one RPC.
		c.synced = true
		c.mu.Unlock()
	}
	return stream.Err()
}

package ctxpublisher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/orbitplane/orbit/libs/contextstore"
	"github.com/orbitplane/orbit/libs/retry"
	contextsv1 "github.com/orbitplane/orbit/proto/orbit/contexts/v1"
	ctxpublisherv1 "github.com/orbitplane/orbit/proto/orbit/ctxpublisher/v1"
	"github.com/orbitplane/orbit/services/platform/store"
)

// worker brings one region current and keeps it so. Pushes and reconciles
// of a region run one at a time, on this worker's goroutine.
type worker struct {
	s      *Service
	region store.Region
	kickc  chan struct{}
	reqs   chan chan error
	cancel context.CancelFunc
	done   chan struct{}

	// revs is the mod revision of each context the worker last wrote or
	// read in the region (the worker's goroutine only).
	revs map[string]int64

	mu            sync.Mutex
	pushed        uint64
	behindSince   time.Time
	lastReconcile time.Time
	written       int64
	deleted       int64
	lastErr       string
}

func newWorker(s *Service, r store.Region) *worker {
	return &worker{s: s, region: r, kickc: make(chan struct{}, 1), reqs: make(chan chan error, 16), done: make(chan struct{}), revs: map[string]int64{}}
}

func (w *worker) kick() {
	select {
	case w.kickc <- struct{}{}:
	default:
	}
}

func (w *worker) stop() {
	if w.cancel != nil {
		w.cancel()
	}
}

func (w *worker) pushedVersion() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pushed
}

// reconcileNow asks for a full reconcile and waits for its outcome.
func (w *worker) reconcileNow(ctx context.Context) error {
	reply := make(chan error, 1)
	select {
	case w.reqs <- reply:
	case <-ctx.Done():
		return ctx.Err()
	case <-w.done:
		return errors.New("region removed")
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-w.done:
		return errors.New("region removed")
	}
}

// run works until ctx ends (the service stops or the region is removed).
func (w *worker) run(ctx context.Context) {
	defer close(w.done)
	name := w.region.Name
	log := w.s.log.With("region_name", name)
	var cli *clientv3.Client
	defer func() {
		if cli != nil {
			cli.Close()
		}
	}()
	reconcile := true // at start: the region may be anything
	var waiters []chan error
	timer := time.NewTimer(w.s.cfg.ReconcileInterval)
	defer timer.Stop()
	backoff := retry.Backoff{Min: w.s.cfg.RetryMin, Max: w.s.cfg.RetryMax}
	for {
		err := func() error {
			if cli == nil {
				dctx, dcancel := context.WithTimeout(ctx, w.s.cfg.WriteTimeout)
				c, err := w.s.dial(dctx, w.region.EtcdEndpoints)
				dcancel()
				if err != nil {
					return fmt.Errorf("connect: %w", err)
				}
				cli = c
			}
			if reconcile {
				if err := w.reconcile(ctx, cli); err != nil {
					return fmt.Errorf("reconcile: %w", err)
				}
				reconcile = false
				for _, r := range waiters {
					r <- nil
				}
				waiters = nil
			}
			return w.push(ctx, cli)
		}()
		if ctx.Err() != nil {
			for _, r := range waiters {
				r <- ctx.Err()
			}
			return
		}
		if err != nil {
			w.s.m.errors.WithLabelValues(name).Inc()
			w.s.m.failing.WithLabelValues(name).Set(1)
			w.mu.Lock()
			first := w.lastErr == ""
			w.lastErr = err.Error()
			w.mu.Unlock()
			if first {
				log.Warn("region unreachable; retrying with backoff", "event", "ctxpublisher.region_failing", "error", err.Error())
			}
			for _, r := range waiters {
				r <- err
			}
			waiters = nil
			select {
			case r := <-w.reqs:
				waiters, reconcile = append(waiters, r), true
			default:
			}
			if backoff.Wait(ctx) != nil {
				return
			}
			continue
		}
		backoff.Reset()
		w.s.m.failing.WithLabelValues(name).Set(0)
		w.mu.Lock()
		if w.lastErr != "" {
			log.Info("region reachable again", "event", "ctxpublisher.region_recovered")
		}
		w.lastErr = ""
		w.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-w.kickc:
		case r := <-w.reqs:
			waiters, reconcile = append(waiters, r), true
		case <-timer.C:
			timer.Reset(w.s.cfg.ReconcileInterval)
			reconcile = true
		}
	}
}

// push writes every change after the region's version, oldest first.
func (w *worker) push(ctx context.Context, cli *clientv3.Client) error {
	for {
		w.mu.Lock()
		after := w.pushed
		w.mu.Unlock()
		changes, cs, err := w.s.st.Pending(ctx, after, store.MaxChangesRead)
		if err != nil {
			return err
		}
		if len(changes) == 0 {
			w.caughtUp()
			return nil
		}
		w.mu.Lock()
		if w.behindSince.IsZero() {
			w.behindSince = changes[0].At
		}
		w.mu.Unlock()
		for start := 0; start < len(cs); start += w.s.cfg.TxnContexts {
			if err := w.writeVersioned(ctx, cli, cs[start:min(start+w.s.cfg.TxnContexts, len(cs))]); err != nil {
				return err
			}
		}
		now := time.Now()
		for _, c := range changes {
			if c.Kind != store.KindRegion {
				w.s.m.visible.Observe(now.Sub(c.At).Seconds())
			}
		}
		w.mu.Lock()
		w.pushed = changes[len(changes)-1].ID
		w.mu.Unlock()
		if len(changes) < store.MaxChangesRead {
			w.caughtUp()
			return nil
		}
	}
}

// caughtUp records that the region has every change.
func (w *worker) caughtUp() {
	w.mu.Lock()
	w.behindSince = time.Time{}
	w.mu.Unlock()
}

// writeVersioned writes a batch of contexts, each only if the region's copy
// is older, in one transaction that fails if any of them changed since it
// was read (then it reads again).
//
// The first attempt needs no read: the worker remembers the mod revision of
// every context it wrote or read (revs), and a copy still at that revision
// is one it wrote from an older database state, so a newer version may
// replace it; a key it has never seen must be absent. When that guess is
// wrong (another writer, a restart), the same transaction's Else branch
// returns the region's copies, and the next attempt decides from them by
// version.
func (w *worker) writeVersioned(ctx context.Context, cli *clientv3.Client, cs []store.Context) error {
	gets := make([]clientv3.Op, len(cs))
	for i, c := range cs {
		gets[i] = clientv3.OpGet(c.Key)
	}
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	var written []store.Context
	for _, c := range cs {
		if rev, ok := w.revs[c.Key]; ok {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(c.Key), "=", rev))
		} else {
			cmps = append(cmps, clientv3.Compare(clientv3.Version(c.Key), "=", 0))
			if c.Deleted {
				continue // absent already
			}
		}
		if w.s.drop != nil && w.s.drop(w.region.Name, c) {
			continue
		}
		ops = append(ops, op(c))
		written = append(written, c)
	}
	for attempt := 0; attempt < 5; attempt++ {
		tctx, cancel := context.WithTimeout(ctx, w.s.cfg.WriteTimeout)
		resp, err := cli.Txn(tctx).If(cmps...).Then(ops...).Else(gets...).Commit()
		cancel()
		if err != nil {
			return err
		}
		if resp.Succeeded {
			w.remember(written, resp.Header.Revision)
			w.s.m.pushed.WithLabelValues(w.region.Name).Add(float64(len(ops)))
			return nil
		}
		// Decide from the region's copies, returned by the Else branch.
		cmps, ops, written = cmps[:0], ops[:0], written[:0]
		for i, c := range cs {
			kvs := resp.Responses[i].GetResponseRange().Kvs
			if len(kvs) == 0 {
				delete(w.revs, c.Key)
				cmps = append(cmps, clientv3.Compare(clientv3.Version(c.Key), "=", 0))
				if c.Deleted {
					continue
				}
			} else {
				w.revs[c.Key] = kvs[0].ModRevision
				cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(c.Key), "=", kvs[0].ModRevision))
				if versionOf(c.Key, kvs[0].Value) >= c.Version {
					continue // the region already has this or a newer one
				}
			}
			if w.s.drop != nil && w.s.drop(w.region.Name, c) {
				continue
			}
			ops = append(ops, op(c))
			written = append(written, c)
		}
	}
	return errors.New("contexts kept changing under the push; will retry")
}

func op(c store.Context) clientv3.Op {
	if c.Deleted {
		return clientv3.OpDelete(c.Key)
	}
	return clientv3.OpPut(c.Key, string(c.Value))
}

// remember records the mod revision of contexts written at rev.
func (w *worker) remember(cs []store.Context, rev int64) {
	for _, c := range cs {
		if c.Deleted {
			delete(w.revs, c.Key)
		} else {
			w.revs[c.Key] = rev
		}
	}
}

// versionOf reads the version of a context value (0 if unreadable).
func versionOf(key string, value []byte) uint64 {
	var m interface {
		proto.Message
		GetVersion() uint64
	}
	switch {
	case strings.HasPrefix(key, contextstore.TenantPrefix):
		m = &contextsv1.TenantContext{}
	case strings.HasPrefix(key, contextstore.APIKeyPrefix):
		m = &contextsv1.APIKeyContext{}
	case strings.HasPrefix(key, contextstore.DeployKeyPrefix):
		m = &contextsv1.DeployKeyContext{}
	default:
		return 0
	}
	if proto.Unmarshal(value, m) != nil {
		return 0
	}
	return m.GetVersion()
}

// reconcile makes the region hold exactly the database's contexts: writes
// what differs or is missing, deletes what no longer exists. The database
// is the truth, even where the region holds a higher version (a database
// restored from backup).
func (w *worker) reconcile(ctx context.Context, cli *clientv3.Client) error {
	cs, head, err := w.s.st.Snapshot(ctx)
	if err != nil {
		return err
	}
	gctx, cancel := context.WithTimeout(ctx, 4*w.s.cfg.WriteTimeout)
	resp, err := cli.Get(gctx, contextstore.Prefix, clientv3.WithPrefix())
	cancel()
	if err != nil {
		return err
	}
	have := make(map[string][]byte, len(resp.Kvs))
	clear(w.revs)
	for _, kv := range resp.Kvs {
		if store.IsContextKey(string(kv.Key)) {
			have[string(kv.Key)] = kv.Value
			w.revs[string(kv.Key)] = kv.ModRevision
		}
	}
	var ops []clientv3.Op
	var written, deleted int64
	for _, c := range cs {
		if cur, ok := have[c.Key]; !ok || !bytes.Equal(cur, c.Value) {
			ops = append(ops, clientv3.OpPut(c.Key, string(c.Value)))
			written++
		}
		delete(have, c.Key)
	}
	for k := range have {
		ops = append(ops, clientv3.OpDelete(k))
		deleted++
	}
	if err := w.writeAll(ctx, cli, ops); err != nil {
		clear(w.revs) // partly written: the next push reads what is there
		return err
	}
	w.s.m.pushed.WithLabelValues(w.region.Name).Add(float64(len(ops)))
	now := time.Now()
	w.s.m.reconcile.WithLabelValues(w.region.Name).Set(float64(now.UnixNano()) / 1e9)
	w.mu.Lock()
	if head > w.pushed {
		w.pushed = head
	}
	w.lastReconcile, w.written, w.deleted = now, written, deleted
	w.mu.Unlock()
	if written+deleted > 0 {
		w.s.log.Info("region reconciled", "event", "ctxpublisher.reconciled", "region_name", w.region.Name,
			"contexts", len(cs), "written", written, "deleted", deleted, "duration_ms", time.Since(now).Milliseconds())
	}
	return nil
}

// writeAll commits ops in transactions of TxnContexts, TxnsInFlight at once.
func (w *worker) writeAll(ctx context.Context, cli *clientv3.Client, ops []clientv3.Op) error {
	sem := make(chan struct{}, w.s.cfg.TxnsInFlight)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for start := 0; start < len(ops); start += w.s.cfg.TxnContexts {
		batch := ops[start:min(start+w.s.cfg.TxnContexts, len(ops))]
		mu.Lock()
		failed := first != nil
		mu.Unlock()
		if failed {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			tctx, cancel := context.WithTimeout(ctx, w.s.cfg.WriteTimeout)
			resp, err := cli.Txn(tctx).Then(batch...).Commit()
			cancel()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if first == nil {
					first = err
				}
				return
			}
			for _, o := range batch {
				if o.IsDelete() {
					delete(w.revs, string(o.KeyBytes()))
				} else {
					w.revs[string(o.KeyBytes())] = resp.Header.Revision
				}
			}
		}()
	}
	wg.Wait()
	return first
}

func (w *worker) status(head uint64) *ctxpublisherv1.RegionStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := &ctxpublisherv1.RegionStatus{
		Name: w.region.Name, HeadVersion: head, PushedVersion: w.pushed, LastReconcile: pbTime(w.lastReconcile),
		LastReconcileWritten: w.written, LastReconcileDeleted: w.deleted, LastError: w.lastErr, Failing: w.lastErr != "",
	}
	var lag time.Duration
	if head > w.pushed {
		st.LagChanges = head - w.pushed
		if w.behindSince.IsZero() {
			w.behindSince = time.Now() // first seen behind (e.g. never reached)
		}
		lag = time.Since(w.behindSince)
	}
	st.Lag = pbDur(lag)
	w.s.m.lag.WithLabelValues(w.region.Name).Set(float64(st.LagChanges))
	w.s.m.lagSec.WithLabelValues(w.region.Name).Set(lag.Seconds())
	return st
}

func sortStatus(st []*ctxpublisherv1.RegionStatus) {
	sort.Slice(st, func(i, j int) bool { return st[i].Name < st[j].Name })
}

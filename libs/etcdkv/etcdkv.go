// Package etcdkv holds the etcd client helpers Orbit's services share:
// connecting with bounded timeouts, protobuf values, the atomic
// create-if-absent that idempotent registration and certificate claims rely
// on, and batched writes within etcd's transaction limit.
package etcdkv

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
)

// Defaults (docs/limits.md).
const (
	DefaultDialTimeout = 5 * time.Second
	// MaxTxnOps is etcd's default limit of operations in one transaction
	// (--max-txn-ops); batches are split to stay under it.
	MaxTxnOps = 128
)

// ErrNotFound means the key does not exist.
var ErrNotFound = errors.New("etcdkv: key not found")

// Config configures a client.
type Config struct {
	Endpoints   []string
	DialTimeout time.Duration
}

// Connect returns a client after checking that an endpoint answers, so a
// wrong address fails at start-up with a clear error instead of at first use.
func Connect(ctx context.Context, cfg Config) (*clientv3.Client, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("etcdkv: no endpoints")
	}
	dt := cfg.DialTimeout
	if dt <= 0 {
		dt = DefaultDialTimeout
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: cfg.Endpoints, DialTimeout: dt, Context: ctx})
	if err != nil {
		return nil, fmt.Errorf("etcdkv: client: %w", err)
	}
	sctx, cancel := context.WithTimeout(ctx, dt)
	defer cancel()
	if _, err := cli.Status(sctx, cfg.Endpoints[0]); err != nil {
		cli.Close()
		return nil, fmt.Errorf("etcdkv: %v unreachable: %w", cfg.Endpoints, err)
	}
	return cli, nil
}

// GetProto reads key into msg and returns the key's mod revision; ErrNotFound
// if it does not exist.
func GetProto(ctx context.Context, kv clientv3.KV, key string, msg proto.Message) (int64, error) {
	resp, err := kv.Get(ctx, key)
	if err != nil {
		return 0, fmt.Errorf("etcdkv: get %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return 0, ErrNotFound
	}
	if err := proto.Unmarshal(resp.Kvs[0].Value, msg); err != nil {
		return 0, fmt.Errorf("etcdkv: decode %s: %w", key, err)
	}
	return resp.Kvs[0].ModRevision, nil
}

// PutProto writes msg at key and returns the new revision.
func PutProto(ctx context.Context, kv clientv3.KV, key string, msg proto.Message) (int64, error) {
	b, err := proto.Marshal(msg)
	if err != nil {
		return 0, fmt.Errorf("etcdkv: encode %s: %w", key, err)
	}
	resp, err := kv.Put(ctx, key, string(b))
	if err != nil {
		return 0, fmt.Errorf("etcdkv: put %s: %w", key, err)
	}
	return resp.Header.Revision, nil
}

// CreateIfAbsent writes value at key only if the key does not exist. It
// returns created=false and the existing value otherwise: the atomic claim
// behind idempotent registration.
func CreateIfAbsent(ctx context.Context, kv clientv3.KV, key string, value []byte) (created bool, existing []byte, err error) {
	resp, err := kv.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(value))).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return false, nil, fmt.Errorf("etcdkv: create %s: %w", key, err)
	}
	if resp.Succeeded {
		return true, nil, nil
	}
	kvs := resp.Responses[0].GetResponseRange().GetKvs()
	if len(kvs) == 0 { // deleted in between; report as not created
		return false, nil, nil
	}
	return false, kvs[0].Value, nil
}

// PutBatch writes many key/values in as few transactions as etcd allows
// (MaxTxnOps per transaction). Not atomic across transactions.
func PutBatch(ctx context.Context, kv clientv3.KV, items map[string][]byte) error {
	ops := make([]clientv3.Op, 0, MaxTxnOps)
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		if _, err := kv.Txn(ctx).Then(ops...).Commit(); err != nil {
			return fmt.Errorf("etcdkv: batch of %d: %w", len(ops), err)
		}
		ops = ops[:0]
		return nil
	}
	for k, v := range items {
		ops = append(ops, clientv3.OpPut(k, string(v)))
		if len(ops) == MaxTxnOps {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

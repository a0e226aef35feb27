// Package bufpool recycles the byte buffers that carry forwarded messages
// (the gateway's query results, the connector's result frames): a long
// result then does not allocate, and collect, a batch-sized buffer per
// message. Buffers larger than MaxPooled are left to the garbage collector.
package bufpool

import "sync"

// MaxPooled is the largest capacity kept for reuse.
const MaxPooled = 1 << 20

var pool sync.Pool

// Copy returns a copy of src in a recycled buffer when one is free.
func Copy(src []byte) []byte {
	var b []byte
	if p, ok := pool.Get().(*[]byte); ok {
		b = *p
	}
	return append(b[:0], src...)
}

// Put gives b back for reuse; the caller must not touch b afterwards.
func Put(b []byte) {
	if b == nil || cap(b) > MaxPooled {
		return
	}
	b = b[:0]
	pool.Put(&b)
}

package collector

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// spool is the on-disk buffer for lines that arrive on a socket or stdin:
// append-only segment files that the collector ships like any log file and
// deletes once acknowledged. It holds at most limit bytes; a writer waits
// for room, so a slow broker slows the writers down instead of losing their
// lines.
type spool struct {
	dir     string
	service string
	limit   int64
	gauge   prometheus.Gauge

	mu      sync.Mutex
	room    *sync.Cond
	cur     *os.File
	curName string
	curSize int64
	next    int
	total   int64
	segs    map[string]*tailer
}

func openSpool(dir string, limit int64, gauge prometheus.Gauge) (*spool, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("collector: spool: %w", err)
	}
	sp := &spool{dir: dir, service: filepath.Base(dir), limit: limit, gauge: gauge, segs: map[string]*tailer{}}
	sp.room = sync.NewCond(&sp.mu)
	names, err := sp.list()
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		fi, err := os.Stat(filepath.Join(dir, n))
		if err != nil {
			return nil, err
		}
		sp.total += fi.Size()
		if i, err := strconv.Atoi(strings.TrimSuffix(n, ".log")); err == nil && i >= sp.next {
			sp.next = i + 1
		}
	}
	gauge.Add(float64(sp.total))
	return sp, nil
}

func (sp *spool) list() ([]string, error) {
	m, err := filepath.Glob(filepath.Join(sp.dir, "*.log"))
	if err != nil {
		return nil, err
	}
	var names []string
	for _, p := range m {
		names = append(names, filepath.Base(p))
	}
	slices.Sort(names)
	return names, nil
}

// write appends one line, waiting while the spool is full.
func (sp *spool) write(ctx context.Context, line []byte) error {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	for sp.total+int64(len(line))+1 > sp.limit && sp.total > 0 {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		sp.room.Wait()
	}
	if sp.cur == nil || sp.curSize+int64(len(line))+1 > spoolSegmentBytes {
		if sp.cur != nil {
			_ = sp.cur.Close()
		}
		name := fmt.Sprintf("%012d.log", sp.next)
		f, err := os.OpenFile(filepath.Join(sp.dir, name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		sp.next++
		sp.cur, sp.curName, sp.curSize = f, name, 0
	}
	buf := make([]byte, 0, len(line)+1)
	buf = append(append(buf, line...), '\n')
	if _, err := sp.cur.Write(buf); err != nil {
		return err
	}
	sp.curSize += int64(len(buf))
	sp.total += int64(len(buf))
	sp.gauge.Add(float64(len(buf)))
	return nil
}

// wake lets writers waiting for room see that ctx ended.
func (sp *spool) wake() {
	sp.mu.Lock()
	sp.room.Broadcast()
	sp.mu.Unlock()
}

// tailers are the segments to ship, oldest first.
func (sp *spool) tailers() []*tailer {
	names, _ := sp.list()
	sp.mu.Lock()
	defer sp.mu.Unlock()
	var out []*tailer
	for _, n := range names {
		t := sp.segs[n]
		if t == nil {
			t = &tailer{path: filepath.Join(sp.dir, n), service: sp.service}
			sp.segs[n] = t
		}
		out = append(out, t)
	}
	return out
}

// release deletes segments that are shipped to their end and no longer
// written, and wakes writers waiting for room.
func (sp *spool) release() {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	for n, t := range sp.segs {
		if n == sp.curName || t.f == nil || !t.drained() {
			continue
		}
		fi, err := t.f.Stat()
		if err != nil {
			continue
		}
		t.close()
		if err := os.Remove(t.path); err != nil {
			continue
		}
		delete(sp.segs, n)
		sp.total -= fi.Size()
		sp.gauge.Sub(float64(fi.Size()))
	}
	sp.room.Broadcast()
}

// seal closes the current segment so it can be shipped and deleted; the
// next write starts a new one. Used when an input ends (stdin at EOF).
func (sp *spool) seal() {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.cur != nil {
		_ = sp.cur.Close()
		sp.cur, sp.curName, sp.curSize = nil, "", 0
	}
}

// readLines copies newline-delimited lines from r into the spool; a line
// longer than max is cut into lines of max bytes rather than dropped.
func readLines(ctx context.Context, r io.Reader, max int, sp *spool) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var acc []byte
	for {
		chunk, err := br.ReadSlice('\n')
		acc = append(acc, chunk...)
		if errors.Is(err, bufio.ErrBufferFull) {
			if len(acc) < max {
				continue
			}
			err = nil
		}
		if len(acc) > 0 && (err == nil || errors.Is(err, io.EOF)) {
			line := acc
			if line[len(line)-1] == '\n' {
				line = line[:len(line)-1]
			}
			for len(line) > max {
				if werr := sp.write(ctx, line[:max]); werr != nil {
					return werr
				}
				line = line[max:]
			}
			if werr := sp.write(ctx, line); werr != nil {
				return werr
			}
			acc = acc[:0]
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

func listenSocket(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		_ = os.Remove(path) // a stale socket from an earlier run
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("collector: socket: %w", err)
	}
	return ln, nil
}

func (c *Collector) serveSocket(ctx context.Context, ln net.Listener, sp *spool) {
	stop := context.AfterFunc(ctx, func() { _ = ln.Close(); sp.wake() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			done := context.AfterFunc(ctx, func() { _ = conn.Close() })
			defer done()
			if err := readLines(ctx, conn, c.cfg.MaxLineBytes, sp); err != nil && ctx.Err() == nil {
				c.log.WarnContext(ctx, "socket reader stopped", "event", "collector.socket_failed", "error", err.Error())
			}
		}()
	}
}

func (c *Collector) readStdin(ctx context.Context, sp *spool) {
	stop := context.AfterFunc(ctx, sp.wake)
	defer stop()
	if err := readLines(ctx, c.stdin, c.cfg.MaxLineBytes, sp); err != nil && ctx.Err() == nil {
		c.log.WarnContext(ctx, "stdin reader stopped", "event", "collector.stdin_failed", "error", err.Error())
	}
	sp.seal()
}

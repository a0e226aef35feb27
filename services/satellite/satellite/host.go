package satellite

import (
	"bufio"
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/orbitplane/orbit/services/satellite/internal/store"
)

// sampleHost records host metrics (service "host") every interval: CPU
// utilisation, load, memory and the data dir's disk usage, from /proc.
func (a *Agent) sampleHost(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	prevBusy, prevTotal := cpuTimes()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			b := &store.Batch{}
			add := func(name, unit string, v float64) {
				b.Metrics = append(b.Metrics, store.Metric{Time: now, Service: "host", Name: name, Kind: "gauge", Value: v, Unit: unit})
			}
			busy, total := cpuTimes()
			if total > prevTotal {
				add("system.cpu.utilization", "1", float64(busy-prevBusy)/float64(total-prevTotal))
			}
			prevBusy, prevTotal = busy, total
			if la, err := os.ReadFile("/proc/loadavg"); err == nil {
				if f := strings.Fields(string(la)); len(f) > 0 {
					if v, err := strconv.ParseFloat(f[0], 64); err == nil {
						add("system.cpu.load_average.1m", "1", v)
					}
				}
			}
			mem := meminfo()
			if tot, ok := mem["MemTotal"]; ok {
				add("system.memory.total", "By", float64(tot))
				add("system.memory.usage", "By", float64(tot-mem["MemAvailable"]))
			}
			var fs syscall.Statfs_t
			if err := syscall.Statfs(a.cfg.DataDir, &fs); err == nil {
				add("system.filesystem.usage", "By", float64((fs.Blocks-fs.Bfree)*uint64(fs.Bsize)))
				add("system.filesystem.available", "By", float64(fs.Bavail*uint64(fs.Bsize)))
			}
			if len(b.Metrics) > 0 {
				if err := a.store.Append(ctx, b); err != nil && ctx.Err() == nil {
					a.log.Warn("host metrics append failed", "error", err)
				}
			}
		}
	}
}

func cpuTimes() (busy, total uint64) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0, 0
	}
	fields := strings.Fields(sc.Text())
	if len(fields) < 5 || fields[0] != "cpu" {
		return 0, 0
	}
	for i, s := range fields[1:] {
		v, _ := strconv.ParseUint(s, 10, 64)
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total
}

func meminfo() map[string]uint64 {
	out := map[string]uint64{}
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, _ := strconv.ParseUint(f[0], 10, 64)
		if len(f) > 1 && f[1] == "kB" {
			v *= 1024
		}
		out[k] = v
	}
	return out
}

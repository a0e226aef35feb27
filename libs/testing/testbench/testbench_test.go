package testbench

import (
	"errors"
	"testing"
	"time"
)

func TestMeasureNetSubtractsWhatEachCallReports(t *testing.T) {
	i := 0
	total, net, err := MeasureNet(5, func() (time.Duration, error) {
		i++
		time.Sleep(time.Millisecond)
		return time.Duration(i) * 100 * time.Microsecond, nil
	})
	if err != nil || len(total) != 5 || len(net) != 5 {
		t.Fatalf("%d, %d samples, %v", len(total), len(net), err)
	}
	for k := range total {
		if got, want := total[k]-net[k], time.Duration(k+1)*100*time.Microsecond; got != want {
			t.Errorf("call %d: total - net = %v, want the reported %v", k, got, want)
		}
		if total[k] < time.Millisecond {
			t.Errorf("call %d: total %v is shorter than the call", k, total[k])
		}
	}
	boom := errors.New("boom")
	calls := 0
	if _, _, err := MeasureNet(5, func() (time.Duration, error) { calls++; return 0, boom }); !errors.Is(err, boom) || calls != 1 {
		t.Fatalf("error: %v after %d calls, want boom after 1", err, calls)
	}
}

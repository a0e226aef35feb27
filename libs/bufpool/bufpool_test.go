package bufpool

import "testing"

func TestCopyAndPut(t *testing.T) {
	a := Copy([]byte("first message"))
	if string(a) != "first message" {
		t.Fatalf("copy %q", a)
	}
	Put(a)
	// A recycled buffer holds exactly the new bytes, nothing of the old.
	b := Copy([]byte("second"))
	if string(b) != "second" {
		t.Fatalf("copy %q", b)
	}
	// A buffer over the limit is not kept: what comes back is never it.
	big := make([]byte, MaxPooled+1)
	Put(big)
	for range 3 {
		c := Copy([]byte("x"))
		if cap(c) > MaxPooled {
			t.Fatal("a buffer over MaxPooled came back from the pool")
		}
	}
}

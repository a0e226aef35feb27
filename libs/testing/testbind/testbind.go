// Package testbind starts a throwaway BIND 9 (Debian's bind9 package, the
// `named` binary) as an authoritative primary for one zone that accepts
// RFC 2136 updates signed with a TSIG key: a real operator's DNS server for
// tests of dynamic updates.
package testbind

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Server is a running named.
type Server struct {
	// Addr is host:port (UDP and TCP).
	Addr string
	Zone string // fully qualified, e.g. "satellites.orbit.test."
	// KeyName and Secret (base64) sign updates with hmac-sha256.
	KeyName, Secret string
}

func freePort(t testing.TB) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		if pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			_ = pc.Close()
			return port
		}
	}
	t.Fatal("testbind: no free port")
	return 0
}

// Start runs named for zone (e.g. "satellites.orbit.test") until the test
// ends. It fails the test when named is not installed (tools/test.sh
// installs bind9).
func Start(t testing.TB, zone string) *Server {
	t.Helper()
	named, err := exec.LookPath("named")
	if err != nil {
		for _, p := range []string{"/usr/sbin/named", "/sbin/named"} {
			if _, err := os.Stat(p); err == nil {
				named = p
			}
		}
	}
	if named == "" {
		t.Fatal("testbind: named not found; install Debian's bind9 (tools/test.sh does)")
	}
	dir, err := os.MkdirTemp("", "testbind-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	zone = strings.TrimSuffix(zone, ".")
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	s := &Server{Zone: dns.Fqdn(zone), KeyName: "orbit-update.", Secret: base64.StdEncoding.EncodeToString(raw)}
	port := freePort(t)
	s.Addr = fmt.Sprintf("127.0.0.1:%d", port)
	conf := fmt.Sprintf(`options {
	directory %[1]q;
	listen-on port %[2]d { 127.0.0.1; };
	listen-on-v6 { none; };
	pid-file none;
	session-keyfile %[3]q;
	managed-keys-directory %[1]q;
	recursion no;
	dnssec-validation no;
	notify no;
};
controls { };
key "orbit-update" { algorithm hmac-sha256; secret %[4]q; };
zone %[5]q { type primary; file %[6]q; allow-update { key "orbit-update"; }; };
`, dir, port, filepath.Join(dir, "session.key"), s.Secret, zone, filepath.Join(dir, "zone.db"))
	zoneFile := fmt.Sprintf("$TTL 60\n@ IN SOA ns.%[1]s. hostmaster.%[1]s. 1 3600 600 86400 60\n@ IN NS ns.%[1]s.\nns IN A 127.0.0.1\n", zone)
	if err := os.WriteFile(filepath.Join(dir, "named.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "zone.db"), []byte(zoneFile), 0o644); err != nil {
		t.Fatal(err)
	}
	// No -u: named keeps the user it runs as (setting one calls
	// initgroups, which a Bazel sandbox does not permit).
	args := []string{"-g", "-c", filepath.Join(dir, "named.conf"), "-n", "1"}
	cmd := exec.Command(named, args...)
	logf, err := os.Create(filepath.Join(dir, "named.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("testbind: start named: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	// Ready when it answers the zone's SOA.
	deadline := time.Now().Add(20 * time.Second)
	m := new(dns.Msg)
	m.SetQuestion(s.Zone, dns.TypeSOA)
	for {
		in, err := dns.Exchange(m, s.Addr)
		if err == nil && in.Rcode == dns.RcodeSuccess && len(in.Answer) == 1 {
			return s
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(filepath.Join(dir, "named.log"))
			t.Fatalf("testbind: named exited:\n%s", b)
		default:
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "named.log"))
			t.Fatalf("testbind: named not answering after 20 s (%v):\n%s", err, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Package embedetcd runs a single-member etcd inside the process: the
// embedded default of `orbit dev` and of tests. Production points services at
// an etcd cluster instead.
package embedetcd

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// ReadyTimeout bounds waiting for the member to serve.
const ReadyTimeout = 60 * time.Second

// Config configures the embedded member.
type Config struct {
	// Dir holds etcd's data; it survives restarts.
	Dir string
	// Host to listen on; default 127.0.0.1.
	Host string
	// ClientPort and PeerPort; 0 picks free ports.
	ClientPort int
	PeerPort   int
	// Name of the member; default "orbit-dev".
	Name string
	// Logger for etcd's own logs; nil discards them.
	Logger *zap.Logger
}

// Server is a running member.
type Server struct {
	*embed.Etcd
	// Endpoint is the client URL, e.g. http://127.0.0.1:2379.
	Endpoint string
}

// Start starts the member and waits until it serves clients.
func Start(cfg Config) (*Server, error) {
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.Name == "" {
		cfg.Name = "orbit-dev"
	}
	// Free ports are picked by binding and closing; another process may take
	// one in between, so retry a few times.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		s, err := start(cfg)
		if err == nil {
			return s, nil
		}
		lastErr = err
		if cfg.ClientPort != 0 && cfg.PeerPort != 0 {
			break
		}
	}
	return nil, lastErr
}

func start(cfg Config) (*Server, error) {
	clientPort, peerPort := cfg.ClientPort, cfg.PeerPort
	var err error
	if clientPort == 0 {
		if clientPort, err = freePort(cfg.Host); err != nil {
			return nil, err
		}
	}
	if peerPort == 0 {
		if peerPort, err = freePort(cfg.Host); err != nil {
			return nil, err
		}
	}
	clientURL := url.URL{Scheme: "http", Host: net.JoinHostPort(cfg.Host, strconv.Itoa(clientPort))}
	peerURL := url.URL{Scheme: "http", Host: net.JoinHostPort(cfg.Host, strconv.Itoa(peerPort))}

	ec := embed.NewConfig()
	ec.Name = cfg.Name
	ec.Dir = cfg.Dir
	ec.ListenClientUrls = []url.URL{clientURL}
	ec.AdvertiseClientUrls = []url.URL{clientURL}
	ec.ListenPeerUrls = []url.URL{peerURL}
	ec.AdvertisePeerUrls = []url.URL{peerURL}
	ec.InitialCluster = ec.InitialClusterFromName(cfg.Name)
	if cfg.Logger != nil {
		ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(cfg.Logger)
	} else {
		ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	}
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("embedetcd: start: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedetcd: %w", err)
	case <-time.After(ReadyTimeout):
		e.Server.Stop()
		e.Close()
		return nil, errors.New("embedetcd: member not ready in time")
	}
	return &Server{Etcd: e, Endpoint: clientURL.String()}, nil
}

func freePort(host string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("embedetcd: pick port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// Package platform is the hub's platform service: the admin API
// (orbit.platform.v1.PlatformService) over the platform store. Callers
// present the admin token; after every committed change it nudges the
// context publisher on NATS (PublishSubject) so the change reaches the
// spokes at once. The nudge is only a hint: the publisher reads the outbox,
// which the change's own transaction wrote (docs/platform.md).
package platform

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strings"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/orbitplane/orbit/libs/connectserver"
	"github.com/orbitplane/orbit/libs/obslog"
	"github.com/orbitplane/orbit/libs/svcmain"
	"github.com/orbitplane/orbit/proto/orbit/platform/v1/platformv1connect"
	"github.com/orbitplane/orbit/services/platform/store"
)

// PublishSubject is where the platform announces a committed change (the
// payload is its kind: tenant, apikey, deploykey, region).
const PublishSubject = "platform.changes"

// MinAdminTokenLen is the shortest admin token the service accepts.
const MinAdminTokenLen = 24

// Config configures the platform service.
type Config struct {
	Server connectserver.Config
	// Database is a SQLite file path or a postgres:// URL.
	Database string
	// AdminToken authorises every call (from --admin-token-file or
	// $ORBIT_ADMIN_TOKEN in main).
	AdminToken     string
	AdminTokenFile string
}

// RegisterFlags defines the service's flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Server.Addr, "addr", "127.0.0.1:8090", "listen address")
	fs.StringVar(&c.Database, "database", "platform.db", "SQLite file (embedded, the default) or postgres://user@host/db URL")
	fs.StringVar(&c.AdminTokenFile, "admin-token-file", "", "file holding the admin bearer token (else $ORBIT_ADMIN_TOKEN); at least 24 characters")
}

// Needs: NATS for the publisher's nudges.
var Needs = svcmain.Needs{NATS: true}

// Flags registers every flag of the binary.
func Flags(fs *flag.FlagSet) { svcmain.AllFlags(Needs, new(Config).RegisterFlags)(fs) }

// Deps are the service's collaborators.
type Deps struct {
	Logger         *slog.Logger
	TracerProvider trace.TracerProvider
	// NATS is optional: without it the publisher finds changes by polling.
	NATS    *nats.Conn
	Metrics *prometheus.Registry
}

// Service is the platform API.
type Service struct {
	log   *slog.Logger
	st    *store.Store
	nc    *nats.Conn
	srv   *connectserver.Server
	token [32]byte
}

// New opens the database (migrating it) and builds the API.
func New(ctx context.Context, cfg Config, deps Deps) (*Service, error) {
	if deps.Logger == nil {
		deps.Logger = obslog.Discard()
	}
	if len(cfg.AdminToken) < MinAdminTokenLen {
		return nil, fmt.Errorf("platform: the admin token must be at least %d characters (--admin-token-file or $ORBIT_ADMIN_TOKEN)", MinAdminTokenLen)
	}
	if cfg.Server.Service == "" {
		cfg.Server.Service = "platform"
	}
	st, err := store.Open(ctx, cfg.Database)
	if err != nil {
		return nil, err
	}
	srv, err := connectserver.New(cfg.Server, connectserver.Deps{Logger: deps.Logger, TracerProvider: deps.TracerProvider, Registry: deps.Metrics})
	if err != nil {
		st.Close()
		return nil, err
	}
	s := &Service{log: deps.Logger, st: st, nc: deps.NATS, srv: srv, token: sha256.Sum256([]byte(cfg.AdminToken))}
	opts := append(srv.HandlerOptions(), connect.WithInterceptors(adminAuth{s}))
	srv.Handle(platformv1connect.NewPlatformServiceHandler(&api{s: s}, opts...))
	deps.Logger.Info("platform database open", "event", "platform.open", "engine", st.Dialect())
	return s, nil
}

// Store is the service's database (the publisher in the same process, as in
// orbit dev, reads it too).
func (s *Service) Store() *store.Store { return s.st }

// Listen binds the port; URL is then valid.
func (s *Service) Listen() error {
	_, err := s.srv.Listen()
	return err
}

// URL is the service's base URL.
func (s *Service) URL() string { return s.srv.URL() }

// Run serves until ctx ends, then closes the database.
func (s *Service) Run(ctx context.Context) error {
	defer s.st.Close()
	return s.srv.Run(ctx)
}

// changed nudges the publisher after a commit.
func (s *Service) changed(kind string) {
	if s.nc == nil {
		return
	}
	if err := s.nc.Publish(PublishSubject, []byte(kind)); err != nil {
		s.log.Warn("nudge the context publisher", "event", "platform.nudge_failed", "error", err.Error())
	}
}

// adminAuth checks the admin bearer token in constant time.
type adminAuth struct{ s *Service }

func (a adminAuth) check(h interface{ Get(string) string }) error {
	tok, ok := strings.CutPrefix(h.Get("Authorization"), "Bearer ")
	sum := sha256.Sum256([]byte(tok))
	if !ok || subtle.ConstantTimeCompare(sum[:], a.s.token[:]) != 1 {
		return connect.NewError(connect.CodeUnauthenticated, errors.New("the platform API needs the admin token: Authorization: Bearer <token>"))
	}
	return nil
}

func (a adminAuth) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if err := a.check(req.Header()); err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (a adminAuth) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (a adminAuth) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if err := a.check(conn.RequestHeader()); err != nil {
			return err
		}
		return next(ctx, conn)
	}
}

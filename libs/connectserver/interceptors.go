package connectserver

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inflight *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer, service string) (*metrics, error) {
	labels := prometheus.Labels{"server": service}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orbit_rpc_requests_total", Help: "RPCs handled, by procedure and Connect code.", ConstLabels: labels,
		}, []string{"procedure", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "orbit_rpc_duration_seconds", Help: "RPC handling time.", ConstLabels: labels,
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10, 60},
		}, []string{"procedure"}),
		inflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "orbit_rpc_in_flight", Help: "RPCs being handled.", ConstLabels: labels,
		}, []string{"procedure"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.inflight} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func codeOf(err error) string {
	if err == nil {
		return "ok"
	}
	return connect.CodeOf(err).String()
}

func (m *metrics) observe(procedure string, start time.Time, err error) {
	m.requests.WithLabelValues(procedure, codeOf(err)).Inc()
	m.duration.WithLabelValues(procedure).Observe(time.Since(start).Seconds())
}

func (m *metrics) interceptor() connect.Interceptor { return metricsInterceptor{m} }

type metricsInterceptor struct{ m *metrics }

func (i metricsInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		p := req.Spec().Procedure
		i.m.inflight.WithLabelValues(p).Inc()
		defer i.m.inflight.WithLabelValues(p).Dec()
		start := time.Now()
		resp, err := next(ctx, req)
		i.m.observe(p, start, err)
		return resp, err
	}
}

func (i metricsInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i metricsInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		p := conn.Spec().Procedure
		i.m.inflight.WithLabelValues(p).Inc()
		defer i.m.inflight.WithLabelValues(p).Dec()
		start := time.Now()
		err := next(ctx, conn)
		i.m.observe(p, start, err)
		return err
	}
}

// logInterceptor writes one line per finished request, with the context
// object (the obslog handler adds it from ctx).
type logInterceptor struct {
	log   *slog.Logger
	quiet map[string]bool // logged at debug when they succeed
}

func newLogInterceptor(log *slog.Logger, selfLogged []string) *logInterceptor {
	l := &logInterceptor{log: log, quiet: map[string]bool{"/grpc.health.v1.Health/Check": true}}
	for _, p := range selfLogged {
		l.quiet[p] = true
	}
	return l
}

func (l *logInterceptor) done(ctx context.Context, procedure string, start time.Time, err error) {
	level := slog.LevelInfo
	if l.quiet[procedure] && err == nil {
		level = slog.LevelDebug
		if !l.log.Enabled(ctx, level) {
			return
		}
	}
	attrs := []any{"event", "rpc.done", "procedure", procedure, "code", codeOf(err), "duration_ms", float64(time.Since(start).Microseconds()) / 1000}
	if err != nil {
		var ce *connect.Error
		if errors.As(err, &ce) && ce.Code() == connect.CodeInternal {
			level = slog.LevelError
		}
		attrs = append(attrs, "error", err.Error())
	}
	l.log.Log(ctx, level, "request", attrs...)
}

func (l *logInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		start := time.Now()
		resp, err := next(ctx, req)
		l.done(ctx, req.Spec().Procedure, start, err)
		return resp, err
	}
}

func (l *logInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (l *logInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		start := time.Now()
		err := next(ctx, conn)
		l.done(ctx, conn.Spec().Procedure, start, err)
		return err
	}
}

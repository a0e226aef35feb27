package satellite

import (
	"encoding/hex"
	"encoding/json"
	"strings"
	"time"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"

	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	colmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"

	"github.com/orbitplane/orbit/services/satellite/internal/store"
)

func serviceName(r *resourcepb.Resource) string {
	for _, kv := range r.GetAttributes() {
		if kv.Key == "service.name" {
			return anyString(kv.Value)
		}
	}
	return ""
}

func anyValue(v *commonpb.AnyValue) any {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_BoolValue:
		return x.BoolValue
	case *commonpb.AnyValue_IntValue:
		return x.IntValue
	case *commonpb.AnyValue_DoubleValue:
		return x.DoubleValue
	case *commonpb.AnyValue_BytesValue:
		return hex.EncodeToString(x.BytesValue)
	case *commonpb.AnyValue_ArrayValue:
		out := make([]any, 0, len(x.ArrayValue.GetValues()))
		for _, e := range x.ArrayValue.GetValues() {
			out = append(out, anyValue(e))
		}
		return out
	case *commonpb.AnyValue_KvlistValue:
		return attrMap(x.KvlistValue.GetValues())
	}
	return nil
}

func anyString(v *commonpb.AnyValue) string {
	if s, ok := anyValue(v).(string); ok {
		return s
	}
	b, _ := json.Marshal(anyValue(v))
	return string(b)
}

func attrMap(kvs []*commonpb.KeyValue) map[string]any {
	m := make(map[string]any, len(kvs))
	for _, kv := range kvs {
		m[kv.Key] = anyValue(kv.Value)
	}
	return m
}

// attrsJSON merges resource and record attributes into JSON text.
func attrsJSON(res, rec []*commonpb.KeyValue, extra map[string]any) string {
	if len(res)+len(rec)+len(extra) == 0 {
		return ""
	}
	m := attrMap(res)
	for k, v := range attrMap(rec) {
		m[k] = v
	}
	for k, v := range extra {
		m[k] = v
	}
	delete(m, "service.name")
	if len(m) == 0 {
		return ""
	}
	b, _ := json.Marshal(m)
	return string(b)
}

func nanos(n uint64) time.Time { return time.Unix(0, int64(n)).UTC() }

func convertLogs(req *collogs.ExportLogsServiceRequest) *store.Batch {
	b := &store.Batch{}
	for _, rl := range req.ResourceLogs {
		svc := serviceName(rl.Resource)
		for _, sl := range rl.ScopeLogs {
			for _, r := range sl.LogRecords {
				t := r.TimeUnixNano
				if t == 0 {
					t = r.ObservedTimeUnixNano
				}
				ts := nanos(t)
				if t == 0 {
					ts = time.Now()
				}
				sev := r.SeverityText
				if sev == "" && r.SeverityNumber != 0 {
					sev = strings.TrimPrefix(r.SeverityNumber.String(), "SEVERITY_NUMBER_")
				}
				b.Logs = append(b.Logs, store.Log{
					Time: ts, Service: svc, Severity: sev, Body: anyString(r.Body),
					TraceID: hex.EncodeToString(r.TraceId), SpanID: hex.EncodeToString(r.SpanId),
					Attributes: attrsJSON(rl.Resource.GetAttributes(), r.Attributes, nil), Source: "otlp",
				})
			}
		}
	}
	return b
}

func convertTraces(req *coltrace.ExportTraceServiceRequest) *store.Batch {
	b := &store.Batch{}
	for _, rs := range req.ResourceSpans {
		svc := serviceName(rs.Resource)
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				status := strings.TrimPrefix(s.GetStatus().GetCode().String(), "STATUS_CODE_")
				b.Spans = append(b.Spans, store.Span{
					Start: nanos(s.StartTimeUnixNano), Duration: time.Duration(int64(s.EndTimeUnixNano) - int64(s.StartTimeUnixNano)),
					TraceID: hex.EncodeToString(s.TraceId), SpanID: hex.EncodeToString(s.SpanId), ParentSpanID: hex.EncodeToString(s.ParentSpanId),
					Service: svc, Name: s.Name, Kind: strings.TrimPrefix(s.Kind.String(), "SPAN_KIND_"), Status: status,
					Attributes: attrsJSON(rs.Resource.GetAttributes(), s.Attributes, nil),
				})
			}
		}
	}
	return b
}

func convertMetrics(req *colmetrics.ExportMetricsServiceRequest) *store.Batch {
	b := &store.Batch{}
	for _, rm := range req.ResourceMetrics {
		svc := serviceName(rm.Resource)
		res := rm.Resource.GetAttributes()
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				add := func(kind string, t uint64, v float64, attrs []*commonpb.KeyValue, extra map[string]any) {
					b.Metrics = append(b.Metrics, store.Metric{Time: nanos(t), Service: svc, Name: m.Name, Kind: kind, Value: v, Unit: m.Unit, Attributes: attrsJSON(res, attrs, extra)})
				}
				switch d := m.Data.(type) {
				case *metricspb.Metric_Gauge:
					for _, p := range d.Gauge.DataPoints {
						add("gauge", p.TimeUnixNano, numberValue(p), p.Attributes, nil)
					}
				case *metricspb.Metric_Sum:
					for _, p := range d.Sum.DataPoints {
						add("sum", p.TimeUnixNano, numberValue(p), p.Attributes, nil)
					}
				case *metricspb.Metric_Histogram:
					// One row per point: the mean, with count and sum kept.
					for _, p := range d.Histogram.DataPoints {
						add("histogram", p.TimeUnixNano, mean(p.GetSum(), p.Count), p.Attributes, map[string]any{"count": p.Count, "sum": p.GetSum()})
					}
				case *metricspb.Metric_ExponentialHistogram:
					for _, p := range d.ExponentialHistogram.DataPoints {
						add("exponential_histogram", p.TimeUnixNano, mean(p.GetSum(), p.Count), p.Attributes, map[string]any{"count": p.Count, "sum": p.GetSum()})
					}
				case *metricspb.Metric_Summary:
					for _, p := range d.Summary.DataPoints {
						add("summary", p.TimeUnixNano, mean(p.Sum, p.Count), p.Attributes, map[string]any{"count": p.Count, "sum": p.Sum})
					}
				}
			}
		}
	}
	return b
}

func numberValue(p *metricspb.NumberDataPoint) float64 {
	switch v := p.Value.(type) {
	case *metricspb.NumberDataPoint_AsDouble:
		return v.AsDouble
	case *metricspb.NumberDataPoint_AsInt:
		return float64(v.AsInt)
	}
	return 0
}

func mean(sum float64, count uint64) float64 {
	if count == 0 {
		return 0
	}
	return sum / float64(count)
}

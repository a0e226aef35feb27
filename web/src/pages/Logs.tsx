import { useEffect, useMemo, useRef, useState } from "react";
import { useVirtualizer } from "@tanstack/react-virtual";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { explain, isCanceled, type Clients } from "../api";
import { StartPosition, type StreamInfo } from "../gen/orbit/logbroker/v1/logbroker_pb";

// A line of the orbit.log/v1 schema (docs/logging.md).
export type LogLine = {
  offset: bigint;
  time: string;
  level: string;
  message: string;
  service: string;
  region?: string;
  tenant?: string;
  trace_id?: string;
  event?: string;
  attrs?: Record<string, unknown>;
  raw: string;
};

// MaxLines is how many lines the page keeps; older ones scroll away.
export const MaxLines = 5000;
const levels = ["DEBUG", "INFO", "WARN", "ERROR"];
const rank = (l: string) => Math.max(0, levels.indexOf(l.toUpperCase()));
const decoder = new TextDecoder();

function parse(offset: bigint, value: Uint8Array): LogLine {
  const raw = decoder.decode(value);
  try {
    const o = JSON.parse(raw);
    return { offset, raw, time: o.time ?? "", level: o.level ?? "", message: o.message ?? o.msg ?? raw, service: o.service ?? "", region: o.region, tenant: o.tenant, trace_id: o.trace_id, event: o.event, attrs: o.attrs };
  } catch {
    return { offset, raw, time: "", level: "", message: raw, service: "" }; // not JSON: shown as is
  }
}

function pretty(raw: string): string {
  try {
    return JSON.stringify(JSON.parse(raw), null, 2);
  } catch {
    return raw;
  }
}

type Window = "live" | "15m" | "1h" | "earliest";

export function Logs({ clients }: { clients: Clients }) {
  const [streams, setStreams] = useState<StreamInfo[]>([]);
  const [stream, setStream] = useState("");
  const [from, setFrom] = useState<Window>("15m");
  const [lines, setLines] = useState<LogLine[]>([]);
  const [dropped, setDropped] = useState(0);
  const [status, setStatus] = useState<{ live: boolean; error: string }>({ live: false, error: "" });
  const [level, setLevel] = useState("");
  const [service, setService] = useState("");
  const [tenant, setTenant] = useState("");
  const [trace, setTrace] = useState("");
  const [text, setText] = useState("");
  const [open, setOpen] = useState<bigint | null>(null);
  const [follow, setFollow] = useState(true);
  const scroller = useRef<HTMLDivElement>(null);

  // The tenant's streams; asked again every 3 s while there are none (the
  // collector creates orbit-logs when it starts).
  const [listed, setListed] = useState(0);
  useEffect(() => {
    let t: ReturnType<typeof setTimeout> | undefined;
    clients.logs
      .listStreams({}, { timeoutMs: 10_000 })
      .then((r) => {
        setStreams(r.streams);
        const names = r.streams.map((s) => s.config?.name ?? "");
        setStream((cur) => cur || (names.includes("orbit-logs") ? "orbit-logs" : names[0] ?? ""));
        if (r.streams.length === 0) t = setTimeout(() => setListed((n) => n + 1), 3000);
      })
      .catch((err) => {
        setStatus({ live: false, error: explain(err) });
        t = setTimeout(() => setListed((n) => n + 1), 3000);
      });
    return () => clearTimeout(t);
  }, [clients, listed]);

  // Subscribe; lines are buffered and rendered at most every 100 ms.
  useEffect(() => {
    if (!stream) return;
    const ac = new AbortController();
    let buf: LogLine[] = [];
    let all: LogLine[] = [];
    let lost = 0;
    const t = setInterval(() => {
      if (buf.length === 0) return;
      all = all.concat(buf);
      buf = [];
      if (all.length > MaxLines) {
        lost += all.length - MaxLines;
        all = all.slice(all.length - MaxLines);
      }
      setLines(all);
      setDropped(lost);
    }, 100);
    setLines([]);
    setDropped(0);
    (async () => {
      let delay = 500;
      let next: { start: StartPosition; startOffset?: bigint; startTime?: Date } =
        from === "live" ? { start: StartPosition.LATEST }
        : from === "earliest" ? { start: StartPosition.EARLIEST }
        : { start: StartPosition.TIME, startTime: new Date(Date.now() - (from === "15m" ? 15 : 60) * 60_000) };
      while (!ac.signal.aborted) {
        try {
          const req = { stream, start: next.start, startOffset: next.startOffset ?? 0n, startTime: next.startTime ? timestampFromDate(next.startTime) : undefined };
          for await (const r of clients.logs.subscribe(req, { signal: ac.signal, onHeader: () => setStatus({ live: true, error: "" }) })) {
            const m = r.message;
            if (!m) continue;
            buf.push(parse(m.offset, m.value));
            next = { start: StartPosition.OFFSET, startOffset: m.offset + 1n }; // resume after a drop without gaps or repeats
            delay = 500;
          }
        } catch (err) {
          if (ac.signal.aborted || isCanceled(err)) return;
          setStatus({ live: false, error: explain(err) });
        }
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 10_000);
      }
    })();
    return () => {
      ac.abort();
      clearInterval(t);
    };
  }, [clients, stream, from]);

  const services = useMemo(() => [...new Set(lines.map((l) => l.service).filter(Boolean))].sort(), [lines]);
  const shown = useMemo(() => {
    const q = text.trim().toLowerCase();
    return lines.filter(
      (l) =>
        (!level || rank(l.level) >= rank(level)) &&
        (!service || l.service === service) &&
        (!tenant || l.tenant === tenant) &&
        (!trace || l.trace_id === trace) &&
        (!q || l.raw.toLowerCase().includes(q)),
    );
  }, [lines, level, service, tenant, trace, text]);

  const v = useVirtualizer({ count: shown.length, getScrollElement: () => scroller.current, estimateSize: () => 24, overscan: 30 });
  useEffect(() => {
    if (follow && shown.length > 0) v.scrollToIndex(shown.length - 1, { align: "end" });
  }, [shown.length, follow, v]);

  // Clicking a trace ID shows every line of that request, across services,
  // from the last hour.
  function showTrace(id: string) {
    setTrace(id);
    setLevel("");
    setService("");
    setText("");
    if (from === "live" || from === "15m") setFrom("1h");
  }

  const traceServices = trace ? [...new Set(shown.map((l) => l.service))].sort() : [];

  return (
    <section aria-labelledby="logs-title" className="logs">
      <div className="pagehead">
        <h2 id="logs-title">Logs</h2>
        <span className={status.live ? "live on" : "live"} data-testid="tail-state">{status.live ? "● tailing" : "○ connecting…"}</span>
        <span className="muted">{shown.length.toLocaleString()} of {lines.length.toLocaleString()} lines{dropped > 0 ? ` (${dropped.toLocaleString()} older lines scrolled away; the page keeps ${MaxLines.toLocaleString()})` : ""}</span>
      </div>
      <div className="toolbar">
        <select aria-label="Stream" value={stream} onChange={(e) => setStream(e.target.value)}>
          {streams.length === 0 && <option value="">no streams</option>}
          {streams.map((s) => <option key={s.config?.name}>{s.config?.name}</option>)}
        </select>
        <select aria-label="From" value={from} onChange={(e) => setFrom(e.target.value as Window)}>
          <option value="live">from now</option>
          <option value="15m">last 15 minutes</option>
          <option value="1h">last hour</option>
          <option value="earliest">from the start</option>
        </select>
        <select aria-label="Level" value={level} onChange={(e) => setLevel(e.target.value)}>
          <option value="">any level</option>
          {levels.map((l) => <option key={l} value={l}>{l} and above</option>)}
        </select>
        <select aria-label="Service" value={service} onChange={(e) => setService(e.target.value)}>
          <option value="">any service</option>
          {services.map((s) => <option key={s}>{s}</option>)}
        </select>
        <input aria-label="Tenant" placeholder="tenant ID" value={tenant} onChange={(e) => setTenant(e.target.value.trim())} />
        <input aria-label="Trace ID" className="mono" placeholder="trace ID" value={trace} onChange={(e) => setTrace(e.target.value.trim())} />
        <input type="search" aria-label="Search logs" placeholder="search text" value={text} onChange={(e) => setText(e.target.value)} />
        <label className="check"><input type="checkbox" checked={follow} onChange={(e) => setFollow(e.target.checked)} /> Follow</label>
      </div>
      {status.error && <p role="alert" className="error">{status.error} Retrying…</p>}
      {trace && (
        <p className="note" data-testid="trace-summary">
          Trace <span className="mono">{trace}</span>: {shown.length} lines across {traceServices.length} services ({traceServices.join(", ")}).{" "}
          <button className="link" onClick={() => setTrace("")}>Clear</button>
        </p>
      )}
      {streams.length === 0 && !status.error && <p className="empty">This tenant has no log streams yet. `orbitctl streams create NAME` makes one; the collector ships the services' own logs to orbit-logs.</p>}
      <div className="loglines" ref={scroller} data-testid="loglines" data-count={shown.length}
        onWheel={(e) => e.deltaY < 0 && setFollow(false)}>
        <div style={{ height: v.getTotalSize(), position: "relative" }}>
          {v.getVirtualItems().map((item) => {
            const l = shown[item.index];
            return (
              <div key={String(l.offset)} data-index={item.index} ref={v.measureElement} className={`logline ${l.level.toLowerCase()}`}
                style={{ position: "absolute", top: 0, left: 0, right: 0, transform: `translateY(${item.start}px)` }}>
                <div className="logrow" onClick={() => setOpen(open === l.offset ? null : l.offset)}>
                  <span className="mono muted">{l.time.slice(11, 23)}</span>
                  <span className={`lvl ${l.level.toLowerCase()}`}>{l.level}</span>
                  <span className="svc">{l.service}</span>
                  <span className="msg">{l.message}{l.event ? <span className="muted"> · {l.event}</span> : null}</span>
                  {l.trace_id && (
                    <button className="link small" title="every line of this request" data-testid="trace-link"
                      onClick={(e) => { e.stopPropagation(); showTrace(l.trace_id!); }}>
                      {l.trace_id.slice(0, 12)}
                    </button>
                  )}
                </div>
                {open === l.offset && <pre className="logjson">{pretty(l.raw)}</pre>}
              </div>
            );
          })}
        </div>
      </div>
    </section>
  );
}

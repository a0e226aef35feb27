import { useCallback, useEffect, useMemo, useRef, useState, type KeyboardEvent } from "react";
import { directQueryClient, explain, isCanceled, queryClient, type Clients, type Counter, type Session } from "../api";
import { useSatellites } from "./Satellites";
import { ResultTable } from "../components/ResultTable";
import {
  QueryErrorCode, SatelliteOutcome, type ExecuteQueryRequestSchema,
  type Column, type ExecuteQueryResponse, type QueryError, type QuerySummary, type Table,
} from "../gen/orbit/query/v1/query_pb";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { parseLabels } from "../labels";
import { appendBatch, bytes, columnTypeName, download, MaxRowsKept, ms, toCSV, toJSON, type Row } from "../results";

// elapsedMs is the broker's view of the query; executionMs the satellite's
// own time for the statement (undefined unless it answered).
type SatResult = { id: string; outcome: SatelliteOutcome; rows: bigint; bytes: bigint; elapsedMs: number; executionMs?: number; error?: QueryError };

type Run = {
  seq: number;
  sql: string;
  fanout: boolean;
  mode: "direct" | "passthrough";
  fallback?: string;
  startedAt: number;
  finishedAt?: number;
  columns: Column[];
  rows: Row[];
  totalRows: number;
  counter: Counter;
  perSat: Map<string, SatResult>;
  summary?: QuerySummary;
  error?: string;
  canceled?: boolean;
};

function outcomeName(o: SatelliteOutcome) {
  return SatelliteOutcome[o]?.replace("SATELLITE_OUTCOME_", "") ?? "?";
}

function errorText(e?: QueryError) {
  if (!e) return "";
  return `${QueryErrorCode[e.code]?.replace("QUERY_ERROR_CODE_", "") ?? "ERROR"}: ${e.message}`;
}

const examples = [
  "SELECT service, count(*) AS spans, round(avg(duration_ns) / 1e6, 2) AS avg_ms FROM spans GROUP BY 1 ORDER BY spans DESC",
  "SELECT time, service, severity, body FROM logs WHERE severity IN ('WARN', 'ERROR') ORDER BY time DESC LIMIT 100",
];

export function Query({ clients, session, initialSatellite }: { clients: Clients; session: Session; initialSatellite: string }) {
  const { sats } = useSatellites(clients);
  const [kind, setKind] = useState<"satellite" | "selector">("satellite");
  const [satellite, setSatellite] = useState(initialSatellite);
  const [selector, setSelector] = useState("");
  const [direct, setDirect] = useState(false);
  const [sql, setSQL] = useState(examples[0]);
  const [schema, setSchema] = useState<{ tables: Table[]; error: string }>({ tables: [], error: "" });
  const [run, setRun] = useState<Run | null>(null);
  const [, setTick] = useState(0);
  // The running query's abort controller and its run, for Cancel.
  const abort = useRef<{ ac: AbortController; run: Run } | null>(null);
  const editor = useRef<HTMLTextAreaElement>(null);
  const seq = useRef(0);
  const running = !!run && run.finishedAt === undefined;

  const names = useMemo(() => {
    const m = new Map<string, string>();
    for (const s of sats.values()) m.set(s.id, s.name || s.id);
    return m;
  }, [sats]);
  const satName = useCallback((id: string) => names.get(id) ?? id, [names]);

  // Default to the first satellite once the list arrives.
  useEffect(() => {
    if (!satellite && sats.size > 0) {
      const first = [...sats.values()].sort((a, b) => a.name.localeCompare(b.name))[0];
      setSatellite(first.name || first.id);
    }
  }, [sats, satellite]);

  // Table and column hints from the chosen satellite's schema.
  useEffect(() => {
    if (kind !== "satellite" || !satellite) return;
    const ac = new AbortController();
    const t = setTimeout(() => {
      clients.query
        .getSchema({ satellite }, { signal: ac.signal, timeoutMs: 10_000 })
        .then((r) => setSchema({ tables: r.tables, error: "" }))
        .catch((err) => !ac.signal.aborted && setSchema({ tables: [], error: explain(err) }));
    }, 300);
    return () => {
      clearTimeout(t);
      ac.abort();
    };
  }, [clients, kind, satellite]);

  // While a query runs, re-render ten times a second (rows arrive in place).
  useEffect(() => {
    if (!running) return;
    const t = setInterval(() => setTick((n) => n + 1), 100);
    return () => clearInterval(t);
  }, [running]);

  function insert(text: string) {
    const ta = editor.current;
    if (!ta) return setSQL((s) => s + text);
    const { selectionStart: a, selectionEnd: b, value } = ta;
    const next = value.slice(0, a) + text + value.slice(b);
    setSQL(next);
    requestAnimationFrame(() => {
      ta.focus();
      ta.setSelectionRange(a + text.length, a + text.length);
    });
  }

  async function execute() {
    if (running) return;
    let req: MessageInitShape<typeof ExecuteQueryRequestSchema>;
    const text = sql.trim();
    const fanout = kind === "selector";
    const r: Run = {
      seq: ++seq.current, sql: text, fanout, mode: fanout || !direct ? "passthrough" : "direct",
      startedAt: performance.now(), columns: [], rows: [], totalRows: 0, counter: { bytes: 0 }, perSat: new Map(),
    };
    try {
      if (!text) throw new Error("Write a SQL query first (Ctrl+Enter runs it).");
      if (fanout) req = { target: { case: "selector", value: { matchLabels: parseLabels(selector) } }, sql: text };
      else {
        if (!satellite.trim()) throw new Error("Pick a satellite, or switch to a label selector.");
        req = { target: { case: "satellite", value: satellite.trim() }, sql: text };
      }
    } catch (err) {
      setRun({ ...r, finishedAt: r.startedAt, error: (err as Error).message });
      return;
    }
    const ac = new AbortController();
    abort.current = { ac, run: r };
    setRun(r);
    const consume = async (stream: AsyncIterable<ExecuteQueryResponse>) => {
      let got = false;
      let since = performance.now();
      for await (const m of stream) {
        // Cancel ends the run at once, even if messages already received
        // are still queued in the transport.
        if (ac.signal.aborted) throw ac.signal.reason;
        // A long result arrives faster than it decodes: give the page a turn
        // every 50 ms, or clicks (Cancel) wait until the stream has ended.
        if (performance.now() - since > 50) {
          await new Promise((resolve) => setTimeout(resolve, 0));
          since = performance.now();
          if (ac.signal.aborted) throw ac.signal.reason;
        }
        got = true;
        if (m.schema && r.columns.length === 0) r.columns = m.schema.columns;
        if (m.batch) r.totalRows += appendBatch(r.rows, m.satelliteId, m.batch);
        if (m.satelliteDone) {
          const d = m.satelliteDone;
          r.perSat.set(m.satelliteId, { id: m.satelliteId, outcome: d.outcome, rows: d.rows, bytes: d.bytes, elapsedMs: ms(d.elapsed), executionMs: d.execution && ms(d.execution), error: d.error });
        }
        if (m.summary) r.summary = m.summary;
      }
      return got;
    };
    try {
      let done = false;
      if (r.mode === "direct") {
        // Direct: HTTPS straight to the satellite with a short-lived token;
        // anything that fails before the first answer falls back to the gateway.
        try {
          const ep = await clients.gateway.getDirectEndpoint({ satellite: satellite.trim() }, { signal: ac.signal, timeoutMs: 10_000 });
          const dc = directQueryClient(ep.dnsName, ep.port, ep.token, r.counter);
          const got = await consume(dc.executeQuery(req, { signal: ac.signal }));
          done = got;
          if (!got) throw new Error("the satellite answered nothing");
        } catch (err) {
          if (ac.signal.aborted) throw err;
          if (r.columns.length > 0 || r.perSat.size > 0) throw err; // a failure mid-answer is the answer
          r.fallback = `Direct mode unavailable (${explain(err)}); the query went through the gateway instead.`;
          r.mode = "passthrough";
        }
      }
      if (!done) await consume(queryClient(session.endpoint, session.apiKey, r.counter).executeQuery(req, { signal: ac.signal }));
    } catch (err) {
      if (ac.signal.aborted || isCanceled(err)) r.canceled = true;
      else r.error = explain(err);
    } finally {
      r.finishedAt ??= performance.now();
      if (abort.current?.ac === ac) abort.current = null;
      if (seq.current === r.seq) setRun({ ...r }); // unless a newer run took the page after a cancel
    }
  }

  // cancel aborts the request (the gateway then cancels the satellite's
  // statement) and shows the run as canceled right away rather than when the
  // transport gets round to ending the stream.
  function cancel() {
    const cur = abort.current;
    if (!cur) return;
    abort.current = null;
    cur.ac.abort();
    cur.run.canceled = true;
    cur.run.finishedAt = performance.now();
    setRun({ ...cur.run });
  }

  function onKey(e: KeyboardEvent) {
    if ((e.ctrlKey || e.metaKey) && e.key === "Enter") {
      e.preventDefault();
      void execute();
    } else if (e.key === "Escape" && running) {
      e.preventDefault();
      cancel();
    }
  }

  const elapsed = run ? ((run.finishedAt ?? performance.now()) - run.startedAt) / 1000 : 0;
  const singleError = run && !run.fanout ? [...run.perSat.values()].find((p) => p.error)?.error : undefined;
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");

  return (
    <section aria-labelledby="q-title" onKeyDown={onKey}>
      <div className="pagehead">
        <h2 id="q-title">Query</h2>
        <span className="muted">Ctrl+Enter runs · Esc cancels</span>
      </div>
      <div className="querygrid">
        <div className="querymain">
          <div className="toolbar">
            <div role="radiogroup" aria-label="Target" className="seg">
              <label><input type="radio" name="kind" checked={kind === "satellite"} onChange={() => setKind("satellite")} /> One satellite</label>
              <label><input type="radio" name="kind" checked={kind === "selector"} onChange={() => setKind("selector")} /> Label selector</label>
            </div>
            {kind === "satellite" ? (
              <>
                <input aria-label="Satellite" list="satellite-names" placeholder="name or ID" value={satellite} onChange={(e) => setSatellite(e.target.value)} />
                <datalist id="satellite-names">
                  {[...sats.values()].map((s) => <option key={s.id} value={s.name || s.id}>{s.id}</option>)}
                </datalist>
                <label className="check" title="HTTPS straight to the satellite, its certificate checked by the browser; falls back to the gateway">
                  <input type="checkbox" aria-label="Direct mode" checked={direct} onChange={(e) => setDirect(e.target.checked)} /> Direct
                </label>
              </>
            ) : (
              <input aria-label="Label selector" className="wide" placeholder="env=prod, site=eu-1 (empty = every satellite)" value={selector} onChange={(e) => setSelector(e.target.value)} />
            )}
          </div>
          <textarea ref={editor} aria-label="SQL" className="sql" spellCheck={false} rows={6} value={sql} onChange={(e) => setSQL(e.target.value)} />
          <div className="toolbar">
            {!running ? <button onClick={() => void execute()}>Run</button> : <button className="danger" onClick={cancel}>Cancel</button>}
            {examples.map((ex, i) => <button key={i} className="ghost small" onClick={() => setSQL(ex)}>Example {i + 1}</button>)}
            <span className="spacer" />
            {run && run.rows.length > 0 && (
              <>
                <button className="ghost" onClick={() => download(`orbit-${stamp}.csv`, "text/csv", toCSV(run.columns, run.rows, run.fanout))}>Download CSV</button>
                <button className="ghost" onClick={() => download(`orbit-${stamp}.json`, "application/json", toJSON(run.columns, run.rows, run.fanout))}>Download JSON</button>
              </>
            )}
          </div>
        </div>
        <aside className="hints" aria-label="Tables and columns">
          <h3>Tables</h3>
          {kind === "selector" && <p className="muted small">Hints come from one satellite; pick one to see its tables.</p>}
          {schema.error && kind === "satellite" && <p className="muted small">{schema.error}</p>}
          {kind === "satellite" && schema.tables.map((t) => (
            <details key={t.name} open={schema.tables.length <= 3}>
              <summary><button className="link" onClick={() => insert(t.name)}>{t.name}</button> <span className="muted small">~{t.approxRows.toLocaleString()} rows</span></summary>
              <ul>
                {t.columns.map((c) => (
                  <li key={c.name}><button className="link" onClick={() => insert(c.name)}>{c.name}</button> <span className="muted small">{columnTypeName(c.type)}</span></li>
                ))}
              </ul>
            </details>
          ))}
        </aside>
      </div>

      {run && (
        <div className="progress" data-testid="progress" aria-live="polite">
          <span data-testid="state">{running ? "running…" : run.canceled ? "canceled" : run.error || singleError ? "failed" : "done"}</span>
          <span><b data-testid="rows">{run.totalRows.toLocaleString()}</b> rows</span>
          <span>{bytes(run.counter.bytes)}</span>
          <span>{elapsed.toFixed(2)} s</span>
          {run.fanout && <span data-testid="answered">{run.perSat.size}{run.summary ? ` of ${run.summary.satellitesTotal}` : ""} satellites answered</span>}
          <span className="badge">{run.mode}</span>
          {run.summary && <span className="muted small" title="query ID">{run.summary.queryId}</span>}
          {run.summary?.partial && <span className="badge degraded">partial</span>}
        </div>
      )}
      {run?.fallback && <p className="warn" role="status" data-testid="fallback">{run.fallback}</p>}
      {run?.error && <p role="alert" className="error">{run.error}</p>}
      {singleError && <p role="alert" className="error">{errorText(singleError)}</p>}
      {run?.canceled && <p className="muted" data-testid="canceled">Canceled after {run.totalRows.toLocaleString()} rows shown; the request is closed, which stops the satellite's statement.</p>}
      {run && run.totalRows > MaxRowsKept && <p className="warn">Showing the first {MaxRowsKept.toLocaleString()} of {run.totalRows.toLocaleString()} rows; use orbitctl or a LIMIT for the rest.</p>}
      {run && run.fanout && run.perSat.size > 0 && (
        <table className="grid compact" data-testid="per-satellite">
          <thead><tr><th>Satellite</th><th>Outcome</th><th>Rows</th><th>Bytes</th><th>Elapsed</th><th title="the satellite's own time for the statement; the rest of Elapsed was spent on the way">On satellite</th><th>Error</th></tr></thead>
          <tbody>
            {[...run.perSat.values()].map((p) => (
              <tr key={p.id}>
                <td>{satName(p.id)}</td>
                <td><span className={`badge ${p.outcome === SatelliteOutcome.OK ? "healthy" : "disconnected"}`}>{outcomeName(p.outcome)}</span></td>
                <td>{p.rows.toLocaleString()}</td><td>{bytes(p.bytes)}</td><td>{p.elapsedMs.toFixed(1)} ms</td><td>{p.executionMs === undefined ? "—" : `${p.executionMs.toFixed(1)} ms`}</td><td>{errorText(p.error)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {run && run.columns.length > 0 && (
        <ResultTable columns={run.columns} rows={run.rows} satelliteName={run.fanout ? satName : undefined} />
      )}
      {run && !running && !run.error && !singleError && !run.canceled && run.columns.length === 0 && <p className="empty">The query returned no columns.</p>}
      {!run && <p className="empty">Pick a satellite (or a label selector for many), write SQL and press Ctrl+Enter. Results stream in as they arrive.</p>}
    </section>
  );
}

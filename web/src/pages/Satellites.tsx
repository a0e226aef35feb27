import { useEffect, useMemo, useState } from "react";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { explain, isCanceled, type Clients } from "../api";
import { navigate } from "../router";
import { SatelliteStatus, WatchEventType, type Satellite } from "../gen/orbit/registry/v1/registry_pb";
import { bytes } from "../results";

export function statusName(s: SatelliteStatus): string {
  return SatelliteStatus[s]?.replace("SATELLITE_STATUS_", "") ?? "UNKNOWN";
}

function ago(d: Date | undefined, now: number): string {
  if (!d) return "never";
  const s = Math.max(0, Math.round((now - d.getTime()) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  return `${Math.floor(s / 3600)}h ago`;
}

function until(d: Date | undefined, now: number): string {
  if (!d) return "—";
  const s = Math.round((d.getTime() - now) / 1000);
  if (s <= 0) return "expired";
  if (s < 3600) return `in ${Math.ceil(s / 60)}m`;
  if (s < 86400) return `in ${Math.round(s / 3600)}h`;
  return `in ${Math.round(s / 86400)}d`;
}

// useSatellites keeps the tenant's satellites live through WatchSatellites
// (its first events are the current ones), reconnecting with backoff.
export function useSatellites(clients: Clients) {
  const [sats, setSats] = useState<Map<string, Satellite>>(new Map());
  const [state, setState] = useState<{ live: boolean; error: string }>({ live: false, error: "" });
  // loaded: the first render after the watch began (the current satellites
  // follow its headers at once); until then "no satellites" is not known.
  const [loaded, setLoaded] = useState(false);
  useEffect(() => {
    const abort = new AbortController();
    let delay = 500;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let fresh = new Map<string, Satellite>();
    // Events come in bursts (the current satellites first): render at most
    // every 100 ms.
    const flush = () => {
      timer = undefined;
      setSats(new Map(fresh));
      setLoaded(true);
    };
    const schedule = (ms = 100) => (timer ??= setTimeout(flush, ms));
    (async () => {
      while (!abort.signal.aborted) {
        fresh = new Map();
        try {
          for await (const ev of clients.registry.watchSatellites({}, { signal: abort.signal, onHeader: () => {
            setState({ live: true, error: "" });
            schedule(300);
          } })) {
            const s = ev.satellite;
            if (!s) continue;
            if (ev.type === WatchEventType.DELETED) fresh.delete(s.id);
            else fresh.set(s.id, s);
            schedule();
            setState({ live: true, error: "" });
            delay = 500;
          }
          // The stream ended (a gateway restart): watch again.
        } catch (err) {
          if (abort.signal.aborted || isCanceled(err)) return;
          setState({ live: false, error: explain(err) });
        }
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 10_000);
      }
    })();
    return () => {
      abort.abort();
      clearTimeout(timer);
    };
  }, [clients]);
  return { sats, loaded, ...state };
}

export function Satellites({ clients }: { clients: Clients }) {
  const { sats, live, loaded, error } = useSatellites(clients);
  const [filter, setFilter] = useState("");
  const [status, setStatus] = useState("");
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(t);
  }, []);

  const rows = useMemo(() => {
    const q = filter.trim().toLowerCase();
    return [...sats.values()]
      .filter((s) => !status || statusName(s.status) === status)
      .filter((s) => !q || [s.name, s.id, s.address, s.dnsName, s.version, s.region, ...Object.entries(s.labels).map(([k, v]) => `${k}=${v}`)].some((f) => f.toLowerCase().includes(q)))
      .sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
  }, [sats, filter, status]);
  const counts = useMemo(() => {
    const c: Record<string, number> = {};
    for (const s of sats.values()) c[statusName(s.status)] = (c[statusName(s.status)] ?? 0) + 1;
    return c;
  }, [sats]);

  return (
    <section aria-labelledby="sat-title">
      <div className="pagehead">
        <h2 id="sat-title">Satellites</h2>
        <span className={live ? "live on" : "live"} data-testid="watch-state">{live ? "● live" : "○ connecting…"}</span>
        <span className="muted">
          {sats.size} total · {counts.HEALTHY ?? 0} healthy · {counts.DEGRADED ?? 0} degraded · {counts.DISCONNECTED ?? 0} disconnected
        </span>
      </div>
      <div className="toolbar">
        <input type="search" aria-label="Filter satellites" placeholder="Filter by name, ID, label (env=prod), address, version…" value={filter} onChange={(e) => setFilter(e.target.value)} />
        <select aria-label="Status" value={status} onChange={(e) => setStatus(e.target.value)}>
          <option value="">any status</option>
          <option>HEALTHY</option>
          <option>DEGRADED</option>
          <option>DISCONNECTED</option>
        </select>
      </div>
      {error && <p role="alert" className="error">Live updates stopped: {error} Retrying…</p>}
      {sats.size === 0 && live && loaded && (
        <div className="empty">
          <h3>No satellites yet</h3>
          <p>Run a satellite with a deploy key of this tenant and it appears here within seconds:</p>
          <pre>bazel run //services/satellite -- --connector-url https://CONNECTOR --deploy-key dk_… --name my-site</pre>
        </div>
      )}
      {sats.size > 0 && rows.length === 0 && <p className="empty">No satellite matches this filter.</p>}
      {rows.length > 0 && (
        <div className="tablewrap">
          <table className="grid" data-testid="satellites">
            <thead>
              <tr>
                <th>Name</th><th>Status</th><th>Region</th><th>Address</th><th>DNS name</th><th>Certificate</th><th>Last heartbeat</th><th>Labels</th><th>Version</th><th>Store</th><th />
              </tr>
            </thead>
            <tbody>
              {rows.map((s) => {
                const st = statusName(s.status);
                return (
                  <tr key={s.id} data-satellite={s.name}>
                    <td title={`${s.id}: query it`}>
                      <a href={`/query?satellite=${encodeURIComponent(s.name || s.id)}`} className="satname"
                        onClick={(e) => { e.preventDefault(); navigate(`/query?satellite=${encodeURIComponent(s.name || s.id)}`); }}>
                        {s.name || s.id}
                      </a>
                    </td>
                    <td><span className={`badge ${st.toLowerCase()}`} title={s.statusDetail} data-testid="status">{st}</span></td>
                    <td>{s.region || "—"}</td>
                    <td className="mono">{s.address || "—"}</td>
                    <td className="mono small clip" title={s.dnsName}>{s.dnsName || "—"}</td>
                    <td title={s.certNotAfter ? timestampDate(s.certNotAfter).toISOString() : ""}>{until(s.certNotAfter && timestampDate(s.certNotAfter), now)}</td>
                    <td>{ago(s.lastHeartbeat && timestampDate(s.lastHeartbeat), now)}</td>
                    <td className="wrap">{Object.entries(s.labels).sort().map(([k, v]) => <span key={k} className="label">{k}={v}</span>)}</td>
                    <td className="mono">{s.version || "—"}</td>
                    <td className="small">{s.storeRows.toLocaleString()} rows<br />{bytes(s.storeBytes)}</td>
                    <td><button className="ghost" onClick={() => navigate(`/query?satellite=${encodeURIComponent(s.name || s.id)}`)}>Query</button></td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}

import { useCallback, useEffect, useMemo, useState, type FormEvent, type ReactNode } from "react";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { adminClients, explain, type AdminClients, type Session } from "../api";

const explainAdmin = (err: unknown) => explain(err, "admin token");
import type { APIKey, DeployKey, Region, Tenant } from "../gen/orbit/platform/v1/platform_pb";
import type { RegionStatus } from "../gen/orbit/ctxpublisher/v1/ctxpublisher_pb";
import { ms } from "../results";
import { parseLabels } from "../labels";

const tokenKey = "orbit.admin";
// The scopes an API key may carry (services/platform/store: Scopes).
const allScopes = ["query", "satellites:read", "satellites:write", "logs:read", "logs:write", "admin"];
const defaultScopes = ["query", "satellites:read", "logs:read"];

function when(t?: Timestamp): string {
  return t ? timestampDate(t).toISOString().replace("T", " ").slice(0, 19) : "—";
}

function useLoad<T>(load: () => Promise<T>, deps: unknown[]): { data?: T; error: string; reload: () => void } {
  const [state, setState] = useState<{ data?: T; error: string }>({ error: "" });
  const [n, setN] = useState(0);
  useEffect(() => {
    let live = true;
    load().then((data) => live && setState({ data, error: "" }), (err) => live && setState({ error: explainAdmin(err) }));
    return () => {
      live = false;
    };
  }, [...deps, n]);
  return { ...state, reload: useCallback(() => setN((x) => x + 1), []) };
}

// Secret shows a new key's secret once, with a copy button.
function Secret({ secret, children, onDone }: { secret: string; children?: ReactNode; onDone: () => void }) {
  const [copied, setCopied] = useState(false);
  return (
    <div className="secret" role="status" data-testid="secret">
      <p><b>Copy it now: it is shown only once.</b> Orbit keeps only a hash.</p>
      <div className="toolbar">
        <code className="mono" data-testid="secret-value">{secret}</code>
        <button className="ghost" onClick={() => navigator.clipboard?.writeText(secret).then(() => setCopied(true), () => setCopied(false))}>{copied ? "Copied" : "Copy"}</button>
        <button className="ghost" onClick={onDone}>Done</button>
      </div>
      {children}
    </div>
  );
}

export function Admin({ session }: { session: Session }) {
  const [token, setToken] = useState(() => sessionStorage.getItem(tokenKey) ?? "");
  const [draft, setDraft] = useState("");
  const [error, setError] = useState("");
  const [tab, setTab] = useState<"tenants" | "apikeys" | "deploykeys" | "regions">("apikeys");
  const clients = useMemo(() => (token ? adminClients(session.endpoint, token) : null), [session.endpoint, token]);

  async function unlock(e: FormEvent) {
    e.preventDefault();
    try {
      await adminClients(session.endpoint, draft.trim()).platform.listRegions({}, { timeoutMs: 10_000 });
      sessionStorage.setItem(tokenKey, draft.trim());
      setToken(draft.trim());
      setError("");
    } catch (err) {
      setError(explainAdmin(err));
    }
  }

  if (!clients) {
    return (
      <section aria-labelledby="admin-title">
        <h2 id="admin-title">Admin</h2>
        <form className="card narrow" onSubmit={unlock}>
          <p>Tenants, keys and regions are managed with the platform's <b>admin token</b> (the platform's
            <code> --admin-token-file</code>; <code>orbit dev</code> saves it as <code>admin_token</code> in dev.json). It stays in this tab only.</p>
          <label>Admin token <input type="password" aria-label="Admin token" autoComplete="off" value={draft} onChange={(e) => setDraft(e.target.value)} /></label>
          {error && <p role="alert" className="error">{error}</p>}
          <button type="submit">Unlock</button>
        </form>
      </section>
    );
  }
  const lock = () => {
    sessionStorage.removeItem(tokenKey);
    setToken("");
  };
  return (
    <section aria-labelledby="admin-title">
      <div className="pagehead">
        <h2 id="admin-title">Admin</h2>
        <div role="tablist" className="tabs">
          {([["apikeys", "API keys"], ["deploykeys", "Deploy keys"], ["tenants", "Tenants"], ["regions", "Regions"]] as const).map(([id, label]) => (
            <button key={id} role="tab" aria-selected={tab === id} className={tab === id ? "tab on" : "tab"} onClick={() => setTab(id)}>{label}</button>
          ))}
        </div>
        <span className="spacer" />
        <button className="ghost" onClick={lock}>Lock</button>
      </div>
      {tab === "tenants" && <Tenants clients={clients} />}
      {tab === "apikeys" && <APIKeys clients={clients} session={session} />}
      {tab === "deploykeys" && <DeployKeys clients={clients} session={session} />}
      {tab === "regions" && <Regions clients={clients} />}
    </section>
  );
}

function TenantPicker({ clients, value, onChange }: { clients: AdminClients; value: string; onChange: (id: string) => void }) {
  const { data, error } = useLoad(() => clients.platform.listTenants({}).then((r) => r.tenants), [clients]);
  return (
    <>
      <select aria-label="Tenant" value={value} onChange={(e) => onChange(e.target.value)}>
        {(data ?? []).map((t) => <option key={t.id} value={t.id}>{t.name} ({t.id})</option>)}
      </select>
      {error && <span className="error small">{error}</span>}
    </>
  );
}

function Tenants({ clients }: { clients: AdminClients }) {
  const { data, error, reload } = useLoad<Tenant[]>(() => clients.platform.listTenants({}).then((r) => r.tenants), [clients]);
  const [name, setName] = useState("");
  const [msg, setMsg] = useState("");
  async function create(e: FormEvent) {
    e.preventDefault();
    try {
      const r = await clients.platform.createTenant({ name: name.trim() });
      setMsg(`Created ${r.tenant?.name} (${r.tenant?.id}). Give it an API key and a deploy key next.`);
      setName("");
      reload();
    } catch (err) {
      setMsg(explainAdmin(err));
    }
  }
  async function remove(t: Tenant) {
    if (!confirm(`Delete tenant ${t.name}? Its API keys and deploy keys stop working in every region.`)) return;
    try {
      await clients.platform.deleteTenant({ id: t.id });
      reload();
    } catch (err) {
      setMsg(explainAdmin(err));
    }
  }
  return (
    <>
      <form className="toolbar" onSubmit={create}>
        <input aria-label="New tenant name" placeholder="new tenant name" value={name} onChange={(e) => setName(e.target.value)} />
        <button type="submit" disabled={!name.trim()}>Create tenant</button>
      </form>
      {msg && <p className="note" role="status">{msg}</p>}
      {error && <p role="alert" className="error">{error}</p>}
      <table className="grid compact" data-testid="tenants">
        <thead><tr><th>Name</th><th>ID</th><th>Created</th><th>Limits</th><th /></tr></thead>
        <tbody>
          {(data ?? []).map((t) => (
            <tr key={t.id}>
              <td><b>{t.name}</b></td><td className="mono">{t.id}</td><td>{when(t.createdAt)}</td>
              <td className="small">{t.limits ? `${t.limits.maxConcurrentQueries || "default"} queries · ${t.limits.maxRequestsPerSecond || "default"} req/s` : "defaults"}</td>
              <td><button className="ghost small" onClick={() => void remove(t)}>Delete</button></td>
            </tr>
          ))}
        </tbody>
      </table>
    </>
  );
}

function APIKeys({ clients, session }: { clients: AdminClients; session: Session }) {
  const [tenant, setTenant] = useState(session.tenantId);
  const { data, error, reload } = useLoad<APIKey[]>(() => clients.platform.listAPIKeys({ tenantId: tenant }).then((r) => r.keys), [clients, tenant]);
  const [description, setDescription] = useState("");
  const [scopes, setScopes] = useState<string[]>(defaultScopes);
  const [days, setDays] = useState("");
  const [secret, setSecret] = useState("");
  const [msg, setMsg] = useState("");
  async function create(e: FormEvent) {
    e.preventDefault();
    const d = days.trim() ? Number(days) : 0;
    if (days.trim() && !(d > 0 && d <= 3650)) {
      setMsg("Expiry: a number of days from 1 to 3650, or empty for none.");
      return;
    }
    try {
      const r = await clients.platform.createAPIKey({
        tenantId: tenant, description: description.trim(), scopes,
        expiresAt: d ? { seconds: BigInt(Math.floor(Date.now() / 1000 + d * 86400)), nanos: 0 } : undefined,
      });
      setSecret(r.secret);
      setDescription("");
      setMsg("");
      reload();
    } catch (err) {
      setMsg(explainAdmin(err));
    }
  }
  async function revoke(k: APIKey) {
    if (!confirm(`Revoke ${k.prefix}? Programs using it are refused within seconds, in every region.`)) return;
    try {
      await clients.platform.revokeAPIKey({ id: k.id });
      reload();
    } catch (err) {
      setMsg(explainAdmin(err));
    }
  }
  return (
    <>
      <form className="toolbar" onSubmit={create}>
        <TenantPicker clients={clients} value={tenant} onChange={setTenant} />
        <input aria-label="Key description" placeholder="what is it for?" value={description} onChange={(e) => setDescription(e.target.value)} />
        <fieldset className="scopes">
          <legend className="small muted">scopes</legend>
          {allScopes.map((s) => (
            <label key={s} className="check small">
              <input type="checkbox" checked={scopes.includes(s)} onChange={(e) => setScopes(e.target.checked ? [...scopes, s] : scopes.filter((x) => x !== s))} />{s}
            </label>
          ))}
        </fieldset>
        <input aria-label="Expires in days" placeholder="expires in days (empty: never)" value={days} onChange={(e) => setDays(e.target.value)} />
        <button type="submit" disabled={scopes.length === 0}>Create API key</button>
      </form>
      {secret && <Secret secret={secret} onDone={() => setSecret("")} />}
      {msg && <p role="alert" className="error">{msg}</p>}
      {error && <p role="alert" className="error">{error}</p>}
      <table className="grid compact" data-testid="apikeys">
        <thead><tr><th>Prefix</th><th>Description</th><th>Scopes</th><th>Created</th><th>Expires</th><th>State</th><th /></tr></thead>
        <tbody>
          {(data ?? []).map((k) => (
            <tr key={k.id} data-prefix={k.prefix}>
              <td className="mono">{k.prefix}</td><td>{k.description || "—"}</td><td className="small">{k.scopes.join(", ")}</td>
              <td>{when(k.createdAt)}</td><td>{when(k.expiresAt)}</td>
              <td>{k.revokedAt ? <span className="badge disconnected">revoked</span> : <span className="badge healthy">active</span>}</td>
              <td>{!k.revokedAt && <button className="ghost small" onClick={() => void revoke(k)}>Revoke</button>}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {data && data.length === 0 && <p className="empty">This tenant has no API keys yet.</p>}
    </>
  );
}

function DeployKeys({ clients, session }: { clients: AdminClients; session: Session }) {
  const [tenant, setTenant] = useState(session.tenantId);
  const { data, error, reload } = useLoad<DeployKey[]>(() => clients.platform.listDeployKeys({ tenantId: tenant }).then((r) => r.keys), [clients, tenant]);
  const [description, setDescription] = useState("");
  const [labels, setLabels] = useState("env=prod");
  const [connector, setConnector] = useState("https://connector.example.com");
  const [secret, setSecret] = useState("");
  const [msg, setMsg] = useState("");
  async function create(e: FormEvent) {
    e.preventDefault();
    let m: Record<string, string>;
    try {
      m = parseLabels(labels);
    } catch (err) {
      setMsg((err as Error).message);
      return;
    }
    try {
      const r = await clients.platform.createDeployKey({ tenantId: tenant, description: description.trim(), labels: m });
      setSecret(r.secret);
      setMsg("");
      reload();
    } catch (err) {
      setMsg(explainAdmin(err));
    }
  }
  async function revoke(k: DeployKey) {
    if (!confirm(`Revoke ${k.prefix}? Satellites can no longer enrol with it (enrolled ones keep their identity).`)) return;
    try {
      await clients.platform.revokeDeployKey({ id: k.id });
      reload();
    } catch (err) {
      setMsg(explainAdmin(err));
    }
  }
  const install = `ORBIT_DEPLOY_KEY='${secret}' bazel run //services/satellite -- \\
  --connector-url ${connector} --connector-ca platform-ca.pem \\
  --name "$(hostname)" --data-dir /var/lib/orbit-satellite`;
  return (
    <>
      <form className="toolbar" onSubmit={create}>
        <TenantPicker clients={clients} value={tenant} onChange={setTenant} />
        <input aria-label="Deploy key description" placeholder="which sites?" value={description} onChange={(e) => setDescription(e.target.value)} />
        <input aria-label="Satellite labels" placeholder="labels: env=prod, site=eu" value={labels} onChange={(e) => setLabels(e.target.value)} />
        <button type="submit">Create deploy key</button>
      </form>
      {secret && (
        <Secret secret={secret} onDone={() => setSecret("")}>
          <label className="small">Connector URL of the region <input aria-label="Connector URL" value={connector} onChange={(e) => setConnector(e.target.value)} /></label>
          <p className="small">Install a satellite with it (<code>platform-ca.pem</code> is the region's CA: certdns <code>GetCA</code>, or <code>ca_cert</code> in orbit dev's dev.json):</p>
          <pre className="mono" data-testid="install-command">{install}</pre>
          <button className="ghost" onClick={() => void navigator.clipboard?.writeText(install)}>Copy command</button>
        </Secret>
      )}
      {msg && <p role="alert" className="error">{msg}</p>}
      {error && <p role="alert" className="error">{error}</p>}
      <table className="grid compact" data-testid="deploykeys">
        <thead><tr><th>Prefix</th><th>Description</th><th>Labels</th><th>Created</th><th>State</th><th /></tr></thead>
        <tbody>
          {(data ?? []).map((k) => (
            <tr key={k.id} data-prefix={k.prefix}>
              <td className="mono">{k.prefix}</td><td>{k.description || "—"}</td>
              <td>{Object.entries(k.labels).map(([a, b]) => <span key={a} className="label">{a}={b}</span>)}</td>
              <td>{when(k.createdAt)}</td>
              <td>{k.revokedAt ? <span className="badge disconnected">revoked</span> : <span className="badge healthy">active</span>}</td>
              <td>{!k.revokedAt && <button className="ghost small" onClick={() => void revoke(k)}>Revoke</button>}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </>
  );
}

function Regions({ clients }: { clients: AdminClients }) {
  const { data, error, reload } = useLoad<{ regions: Region[]; status: Map<string, RegionStatus>; statusError: string }>(async () => {
    const regions = (await clients.platform.listRegions({})).regions;
    try {
      const st = await clients.publisher.getStatus({});
      return { regions, status: new Map(st.regions.map((r) => [r.name, r])), statusError: "" };
    } catch (err) {
      return { regions, status: new Map(), statusError: explainAdmin(err) };
    }
  }, [clients]);
  useEffect(() => {
    const t = setInterval(reload, 2000);
    return () => clearInterval(t);
  }, [reload]);
  return (
    <>
      <p className="muted">Every region gets the platform's tenants and keys as contexts from the hub's publisher; lag is how far a region is behind (refreshed every 2 s).</p>
      {error && <p role="alert" className="error">{error}</p>}
      {data?.statusError && <p className="warn">Publisher status unavailable: {data.statusError}</p>}
      <table className="grid compact" data-testid="regions">
        <thead><tr><th>Region</th><th>Gateway</th><th>Pushed / head</th><th>Lag</th><th>Last reconcile</th><th>State</th></tr></thead>
        <tbody>
          {(data?.regions ?? []).map((r) => {
            const st = data?.status.get(r.name);
            return (
              <tr key={r.name}>
                <td><b>{r.name}</b>{r.hub && <span className="badge">hub</span>}</td>
                <td className="mono small">{r.gatewayUrl || "—"}</td>
                <td>{st ? `${st.pushedVersion} / ${st.headVersion}` : "—"}</td>
                <td data-testid="lag">{st ? `${st.lagChanges} changes · ${(ms(st.lag) / 1000).toFixed(1)} s` : "—"}</td>
                <td>{st ? when(st.lastReconcile) : "—"}</td>
                <td>{st ? (st.failing ? <span className="badge disconnected" title={st.lastError}>failing</span> : <span className="badge healthy">in sync</span>) : r.hub ? "—" : "no status"}</td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </>
  );
}

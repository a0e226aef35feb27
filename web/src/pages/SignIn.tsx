import { useState, type FormEvent } from "react";
import { explain, gatewayClients, type Session } from "../api";
import { saveSession } from "../session";

// Sign in with an API key; the gateway's WhoAmI says whether it is good and
// which tenant it belongs to.
export function SignIn({ onSignedIn }: { onSignedIn: (s: Session) => void }) {
  const [apiKey, setApiKey] = useState("");
  const [endpoint, setEndpoint] = useState(location.origin);
  const [remember, setRemember] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");

  async function submit(e: FormEvent) {
    e.preventDefault();
    const key = apiKey.trim();
    if (!key) {
      setError("Paste an API key (it starts with ok_). `orbit dev` prints one and saves it in .orbit/dev/dev.json.");
      return;
    }
    setBusy(true);
    setError("");
    try {
      const url = endpoint.replace(/\/+$/, "");
      const who = await gatewayClients(url, key).gateway.whoAmI({}, { timeoutMs: 10_000 });
      const s: Session = { endpoint: url, apiKey: key, tenant: who.tenantName || who.tenantId, tenantId: who.tenantId, region: who.region, scopes: who.scopes };
      saveSession(s, remember);
      onSignedIn(s);
    } catch (err) {
      setError(explain(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <div className="signin">
      <form onSubmit={submit} aria-labelledby="signin-title">
        <h1 id="signin-title">◎ Orbit</h1>
        <p className="muted">Query telemetry where it lives. Sign in with an API key.</p>
        <label>
          API key
          <input name="apiKey" type="password" autoComplete="off" autoFocus placeholder="ok_…" value={apiKey} onChange={(e) => setApiKey(e.target.value)} />
        </label>
        <details>
          <summary>Gateway</summary>
          <label>
            Gateway URL
            <input name="endpoint" value={endpoint} onChange={(e) => setEndpoint(e.target.value)} />
          </label>
        </details>
        <label className="check">
          <input type="checkbox" checked={remember} onChange={(e) => setRemember(e.target.checked)} /> Remember on this device
        </label>
        {error && <p role="alert" className="error">{error}</p>}
        <button type="submit" disabled={busy}>{busy ? "Signing in…" : "Sign in"}</button>
      </form>
    </div>
  );
}

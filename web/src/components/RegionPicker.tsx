import { useEffect, useState } from "react";
import { explain, gatewayClients, type Clients, type Session } from "../api";
import type { Region } from "../gen/orbit/gateway/v1/gateway_pb";

// RegionPicker: one key, every region. The gateway lists the regions the hub
// published; picking one points every page at that region's gateway (the
// same API key works there: contexts reach every region).
export function RegionPicker({ clients, session, onSwitch }: { clients: Clients; session: Session; onSwitch: (s: Session) => void }) {
  const [regions, setRegions] = useState<Region[]>([]);
  const [error, setError] = useState("");
  useEffect(() => {
    clients.gateway
      .listRegions({}, { timeoutMs: 10_000 })
      .then((r) => setRegions(r.regions))
      .catch((err) => setError(explain(err)));
  }, [clients]);

  async function pick(name: string) {
    const r = regions.find((x) => x.name === name);
    if (!r || !r.gatewayUrl) return;
    try {
      // The key must work there before the pages move over.
      const who = await gatewayClients(r.gatewayUrl, session.apiKey).gateway.whoAmI({}, { timeoutMs: 10_000 });
      setError("");
      onSwitch({ ...session, endpoint: r.gatewayUrl.replace(/\/+$/, ""), region: who.region || r.name });
    } catch (err) {
      setError(`${r.name}: ${explain(err)}`);
    }
  }

  const current = session.region || "default";
  return (
    <span className="who" title={error || `scopes: ${session.scopes.join(", ")}`}>
      tenant <b data-testid="tenant">{session.tenant}</b> · region{" "}
      {regions.length > 1 ? (
        <select aria-label="Region" value={current} onChange={(e) => void pick(e.target.value)} data-testid="region">
          {regions.map((r) => <option key={r.name} value={r.name}>{r.name}{r.hub ? " (hub)" : ""}</option>)}
        </select>
      ) : (
        <b data-testid="region">{current}</b>
      )}
      {error && <span className="error small" role="alert"> {error}</span>}
    </span>
  );
}

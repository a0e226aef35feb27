import { useEffect, useMemo, useState } from "react";
import { gatewayClients, type Session } from "./api";
import { clearSession, loadSession, updateSession } from "./session";
import { RegionPicker } from "./components/RegionPicker";
import { navigate, useLocation } from "./router";
import { SignIn } from "./pages/SignIn";
import { Satellites } from "./pages/Satellites";
import { Query } from "./pages/Query";
import { Logs } from "./pages/Logs";
import { Admin } from "./pages/Admin";

const pages = [
  { path: "/satellites", label: "Satellites", key: "1" },
  { path: "/query", label: "Query", key: "2" },
  { path: "/logs", label: "Logs", key: "3" },
  { path: "/admin", label: "Admin", key: "4" },
] as const;

export function App() {
  const [session, setSession] = useState<Session | null>(loadSession);
  const { path, params } = useLocation();
  const clients = useMemo(() => (session ? gatewayClients(session.endpoint, session.apiKey) : null), [session]);

  // Alt+1, Alt+2 … switch pages from anywhere.
  useEffect(() => {
    const on = (e: KeyboardEvent) => {
      const p = pages.find((p) => e.altKey && e.key === p.key);
      if (p) {
        e.preventDefault();
        navigate(p.path);
      }
    };
    addEventListener("keydown", on);
    return () => removeEventListener("keydown", on);
  }, []);

  if (!session || !clients) {
    return <SignIn onSignedIn={(s) => { setSession(s); if (path === "/" || path === "/signin") navigate("/satellites"); }} />;
  }
  const signOut = () => {
    clearSession();
    setSession(null);
    navigate("/signin");
  };
  const page = pages.find((p) => path.startsWith(p.path)) ?? pages[0];
  return (
    <div className="shell">
      <header className="topbar">
        <span className="brand">◎ Orbit</span>
        <nav aria-label="Pages">
          {pages.map((p) => (
            <a key={p.path} href={p.path} aria-current={p === page ? "page" : undefined} title={`Alt+${p.key}`}
              onClick={(e) => { e.preventDefault(); navigate(p.path); }}>
              {p.label}
            </a>
          ))}
        </nav>
        <span className="spacer" />
        <RegionPicker clients={clients} session={session} onSwitch={(s) => { updateSession(s); setSession(s); }} />
        <button className="ghost" onClick={signOut}>Sign out</button>
      </header>
      <main>
        {page.path === "/satellites" && <Satellites clients={clients} />}
        {page.path === "/logs" && <Logs clients={clients} />}
        {page.path === "/admin" && <Admin session={session} />}
        {page.path === "/query" && <Query clients={clients} session={session} initialSatellite={params.get("satellite") ?? ""} />}
      </main>
    </div>
  );
}

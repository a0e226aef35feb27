// A few routes need no router library: the path is state, links push history.
import { useEffect, useState } from "react";

export function navigate(to: string) {
  if (to === location.pathname + location.search) return;
  history.pushState(null, "", to);
  dispatchEvent(new PopStateEvent("popstate"));
}

export function useLocation(): { path: string; params: URLSearchParams } {
  const [loc, setLoc] = useState(() => ({ path: location.pathname, params: new URLSearchParams(location.search) }));
  useEffect(() => {
    const on = () => setLoc({ path: location.pathname, params: new URLSearchParams(location.search) });
    addEventListener("popstate", on);
    return () => removeEventListener("popstate", on);
  }, []);
  return loc;
}

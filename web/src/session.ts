// The signed-in session lives in sessionStorage: it ends with the tab, and
// an API key never lands in localStorage unless the user asks to be remembered.
import type { Session } from "./api";

const key = "orbit.session";

export function loadSession(): Session | null {
  const raw = sessionStorage.getItem(key) ?? localStorage.getItem(key);
  if (!raw) return null;
  try {
    const s = JSON.parse(raw) as Session;
    return s.apiKey && s.endpoint ? s : null;
  } catch {
    return null;
  }
}

export function saveSession(s: Session, remember: boolean) {
  sessionStorage.setItem(key, JSON.stringify(s));
  if (remember) localStorage.setItem(key, JSON.stringify(s));
}

// updateSession replaces the session where it is kept (a region switch).
export function updateSession(s: Session) {
  saveSession(s, localStorage.getItem(key) !== null);
}

export function clearSession() {
  sessionStorage.removeItem(key);
  localStorage.removeItem(key);
}

// parseLabels reads "env=prod, site=eu-1" (label selectors and deploy-key
// labels; empty: none).
export function parseLabels(s: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of s.split(",").map((p) => p.trim()).filter(Boolean)) {
    const i = part.indexOf("=");
    if (i <= 0) throw new Error(`"${part}" is not a label: write key=value, separated by commas`);
    out[part.slice(0, i).trim()] = part.slice(i + 1).trim();
  }
  return out;
}

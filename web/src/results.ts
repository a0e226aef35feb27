// Column batches → rows, and rows → CSV / JSON downloads.
import { timestampDate, type Duration } from "@bufbuild/protobuf/wkt";
import { ColumnType, type Column, type ColumnBatch, type ColumnValues } from "./gen/orbit/query/v1/query_pb";

export type Cell = boolean | bigint | number | string | Uint8Array | Date | null;
export type Row = { satellite: string; cells: Cell[] };

// MaxRowsKept is how many rows one result keeps in the page; the rest are
// counted (progress, summary) but not kept, so a huge result cannot exhaust
// the tab's memory (docs/web.md, docs/limits.md).
export const MaxRowsKept = 200_000;

function isNull(c: ColumnValues, i: number): boolean {
  const nb = c.nullBitmap;
  return (i >> 3) < nb.length && (nb[i >> 3] & (1 << (i & 7))) !== 0;
}

function value(c: ColumnValues, i: number): Cell {
  if (isNull(c, i)) return null;
  const v = c.values;
  switch (v.case) {
    case "bools":
    case "int64s":
    case "float64s":
    case "strings":
    case "bytes":
      return v.value.values[i];
    case "timestamps": {
      const ns = v.value.values[i];
      return new Date(Number(ns / 1_000_000n));
    }
    default:
      return null;
  }
}

// appendBatch adds a batch's rows (up to the cap) and returns how many it held.
export function appendBatch(rows: Row[], satellite: string, b: ColumnBatch): number {
  const n = Number(b.numRows);
  for (let i = 0; i < n && rows.length < MaxRowsKept; i++) {
    rows.push({ satellite, cells: b.columns.map((c) => value(c, i)) });
  }
  return n;
}

export function formatCell(v: Cell): string {
  if (v === null) return "NULL";
  if (v instanceof Date) return v.toISOString();
  if (v instanceof Uint8Array) return `0x${Array.from(v.slice(0, 32), (x) => x.toString(16).padStart(2, "0")).join("")}${v.length > 32 ? "…" : ""}`;
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toPrecision(8).replace(/\.?0+$/, "");
  return String(v);
}

function csvField(s: string): string {
  return /[",\n\r]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

export function toCSV(columns: Column[], rows: Row[], withSatellite: boolean): string {
  const head = [...(withSatellite ? ["satellite"] : []), ...columns.map((c) => c.name)];
  const lines = [head.map(csvField).join(",")];
  for (const r of rows) {
    const cells = r.cells.map((c) => (c === null ? "" : c instanceof Date ? c.toISOString() : formatCell(c)));
    lines.push([...(withSatellite ? [r.satellite] : []), ...cells].map(csvField).join(","));
  }
  return lines.join("\n") + "\n";
}

function jsonCell(v: Cell): unknown {
  if (typeof v === "bigint") return Number.isSafeInteger(Number(v)) ? Number(v) : v.toString();
  if (v instanceof Date) return v.toISOString();
  if (v instanceof Uint8Array) return btoa(String.fromCharCode(...v));
  return v;
}

export function toJSON(columns: Column[], rows: Row[], withSatellite: boolean): string {
  return JSON.stringify(
    rows.map((r) => {
      const o: Record<string, unknown> = withSatellite ? { satellite: r.satellite } : {};
      columns.forEach((c, i) => (o[c.name] = jsonCell(r.cells[i])));
      return o;
    }),
    null,
    1,
  );
}

export function download(name: string, type: string, body: string) {
  const url = URL.createObjectURL(new Blob([body], { type }));
  const a = Object.assign(document.createElement("a"), { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

export function columnTypeName(t: ColumnType): string {
  return ColumnType[t]?.replace("COLUMN_TYPE_", "").toLowerCase() ?? "?";
}

export function ms(d?: Duration): number {
  return d ? Number(d.seconds) * 1000 + d.nanos / 1e6 : 0;
}

export function bytes(n: number | bigint): string {
  const v = Number(n);
  if (v < 1024) return `${v} B`;
  if (v < 1024 * 1024) return `${(v / 1024).toFixed(1)} KiB`;
  if (v < 1024 ** 3) return `${(v / 1024 / 1024).toFixed(1)} MiB`;
  return `${(v / 1024 ** 3).toFixed(2)} GiB`;
}

export { timestampDate };

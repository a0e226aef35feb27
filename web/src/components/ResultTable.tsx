import { useRef } from "react";
import { useVirtualizer } from "@tanstack/react-virtual";
import type { Column } from "../gen/orbit/query/v1/query_pb";
import { columnTypeName, formatCell, type Row } from "../results";

const rowHeight = 28;

// ResultTable renders only the rows in view, so 200k rows scroll as fast as 20.
export function ResultTable({ columns, rows, satelliteName, version }: {
  columns: Column[];
  rows: Row[];
  satelliteName?: (id: string) => string;
  version: number; // bumps when rows (appended in place) change
}) {
  const scroller = useRef<HTMLDivElement>(null);
  const v = useVirtualizer({ count: rows.length, getScrollElement: () => scroller.current, estimateSize: () => rowHeight, overscan: 20 });
  const template = `${satelliteName ? "minmax(8rem, 12rem) " : ""}${columns.map(() => "minmax(7rem, 1fr)").join(" ")}`;
  return (
    <div className="results" ref={scroller} data-testid="results" data-rows={rows.length} data-version={version} role="table" aria-rowcount={rows.length + 1}>
      <div className="rrow rhead" role="row" style={{ gridTemplateColumns: template }}>
        {satelliteName && <div role="columnheader">satellite</div>}
        {columns.map((c, i) => (
          <div role="columnheader" key={i} title={columnTypeName(c.type)}>
            {c.name} <span className="muted small">{columnTypeName(c.type)}</span>
          </div>
        ))}
      </div>
      <div style={{ height: v.getTotalSize(), position: "relative" }}>
        {v.getVirtualItems().map((item) => {
          const r = rows[item.index];
          return (
            <div key={item.key} className="rrow" role="row" aria-rowindex={item.index + 2}
              style={{ gridTemplateColumns: template, position: "absolute", top: 0, left: 0, right: 0, height: rowHeight, transform: `translateY(${item.start}px)` }}>
              {satelliteName && <div role="cell">{satelliteName(r.satellite)}</div>}
              {r.cells.map((c, i) => (
                <div role="cell" key={i} className={c === null ? "null" : typeof c === "string" ? "" : "num"}>{formatCell(c)}</div>
              ))}
            </div>
          );
        })}
      </div>
    </div>
  );
}

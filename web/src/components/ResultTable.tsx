import { useRef } from "react";
import { useVirtualizer } from "@tanstack/react-virtual";
import { ColumnType, type Column } from "../gen/orbit/query/v1/query_pb";
import { columnTypeName, formatCell, type Row } from "../results";

const rowHeight = 28;

// ResultTable renders only the rows in view, so 200k rows scroll as fast as 20.
// Rows are appended in place while a query streams; the page re-renders it.
export function ResultTable({ columns, rows, satelliteName }: {
  columns: Column[];
  rows: Row[];
  satelliteName?: (id: string) => string;
}) {
  const scroller = useRef<HTMLDivElement>(null);
  const v = useVirtualizer({ count: rows.length, getScrollElement: () => scroller.current, estimateSize: () => rowHeight, overscan: 20 });
  // Widths by type; past the page's width the table scrolls sideways.
  // Every row gets the same explicit minimum width, so header and body
  // columns line up however wide their contents are.
  const minRem = (t: ColumnType) => (t === ColumnType.TIMESTAMP ? 15 : t === ColumnType.STRING || t === ColumnType.BYTES ? 10 : 7);
  const template = `${satelliteName ? "minmax(8rem, 12rem) " : ""}${columns.map((c) => `minmax(${minRem(c.type)}rem, ${c.type === ColumnType.STRING ? 2 : 1}fr)`).join(" ")}`;
  const minWidth = `${(satelliteName ? 8 : 0) + columns.reduce((n, c) => n + minRem(c.type), 0)}rem`;
  return (
    <div className="results" ref={scroller} data-testid="results" data-rows={rows.length} role="table" aria-rowcount={rows.length + 1}>
      <div className="rrow rhead" role="row" style={{ gridTemplateColumns: template, minWidth }}>
        {satelliteName && <div role="columnheader">satellite</div>}
        {columns.map((c, i) => (
          <div role="columnheader" key={i} title={`${c.name}: ${columnTypeName(c.type)}`}>{c.name}</div>
        ))}
      </div>
      <div style={{ height: v.getTotalSize(), position: "relative", minWidth }}>
        {v.getVirtualItems().map((item) => {
          const r = rows[item.index];
          return (
            <div key={item.key} className="rrow" role="row" aria-rowindex={item.index + 2}
              style={{ gridTemplateColumns: template, minWidth, position: "absolute", top: 0, left: 0, right: 0, height: rowHeight, transform: `translateY(${item.start}px)` }}>
              {satelliteName && <div role="cell">{satelliteName(r.satellite)}</div>}
              {r.cells.map((c, i) => (
                <div role="cell" key={i} className={c === null ? "null" : typeof c === "string" || c instanceof Date ? "" : "num"} title={formatCell(c)}>{formatCell(c)}</div>
              ))}
            </div>
          );
        })}
      </div>
    </div>
  );
}

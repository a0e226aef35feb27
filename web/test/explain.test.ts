// Unit tests of the page-independent helpers in src/api.ts, run by
// tools/web.sh check: bundled with rolldown, run with node --test.
import { test } from "node:test";
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { explain } from "../src/api";
import { QueryErrorCode, QueryErrorSchema } from "../src/gen/orbit/query/v1/query_pb";

const queryError = (code: QueryErrorCode) => ({ desc: QueryErrorSchema, value: create(QueryErrorSchema, { code, message: "m" }) });

// The detail's code decides, not the wording, which is the satellite's to
// change (an earlier version matched words in the message).
test("a result over the row or byte limit is not called a rate limit", () => {
  for (const code of [QueryErrorCode.ROW_LIMIT, QueryErrorCode.BYTE_LIMIT]) {
    const err = new ConnectError("the answer has more than 10 rows", Code.ResourceExhausted, undefined, [queryError(code)]);
    assert.match(explain(err), /^The result is over a limit/);
  }
});

test("rate limits and query-count limits still read as too many requests", () => {
  for (const err of [
    new ConnectError("tenant t1 is over its request rate; slow down", Code.ResourceExhausted),
    new ConnectError("tenant t1 runs 64 queries, its limit; wait for one to finish", Code.ResourceExhausted),
    new ConnectError("satellite edge-1 runs 8 queries through this broker, its limit", Code.ResourceExhausted, undefined, [queryError(QueryErrorCode.TOO_MANY_QUERIES)]),
  ]) {
    assert.match(explain(err), /^Too many requests or queries at once/);
  }
});

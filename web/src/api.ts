// Connect clients for the gateway (and, in direct mode, a satellite), with the
// API key as a bearer token on every call.
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { GatewayService } from "./gen/orbit/gateway/v1/gateway_pb";
import { QueryErrorCode, QueryErrorSchema, QueryService } from "./gen/orbit/query/v1/query_pb";
import { RegistryService } from "./gen/orbit/registry/v1/registry_pb";
import { LogBrokerService } from "./gen/orbit/logbroker/v1/logbroker_pb";
import { PlatformService } from "./gen/orbit/platform/v1/platform_pb";
import { ContextPublisherService } from "./gen/orbit/ctxpublisher/v1/ctxpublisher_pb";

export type Session = { endpoint: string; apiKey: string; tenant: string; tenantId: string; region: string; scopes: string[] };

export type Clients = {
  gateway: Client<typeof GatewayService>;
  query: Client<typeof QueryService>;
  registry: Client<typeof RegistryService>;
  logs: Client<typeof LogBrokerService>;
};

function bearer(token: string): Interceptor {
  return (next) => async (req) => {
    req.header.set("Authorization", `Bearer ${token}`);
    return next(req);
  };
}

// Counter is where a counting transport adds the response bytes it receives.
export type Counter = { bytes: number };

// countingFetch counts the bytes of every response body as they arrive: the
// workbench's live "bytes" figure is what crossed the wire.
function countingFetch(c: Counter): typeof fetch {
  return async (input, init) => {
    const resp = await fetch(input, init);
    if (!resp.body) return resp;
    const counted = resp.body.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, ctl) {
          c.bytes += chunk.byteLength;
          ctl.enqueue(chunk);
        },
      }),
    );
    return new Response(counted, { status: resp.status, statusText: resp.statusText, headers: resp.headers });
  };
}

// Binary protobuf on the wire: results are column batches, and JSON would
// turn every int64 into a string.
function transport(baseUrl: string, token: string, counter?: Counter) {
  return createConnectTransport({
    baseUrl,
    useBinaryFormat: true,
    interceptors: [bearer(token)],
    ...(counter ? { fetch: countingFetch(counter) } : {}),
  });
}

// queryClient is a gateway QueryService client that counts received bytes.
export function queryClient(endpoint: string, apiKey: string, counter: Counter): Client<typeof QueryService> {
  return createClient(QueryService, transport(endpoint, apiKey, counter));
}

export function gatewayClients(endpoint: string, apiKey: string): Clients {
  const t = transport(endpoint, apiKey);
  return {
    gateway: createClient(GatewayService, t),
    query: createClient(QueryService, t),
    registry: createClient(RegistryService, t),
    logs: createClient(LogBrokerService, t),
  };
}

// directQueryClient talks to one satellite over HTTPS with a token from
// GatewayService.GetDirectEndpoint; the browser verifies its certificate.
export function directQueryClient(dnsName: string, port: number, token: string, counter: Counter): Client<typeof QueryService> {
  return createClient(QueryService, transport(`https://${dnsName}:${port}`, token, counter));
}

export type AdminClients = {
  platform: Client<typeof PlatformService>;
  publisher: Client<typeof ContextPublisherService>;
};

// adminClients call the hub gateway's management APIs with the platform's
// admin token (not an API key; docs/web.md).
export function adminClients(endpoint: string, adminToken: string): AdminClients {
  const t = transport(endpoint, adminToken);
  return { platform: createClient(PlatformService, t), publisher: createClient(ContextPublisherService, t) };
}

// explain turns an RPC failure into a sentence that says what to do; the
// admin pages pass "admin token" as the credential that was refused.
export function explain(err: unknown, credential: "API key" | "admin token" = "API key"): string {
  const e = ConnectError.from(err);
  switch (e.code) {
    case Code.Unauthenticated:
      return credential === "API key"
        ? `The API key was refused (${e.rawMessage}). Sign in again with a valid key.`
        : `The admin token was refused (${e.rawMessage}). Unlock again with the platform's admin token.`;
    case Code.PermissionDenied:
      return `This key may not do that (${e.rawMessage}). Ask an admin for a key with the needed scope.`;
    case Code.ResourceExhausted:
      // Rate limits and result-size limits both answer resource_exhausted;
      // a query's QueryError detail (libs/queryerr) says which.
      if (isResultLimit(e)) return `The result is over a limit: ${e.rawMessage}.`;
      return `Too many requests or queries at once (${e.rawMessage}). Wait a moment and try again.`;
    case Code.Unavailable:
      return `The service is unreachable (${e.rawMessage}). Check that the gateway is running; retrying may help.`;
    case Code.DeadlineExceeded:
      return `Timed out (${e.rawMessage}).`;
    case Code.Canceled:
      return "Canceled.";
    default:
      return e.rawMessage || String(err);
  }
}

function isResultLimit(e: ConnectError): boolean {
  return e.findDetails(QueryErrorSchema).some((d) => d.code === QueryErrorCode.ROW_LIMIT || d.code === QueryErrorCode.BYTE_LIMIT);
}

export function isCanceled(err: unknown): boolean {
  return ConnectError.from(err).code === Code.Canceled;
}

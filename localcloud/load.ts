// A small HTTPS load client for the local cloud: every request's outcome is recorded (status,
// body marker, error), nothing is hidden. Closed loop (the next request starts when the previous
// one ends) over keep-alive connections, or open loop (evenly spaced requests). One retry, as
// browsers and HTTP libraries make it (RFC 9112, 9.3.1; Node's request.reusedSocket): a request
// sent on a kept-alive connection that the server closed before answering (nginx closes idle
// connections when it reloads) goes again once on a new connection; the outcome says so.
import * as dns from "dns";
import * as https from "https";
import * as tls from "tls";

export interface Outcome {
  at: number;
  status: number;
  marker: string;
  error?: string;
  ms: number;
  /** Set when the request was sent again: the error of the first try (its reused connection closed before any answer). */
  retried?: string;
  /** The address the answer came from (unset when none came). */
  address?: string;
}

export interface LoadTarget {
  /** Host name the site answers on (SNI, Host header). */
  host: string;
  /** Address to connect to (the VM's loopback address), or how to find it for each new connection (see `dnsResolver`). */
  address: string | (() => Promise<string>);
  /** CA to trust (Pebble's root). */
  ca: string;
  /** Port; default 443. */
  port?: number;
  path: string;
  /** Extracts what to record from a body, e.g. the app version. */
  marker?: (body: string) => string;
}

async function requestOnce(t: LoadTarget, agent: https.Agent, timeoutMs: number): Promise<Outcome> {
  const first = await send(t, agent, timeoutMs);
  if (!first.closedBeforeAnswer) return first.outcome;
  const again = await send(t, agent, timeoutMs, true);
  return { ...again.outcome, at: first.outcome.at, ms: again.outcome.ms + first.outcome.ms, retried: first.outcome.error };
}

/** One request; `closedBeforeAnswer` when it went out on a reused connection that the server closed before any byte of an answer. */
function send(t: LoadTarget, agent: https.Agent, timeoutMs: number, freshConnection = false): Promise<{ outcome: Outcome; closedBeforeAnswer: boolean }> {
  const started = Date.now();
  return new Promise((resolve) => {
    let answered = false;
    const req = https.request({
      host: t.host, port: t.port ?? 443, servername: t.host, path: t.path, method: "GET", agent: freshConnection ? false : agent, ca: t.ca, timeout: timeoutMs,
      lookup: (_h, opts, cb) => {
        const found = typeof t.address === "string" ? Promise.resolve(t.address) : t.address();
        found.then((address) => {
          if ((opts as { all?: boolean }).all) (cb as unknown as (e: null, a: { address: string; family: number }[]) => void)(null, [{ address, family: 4 }]);
          else cb(null, address, 4);
        }, (e: NodeJS.ErrnoException) => cb(e, "", 4));
      },
      checkServerIdentity: (host, cert) => tls.checkServerIdentity(host, cert),
    }, (res) => {
      answered = true;
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c) => (body += c));
      const address = res.socket?.remoteAddress;
      res.on("end", () => resolve({ outcome: { at: started, status: res.statusCode ?? 0, marker: t.marker ? t.marker(body) : "", ms: Date.now() - started, address }, closedBeforeAnswer: false }));
      res.on("error", (e) => resolve({ outcome: { at: started, status: 0, marker: "", error: String(e), ms: Date.now() - started }, closedBeforeAnswer: false }));
    });
    req.on("timeout", () => req.destroy(new Error(`timeout after ${timeoutMs} ms`)));
    req.on("error", (e) => resolve({
      outcome: { at: started, status: 0, marker: "", error: String(e), ms: Date.now() - started },
      closedBeforeAnswer: !answered && req.reusedSocket && (e as NodeJS.ErrnoException).code === "ECONNRESET",
    }));
    req.end();
  });
}

/**
 * A resolver as a client's system has one: asks `server` ("127.0.0.1:<port>") for `name`'s A
 * record and keeps the answer for `ttlSeconds` (the record's TTL) before it asks again.
 */
export function dnsResolver(server: string, name: string, ttlSeconds: number): () => Promise<string> {
  const resolver = new dns.promises.Resolver({ timeout: 2000, tries: 2 });
  resolver.setServers([server]);
  let cached: { address: Promise<string>; until: number } | undefined;
  return () => {
    if (!cached || Date.now() >= cached.until) {
      const address = resolver.resolve4(name).then((all) => {
        if (!all.length) throw new Error(`no A record for ${name}`);
        return all[0];
      });
      cached = { address, until: Date.now() + ttlSeconds * 1000 };
      address.catch(() => {
        if (cached?.address === address) cached = undefined;
      });
    }
    return cached.address;
  };
}

/** Requests back to back over `connections` keep-alive connections until `stop` resolves. */
export async function closedLoop(t: LoadTarget, stop: Promise<unknown>, opts: { connections?: number; timeoutMs?: number; maxRequests?: number } = {}): Promise<Outcome[]> {
  const agent = new https.Agent({ keepAlive: true, maxSockets: opts.connections ?? 4 });
  const outcomes: Outcome[] = [];
  let done = false;
  stop.then(() => (done = true), () => (done = true));
  const max = opts.maxRequests ?? 200_000;
  const worker = async () => {
    while (!done && outcomes.length < max) outcomes.push(await requestOnce(t, agent, opts.timeoutMs ?? 15_000));
  };
  await Promise.all(Array.from({ length: opts.connections ?? 4 }, worker));
  agent.destroy();
  return outcomes.sort((a, b) => a.at - b.at);
}

/** Sends `rate` requests per second, evenly spaced, for `seconds` or until `until` resolves; every outcome recorded. */
export async function openLoop(t: LoadTarget, rate: number, until: number | Promise<unknown>, opts: { keepAlive?: boolean; timeoutMs?: number } = {}): Promise<Outcome[]> {
  const agent = new https.Agent({ keepAlive: opts.keepAlive ?? true, maxSockets: 64 });
  const total = typeof until === "number" ? Math.round(rate * until) : Infinity;
  let stopped = false;
  let wake: (() => void) | undefined;
  const stop = () => {
    stopped = true;
    wake?.();
  };
  if (typeof until !== "number") until.then(stop, stop);
  const start = Date.now();
  const pending: Promise<Outcome>[] = [];
  for (let i = 0; i < total && !stopped; i++) {
    const wait = start + (i * 1000) / rate - Date.now();
    if (wait > 0) {
      await new Promise<void>((r) => {
        const timer = setTimeout(r, wait);
        wake = () => { clearTimeout(timer); r(); };
      });
      wake = undefined;
      if (stopped) break;
    }
    pending.push(requestOnce(t, agent, opts.timeoutMs ?? 15_000));
  }
  const outcomes = await Promise.all(pending);
  agent.destroy();
  return outcomes;
}

/** The sample app's version as its page shows it ("version: v2<"), the marker the release checks follow. */
export function appVersion(body: string): string {
  return /version: (\S+)</.exec(body)?.[1] ?? "?";
}

/** Count of outcomes that are not the wanted status (errors included). */
export function failures(outcomes: Outcome[], want = 200): Outcome[] {
  return outcomes.filter((o) => o.status !== want);
}

/** The sequence of distinct markers in time order, e.g. ["v1", "v2"]. */
export function markerRuns(outcomes: Outcome[]): string[] {
  const runs: string[] = [];
  for (const o of outcomes) if (o.status === 200 && runs[runs.length - 1] !== o.marker) runs.push(o.marker);
  return runs;
}

/** The first failed outcomes, for an assertion's message. */
export function describeFailures(outcomes: Outcome[], n = 5): string {
  return failures(outcomes).slice(0, n).map((x) => `${x.status} ${x.error ?? ""}`).join("; ");
}

/**
 * Runs `action` while `t` is under load: `connections` closed-loop clients (a number), or
 * `{ rate }` requests a second in an open loop (they leave the CPU to the rest). Its result or
 * error, and every outcome.
 */
export async function underLoad<T>(t: LoadTarget, action: () => Promise<T>, load: number | { rate: number } = 1): Promise<{ result?: T; error?: unknown; outcomes: Outcome[] }> {
  let finish!: () => void;
  const stop = new Promise<void>((r) => (finish = r));
  const outcomes = typeof load === "number" ? closedLoop(t, stop, { connections: load }) : openLoop(t, load.rate, stop);
  let result: T | undefined;
  let error: unknown;
  try {
    result = await action();
  } catch (e) {
    error = e;
  }
  finish();
  return { result, error, outcomes: await outcomes };
}

// One measurement window: steady open-loop load through nginx over HTTPS (in a worker thread, see
// loadWorker.ts), an action started LEAD_S seconds in, every outcome counted; and the same window
// lengthened until it covers its action. Used by the capacity probe and the release windows.
import * as fs from "fs";
import * as path from "path";
import { Worker } from "worker_threads";
import { failures, markerRuns, Outcome } from "../localcloud/load";
import { LOCAL_FQDN } from "../localcloud/localStack";
import { Bench } from "./context";
import type { LoadJob } from "./loadWorker";
import { round } from "./report";

/** Load before the action starts, and the least load after it ends, in seconds. */
export const LEAD_S = 5;
export const MIN_TAIL_S = 3;
export const REQUEST_TIMEOUT_MS = 15_000;

const delay = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export interface WindowResult {
  strategy: string;
  rate: number;
  /** Requests sent, 200s, and everything else (non-200 or error), with what went wrong. */
  total: number;
  ok: number;
  failed: number;
  failureKinds: Record<string, number>;
  /** 200s that took longer than the request timeout: they waited in the client's connection queue
   * (openLoop's timeout is the socket's idle timeout, it does not count that wait). */
  slowOverTimeout: number;
  /** The window and where the action sat in it (seconds). */
  windowSeconds: number;
  leadSeconds: number;
  actionSeconds: number;
  tailSeconds: number;
  covered: boolean;
  actionError?: string;
  /** First and last failure, seconds after the action started. */
  firstFailureAtS?: number;
  lastFailureAtS?: number;
  /** Versions served, in order (e.g. ["v2", "v3"]: one switch). */
  versions: string[];
  latencyMs: { p50: number; p95: number; p99: number; max: number };
  /** How late the latest request was sent against its even schedule (load generator health). */
  maxSendLagMs: number;
  /** nginx's access log for the same window: status → count (a cross-check of the client's view). */
  nginxStatuses: Record<string, number>;
  /** qemu processes of other runs seen during the window (should be none). */
  otherVmsSeen: string[];
  detail?: Record<string, unknown>;
}

export type Action = () => Promise<Record<string, unknown> | void>;

function startLoad(bench: Bench, rate: number, seconds: number): { started: Promise<number>; done: Promise<Outcome[]> } {
  const { session } = bench;
  const job: LoadJob = { host: LOCAL_FQDN, address: session.ip, ca: fs.readFileSync(session.rootCa, "utf8"), path: "/", rate, seconds, keepAlive: true, timeoutMs: REQUEST_TIMEOUT_MS };
  const worker = new Worker(
    `require(${JSON.stringify(require.resolve("ts-node/register"))}); require(${JSON.stringify(path.join(__dirname, "loadWorker.ts"))});`,
    { eval: true, workerData: job },
  );
  let onStarted!: (at: number) => void;
  const started = new Promise<number>((r) => (onStarted = r));
  const done = new Promise<Outcome[]>((resolve, reject) => {
    // Every request ends by its own timeout; the window cannot outlast this.
    const limit = setTimeout(() => {
      void worker.terminate();
      reject(new Error(`the load generator did not finish within ${seconds + 300} s`));
    }, (seconds + 300) * 1000);
    worker.on("message", (m: { type: string; at?: number; outcomes?: Outcome[]; error?: string }) => {
      if (m.type === "started") onStarted(m.at ?? Date.now());
      if (m.type === "done") {
        clearTimeout(limit);
        resolve(m.outcomes ?? []);
        void worker.terminate();
      }
      if (m.type === "error") {
        clearTimeout(limit);
        reject(new Error(`load generator: ${m.error}`));
      }
    });
    worker.on("error", (e) => {
      clearTimeout(limit);
      reject(e);
    });
  });
  done.catch(() => onStarted(Date.now()));
  return { started, done };
}

const nginxLogSize = async (bench: Bench) => Number((await bench.session.onServer("sudo stat -c %s /var/log/nginx/access.log")).trim());

async function nginxStatusesSince(bench: Bench, offset: number): Promise<Record<string, number>> {
  const out = await bench.session.onServer(`sudo tail -c +${offset + 1} /var/log/nginx/access.log | awk '{print $9}' | sort | uniq -c`);
  const counts: Record<string, number> = {};
  for (const line of out.trim().split("\n").filter(Boolean)) {
    const [n, status] = line.trim().split(/\s+/);
    counts[status ?? "?"] = Number(n);
  }
  return counts;
}

function failureKind(o: Outcome): string {
  if (o.status !== 0) return `HTTP ${o.status}`;
  return (o.error ?? "error").replace(/^Error: /, "").replace(/\d+\.\d+\.\d+\.\d+:\d+/g, "<addr>");
}

function percentile(sorted: number[], p: number): number {
  if (!sorted.length) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

/**
 * One window: open-loop load at `rate` for `windowS` seconds; `action` starts LEAD_S seconds in.
 * Covered = the action ended at least MIN_TAIL_S before the last request was sent, and the last
 * MIN_TAIL_S seconds had no failure (whatever the action broke had recovered inside the window).
 */
export async function measureWindow(bench: Bench, strategy: string, rate: number, windowS: number, action?: Action): Promise<WindowResult> {
  const { log } = bench;
  const offset = await nginxLogSize(bench);
  log(`${strategy} at ${rate} req/s: ${windowS} s window`);
  const load = startLoad(bench, rate, windowS);
  const start = await load.started;
  let actionStart = start;
  let actionEnd = start;
  let actionError: string | undefined;
  let detail: Record<string, unknown> | undefined;
  if (action) {
    await delay(Math.max(0, start + LEAD_S * 1000 - Date.now())); // the lead is part of the measurement, not a wait for a condition
    actionStart = Date.now();
    try {
      detail = (await action()) ?? undefined;
    } catch (e) {
      actionError = e instanceof Error ? e.message : String(e);
      log(`  the action failed: ${actionError.slice(0, 2000)}`);
    }
    actionEnd = Date.now();
  }
  const outcomes = await load.done;
  const nginxStatuses = await nginxStatusesSince(bench, offset);
  const lastSend = start + ((outcomes.length - 1) * 1000) / rate;
  const failed = failures(outcomes);
  const kinds: Record<string, number> = {};
  for (const o of failed) kinds[failureKind(o)] = (kinds[failureKind(o)] ?? 0) + 1;
  const latencies = outcomes.filter((o) => o.status === 200).map((o) => o.ms).sort((a, b) => a - b);
  const versions = markerRuns(outcomes);
  const tailS = (lastSend - actionEnd) / 1000;
  const lateFailures = failed.filter((o) => o.at > lastSend - MIN_TAIL_S * 1000);
  const r: WindowResult = {
    strategy, rate,
    total: outcomes.length, ok: outcomes.length - failed.length, failed: failed.length, failureKinds: kinds,
    slowOverTimeout: latencies.filter((ms) => ms > REQUEST_TIMEOUT_MS).length,
    windowSeconds: windowS,
    leadSeconds: round((actionStart - start) / 1000),
    actionSeconds: round((actionEnd - actionStart) / 1000),
    tailSeconds: round(tailS),
    covered: tailS >= MIN_TAIL_S && lateFailures.length === 0,
    actionError,
    firstFailureAtS: failed.length ? round((failed[0].at - actionStart) / 1000, 2) : undefined,
    lastFailureAtS: failed.length ? round((failed[failed.length - 1].at - actionStart) / 1000, 2) : undefined,
    versions,
    latencyMs: { p50: percentile(latencies, 50), p95: percentile(latencies, 95), p99: percentile(latencies, 99), max: latencies[latencies.length - 1] ?? 0 },
    maxSendLagMs: Math.max(0, ...outcomes.map((o, i) => o.at - (start + (i * 1000) / rate))),
    nginxStatuses,
    otherVmsSeen: bench.othersDuring(start, Date.now()),
    detail,
  };
  log(`  ${r.total} requests, ${r.failed} failed ${JSON.stringify(kinds)}, ${r.slowOverTimeout} slower than ${REQUEST_TIMEOUT_MS / 1000} s, p50/p99 ${r.latencyMs.p50}/${r.latencyMs.p99} ms; action ${r.actionSeconds} s, tail ${r.tailSeconds} s, versions ${versions.join(" -> ")}, nginx ${JSON.stringify(nginxStatuses)}`);
  return r;
}

/** measureWindow, lengthened and repeated (at most twice more) until the window covers the action. */
export async function coveredWindow(bench: Bench, strategy: string, rate: number, windowS: number, action: Action): Promise<WindowResult> {
  for (let attempt = 1; ; attempt++) {
    const r = await measureWindow(bench, strategy, rate, windowS, action);
    if (r.covered || attempt === 3 || r.actionError) {
      if (!r.covered) bench.problem(`${strategy} at ${rate} req/s: the window did not cover the action (tail ${r.tailSeconds} s)`);
      bench.results.releaseUnderLoad.push(r);
      return r;
    }
    bench.results.discardedWindows.push(r);
    windowS = Math.ceil(Math.max(windowS + 10, LEAD_S + r.actionSeconds * 1.3 + MIN_TAIL_S + 10));
    bench.log(`  not covered (tail ${r.tailSeconds} s): again with ${windowS} s`);
  }
}

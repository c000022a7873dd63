// Benchmarks on the local cloud, one VM for the whole run (see bench/README.md):
//   1. requests failed during a release under steady open-loop load through nginx over HTTPS:
//      dropstack's own release (a second `up`), a naive `supervisorctl restart`, a gunicorn HUP;
//   2. wall time of the first full `up` vs an app-only release;
//   3. throughput (wrk, inside the VM) of nginx over HTTPS, gunicorn directly, Flask's dev server.
// Writes bench/results/releases.json and prints a table. Needs root, like the e2e suite:
//   flock /tmp/dropstack-vm.lock npm run bench
import * as assert from "assert";
import { execFile } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { promisify } from "util";
import { Worker } from "worker_threads";
import { Pebble } from "../localcloud/acme";
import { LocalCloud, UpResult } from "../localcloud/engine";
import { ensureImage } from "../localcloud/image";
import { LOCAL_FQDN, localConfig, startLocalPebble } from "../localcloud/localStack";
import { sshOutput, SshConnection } from "../localcloud/ssh";
import { waitUntil } from "../localcloud/util";
import { failures, markerRuns, Outcome } from "../localcloud/load";
import { PROJECT_DIR } from "../localcloud/stackConfig";
import type { LoadJob } from "./loadWorker";
import { plainHttpServerBlock } from "./plainHttp";

const execFileP = promisify(execFile);

// ---- settings (environment overrides for experiments; the defaults are what README reports)
/** Load rates (requests/s); by default chosen from the capacity probe: half the sustainable rate, and the sustainable rate. */
const FIXED_RATES = process.env.BENCH_RATES ? process.env.BENCH_RATES.split(",").map(Number) : undefined;
/** Capacity probe: steady open-loop steps; a rate is sustainable when nothing fails and p95 stays under the limit. */
const PROBE = { rates: [5, 10, 15, 20, 25, 30, 40, 50, 60, 80, 100], seconds: 10, p95LimitMs: 1000 };
/** Load before the action starts, and the least load after it ends, in seconds. */
const LEAD_S = 5;
const MIN_TAIL_S = 3;
/** A steady window with no action, per rate: what the load alone costs. */
const CONTROL_S = 10;
/** First window for the naive strategies (lead + restart + tail); later ones are sized from the last. */
const NAIVE_WINDOW_S = 40;
const REQUEST_TIMEOUT_MS = 15_000;
const WRK = { threads: 2, connections: 16, seconds: Number(process.env.BENCH_WRK_SECONDS ?? 15), timeoutSeconds: 30, warmupSeconds: 3, rounds: 3 };
const DIRECT_GUNICORN_PORT = 8001;
const FLASK_DEV_PORT = 5001;
const NGINX_PLAIN_PORT = 8080;
const RESULTS = path.join(PROJECT_DIR, "bench", "results", "releases.json");

const t0 = Date.now();
const log = (m: string) => console.log(`[bench ${((Date.now() - t0) / 1000).toFixed(0).padStart(4)}s] ${m}`);
const delay = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const round = (x: number, digits = 1) => Math.round(x * 10 ** digits) / 10 ** digits;

// ---- results
interface WindowResult {
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

interface WrkResult {
  target: string;
  url: string;
  requestsPerSecond: number;
  requests: number;
  seconds: number;
  latencyMs: { avg: number; p50: number; p99: number };
  non2xx3xx: number;
  socketErrors: { connect: number; read: number; write: number; timeout: number };
  cpu: CpuUse;
  /** VM CPU per request without wrk's own share: what the servers spent (ms). */
  serverCpuMsPerRequest: number;
  /** wrk's CPU per request (ms): TLS on the client side shows here. */
  clientCpuMsPerRequest: number;
}

interface CpuUse {
  /** Busy time of all vCPUs during the run (s), and as a share of the vCPUs' time. */
  vmBusySeconds: number;
  vmBusyPercent: number;
  /** wrk's own user + system time (s). */
  clientCpuSeconds: number;
  /** vmBusySeconds - clientCpuSeconds: the servers (and the VM's background). */
  serverCpuSeconds: number;
}

const results = {
  date: new Date().toISOString(),
  machine: {} as Record<string, unknown>,
  /** The product measured: commit, and any uncommitted change to it (never measured silently). */
  product: {} as Record<string, unknown>,
  settings: { rates: FIXED_RATES ?? "from the capacity probe", probe: PROBE, leadSeconds: LEAD_S, minTailSeconds: MIN_TAIL_S, controlSeconds: CONTROL_S, requestTimeoutMs: REQUEST_TIMEOUT_MS, keepAlive: true, wrk: WRK },
  capacityProbe: {} as Record<string, unknown>,
  releaseUnderLoad: [] as WindowResult[],
  /** Windows that did not cover their action (re-run with a longer window); kept for the record. */
  discardedWindows: [] as WindowResult[],
  upWallTime: {} as Record<string, unknown>,
  throughput: {} as Record<string, unknown>,
  problems: [] as string[],
};

// ---- the run's state
let work = "";
let appDir = "";
let pebble: Pebble | undefined;
let cloud: LocalCloud | undefined;
let conn: SshConnection;
let ip = "";
let rootCa = "";
let version = 1;

const onServer = (command: string, stdin?: string, timeoutMs = 10 * 60_000): Promise<string> => sshOutput(conn, command, { stdin, timeoutMs });

/** Runs a bash script as root in the VM (script on stdin: no quoting through ssh and sudo). */
const asRoot = (script: string, timeoutMs?: number) => onServer("sudo bash -s", `set -euo pipefail\n${script}\n`, timeoutMs);

async function curl(url: string): Promise<{ code: number; body: string }> {
  const u = new URL(url);
  const port = u.protocol === "https:" ? 443 : 80;
  const { stdout } = await execFileP("curl", ["-sS", "--max-time", "20", "--cacert", rootCa, "--resolve", `${u.hostname}:${port}:${ip}`, "-w", "\n%{http_code}", url]);
  const cut = stdout.lastIndexOf("\n");
  return { code: Number(stdout.slice(cut + 1)), body: stdout.slice(0, cut) };
}

async function waitForVersion(want: string, timeoutMs = 120_000): Promise<void> {
  let last = "nothing yet";
  await waitUntil(`the site serving ${want}`, timeoutMs, async () => {
    try {
      const r = await curl(`https://${LOCAL_FQDN}/`);
      last = `${r.code} ${r.body.slice(0, 200)}`;
      return r.code === 200 && r.body.includes(`version: ${want}<`) ? true : undefined;
    } catch (e) {
      last = String(e);
      return undefined;
    }
  }, { intervalMs: 500, debug: () => `last answer: ${last}` });
}

/** The live slot ("blue" or "green") from dropstack-switch --status. */
async function liveSlot(): Promise<string> {
  const status = await onServer("sudo dropstack-switch --status");
  const slot = /slot=(blue|green)/.exec(status)?.[1];
  if (!slot) throw new Error(`no live slot in: ${status}`);
  return slot;
}

/** cloud.up(), bounded: the engine's own steps have limits, this bounds the whole. */
async function up(what: string, limitMs: number): Promise<UpResult> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result within ${limitMs / 60_000} min`)), limitMs);
  });
  try {
    return await Promise.race([cloud!.up(), limit]);
  } finally {
    clearTimeout(timer);
  }
}

function setVersion(next: number): void {
  const file = path.join(appDir, "app.py");
  const text = fs.readFileSync(file, "utf8");
  const re = /^VERSION = "v\d+"$/m;
  assert.ok(re.test(text), `${file} has no VERSION = "v<n>" line`);
  fs.writeFileSync(file, text.replace(re, `VERSION = "v${next}"`));
}

// ---- other VMs: another run on this host halves the VM's CPU; every measurement says if one ran

const othersSeen: { at: number; vm: string }[] = [];
function sampleOtherVms(): void {
  for (const pid of fs.readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
    let cmd = "";
    try {
      cmd = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ");
    } catch {
      continue;
    }
    if (cmd.startsWith("qemu-system") && !(work && cmd.includes(work))) othersSeen.push({ at: Date.now(), vm: `pid ${pid}: ${cmd.slice(0, 40)}` });
  }
}
/** Other VMs seen between t1 and t2 (sampled every 2 s). */
function othersDuring(t1: number, t2: number): string[] {
  sampleOtherVms();
  const seen = [...new Set(othersSeen.filter((o) => o.at >= t1 - 2500 && o.at <= t2 + 2500).map((o) => o.vm))];
  if (seen.length) results.problems.push(`another VM ran during a measurement (${new Date(t1).toISOString()} .. ${new Date(t2).toISOString()}): ${seen.join("; ")}`);
  return seen;
}

// ---- 1. failed requests during a release under steady load

function startLoad(rate: number, seconds: number): { started: Promise<number>; done: Promise<Outcome[]> } {
  const job: LoadJob = { host: LOCAL_FQDN, address: ip, ca: fs.readFileSync(rootCa, "utf8"), path: "/", rate, seconds, keepAlive: true, timeoutMs: REQUEST_TIMEOUT_MS };
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

const nginxLogSize = async () => Number((await onServer("sudo stat -c %s /var/log/nginx/access.log")).trim());

async function nginxStatusesSince(offset: number): Promise<Record<string, number>> {
  const out = await onServer(`sudo tail -c +${offset + 1} /var/log/nginx/access.log | awk '{print $9}' | sort | uniq -c`);
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
async function measureWindow(strategy: string, rate: number, windowS: number, action?: () => Promise<Record<string, unknown> | void>): Promise<WindowResult> {
  const offset = await nginxLogSize();
  log(`${strategy} at ${rate} req/s: ${windowS} s window`);
  const load = startLoad(rate, windowS);
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
  const nginxStatuses = await nginxStatusesSince(offset);
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
    otherVmsSeen: othersDuring(start, Date.now()),
    detail,
  };
  log(`  ${r.total} requests, ${r.failed} failed ${JSON.stringify(kinds)}, ${r.slowOverTimeout} slower than ${REQUEST_TIMEOUT_MS / 1000} s, p50/p99 ${r.latencyMs.p50}/${r.latencyMs.p99} ms; action ${r.actionSeconds} s, tail ${r.tailSeconds} s, versions ${versions.join(" -> ")}, nginx ${JSON.stringify(nginxStatuses)}`);
  return r;
}

/** measureWindow, lengthened and repeated (at most twice more) until the window covers the action. */
async function coveredWindow(strategy: string, rate: number, windowS: number, action: () => Promise<Record<string, unknown> | void>): Promise<WindowResult> {
  for (let attempt = 1; ; attempt++) {
    const r = await measureWindow(strategy, rate, windowS, action);
    if (r.covered || attempt === 3 || r.actionError) {
      if (!r.covered) results.problems.push(`${strategy} at ${rate} req/s: the window did not cover the action (tail ${r.tailSeconds} s)`);
      results.releaseUnderLoad.push(r);
      return r;
    }
    results.discardedWindows.push(r);
    windowS = Math.ceil(Math.max(windowS + 10, LEAD_S + r.actionSeconds * 1.3 + MIN_TAIL_S + 10));
    log(`  not covered (tail ${r.tailSeconds} s): again with ${windowS} s`);
  }
}

/** dropstack's release: change the app's VERSION in the temp copy, then `up`. */
async function dropstackRelease(): Promise<Record<string, unknown>> {
  const from = `v${version}`;
  setVersion(++version);
  const started = Date.now();
  const result = await up(`release v${version}`, 20 * 60_000);
  const ran = result.steps.filter((s) => s.op !== "same").map((s) => s.name).sort();
  if (ran.join(",") !== "app-release,app-upload") results.problems.push(`release ${from} -> v${version} ran ${ran.join(", ")} (expected only app-upload, app-release)`);
  return { from, to: `v${version}`, releaseId: String(result.outputs.releaseId.value), upSeconds: round((Date.now() - started) / 1000), stepsRun: ran };
}

const SOCKET_ANSWERS = `
ok=
for _ in $(seq 1 600); do
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 --unix-socket /srv/app/current.sock -H 'Host: ${LOCAL_FQDN}' -H 'X-Forwarded-Proto: https' http://localhost/healthz || true)
  if [ "$code" = 200 ]; then ok=1; break; fi
  sleep 0.1
done
[ -n "$ok" ] || { echo "the live socket did not answer 200 within the poll" >&2; exit 1; }`;

/** Naive: what a hand-deployer does; ends when the live socket answers again. */
async function naiveRestart(program: string): Promise<Record<string, unknown>> {
  const t = Date.now();
  await asRoot(`supervisorctl restart ${program} >&2\n${SOCKET_ANSWERS}`, 120_000);
  return { command: `supervisorctl restart ${program}`, secondsUntilAnswering: round((Date.now() - t) / 1000, 2) };
}

/** gunicorn reload: HUP; ends when every old worker is gone, the worker count is back and the socket answers. */
async function hupReload(program: string): Promise<Record<string, unknown>> {
  const t = Date.now();
  const out = await asRoot(`
master=$(supervisorctl pid ${program})
[[ $master =~ ^[0-9]+$ ]] || { echo "no master pid: $master" >&2; exit 1; }
old=$(pgrep -P "$master" | sort)
supervisorctl signal HUP ${program} >&2
done_=
for _ in $(seq 1 600); do
  now=$(pgrep -P "$master" | sort || true)
  if [ -n "$now" ] && [ -z "$(comm -12 <(echo "$old") <(echo "$now"))" ] && [ "$(echo "$now" | wc -l)" -ge "$(echo "$old" | wc -l)" ]; then done_=1; break; fi
  sleep 0.1
done
[ -n "$done_" ] || { echo "old workers still there after the poll: $(echo $now)" >&2; exit 1; }
${SOCKET_ANSWERS}
echo "old=$(echo $old) new=$(echo $now)"`, 120_000);
  return { command: `supervisorctl signal HUP ${program}`, workers: out.trim(), secondsUntilReplaced: round((Date.now() - t) / 1000, 2) };
}

/**
 * The highest rate the stack carries from this host without queueing: open-loop steps of
 * PROBE.seconds, up while nothing fails and p95 stays under PROBE.p95LimitMs (p95, not p99: a
 * step has a few hundred requests, and one slow TLS handshake on the emulated CPU is its p99).
 * If not even the first step passes, the first step's rate is used and the problem recorded.
 */
async function capacityProbe(): Promise<number> {
  const steps: Record<string, unknown>[] = [];
  let sustainable = 0;
  for (const rate of PROBE.rates) {
    const r = await measureWindow("capacity probe", rate, PROBE.seconds);
    const ok = r.failed === 0 && r.latencyMs.p95 <= PROBE.p95LimitMs;
    steps.push({ rate, total: r.total, failed: r.failed, latencyMs: r.latencyMs, sustainable: ok });
    if (!ok) break;
    sustainable = rate;
  }
  results.capacityProbe = { criterion: `no failure and p95 <= ${PROBE.p95LimitMs} ms over ${PROBE.seconds} s`, sustainableRate: sustainable, steps };
  log(`sustainable rate from this host: ${sustainable} req/s`);
  if (!sustainable) {
    results.problems.push(`the stack did not carry even ${PROBE.rates[0]} req/s without queueing; measuring at ${PROBE.rates[0]} req/s anyway`);
    return PROBE.rates[0];
  }
  return sustainable;
}

/** A window that must not end the run: a failure is recorded and the next window runs. */
async function guarded(what: string, fn: () => Promise<unknown>): Promise<void> {
  try {
    await fn();
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    results.problems.push(`${what}: ${msg.slice(0, 500)}`);
    log(`${what} failed: ${msg.slice(0, 2000)}`);
  }
}

async function releaseUnderLoad(appOnlyReleaseS: number, rates: number[]): Promise<void> {
  let releaseEstimateS = appOnlyReleaseS * 1.5 + 10;
  const naiveWindow: Record<string, number> = {};
  const naive = async (strategy: string, rate: number, action: () => Promise<Record<string, unknown>>) => {
    const r = await coveredWindow(strategy, rate, naiveWindow[strategy] ?? NAIVE_WINDOW_S, action);
    naiveWindow[strategy] = Math.ceil(LEAD_S + r.actionSeconds * 1.5 + 10);
  };
  for (const rate of rates) {
    await waitForVersion(`v${version}`);
    await guarded(`control at ${rate} req/s`, async () => {
      const control = await measureWindow("steady load, no action (control)", rate, CONTROL_S);
      results.releaseUnderLoad.push(control);
      if (control.failed || control.slowOverTimeout) results.problems.push(`steady load alone at ${rate} req/s: ${control.failed} failed, ${control.slowOverTimeout} slower than the timeout`);
    });

    await guarded(`dropstack release at ${rate} req/s`, async () => {
      const r = await coveredWindow("dropstack release (second up)", rate, Math.ceil(LEAD_S + releaseEstimateS + MIN_TAIL_S + 2), dropstackRelease);
      if (!r.actionError) releaseEstimateS = r.actionSeconds * 1.2 + 10;
      if (r.failed) results.problems.push(`dropstack release at ${rate} req/s: ${r.failed} failed ${JSON.stringify(r.failureKinds)}`);
    });
    await waitForVersion(`v${version}`);

    // The live program, as a hand-deployer would look it up (before the window: not part of the restart).
    const program = `app-${await liveSlot()}`;
    await guarded(`naive restart at ${rate} req/s`, () => naive("naive: supervisorctl restart", rate, () => naiveRestart(program)));
    await waitForVersion(`v${version}`);
    await guarded(`gunicorn HUP at ${rate} req/s`, () => naive("gunicorn HUP (supervisorctl signal HUP)", rate, () => hupReload(program)));
    await waitForVersion(`v${version}`);
  }
}

// ---- 3. throughput inside the VM

function wrkLatencyMs(v: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(v.trim());
  if (!m) return NaN;
  return Number(m[1]) * ({ us: 0.001, ms: 1, s: 1000, m: 60_000 } as Record<string, number>)[m[2]];
}

function parseWrk(target: string, url: string, out: string, cpu: CpuUse): WrkResult {
  const num = (re: RegExp) => Number(re.exec(out)?.[1] ?? NaN);
  const reqs = /(\d+) requests in ([\d.]+)(m?s)/.exec(out);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const r: WrkResult = {
    target, url,
    requestsPerSecond: num(/Requests\/sec:\s+([\d.]+)/),
    requests: Number(reqs?.[1] ?? NaN),
    seconds: reqs ? Number(reqs[2]) * (reqs[3] === "ms" ? 0.001 : 1) : NaN,
    latencyMs: {
      avg: wrkLatencyMs(/Latency\s+(\S+)/.exec(out)?.[1] ?? ""),
      p50: wrkLatencyMs(/50%\s+(\S+)/.exec(out)?.[1] ?? ""),
      p99: wrkLatencyMs(/99%\s+(\S+)/.exec(out)?.[1] ?? ""),
    },
    non2xx3xx: num(/Non-2xx or 3xx responses: (\d+)/) || 0,
    socketErrors: { connect: Number(sock?.[1] ?? 0), read: Number(sock?.[2] ?? 0), write: Number(sock?.[3] ?? 0), timeout: Number(sock?.[4] ?? 0) },
    cpu,
    serverCpuMsPerRequest: reqs ? round((1000 * cpu.serverCpuSeconds) / Number(reqs[1]), 2) : NaN,
    clientCpuMsPerRequest: reqs ? round((1000 * cpu.clientCpuSeconds) / Number(reqs[1]), 2) : NaN,
  };
  if (!Number.isFinite(r.requestsPerSecond)) throw new Error(`cannot read wrk's output for ${target}:\n${out}`);
  return r;
}

const WRK_TARGETS = [
  { key: "nginxHttps", target: "nginx (HTTPS, keep-alive) -> gunicorn", url: "https://127.0.0.1/", headers: [`Host: ${LOCAL_FQDN}`] },
  { key: "nginxPlainHttp", target: "nginx without TLS (same server block) -> gunicorn", url: `http://127.0.0.1:${NGINX_PLAIN_PORT}/`, headers: [`Host: ${LOCAL_FQDN}`] },
  { key: "gunicornDirect", target: "gunicorn directly (TCP, same release and config)", url: `http://127.0.0.1:${DIRECT_GUNICORN_PORT}/`, headers: [`Host: ${LOCAL_FQDN}`, "X-Forwarded-Proto: https"] },
  { key: "flaskDevServer", target: "Flask development server", url: `http://127.0.0.1:${FLASK_DEV_PORT}/`, headers: [`Host: ${LOCAL_FQDN}`, "X-Forwarded-Proto: https"] },
] as const;
type TargetKey = (typeof WRK_TARGETS)[number]["key"];
const targetOf = (key: TargetKey) => WRK_TARGETS.find((t) => t.key === key)!;
const NGINX_PLAIN_CONF = "/etc/nginx/sites-enabled/zz-dropstack-bench-plain.conf";


/**
 * wrk inside the VM, with the VM's CPU accounting around it: the busy time of all vCPUs (from
 * /proc/stat) minus wrk's own user+system time is what the servers spent. wrk shares the two vCPUs
 * with the servers, and over HTTPS it also pays for TLS on the client side; CPU per request without
 * the client is the fairer comparison of the servers themselves.
 */
async function wrk(url: string, headers: readonly string[], seconds: number): Promise<{ out: string; cpu: CpuUse }> {
  const h = headers.map((x) => `-H '${x}'`).join(" ");
  const out = await asRoot(`
busy() { awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
read -r busy0 all0 < <(busy)
TIMEFORMAT='%U %S'
{ time wrk -t${WRK.threads} -c${WRK.connections} -d${seconds}s --timeout ${WRK.timeoutSeconds}s --latency ${h} ${url} >/tmp/dropstack-bench-wrk.out; } 2>/tmp/dropstack-bench-wrk.time
read -r busy1 all1 < <(busy)
cat /tmp/dropstack-bench-wrk.out
echo "CPU hz=$(getconf CLK_TCK) busy=$((busy1 - busy0)) all=$((all1 - all0)) wrk=$(tr '\\n' ' ' </tmp/dropstack-bench-wrk.time)"`, (seconds + 120) * 1000);
  const m = /^CPU hz=(\d+) busy=(\d+) all=(\d+) wrk=([\d.]+) ([\d.]+)/m.exec(out);
  if (!m) throw new Error(`no CPU accounting in the wrk run's output:\n${out}`);
  const hz = Number(m[1]);
  const vmBusySeconds = Number(m[2]) / hz;
  const clientCpuSeconds = Number(m[4]) + Number(m[5]);
  return { out, cpu: { vmBusySeconds: round(vmBusySeconds, 2), vmBusyPercent: round((100 * Number(m[2])) / Number(m[3])), clientCpuSeconds: round(clientCpuSeconds, 2), serverCpuSeconds: round(vmBusySeconds - clientCpuSeconds, 2) } };
}

/** Polls `url` inside the VM until it answers 200 with the current version. */
async function waitInVm(what: string, url: string, headers: readonly string[], logFile: string): Promise<void> {
  const h = headers.map((x) => `-H '${x}'`).join(" ");
  await asRoot(`
for _ in $(seq 1 300); do
  if curl -sk --max-time 2 ${h} ${url} | grep -q 'version: v${version}<'; then exit 0; fi
  sleep 0.2
done
echo "${what} did not answer with v${version}; its log:" >&2
tail -n 40 ${logFile} >&2 || true
exit 1`, 180_000);
}

async function stopInVm(what: string, pidFile: string): Promise<void> {
  await asRoot(`
[ -s ${pidFile} ] || exit 0
pid=$(cat ${pidFile})
kill -TERM "$pid" 2>/dev/null || exit 0
for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || { rm -f ${pidFile}; exit 0; }; sleep 0.1; done
echo "${what} (pid $pid) still running 30 s after TERM: KILL" >&2
kill -KILL "$pid" 2>/dev/null || true
rm -f ${pidFile}`, 120_000);
}

async function throughput(): Promise<void> {
  log("installing wrk in the VM");
  await asRoot("command -v wrk >/dev/null || apt-get -o DPkg::Lock::Timeout=600 install -y -qq wrk >/dev/null 2>&1 || { apt-get -o DPkg::Lock::Timeout=600 update -qq && apt-get -o DPkg::Lock::Timeout=600 install -y -qq wrk >/dev/null; }", 15 * 60_000);

  // The live slot's own supervisor program: command, directory, user and environment.
  const slot = await liveSlot();
  const conf = await onServer(`sudo cat /etc/supervisor/conf.d/dropstack-app-${slot}.conf`);
  const field = (name: string) => {
    const v = new RegExp(`^${name}=(.*)$`, "m").exec(conf)?.[1];
    if (v === undefined) throw new Error(`no ${name}= in the slot's supervisor config:\n${conf}`);
    return v;
  };
  const command = field("command");
  const directory = field("directory");
  const user = field("user");
  const env = field("environment").split(",").map((kv) => kv.replace(/"/g, ""));
  for (const kv of [...env, directory, user]) assert.match(kv, /^[A-Za-z0-9_=./:@-]+$/, `unexpected characters in the slot config: ${kv}`);
  assert.match(command, /--bind unix:\S+/, `the slot's command has no unix --bind: ${command}`);
  const wsgi = command.trim().split(/\s+/).pop()!;
  const python = command.trim().split(/\s+/)[0];
  const gunicornPid = "/tmp/dropstack-bench-gunicorn.pid";
  const gunicornLog = "/tmp/dropstack-bench-gunicorn.log";
  const flaskPid = "/tmp/dropstack-bench-flask.pid";
  const flaskLog = "/tmp/dropstack-bench-flask.log";
  const direct = command.replace(/--bind unix:\S+/, `--bind 127.0.0.1:${DIRECT_GUNICORN_PORT} --pid ${gunicornPid}`);
  const flaskStarter = [
    "import json, os, sys",
    "os.environ.update(json.load(open('/srv/app/shared/env.json', encoding='utf-8')))",
    `os.environ['FLASK_APP'] = ${JSON.stringify(wsgi)}`,
    `open(${JSON.stringify(flaskPid)}, 'w').write(str(os.getpid()))`,
    `os.execv(sys.executable, [sys.executable, '-m', 'flask', 'run', '--host', '127.0.0.1', '--port', '${FLASK_DEV_PORT}'])`,
  ].join("\n");

  const versions = await onServer(`/usr/sbin/nginx -v 2>&1; ${python} -m gunicorn --version; ${python} -c 'import flask, werkzeug, importlib.metadata as m; print("flask", m.version("flask"), "werkzeug", m.version("werkzeug"))'; wrk --version 2>&1 | head -1 || true; nproc`);
  try {
    log(`starting a second gunicorn of the live release on 127.0.0.1:${DIRECT_GUNICORN_PORT} and the Flask dev server on 127.0.0.1:${FLASK_DEV_PORT}`);
    await asRoot(`
rm -f ${gunicornPid} ${flaskPid}
cd ${directory}
setsid runuser -u ${user} -- env ${env.join(" ")} ${direct} >${gunicornLog} 2>&1 </dev/null &
echo ${Buffer.from(flaskStarter).toString("base64")} | base64 -d >/tmp/dropstack-bench-flask.py
setsid runuser -u ${user} -- env ${env.join(" ")} ${python} /tmp/dropstack-bench-flask.py >${flaskLog} 2>&1 </dev/null &`);
    log(`adding the site's server block without TLS on 127.0.0.1:${NGINX_PLAIN_PORT}`);
    const site = await onServer("sudo cat /etc/nginx/sites-available/dropstack-app.conf");
    await asRoot(`base64 -d >${NGINX_PLAIN_CONF} <<'EOF'\n${Buffer.from(plainHttpServerBlock(site, NGINX_PLAIN_PORT)).toString("base64")}\nEOF\nnginx -t 2>&1 || { rm -f ${NGINX_PLAIN_CONF}; exit 1; }\nsystemctl reload nginx`);
    for (const key of ["gunicornDirect", "flaskDevServer", "nginxPlainHttp", "nginxHttps"] as const) {
      const t = targetOf(key);
      await waitInVm(t.target, t.url, t.headers, { gunicornDirect: gunicornLog, flaskDevServer: flaskLog }[key as string] ?? "/var/log/nginx/error.log");
    }
    const workers = (await asRoot(`pgrep -P "$(cat ${gunicornPid})" | wc -l; pgrep -P "$(supervisorctl pid app-${slot})" | wc -l`)).trim().split("\n");

    if (workers[0] !== workers[1]) results.problems.push(`the direct gunicorn has ${workers[0]} workers, the live slot ${workers[1]}`);
    const runs: WrkResult[] = [];
    const wrkStart = Date.now();
    for (const t of WRK_TARGETS) {
      log(`wrk warm-up: ${t.target}`);
      await wrk(t.url, t.headers, WRK.warmupSeconds);
    }
    for (let i = 1; i <= WRK.rounds; i++) {
      for (const t of WRK_TARGETS) {
        const { out, cpu } = await wrk(t.url, t.headers, WRK.seconds);
        const r = parseWrk(t.target, t.url, out, cpu);
        runs.push(r);
        log(`wrk round ${i}: ${t.target}: ${r.requestsPerSecond} req/s, server CPU ${r.serverCpuMsPerRequest} ms/request, client ${r.clientCpuMsPerRequest} ms/request, VM busy ${cpu.vmBusyPercent} % (p99 ${r.latencyMs.p99} ms, non-2xx ${r.non2xx3xx}, socket errors ${JSON.stringify(r.socketErrors)})`);
        if (r.non2xx3xx || Object.values(r.socketErrors).some((n) => n > 0)) results.problems.push(`wrk round ${i} ${t.target}: non-2xx ${r.non2xx3xx}, socket errors ${JSON.stringify(r.socketErrors)}`);
      }
    }
    const perRound = (target: string, of: (r: WrkResult) => number) => runs.filter((r) => r.target === target).map(of).sort((a, b) => a - b);
    const median = (target: string, of: (r: WrkResult) => number = (r) => r.requestsPerSecond) => {
      const v = perRound(target, of);
      return round(v.length % 2 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2, 2);
    };
    const rps = (target: string) => perRound(target, (r) => r.requestsPerSecond);
    const serverMs = (target: string) => median(target, (r) => r.serverCpuMsPerRequest);
    const clientMs = (target: string) => median(target, (r) => r.clientCpuMsPerRequest);
    const byKey = <T>(of: (target: string) => T) => Object.fromEntries(WRK_TARGETS.map((t) => [t.key, of(t.target)])) as Record<TargetKey, T>;
    const rpsMedian = byKey((t) => median(t));
    const serverCpu = byKey(serverMs);
    results.throughput = {
      where: "wrk inside the VM (2 vCPUs, qemu TCG), against 127.0.0.1; wrk shares the VM's CPUs with the servers",
      wrk: `wrk -t${WRK.threads} -c${WRK.connections} -d${WRK.seconds}s --timeout ${WRK.timeoutSeconds}s --latency, ${WRK.rounds} interleaved rounds after a ${WRK.warmupSeconds} s warm-up each; figures are medians`,
      gunicornWorkers: { direct: Number(workers[0]), liveSlot: Number(workers[1]) },
      versions: versions.trim().split("\n"),
      requestsPerSecond: rpsMedian,
      perRound: byKey(rps),
      otherVmsSeen: othersDuring(wrkStart, Date.now()),
      /** 1 - nginx / gunicorn directly, in requests/s: over HTTPS (the deployed stack), and without TLS. */
      nginxCostPercent: round((1 - rpsMedian.nginxHttps / rpsMedian.gunicornDirect) * 100),
      nginxPlainHttpCostPercent: round((1 - rpsMedian.nginxPlainHttp / rpsMedian.gunicornDirect) * 100),
      serverCpuMsPerRequest: serverCpu,
      clientCpuMsPerRequest: byKey(clientMs),
      /** nginx's share of the servers' CPU per request (HTTPS, and without TLS), the client's own CPU left out. */
      nginxServerCpuCostPercent: round((1 - serverCpu.gunicornDirect / serverCpu.nginxHttps) * 100),
      nginxPlainHttpServerCpuCostPercent: round((1 - serverCpu.gunicornDirect / serverCpu.nginxPlainHttp) * 100),
      runs,
    };
  } finally {
    await stopInVm("the direct gunicorn", gunicornPid).catch((e) => log(`stopping the direct gunicorn: ${e}`));
    await stopInVm("the Flask dev server", flaskPid).catch((e) => log(`stopping the Flask dev server: ${e}`));
    await asRoot(`if [ -e ${NGINX_PLAIN_CONF} ]; then rm -f ${NGINX_PLAIN_CONF}; nginx -t 2>&1 && systemctl reload nginx; fi`).catch((e) => log(`removing the plain-HTTP server block: ${e}`));
  }
}

// ---- output

function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ")).join("\n");
}

function report(): void {
  console.log("\n== 1. requests failed during a release under steady load (open loop, keep-alive, nginx over HTTPS)");
  console.log(table([
    ["strategy", "req/s", "total", "failed", "failure kinds", "slow>15s", "action s", "lead/tail s", "p50/p99 ms", "versions", "nginx statuses"],
    ...results.releaseUnderLoad.map((r) => [
      r.strategy + (r.covered || !r.leadSeconds ? "" : " (NOT covered)") + (r.actionError ? " (action FAILED)" : ""),
      String(r.rate), String(r.total), String(r.failed),
      Object.entries(r.failureKinds).map(([k, n]) => `${n}x ${k}`).join("; ") || "-",
      String(r.slowOverTimeout),
      r.leadSeconds ? String(r.actionSeconds) : "-",
      r.leadSeconds ? `${r.leadSeconds}/${r.tailSeconds}` : "-",
      `${r.latencyMs.p50}/${r.latencyMs.p99}`, r.versions.join("->"),
      Object.entries(r.nginxStatuses).map(([k, n]) => `${k}:${n}`).join(" "),
    ]),
  ]));
  const u = results.upWallTime as { firstUpSeconds?: number; appOnlyReleaseSeconds?: number; ratio?: number };
  console.log("\n== 2. wall time of `up`");
  console.log(table([
    ["", "seconds"],
    ["first full up (boot, provisioning, certificate, site, release)", String(u.firstUpSeconds ?? "-")],
    ["app-only release (up after one app file change)", String(u.appOnlyReleaseSeconds ?? "-")],
    ["ratio first / app-only", String(u.ratio ?? "-")],
  ]));
  const t = results.throughput as {
    requestsPerSecond?: Record<string, number>;
    serverCpuMsPerRequest: Record<string, number>;
    clientCpuMsPerRequest: Record<string, number>;
    nginxCostPercent?: number;
    nginxPlainHttpCostPercent?: number;
    nginxServerCpuCostPercent?: number;
    nginxPlainHttpServerCpuCostPercent?: number;
  };
  if (t.requestsPerSecond) {
    console.log(`\n== 3. throughput (wrk -t${WRK.threads} -c${WRK.connections} -d${WRK.seconds}s inside the VM, median of ${WRK.rounds} rounds)`);
    console.log(table([
      ["target", "req/s", "server CPU ms/req", "wrk CPU ms/req"],
      ...WRK_TARGETS.map((x) => [x.target, String(t.requestsPerSecond![x.key]), String(t.serverCpuMsPerRequest[x.key]), String(t.clientCpuMsPerRequest[x.key])]),
      ["nginx's cost vs gunicorn directly (HTTPS)", `${t.nginxCostPercent} %`, `${t.nginxServerCpuCostPercent} %`, ""],
      ["nginx's cost vs gunicorn directly (no TLS)", `${t.nginxPlainHttpCostPercent} %`, `${t.nginxPlainHttpServerCpuCostPercent} %`, ""],
    ]));
  }
  if (results.problems.length) console.log(`\nProblems:\n${results.problems.map((p) => `  - ${p}`).join("\n")}`);
  console.log(`\nWritten: ${path.relative(PROJECT_DIR, RESULTS)}`);
}

function writeResults(): void {
  fs.mkdirSync(path.dirname(RESULTS), { recursive: true });
  fs.writeFileSync(`${RESULTS}.tmp`, `${JSON.stringify(results, null, 2)}\n`);
  fs.renameSync(`${RESULTS}.tmp`, RESULTS);
}

// ---- main

async function main(): Promise<void> {
  if (process.getuid && process.getuid() !== 0) throw new Error("the local cloud needs root (qemu forwards ports 22/80/443): run as root");
  results.machine = {
    nproc: os.cpus().length,
    cpu: os.cpus()[0]?.model,
    memoryGb: round(os.totalmem() / 2 ** 30),
    kernel: os.release(),
    node: process.version,
    wrk: (await execFileP("wrk", ["--version"]).catch((e: { stdout?: string }) => ({ stdout: e.stdout ?? "" }))).stdout.split("\n")[0],
    vm: "qemu TCG (no KVM), 2 vCPUs, 2048 MB, Debian bookworm; gunicorn workers: 2 (localConfig)",
  };
  const git = async (...args: string[]) => (await execFileP("git", ["-C", PROJECT_DIR, ...args], { maxBuffer: 10 * 1024 * 1024 })).stdout.trim();
  const productPaths = ["--", ".", ":(exclude)bench", ":(exclude)package.json"];
  const dirty = await git("status", "--porcelain", ...productPaths);
  results.product = { commit: await git("rev-parse", "HEAD"), uncommittedChanges: dirty ? dirty.split("\n") : [], diff: dirty ? await git("diff", "HEAD", ...productPaths) : "" };
  if (dirty) {
    log(`NOTE: measuring a product with uncommitted changes:\n${dirty}`);
    results.problems.push(`measured with uncommitted product changes (see product.diff): ${dirty.replace(/\n/g, "; ")}`);
  }
  work = fs.mkdtempSync(path.join(os.tmpdir(), "dropstack-bench-"));
  appDir = path.join(work, "app");
  fs.cpSync(path.join(PROJECT_DIR, "app"), appDir, { recursive: true });
  setVersion(version);

  setInterval(sampleOtherVms, 2000).unref();
  await ensureImage(log);
  // On 443, like the e2e suite: the droplet's firewall lets it reach only 53/80/443/123 outbound.
  pebble = await startLocalPebble(work, log);
  cloud = new LocalCloud({ stateDir: path.join(work, "state"), stack: "bench", pebble, log: (m) => log(`  ${m}`), config: localConfig(pebble, { appSource: appDir }) });

  // 2a. the first full up
  let t = Date.now();
  const first = await up("the first up", 45 * 60_000);
  const firstUpS = round((Date.now() - t) / 1000);
  const firstOthers = othersDuring(t, Date.now());
  ip = String(first.outputs.ipv4Address.value);
  const key = first.resources.find((r) => r.type === "tls:index/privateKey:PrivateKey");
  conn = { host: ip, user: "deploy", privateKey: String(key?.state.privateKeyOpenssh) };
  rootCa = path.join(work, "pebble-root.pem");
  fs.writeFileSync(rootCa, await pebble.rootCertificatePem());
  await waitForVersion("v1");
  const stepMs = (name: string) => first.steps.filter((s) => s.name === name).reduce((a, s) => a + s.ms, 0) / 1000;

  // 2b. an app-only release, unloaded
  setVersion(++version);
  t = Date.now();
  const second = await up("the app-only release", 20 * 60_000);
  const appOnlyS = round((Date.now() - t) / 1000);
  const appOnlyOthers = othersDuring(t, Date.now());
  const ran = second.steps.filter((s) => s.op !== "same").map((s) => s.name).sort();
  if (ran.join(",") !== "app-release,app-upload") results.problems.push(`the app-only release ran ${ran.join(", ")} (expected only app-upload, app-release)`);
  await waitForVersion(`v${version}`);
  results.upWallTime = {
    firstUpSeconds: firstUpS,
    firstUpSteps: {
      "boot (droplet until ssh answers)": round(stepMs("server-droplet")),
      "wait for cloud-init": round(stepMs("host-cloud-init")),
      "provisioning (packages, users, nginx)": round(stepMs("host-base")),
      "certificate (certbot + Pebble)": round(stepMs("certificate-certbot")),
      "nginx site": round(stepMs("site-nginx")),
      "release (upload + venv + health check + switch)": round(stepMs("app-upload") + stepMs("app-release")),
    },
    appOnlyReleaseSeconds: appOnlyS,
    appOnlyReleaseStepsRun: ran,
    appOnlyReleaseSteps: Object.fromEntries(second.steps.filter((s) => s.op !== "same").map((s) => [s.name, round(s.ms / 1000)])),
    ratio: round(firstUpS / appOnlyS),
    otherVmsSeen: { firstUp: firstOthers, appOnlyRelease: appOnlyOthers },
  };
  log(`first up ${firstUpS} s, app-only release ${appOnlyS} s`);
  writeResults();

  // 3. throughput (before the long windows, so that a later failure cannot lose it)
  await guarded("throughput", throughput);
  writeResults();

  // 1. failed requests during releases and restarts under load, at rates this host can carry
  await waitForVersion(`v${version}`);
  let rates: number[];
  if (FIXED_RATES) rates = FIXED_RATES;
  else {
    const sustainable = await capacityProbe();
    rates = [...new Set([Math.max(5, Math.round(sustainable / 2 / 5) * 5), sustainable])];
  }
  results.settings.rates = rates;
  log(`load rates: ${rates.join(", ")} req/s`);
  await releaseUnderLoad(appOnlyS, rates);
  writeResults();
}

// The Pulumi runtime also rejects a failed resource's own promise, which nobody awaits; cloud.up()
// reports the same failure. Log it instead of letting Node end the run before the cleanup.
const rejectionsSeen = new Set<string>();
process.on("unhandledRejection", (e) => {
  const first = String(e).split("\n")[0];
  if (!rejectionsSeen.has(first)) log(`(unhandled rejection, reported by up as well) ${first.slice(0, 300)}`);
  rejectionsSeen.add(first);
});

main()
  .catch((e) => {
    process.exitCode = 1;
    console.error(`bench failed: ${e instanceof Error ? e.stack ?? e.message : e}`);
    results.problems.push(`the run failed: ${e instanceof Error ? e.message : e}`);
  })
  .finally(async () => {
    if (Object.keys(results.upWallTime).length) {
      writeResults();
      report();
    }
    if (cloud) await cloud.down().catch((e) => console.error(`down failed: ${e}`));
    if (pebble) await pebble.stop().catch((e) => console.error(`pebble stop failed: ${e}`));
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

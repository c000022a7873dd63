// wrk inside the VM, with the VM's CPU accounting around each run, and its output read into figures.
import { execFile } from "child_process";
import { promisify } from "util";
import { LocalSession } from "../localcloud/session";
import { round } from "./report";

const execFileP = promisify(execFile);

export const WRK = { threads: 2, connections: 16, seconds: Number(process.env.BENCH_WRK_SECONDS ?? 15), timeoutSeconds: 30, warmupSeconds: 3, rounds: 3 } as const;

export interface CpuUse {
  /** Busy time of all vCPUs during the run (s), and as a share of the vCPUs' time. */
  vmBusySeconds: number;
  vmBusyPercent: number;
  /** wrk's own user + system time (s). */
  clientCpuSeconds: number;
  /** vmBusySeconds - clientCpuSeconds: the servers (and the VM's background). */
  serverCpuSeconds: number;
}

export interface WrkResult {
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

function wrkLatencyMs(v: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(v.trim());
  if (!m) return NaN;
  return Number(m[1]) * ({ us: 0.001, ms: 1, s: 1000, m: 60_000 } as Record<string, number>)[m[2]];
}

export function parseWrk(target: string, url: string, out: string, cpu: CpuUse): WrkResult {
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
      p50: wrkLatencyMs(/^\s*50%\s+(\S+)/m.exec(out)?.[1] ?? ""),
      p99: wrkLatencyMs(/^\s*99%\s+(\S+)/m.exec(out)?.[1] ?? ""),
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

/** The bash that runs wrk with the CPU accounting of the machine it runs on around it. */
function wrkScript(url: string, headers: readonly string[], seconds: number): string {
  const h = headers.map((x) => `-H '${x}'`).join(" ");
  return `
out=$(mktemp) times=$(mktemp)
trap 'rm -f "$out" "$times"' EXIT
busy() { awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
read -r busy0 all0 < <(busy)
TIMEFORMAT='%U %S'
{ time wrk -t${WRK.threads} -c${WRK.connections} -d${seconds}s --timeout ${WRK.timeoutSeconds}s --latency ${h} ${url} >"$out"; } 2>"$times"
read -r busy1 all1 < <(busy)
cat "$out"
echo "CPU hz=$(getconf CLK_TCK) busy=$((busy1 - busy0)) all=$((all1 - all0)) wrk=$(tr '\\n' ' ' <"$times")"`;
}

function cpuUse(out: string): CpuUse {
  const m = /^CPU hz=(\d+) busy=(\d+) all=(\d+) wrk=([\d.]+) ([\d.]+)/m.exec(out);
  if (!m) throw new Error(`no CPU accounting in the wrk run's output:\n${out}`);
  const hz = Number(m[1]);
  const vmBusySeconds = Number(m[2]) / hz;
  const clientCpuSeconds = Number(m[4]) + Number(m[5]);
  return { vmBusySeconds: round(vmBusySeconds, 2), vmBusyPercent: round((100 * Number(m[2])) / Number(m[3])), clientCpuSeconds: round(clientCpuSeconds, 2), serverCpuSeconds: round(vmBusySeconds - clientCpuSeconds, 2) };
}

/**
 * wrk inside the VM, with the VM's CPU accounting around it: the busy time of all vCPUs (from
 * /proc/stat) minus wrk's own user+system time is what the servers spent. wrk shares the two vCPUs
 * with the servers, and over HTTPS it also pays for TLS on the client side; CPU per request without
 * the client is the fairer comparison of the servers themselves.
 */
export async function wrk(session: LocalSession, url: string, headers: readonly string[], seconds: number): Promise<{ out: string; cpu: CpuUse }> {
  const out = await session.asRoot(wrkScript(url, headers, seconds), (seconds + 120) * 1000);
  return { out, cpu: cpuUse(out) };
}

/**
 * wrk on this host (the load balancer's side of the local cloud), the same run and accounting; the
 * CPU figures are then the host's: every VM, HAProxy and wrk itself.
 */
export async function wrkOnHost(url: string, headers: readonly string[], seconds: number): Promise<{ out: string; cpu: CpuUse }> {
  const { stdout } = await execFileP("bash", ["-c", `set -euo pipefail\n${wrkScript(url, headers, seconds)}`], { timeout: (seconds + 120) * 1000, maxBuffer: 10 * 1024 * 1024 });
  return { out: stdout, cpu: cpuUse(stdout) };
}

// Benchmark 1: requests failed during a release under steady load. A capacity probe picks the
// rates this host can carry; per rate, a control window, dropstack's release (a second `up`), a
// naive `supervisorctl restart` and a gunicorn HUP, each in a window that covers it.
import { LOCAL_FQDN } from "../localcloud/localStack";
import { Bench, Results } from "./context";
import { coveredWindow, LEAD_S, measureWindow, MIN_TAIL_S } from "./loadWindow";
import { round, table } from "./report";

/** Load rates (requests/s); by default chosen from the capacity probe: half the sustainable rate, and the sustainable rate. */
export const FIXED_RATES: readonly number[] | undefined = process.env.BENCH_RATES ? process.env.BENCH_RATES.split(",").map(Number) : undefined;
/** Capacity probe: steady open-loop steps; a rate is sustainable when nothing fails and p95 stays under the limit. */
export const PROBE = { rates: [5, 10, 15, 20, 25, 30, 40, 50, 60, 80, 100], seconds: 10, p95LimitMs: 1000 } as const;
/** A steady window with no action, per rate: what the load alone costs. */
export const CONTROL_S = 10;
/** First window for the naive strategies (lead + restart + tail); later ones are sized from the last. */
const NAIVE_WINDOW_S = 40;

/** dropstack's release: change the app's VERSION in the temp copy, then `up`. */
async function dropstackRelease(bench: Bench): Promise<Record<string, unknown>> {
  const from = bench.version;
  const to = bench.nextVersion();
  const started = Date.now();
  const result = await bench.up(`release ${to}`, 20 * 60_000);
  const ran = result.steps.filter((s) => s.op !== "same").map((s) => s.name).sort();
  if (ran.join(",") !== "app-release,app-upload") bench.problem(`release ${from} -> ${to} ran ${ran.join(", ")} (expected only app-upload, app-release)`);
  return { from, to, releaseId: String(result.outputs.releaseId.value), upSeconds: round((Date.now() - started) / 1000), stepsRun: ran };
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
async function naiveRestart(bench: Bench, program: string): Promise<Record<string, unknown>> {
  const t = Date.now();
  await bench.session.asRoot(`supervisorctl restart ${program} >&2\n${SOCKET_ANSWERS}`, 120_000);
  return { command: `supervisorctl restart ${program}`, secondsUntilAnswering: round((Date.now() - t) / 1000, 2) };
}

/** gunicorn reload: HUP; ends when every old worker is gone, the worker count is back and the socket answers. */
async function hupReload(bench: Bench, program: string): Promise<Record<string, unknown>> {
  const t = Date.now();
  const out = await bench.session.asRoot(`
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
async function capacityProbe(bench: Bench): Promise<number> {
  const steps: Record<string, unknown>[] = [];
  let sustainable = 0;
  for (const rate of PROBE.rates) {
    const r = await measureWindow(bench, "capacity probe", rate, PROBE.seconds);
    const ok = r.failed === 0 && r.latencyMs.p95 <= PROBE.p95LimitMs;
    steps.push({ rate, total: r.total, failed: r.failed, latencyMs: r.latencyMs, sustainable: ok });
    if (!ok) break;
    sustainable = rate;
  }
  bench.results.capacityProbe = { criterion: `no failure and p95 <= ${PROBE.p95LimitMs} ms over ${PROBE.seconds} s`, sustainableRate: sustainable, steps };
  bench.log(`sustainable rate from this host: ${sustainable} req/s`);
  if (!sustainable) {
    bench.problem(`the stack did not carry even ${PROBE.rates[0]} req/s without queueing; measuring at ${PROBE.rates[0]} req/s anyway`);
    return PROBE.rates[0];
  }
  return sustainable;
}

/** BENCH_RATES, or half the sustainable rate (rounded to 5) and the sustainable rate. */
export async function loadRates(bench: Bench): Promise<number[]> {
  if (FIXED_RATES) return [...FIXED_RATES];
  const sustainable = await capacityProbe(bench);
  return [...new Set([Math.max(5, Math.round(sustainable / 2 / 5) * 5), sustainable])];
}

/** The windows, per rate: control, dropstack release, naive restart, gunicorn HUP. */
export async function releaseUnderLoad(bench: Bench, appOnlyReleaseS: number, rates: number[]): Promise<void> {
  let releaseEstimateS = appOnlyReleaseS * 1.5 + 10;
  const naiveWindow: Record<string, number> = {};
  const naive = async (strategy: string, rate: number, action: () => Promise<Record<string, unknown>>) => {
    const r = await coveredWindow(bench, strategy, rate, naiveWindow[strategy] ?? NAIVE_WINDOW_S, action);
    naiveWindow[strategy] = Math.ceil(LEAD_S + r.actionSeconds * 1.5 + 10);
  };
  for (const rate of rates) {
    await bench.waitForVersion();
    await bench.guarded(`control at ${rate} req/s`, async () => {
      const control = await measureWindow(bench, "steady load, no action (control)", rate, CONTROL_S);
      bench.results.releaseUnderLoad.push(control);
      if (control.failed || control.slowOverTimeout) bench.problem(`steady load alone at ${rate} req/s: ${control.failed} failed, ${control.slowOverTimeout} slower than the timeout`);
    });

    await bench.guarded(`dropstack release at ${rate} req/s`, async () => {
      const r = await coveredWindow(bench, "dropstack release (second up)", rate, Math.ceil(LEAD_S + releaseEstimateS + MIN_TAIL_S + 2), () => dropstackRelease(bench));
      if (!r.actionError) releaseEstimateS = r.actionSeconds * 1.2 + 10;
      if (r.failed) bench.problem(`dropstack release at ${rate} req/s: ${r.failed} failed ${JSON.stringify(r.failureKinds)}`);
    });
    await bench.waitForVersion();

    // The live program, as a hand-deployer would look it up (before the window: not part of the restart).
    const program = await bench.session.liveProgram();
    await bench.guarded(`naive restart at ${rate} req/s`, () => naive("naive: supervisorctl restart", rate, () => naiveRestart(bench, program)));
    await bench.waitForVersion();
    await bench.guarded(`gunicorn HUP at ${rate} req/s`, () => naive("gunicorn HUP (supervisorctl signal HUP)", rate, () => hupReload(bench, program)));
    await bench.waitForVersion();
  }
}

export function printReleaseLoad(results: Results): void {
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
}

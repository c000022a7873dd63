// Benchmarks on the local cloud, one VM for the whole run (see bench/README.md):
//   1. requests failed during a release under steady open-loop load through nginx over HTTPS:
//      dropstack's own release (a second `up`), a naive `supervisorctl restart`, a gunicorn HUP
//      (releaseLoad.ts);
//   2. wall time of the first full `up` vs an app-only release (upTimes.ts);
//   3. throughput (wrk, inside the VM) of nginx over HTTPS, gunicorn directly, Flask's dev server
//      (throughput.ts).
// Run in the order 2, 3, 1. Writes bench/results/releases.json and prints the tables. Needs root,
// like the e2e suite:
//   flock /tmp/dropstack-vm.lock npm run bench
// `npm run bench -- --only up` runs benchmark 2 alone (one first up and one app-only release,
// ~17 min instead of ~45) and writes bench/results/up-times.json.
import * as path from "path";
import { localConfig } from "../localcloud/localStack";
import { LocalSession } from "../localcloud/session";
import { PROJECT_DIR } from "../localcloud/stackConfig";
import { Logger } from "../localcloud/util";
import { Bench, Results, setAppVersion } from "./context";
import { LEAD_S, MIN_TAIL_S, REQUEST_TIMEOUT_MS } from "./loadWindow";
import { CONTROL_S, FIXED_RATES, loadRates, printReleaseLoad, PROBE, releaseUnderLoad } from "./releaseLoad";
import { machine, OtherVms, product, writeResults } from "./report";
import { printThroughput, throughput } from "./throughput";
import { printUpTimes, upTimes } from "./upTimes";
import { WRK } from "./wrk";

/** `--only up`: benchmark 2 alone, into a file of its own (releases.json keeps the full run). */
const ONLY_UP = process.argv.slice(2).join(" ") === "--only up";
const RESULTS = path.join(PROJECT_DIR, "bench", "results", ONLY_UP ? "up-times.json" : "releases.json");

function newResults(): Results {
  return {
    date: new Date().toISOString(),
    machine: {},
    product: {},
    settings: { rates: FIXED_RATES ?? "from the capacity probe", probe: PROBE, leadSeconds: LEAD_S, minTailSeconds: MIN_TAIL_S, controlSeconds: CONTROL_S, requestTimeoutMs: REQUEST_TIMEOUT_MS, keepAlive: true, wrk: WRK },
    capacityProbe: {},
    releaseUnderLoad: [],
    discardedWindows: [],
    upWallTime: {},
    throughput: {},
    problems: [],
  };
}

/**
 * The Pulumi runtime also rejects a failed resource's own promise, which nobody awaits; cloud.up()
 * reports the same failure. Log it instead of letting Node end the run before the cleanup.
 */
function logUnhandledRejections(log: Logger): void {
  const seen = new Set<string>();
  process.on("unhandledRejection", (e) => {
    const first = String(e).split("\n")[0];
    if (!seen.has(first)) log(`(unhandled rejection, reported by up as well) ${first.slice(0, 300)}`);
    seen.add(first);
  });
}

/** The benchmarks, on a booted stack, in their order; results written after each. */
async function runAll(bench: Bench, firstUpEnded: number): Promise<void> {
  // 2. the first full up (the session's) and an app-only release
  const appOnlyS = await upTimes(bench, firstUpEnded);
  writeResults(RESULTS, bench.results);
  if (ONLY_UP) return;

  // 3. throughput (before the long windows, so that a later failure cannot lose it)
  await bench.guarded("throughput", () => throughput(bench));
  writeResults(RESULTS, bench.results);

  // 1. failed requests during releases and restarts under load, at rates this host can carry
  await bench.waitForVersion();
  const rates = await loadRates(bench);
  bench.results.settings.rates = rates;
  bench.log(`load rates: ${rates.join(", ")} req/s`);
  await releaseUnderLoad(bench, appOnlyS, rates);
  writeResults(RESULTS, bench.results);
}

export async function main(): Promise<void> {
  const t0 = Date.now();
  const log: Logger = (m) => console.log(`[bench ${((Date.now() - t0) / 1000).toFixed(0).padStart(4)}s] ${m}`);
  logUnhandledRejections(log);
  const results = newResults();
  const others = new OtherVms();
  let session: LocalSession | undefined;
  try {
    if (process.getuid && process.getuid() !== 0) throw new Error("the local cloud needs root (qemu forwards ports 22/80/443): run as root");
    results.machine = await machine();
    results.product = await product();
    const dirty = results.product.uncommittedChanges;
    if (dirty.length) {
      log(`NOTE: measuring a product with uncommitted changes:\n${dirty.join("\n")}`);
      results.problems.push(`measured with uncommitted product changes (see product.diff): ${dirty.join("; ")}`);
    }
    others.start();
    session = await LocalSession.start({
      stack: "bench",
      log: (m) => log(`  ${m}`),
      config: (pebble, appDir) => {
        setAppVersion(appDir, 1); // the first up serves v1; every release adds one
        return localConfig(pebble, { appSource: appDir });
      },
    });
    await runAll(new Bench(session, log, results, others), Date.now());
  } catch (e) {
    process.exitCode = 1;
    console.error(`bench failed: ${e instanceof Error ? e.stack ?? e.message : e}`);
    results.problems.push(`the run failed: ${e instanceof Error ? e.message : e}`);
  } finally {
    if (Object.keys(results.upWallTime).length) {
      writeResults(RESULTS, results);
      if (!ONLY_UP) printReleaseLoad(results);
      printUpTimes(results);
      if (!ONLY_UP) printThroughput(results);
      if (results.problems.length) console.log(`\nProblems:\n${results.problems.map((p) => `  - ${p}`).join("\n")}`);
      console.log(`\nWritten: ${path.relative(PROJECT_DIR, RESULTS)}`);
    }
    others.stop();
    if (session) await session.stop((m) => console.error(m));
  }
}

if (require.main === module) void main();

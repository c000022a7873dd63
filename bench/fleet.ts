// The fleet on the local cloud (see bench/README.md, "Fleet"): two droplets behind the load
// balancer stand-in (HAProxy on this host), DigitalOcean's default health check (10 s interval,
// 5 s timeout, 5 healthy, 3 unhealthy), the sample app without a database.
//   - Throughput through the load balancer with both droplets in rotation and with one (the other
//     drained: its health answer turns 503 and the load balancer takes it out; its VM keeps
//     running), wrk on this host, the two interleaved, in rounds.
//   - Rolling releases: the up's wall time against N × (one droplet's release + the time the load
//     balancer needs to take it out and back: (unhealthy + healthy threshold) × interval).
// Writes bench/results/fleet.json (date, commit) and prints a table. Needs root:
//   flock /tmp/dropstack-vm.lock npm run bench:fleet
import * as path from "path";
import { DEFAULT_LB_HEALTH } from "../components/config";
import { perDroplet } from "../components/server";
import { UpResult } from "../localcloud/engine";
import { LOCAL_FQDN, localConfig } from "../localcloud/localStack";
import { LocalSession } from "../localcloud/session";
import { sshOutput } from "../localcloud/ssh";
import { PROJECT_DIR } from "../localcloud/stackConfig";
import { waitUntil } from "../localcloud/util";
import { benchMain, BenchRun, machine, median, round, table, writeResults } from "./report";
import { parseWrk, WRK, WrkResult, wrkOnHost } from "./wrk";

const RESULTS = path.join(PROJECT_DIR, "bench", "results", "fleet.json");
const DROPLETS = 2;
/** Rolling releases (the figure is their median; all are in the JSON). */
const ROLLS = Number(process.env.BENCH_ROUNDS ?? 2);
const health = DEFAULT_LB_HEALTH;

interface Roll {
  seconds: number;
  /** Each droplet's staging (its release step: upload, venv, idle slot booted, health gate), s. */
  stageSeconds: number[];
  /** Each droplet's turn (drain, wait, commit, undrain, wait), s. */
  turnSeconds: number[];
  /** N × (median staging + (unhealthy + healthy threshold) × interval), s. */
  predictedSeconds: number;
}

async function main({ log, started, product: measuredProduct }: BenchRun): Promise<void> {
  const session = await LocalSession.start({
    stack: "fleetbench", log,
    config: (pebble, appDir) => localConfig(pebble, { appSource: appDir, droplets: DROPLETS }),
  });
  let last: UpResult = session.first;
  const problems: string[] = [];
  try {
    const ids = [...Array(DROPLETS).keys()].map((i) => session.dropletIdOf(last, i));
    const rotation = () => session.cloud.loadBalancerDroplets();
    const waitRotation = (what: string, want: (s: Record<string, string>) => boolean) =>
      waitUntil(what, 5 * 60_000, async () => (want(await rotation()) ? true : undefined), { intervalMs: 500, debug: async () => JSON.stringify(await rotation()) });
    const inRotation = (s: Record<string, string>) => ids.filter((id) => s[id] === "UP").length;
    const onDroplet = (i: number, command: string) => sshOutput(session.dropletConnection(last, i), command, { timeoutMs: 5 * 60_000 });
    const drainFlag = "/run/dropstack-app/drain";

    // ---- throughput: 2 droplets in rotation, then 1 (the second drained), interleaved
    await waitRotation("every droplet in rotation", (s) => inRotation(s) === DROPLETS);
    const url = `https://${session.siteIp}/`;
    const headers = [`Host: ${LOCAL_FQDN}`];
    const runs: { droplets: number; result: WrkResult }[] = [];
    const measure = async (droplets: number) => {
      await wrkOnHost(url, headers, WRK.warmupSeconds);
      const { out, cpu } = await wrkOnHost(url, headers, WRK.seconds);
      const result = parseWrk(`load balancer -> ${droplets} droplet(s)`, url, out, cpu);
      log(`  ${droplets} in rotation: ${result.requestsPerSecond} requests/s, p50 ${result.latencyMs.p50} ms, p99 ${result.latencyMs.p99} ms, non-2xx ${result.non2xx3xx}`);
      if (result.non2xx3xx || Object.values(result.socketErrors).some((n) => n > 0)) {
        problems.push(`${droplets} droplet(s): ${result.non2xx3xx} non-2xx answers, socket errors ${JSON.stringify(result.socketErrors)}`);
      }
      runs.push({ droplets, result });
    };
    for (let r = 0; r < WRK.rounds; r++) {
      log(`throughput round ${r + 1} of ${WRK.rounds}`);
      await measure(2);
      await onDroplet(1, `sudo touch ${drainFlag}`);
      await waitRotation("the second droplet out of rotation", (s) => inRotation(s) === 1);
      await measure(1);
      await onDroplet(1, `sudo rm -f ${drainFlag}`);
      await waitRotation("the second droplet back in rotation", (s) => inRotation(s) === 2);
    }

    // ---- rolling releases
    const rolls: Roll[] = [];
    const stepSeconds = (up: UpResult, name: string) => (up.steps.find((s) => s.name === name && s.op !== "same")?.ms ?? NaN) / 1000;
    for (let r = 0; r < ROLLS; r++) {
      const [, next] = session.bumpVersion();
      log(`rolling release ${r + 1} of ${ROLLS} (${next})`);
      const t = Date.now();
      last = await session.cloud.up();
      const seconds = round((Date.now() - t) / 1000);
      const stageSeconds = [...Array(DROPLETS).keys()].map((i) => round(stepSeconds(last, `${perDroplet("app", i)}-release`)));
      // (each passed turn prints "turn=<n> seconds=<s>" on the roll's stdout; an unchanged roll printed nothing this time)
      const rolled = last.steps.some((x) => x.type === "command:local:Command" && x.name === "roll" && x.op !== "same");
      const rollOut = rolled ? String(last.resources.find((x) => x.type === "command:local:Command" && x.name === "roll")?.state.stdout ?? "") : "";
      const turnSeconds = [...Array(DROPLETS).keys()].map((i) => Number(new RegExp(`^turn=${i + 1} seconds=(\\d+)$`, "m").exec(rollOut)?.[1] ?? NaN));
      const predictedSeconds = round(DROPLETS * (median(stageSeconds) + (health.unhealthyThreshold + health.healthyThreshold) * health.intervalSeconds));
      rolls.push({ seconds, stageSeconds, turnSeconds, predictedSeconds });
      log(`  ${seconds} s (staging ${stageSeconds.join(" + ")} s, turns ${turnSeconds.join(" + ")} s; predicted ${predictedSeconds} s)`);
      if (stageSeconds.concat(turnSeconds).some((x) => !Number.isFinite(x))) problems.push(`roll ${r + 1}: a droplet's release or turn did not run (steps: ${last.steps.map((s) => `${s.name}:${s.op}`).join(", ")})`);
      const live = await Promise.all(ids.map((_, i) => onDroplet(i, "readlink /srv/app/current")));
      if (new Set(live.map((l) => l.trim())).size !== 1) problems.push(`roll ${r + 1}: the droplets ended on different releases: ${live.join(", ")}`);
    }

    const rps = (n: number) => runs.filter((x) => x.droplets === n).map((x) => x.result.requestsPerSecond);
    const summary = {
      requestsPerSecond: { oneDroplet: round(median(rps(1))), twoDroplets: round(median(rps(2))) },
      speedup: round(median(rps(2)) / median(rps(1)), 2),
      rollSeconds: round(median(rolls.map((x) => x.seconds))),
      predictedRollSeconds: round(median(rolls.map((x) => x.predictedSeconds))),
    };
    writeResults(RESULTS, {
      date: started,
      machine: await machine(),
      product: measuredProduct,
      method: `${DROPLETS} droplets behind the load balancer stand-in (HAProxy on this host, TLS there); health check ${JSON.stringify(health)}. ` +
        `Throughput: wrk on this host (${WRK.threads} threads, ${WRK.connections} connections, ${WRK.seconds} s after a ${WRK.warmupSeconds} s warm-up) through the load balancer to GET /, ` +
        `${WRK.rounds} rounds of [both droplets in rotation, the second drained]; the host's two cores run both VMs, HAProxy and wrk. ` +
        `Rolls: VERSION raised in app.py, then up (median of ${ROLLS}); predicted = N × (median staging + (unhealthy + healthy threshold) × interval).`,
      summary,
      throughput: runs,
      rolls,
      problems,
    });
    console.log("\nThe fleet on the local cloud (medians)");
    console.log(table([
      ["droplets in rotation", "requests/s", "p50 ms", "p99 ms"],
      ...[1, 2].map((n) => {
        const rs = runs.filter((x) => x.droplets === n).map((x) => x.result);
        return [`${n}`, `${round(median(rs.map((x) => x.requestsPerSecond)))}`, `${round(median(rs.map((x) => x.latencyMs.p50)))}`, `${round(median(rs.map((x) => x.latencyMs.p99)))}`];
      }),
    ]));
    console.log(`\nRolling release of ${DROPLETS} droplets: ${summary.rollSeconds} s (predicted ${summary.predictedRollSeconds} s)`);
    console.log(`Written: ${path.relative(PROJECT_DIR, RESULTS)}`);
    if (problems.length) {
      console.error(`problems:\n  ${problems.join("\n  ")}`);
      process.exitCode = 1;
    }
  } finally {
    await session.stop(log);
  }
}

benchMain("fleet", main);

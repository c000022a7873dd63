// Benchmark 2: wall time of the first full `up` (the session's) against an app-only release (`up`
// after one changed line in app.py, no load), in the same run, and their ratio.
import { stepPhases } from "../localcloud/session";
import { Bench, Results } from "./context";
import { round, table } from "./report";

/**
 * The first up's phases are stepPhases', but for the release phase: releases.json has always
 * named it with "+ switch", and keeps that key so that the files of earlier runs compare.
 */
const phaseKey = (name: string) => (name === "release (upload + venv + health check)" ? "release (upload + venv + health check + switch)" : name);

/**
 * Records the first up (which ended at `firstUpEnded`) and runs the app-only release; returns
 * the app-only release's seconds (the release windows are sized from it).
 */
export async function upTimes(bench: Bench, firstUpEnded: number): Promise<number> {
  const { session, log } = bench;
  const firstUpS = round(session.firstUpSeconds);
  const firstOthers = bench.othersDuring(firstUpEnded - session.firstUpSeconds * 1000, firstUpEnded);
  await bench.waitForVersion("v1");

  // an app-only release, unloaded
  bench.nextVersion();
  const t = Date.now();
  const second = await bench.up("the app-only release", 20 * 60_000);
  const appOnlyS = round((Date.now() - t) / 1000);
  const appOnlyOthers = bench.othersDuring(t, Date.now());
  const ran = second.steps.filter((s) => s.op !== "same").map((s) => s.name).sort();
  if (ran.join(",") !== "app-release,app-upload") bench.problem(`the app-only release ran ${ran.join(", ")} (expected only app-upload, app-release)`);
  await bench.waitForVersion();
  // The floor an app-only release is measured against: the upload, plus the new slot's boot up to
  // its first passing health check (the switch writes both of the latter to its audit log).
  const audit = (await session.onServer("sudo tail -n 1 /srv/app/shared/log/releases.log")).trim();
  const field = (k: string) => Number(new RegExp(`\\b${k}=(\\d+)\\b`).exec(audit)?.[1] ?? NaN);
  const bootS = field("boot_ms") / 1000;
  const checkS = field("check_ms") / 1000;
  const uploadS = (second.steps.find((s) => s.name === "app-upload")?.ms ?? NaN) / 1000;
  if (!Number.isFinite(bootS + checkS + uploadS)) bench.problem(`no upload time or boot time for the app-only release (audit line: ${audit})`);
  const floorS = uploadS + bootS;
  bench.results.upWallTime = {
    firstUpSeconds: firstUpS,
    firstUpSteps: Object.fromEntries(stepPhases(session.first).map(([name, s]) => [phaseKey(name), round(s)])),
    appOnlyReleaseSeconds: appOnlyS,
    appOnlyReleaseStepsRun: ran,
    appOnlyReleaseSteps: Object.fromEntries(second.steps.filter((s) => s.op !== "same").map((s) => [s.name, round(s.ms / 1000)])),
    ratio: round(firstUpS / appOnlyS),
    appOnlyFloor: {
      uploadSeconds: round(uploadS),
      slotBootToHealthySeconds: round(bootS),
      ofWhichThePassingHealthCheckSeconds: round(checkS),
      floorSeconds: round(floorS),
      auditLine: audit,
    },
    goals: {
      "app-only release <= 2 x (upload + boot + one health check)": { limitSeconds: round(2 * floorS), met: appOnlyS <= 2 * floorS },
      "app-only release <= 10 % of the first up": { limitSeconds: round(0.1 * firstUpS), met: appOnlyS <= 0.1 * firstUpS },
    },
    otherVmsSeen: { firstUp: firstOthers, appOnlyRelease: appOnlyOthers },
  };
  log(`first up ${firstUpS} s, app-only release ${appOnlyS} s`);
  return appOnlyS;
}

export function printUpTimes(results: Results): void {
  const u = results.upWallTime as {
    firstUpSeconds?: number; appOnlyReleaseSeconds?: number; ratio?: number;
    appOnlyFloor?: { floorSeconds?: number }; goals?: Record<string, { limitSeconds: number; met: boolean }>;
  };
  console.log("\n== 2. wall time of `up`");
  console.log(table([
    ["", "seconds"],
    ["first full up (boot, provisioning, certificate, site, release)", String(u.firstUpSeconds ?? "-")],
    ["app-only release (up after one app file change)", String(u.appOnlyReleaseSeconds ?? "-")],
    ["ratio first / app-only", String(u.ratio ?? "-")],
    ["upload + slot boot to its first passing health check", String(u.appOnlyFloor?.floorSeconds ?? "-")],
    ...Object.entries(u.goals ?? {}).map(([goal, g]) => [`goal: ${goal}`, `${g.met ? "met" : "NOT met"} (limit ${g.limitSeconds})`]),
  ]));
}

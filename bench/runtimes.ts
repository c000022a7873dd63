// The two runtimes on the local cloud (see bench/README.md, "Runtimes"): one VM, the sample app,
//   - app-only releases of the Python runtime (upload, venv, slot, health gate, switch);
//   - the up that moves the same app to `runtime: docker` (Docker Engine, base image, first build);
//   - app-only releases of the container (one changed line in app.py: the dependency layer comes
//     from Docker's cache), then one whose dependencies changed (that layer rebuilt).
// Each up's wall time and its steps' times; for the container, whether the dependency layer of the
// new image is the previous image's (read from `docker image inspect`). Writes
// bench/results/runtimes.json (date, commit) and prints a table. Needs root:
//   flock /tmp/dropstack-vm.lock npm run bench:runtimes
import * as fs from "fs";
import * as path from "path";
import { UpResult } from "../localcloud/engine";
import { localConfig } from "../localcloud/localStack";
import { LocalSession } from "../localcloud/session";
import { PROJECT_DIR } from "../localcloud/stackConfig";
import { setAppVersion } from "./context";
import { benchMain, BenchRun, median, round, table, writeResults } from "./report";

const RESULTS = path.join(PROJECT_DIR, "bench", "results", "runtimes.json");
/** App-only releases per runtime (the figure is their median; all are in the JSON). */
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
/** The Dockerfile's dependency line, and the package a dependency change adds to it. */
const DEPS_LINE = "apt-get install -y --no-install-recommends python3-flask python3-psycopg2 gunicorn python-is-python3";
const ADDED_PACKAGE = "python3-six";

interface Measured {
  what: string;
  seconds: number;
  /** Milliseconds per step that ran (op not "same"). */
  steps: Record<string, number>;
  /** Container releases: the new image's layers that are the previous live image's, of how many. */
  layersReused?: string;
  /** Container releases: whether the dependency layer (the image's second) is the previous image's. */
  dependencyLayerReused?: boolean;
}

async function main({ log, started, product: measuredProduct }: BenchRun): Promise<void> {
  let version = 1;
  const session = await LocalSession.start({
    stack: "runtimes", log,
    config: (pebble, appDir) => {
      setAppVersion(appDir, version);
      return localConfig(pebble, { appSource: appDir });
    },
  });
  const all: Measured[] = [];
  try {
    const liveImage = async () => (await session.asRoot("cat /srv/app/live/release/.image 2>/dev/null || true")).trim();
    const layersOf = async (image: string) => JSON.parse(await session.asRoot(`docker image inspect -f '{{json .RootFS.Layers}}' ${image}`)) as string[];
    /** One up after `change`, timed; for a container, its layers against the image live before. */
    const timedUp = async (what: string, change: () => void): Promise<Measured> => {
      const before = await liveImage();
      change();
      setAppVersion(session.appDir, ++version);
      log(what);
      const t = Date.now();
      const up: UpResult = await session.cloud.up();
      const m: Measured = { what, seconds: round((Date.now() - t) / 1000), steps: Object.fromEntries(up.steps.filter((s) => s.op !== "same").map((s) => [s.name, s.ms])) };
      const after = await liveImage();
      if (before && after) {
        const [a, b] = [await layersOf(before), await layersOf(after)];
        let shared = 0;
        while (shared < Math.min(a.length, b.length) && a[shared] === b[shared]) shared++;
        m.layersReused = `${shared} of ${b.length}`;
        m.dependencyLayerReused = a[1] === b[1];
      }
      log(`  ${m.seconds} s ${JSON.stringify(m.steps)}${m.layersReused ? ` layers reused ${m.layersReused}` : ""}`);
      all.push(m);
      return m;
    };
    const appOnly = () => undefined; // timedUp raises VERSION in app.py: the release's one change

    for (let i = 0; i < ROUNDS; i++) await timedUp("python: app-only release", appOnly);
    session.cloud.configure(localConfig(session.pebble, { appSource: session.appDir, runtime: "docker" }));
    await timedUp("move to runtime docker (engine, base image, first build, release)", () => undefined);
    for (let i = 0; i < ROUNDS; i++) await timedUp("docker: app-only release (dependency layer cached)", appOnly);
    const dockerfile = path.join(session.appDir, "Dockerfile");
    await timedUp(`docker: dependencies changed (${ADDED_PACKAGE} added: dependency layer rebuilt)`, () => {
      const text = fs.readFileSync(dockerfile, "utf8");
      if (!text.includes(DEPS_LINE)) throw new Error(`the sample Dockerfile has no line "${DEPS_LINE}": update bench/docker.ts`);
      fs.writeFileSync(dockerfile, text.replace(DEPS_LINE, `${DEPS_LINE} ${ADDED_PACKAGE}`));
    });

    const stepS = (m: Measured, ...names: string[]) => names.reduce((a, n) => a + (m.steps[n] ?? 0), 0) / 1000;
    const of = (prefix: string) => all.filter((m) => m.what.startsWith(prefix));
    const row = (label: string, ms: Measured[]) => [label, `${ms.length}`, `${round(median(ms.map((m) => m.seconds)))} s`,
      `${round(median(ms.map((m) => stepS(m, "container-image"))))} s`, `${round(median(ms.map((m) => stepS(m, "app-upload", "app-release"))))} s`,
      ms[0].layersReused ? ms.map((m) => m.layersReused).join(", ") : ""];
    const summary = {
      pythonRelease: round(median(of("python:").map((m) => m.seconds))),
      dockerReleaseCached: round(median(of("docker: app-only").map((m) => m.seconds))),
      dockerReleaseDepsChanged: of("docker: dependencies")[0].seconds,
      moveToDocker: of("move")[0].seconds,
    };
    const results = {
      date: started,
      product: measuredProduct,
      vm: "local cloud: qemu TCG, 2 vCPUs, 2048 MB, Debian bookworm; Docker Engine from Debian (docker.io), the classic builder, the image built on the VM",
      method: `app-only release: VERSION raised in app.py (one line), then up (median of ${ROUNDS}); dependencies changed: ${ADDED_PACKAGE} added to the Dockerfile's apt-get line`,
      summary,
      ups: all,
    };
    writeResults(RESULTS, results);
    console.log("\nRuntimes on the local cloud (wall time of up; medians)");
    console.log(table([
      ["release", "ups", "up", "build (container-image)", "upload + release", "layers reused"],
      row("python: app-only", of("python:")),
      row("move to docker", of("move")),
      row("docker: app-only (cache)", of("docker: app-only")),
      row("docker: dependencies changed", of("docker: dependencies")),
    ]));
    console.log(`\nWritten: ${path.relative(PROJECT_DIR, RESULTS)}`);
    if (of("docker: app-only").some((m) => !m.dependencyLayerReused)) {
      console.error("an app-only container release rebuilt the dependency layer: Docker's cache was not used");
      process.exitCode = 1;
    }
  } finally {
    await session.stop(log);
  }
}

benchMain("runtimes", main);

// Data on the local cloud (see bench/README.md, "Data"): one VM with `database: droplet` and a
// volume, the sample app's notes grown to about 100 MB, then
//   - the time of `dropstack-db backup` (pg_dump -Fc, read back) and of `dropstack-db restore`
//     (one transaction) of that database, with the sizes;
//   - a release whose migration adds a column, under a steady client: requests and failures.
// Writes bench/results/data.json (date, commit) and prints a table. Needs root:
//   flock /tmp/dropstack-vm.lock npm run bench:data
import * as fs from "fs";
import * as path from "path";
import { closedLoop, failures, markerRuns } from "../localcloud/load";
import { LOCAL_FQDN, localConfig } from "../localcloud/localStack";
import { LocalSession } from "../localcloud/session";
import { PROJECT_DIR } from "../localcloud/stackConfig";
import { setAppVersion } from "./context";
import { benchMain, BenchRun, round, table, writeResults } from "./report";

const RESULTS = path.join(PROJECT_DIR, "bench", "results", "data.json");
/** Rows of about 1 kB each: about 100 MB of table data. */
const ROWS = 100_000;

async function main({ log, started, product: measured }: BenchRun): Promise<void> {
  const settings = { database: "droplet", volumeSize: 2, aptPackages: ["python3-flask", "python3-psycopg2"], releaseCommand: "python migrate.py" };
  const session = await LocalSession.start({ stack: "data", log, config: (pebble, appDir) => localConfig(pebble, { appSource: appDir, ...settings }) });
  try {
    const sql = async (query: string) => (await session.onServer("cd / && sudo -u postgres psql -X -At -v ON_ERROR_STOP=1 -d app", query, 30 * 60_000)).trim();
    /** Runs a command on the server and returns its wall time there, in seconds. */
    const timedOnServer = async (command: string) => {
      const out = await session.asRoot(`s=$(date +%s%N)\n${command} >&2\necho $(( ($(date +%s%N) - s) / 1000000 ))`, 30 * 60_000);
      return Number(out.trim().split("\n").pop()) / 1000;
    };
    log(`filling the notes with ${ROWS} rows`);
    await sql(`INSERT INTO notes (body) SELECT repeat(md5(i::text), 30) FROM generate_series(1, ${ROWS}) AS i; VACUUM ANALYZE notes;`);
    const databaseBytes = Number(await sql("SELECT pg_database_size('app')"));
    const rowsBefore = Number(await sql("SELECT count(*) FROM notes"));
    log(`database size ${(databaseBytes / 1e6).toFixed(1)} MB; backing up`);
    const backupS = await timedOnServer("dropstack-db backup");
    const file = (await session.asRoot("dropstack-db list | head -n 1 | awk '{print $3}'")).trim();
    const backupBytes = Number((await session.asRoot(`stat -c %s ${file}`)).trim());
    await sql("DELETE FROM notes");
    log("restoring");
    const restoreS = await timedOnServer(`dropstack-db restore ${path.basename(file)}`);
    const restoredRows = Number(await sql("SELECT count(*) FROM notes"));

    log("a release whose migration adds a column, under a steady client");
    fs.writeFileSync(path.join(session.appDir, "migrations", "003_note_tag.sql"), "ALTER TABLE notes ADD COLUMN tag text;\n");
    setAppVersion(session.appDir, 2);
    let finish!: () => void;
    const stop = new Promise<void>((r) => (finish = r));
    const target = { host: LOCAL_FQDN, address: session.ip, ca: fs.readFileSync(session.rootCa, "utf8"), path: "/", marker: (b: string) => /version: (v\d+)/.exec(b)?.[1] ?? "?" };
    const load = closedLoop(target, stop, { connections: 1 });
    const t = Date.now();
    let releaseError: string | undefined;
    try {
      await session.cloud.up();
    } catch (e) {
      releaseError = String(e).slice(0, 2000);
    }
    const releaseS = (Date.now() - t) / 1000;
    finish();
    const outcomes = await load;
    const migrated = await sql("SELECT count(*) FROM information_schema.columns WHERE table_name = 'notes' AND column_name = 'tag'");

    const results = {
      date: started,
      product: measured,
      vm: "local cloud: qemu TCG, 2 vCPUs, 2048 MB, Debian bookworm, PostgreSQL 15 on a 2 GiB volume (virtio-scsi, a raw file on the host)",
      database: { rows: ROWS, bytes: databaseBytes },
      backup: { seconds: round(backupS, 2), fileBytes: backupBytes, command: "dropstack-db backup (pg_dump -Fc, then pg_restore --list)" },
      restore: { seconds: round(restoreS, 2), rowsBefore, rowsBack: restoredRows, command: "dropstack-db restore (pg_restore --clean --single-transaction)" },
      releaseWithMigration: {
        seconds: round(releaseS), requests: outcomes.length, failed: failures(outcomes).length,
        versionsSeen: markerRuns(outcomes), columnAdded: migrated === "1", error: releaseError ?? null,
      },
    };
    writeResults(RESULTS, results);
    console.log("\nData on the local cloud");
    console.log(table([
      ["", ""],
      ["database size", `${(databaseBytes / 1e6).toFixed(1)} MB (${ROWS} rows)`],
      ["dropstack-db backup", `${round(backupS, 2)} s (file ${(backupBytes / 1e6).toFixed(1)} MB)`],
      ["dropstack-db restore", `${round(restoreS, 2)} s (${restoredRows} rows back)`],
      ["release with a migration (up)", `${round(releaseS)} s, ${outcomes.length} requests, ${failures(outcomes).length} failed, versions ${markerRuns(outcomes).join(" -> ")}`],
    ]));
    if (releaseError || failures(outcomes).length || restoredRows !== rowsBefore || migrated !== "1") process.exitCode = 1;
  } finally {
    await session.stop(log);
  }
}

benchMain("data", main);

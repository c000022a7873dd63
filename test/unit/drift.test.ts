// Drift: the steps' manifests (remote/lib.sh), dropstack-check reading them on a real file system,
// and the program turning its report into REPAIR values for exactly the steps with drift.
import * as assert from "assert";
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { describeDrift, nextToken, parseCheck, repairTokens } from "../../components/drift";
import { decodeValues, encodeValues, readRemoteFile } from "../../components/shell";
import { runFake } from "./fakeCloud";

/** A step of the test's own (lib.sh + a body), run as the steps are: bash -c, the name as $0, values on stdin. */
function runStep(stateDir: string, body: string, values: Record<string, string>): { code: number | null; out: string } {
  const r = spawnSync("bash", ["-c", `${readRemoteFile("lib.sh")}\n${body}`, "dropstack-test"], {
    input: encodeValues(values), encoding: "utf8", env: { ...process.env, DROPSTACK_STATE_DIR: stateDir, ROOT: path.dirname(stateDir) },
  });
  return { code: r.status, out: r.stdout + r.stderr };
}

function check(stateDir: string, ...args: string[]): { code: number | null; out: string } {
  const script = path.join(path.dirname(stateDir), "dropstack-check");
  fs.writeFileSync(script, readRemoteFile("templates/dropstack-check.sh"), { mode: 0o755 });
  const r = spawnSync("bash", [script, ...args], { encoding: "utf8", env: { ...process.env, DROPSTACK_STATE_DIR: stateDir } });
  return { code: r.status, out: r.stdout + r.stderr };
}

const STEP = `
ensure_dir "$ROOT/etc" 755 root:root
ensure_dir "$ROOT/enabled" 755 root:root
write_file "$ROOT/etc/site.conf" 644 root:root "$V_SITE"
ensure_link "$ROOT/etc/site.conf" "$ROOT/enabled/site.conf"
own_dir "$ROOT/enabled"
finish
`;

describe("drift: the steps' manifests and dropstack-check", function () {
  this.timeout(60_000);
  let root: string;
  let state: string;
  before(function () {
    if (process.getuid?.() !== 0) this.skip(); // write_file sets owners, dropstack-check wants root: as on the server
  });
  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), "dropstack-drift-"));
    state = path.join(root, "state");
  });
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  it("records what a step wrote; a clean server checks clean, exit 0", () => {
    const first = runStep(state, STEP, { SITE: "listen 443;\n" });
    assert.strictEqual(first.code, 0, first.out);
    const manifest = fs.readFileSync(path.join(state, "manifest", "dropstack-test"), "utf8");
    assert.match(manifest, /^step dropstack-test\nrepair -\n/);
    assert.match(manifest, new RegExp(`^file [0-9a-f]{64} 644 root:root ${root}/etc/site.conf$`, "m"));
    assert.strictEqual((fs.statSync(path.join(state, "manifest", "dropstack-test")).mode & 0o777), 0o600, "the manifest is root's alone");
    const r = check(state);
    assert.strictEqual(r.code, 0, r.out);
    assert.match(r.out, /all 2 files are as dropstack wrote them/);
    assert.deepStrictEqual(parseCheck(`${check(state, "--porcelain").out}status 0\n`), { status: "checked", repairs: { "dropstack-test": "-" }, drift: [] });
  });

  it("reports a hand edit, a changed mode, a removed link and a new entry in an owned directory, exit 1", () => {
    assert.strictEqual(runStep(state, STEP, { SITE: "listen 443;\n" }).code, 0);
    fs.appendFileSync(path.join(root, "etc", "site.conf"), "autoindex on;\n");
    fs.writeFileSync(path.join(root, "enabled", "extra.conf"), "server {}\n");
    let r = check(state);
    assert.strictEqual(r.code, 1, r.out);
    assert.match(r.out, new RegExp(`^changed +${root}/etc/site.conf differs from what the test step wrote$`, "m"));
    assert.match(r.out, new RegExp(`^new +${root}/enabled/extra.conf is not dropstack's`, "m"));
    assert.match(r.out, /2 of dropstack's files differ/);
    fs.rmSync(path.join(root, "enabled", "site.conf"));
    r = check(state, "--porcelain");
    assert.strictEqual(r.code, 1);
    const report = parseCheck(`${r.out}status 1\n`);
    assert.deepStrictEqual(report.drift.map((d) => `${d.what} ${path.relative(root, d.path)}`).sort(), ["changed etc/site.conf", "missing enabled/site.conf", "new enabled/extra.conf"]);
    assert.match(describeDrift(report), /changed .*site\.conf \(test step\)/);
  });

  it("a repair writes the file again and sets the stranger aside (kept); the next check is clean and keeps the token", () => {
    assert.strictEqual(runStep(state, STEP, { SITE: "listen 443;\n" }).code, 0);
    fs.writeFileSync(path.join(root, "etc", "site.conf"), "hand edit\n");
    fs.writeFileSync(path.join(root, "enabled", "extra.conf"), "server {}\n");
    const tokens = repairTokens(parseCheck(`${check(state, "--porcelain").out}status 1\n`));
    assert.deepStrictEqual(tokens, { "dropstack-test": "r1" });
    const repair = runStep(state, STEP, { SITE: "listen 443;\n", REPAIR: tokens["dropstack-test"] });
    assert.strictEqual(repair.code, 0, repair.out);
    assert.match(repair.out, /changed the server/);
    assert.strictEqual(fs.readFileSync(path.join(root, "etc", "site.conf"), "utf8"), "listen 443;\n");
    assert.ok(!fs.existsSync(path.join(root, "enabled", "extra.conf")), "the stranger left the owned directory");
    const aside = spawnSync("find", [path.join(state, "set-aside"), "-name", "extra.conf"], { encoding: "utf8" }).stdout.trim();
    assert.strictEqual(fs.readFileSync(aside, "utf8"), "server {}\n", "and was kept");
    const after = check(state, "--porcelain");
    assert.strictEqual(after.code, 0, after.out);
    assert.deepStrictEqual(repairTokens(parseCheck(`${after.out}status 0\n`)), { "dropstack-test": "r1" }, "the same token: the next up runs nothing");
    // and a second run of the repaired step changes nothing
    assert.match(runStep(state, STEP, { SITE: "listen 443;\n", REPAIR: "r1" }).out, /no changes/);
  });

  it("leaves entries another step's manifest lists alone, repair or not", () => {
    assert.strictEqual(runStep(state, STEP, { SITE: "a\n" }).code, 0);
    const other = `write_file "$ROOT/enabled/other.conf" 644 root:root "b"\nfinish\n`;
    assert.strictEqual(spawnSync("bash", ["-c", `${readRemoteFile("lib.sh")}\n${other}`, "dropstack-other"], {
      input: "", encoding: "utf8", env: { ...process.env, DROPSTACK_STATE_DIR: state, ROOT: root },
    }).status, 0);
    assert.strictEqual(check(state).code, 0, check(state).out);
    assert.strictEqual(runStep(state, STEP, { SITE: "a\n", REPAIR: "r1" }).code, 0);
    assert.ok(fs.existsSync(path.join(root, "enabled", "other.conf")));
  });

  it("refuses to run as anyone but root", () => {
    const r = spawnSync("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "bash", "-c", readRemoteFile("templates/dropstack-check.sh")], { encoding: "utf8" });
    assert.strictEqual(r.status, 2, r.stdout + r.stderr);
    assert.match(r.stderr, /run it as root/);
  });
});

describe("drift: the report and the repair tokens", () => {
  it("reads a server without the check, an unreachable one, a clean one and one with drift", () => {
    assert.deepStrictEqual(parseCheck("status none"), { status: "none", repairs: {}, drift: [] });
    assert.strictEqual(parseCheck("unreachable ssh: connect to host 203.0.113.10 port 22: Connection timed out").status, "unreachable");
    assert.deepStrictEqual(parseCheck("repair dropstack-site r2\nstatus 0\n").repairs, { "dropstack-site": "r2" });
    assert.deepStrictEqual(parseCheck("repair dropstack-site -\ndrift dropstack-site changed /etc/nginx/sites-available/dropstack-app.conf\nstatus 1").drift,
      [{ step: "dropstack-site", what: "changed", path: "/etc/nginx/sites-available/dropstack-app.conf" }]);
  });

  it("never takes a report it does not understand for a clean server", () => {
    assert.throws(() => parseCheck("sudo: a password is required\nstatus 1"), /unexpected line/);
    assert.throws(() => parseCheck("status 2"), /failed on the server \(exit 2\)/);
    assert.throws(() => parseCheck("repair dropstack-site -"), /exit unknown/);
    assert.throws(() => parseCheck("status 1"), /does not match its 0 differences/);
  });

  it("gives a step with drift the next token and keeps a clean step's", () => {
    assert.strictEqual(nextToken("-"), "r1");
    assert.strictEqual(nextToken("r9"), "r10");
    assert.deepStrictEqual(repairTokens(parseCheck("repair dropstack-base r3\nrepair dropstack-site -\nrepair dropstack-release -\ndrift dropstack-site changed /x\ndrift dropstack-site new /y\nstatus 1")),
      { "dropstack-base": "r3", "dropstack-site": "r1" });
  });
});

describe("drift: the program", function () {
  this.timeout(60_000);
  const stdinOf = (run: Awaited<ReturnType<typeof runFake>>, name: string) => {
    const r = run.resources.find((x) => x.name === name);
    assert.ok(r, name);
    const stdin = r.inputs.stdin as string | { value: string };
    return decodeValues(typeof stdin === "string" ? stdin : stdin.value);
  };

  it("asks the server over SSH with the deploy user, the generated key and the pinned host key, in the environment only", async () => {
    const localRuns: Record<string, unknown>[] = [];
    await runFake({ localRuns });
    assert.strictEqual(localRuns.length, 1, "one check per evaluation");
    const run = localRuns[0] as { command: string; environment: Record<string, string>; logging: string };
    assert.match(run.command, /^bash '?\/.*\/scripts\/read-server-check\.sh'?$/);
    assert.deepStrictEqual(Object.keys(run.environment).sort(), ["CHECK_HOST", "CHECK_HOST_KEY", "CHECK_KEY", "CHECK_USER"]);
    assert.strictEqual(run.environment.CHECK_USER, "deploy");
    assert.match(run.environment.CHECK_HOST_KEY, /^ssh-ed25519 /);
    assert.match(run.environment.CHECK_KEY, /BEGIN OPENSSH PRIVATE KEY/);
    assert.ok(!run.command.includes("PRIVATE KEY"), "the key is never on a command line");
    assert.strictEqual(run.logging, "none");
  });

  it("adds REPAIR to exactly the steps with drift; a clean server leaves every step's stdin as it was", async () => {
    const clean = await runFake({ serverCheck: "repair dropstack-base -\nrepair dropstack-site -\nstatus 0" });
    const drifted = await runFake({ serverCheck: "repair dropstack-base -\nrepair dropstack-site -\ndrift dropstack-site changed /etc/nginx/sites-available/dropstack-app.conf\nstatus 1" });
    assert.strictEqual(stdinOf(drifted, "site-nginx").REPAIR, "r1");
    assert.strictEqual(stdinOf(clean, "site-nginx").REPAIR, undefined);
    for (const r of clean.resources.filter((x) => x.type === "command:remote:Command")) {
      const other = drifted.resources.find((x) => x.name === r.name)!;
      if (r.name === "site-nginx") continue;
      assert.deepStrictEqual(other.inputs, r.inputs, `${r.name} is unchanged by the site's drift`);
    }
    const none = await runFake();
    assert.deepStrictEqual(stdinOf(none, "host-base"), stdinOf(clean, "host-base"), "no check yet and a clean check: the same stdin");
  });

  it("keeps a repaired step's token while the server stays clean, and a release step's drift repairs the release", async () => {
    const after = await runFake({ serverCheck: "repair dropstack-site r1\nrepair dropstack-release -\nstatus 0" });
    assert.strictEqual(stdinOf(after, "site-nginx").REPAIR, "r1");
    const programs = await runFake({ serverCheck: "repair dropstack-release -\ndrift dropstack-release changed /etc/supervisor/conf.d/dropstack-app-blue.conf\nstatus 1" });
    assert.strictEqual(stdinOf(programs, "app-release").REPAIR, "r1");
  });

  it("goes ahead on an unreachable server (the steps' own SSH says why), and reads nothing with driftCheck false", async () => {
    const unreachable = await runFake({ serverCheck: "unreachable ssh: connect to host 203.0.113.10 port 22: Connection timed out" });
    assert.strictEqual(stdinOf(unreachable, "host-base").REPAIR, undefined);
    const localRuns: Record<string, unknown>[] = [];
    await runFake({ overrides: { driftCheck: false }, localRuns });
    assert.strictEqual(localRuns.length, 0);
  });

  it("fails the run on a report it cannot read", async () => {
    await assert.rejects(runFake({ serverCheck: "sudo: a terminal is required\nstatus 1" }), /unexpected line in the server's report/);
  });
});

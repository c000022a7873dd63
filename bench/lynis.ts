// Lynis on a provisioned droplet (see bench/README.md, "Lynis hardening index"): one VM on the local
// cloud with the real program (the first `up`), then Debian's lynis installed in the VM with apt and
// `lynis audit system --quick` run as root. Writes bench/results/lynis.json (date, commit, hardening
// index, warnings, suggestions, the VM's accounts and groups) and prints a short table. Needs root:
//   flock /tmp/dropstack-vm.lock npm run bench:lynis
import { execFile } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { promisify } from "util";
import { Pebble } from "../test/localcloud/acme";
import { LocalCloud, UpResult } from "../test/localcloud/engine";
import { ensureImage } from "../test/localcloud/image";
import { localConfig, startLocalPebble } from "../test/localcloud/localStack";
import { sshOutput, SshConnection } from "../test/localcloud/ssh";
import { PROJECT_DIR } from "../test/support/stackConfig";

const execFileP = promisify(execFile);
const RESULTS = path.join(PROJECT_DIR, "bench", "results", "lynis.json");
const FIRST_UP_LIMIT_MS = 45 * 60_000;
const AUDIT_LIMIT_MS = 30 * 60_000;

/** One finding of the report: `warning[]=ID|text|details|solution|`. */
export interface Finding { id: string; text: string; details?: string; solution?: string }

export interface LynisReport {
  hardeningIndex: number | undefined;
  testsPerformed: number | undefined;
  warnings: Finding[];
  suggestions: Finding[];
  /** Lynis' own version, from the report. */
  lynisVersion: string | undefined;
}

/** Parses /var/log/lynis-report.dat (key=value lines; list items as key[]=value). */
export function parseLynisReport(text: string): LynisReport {
  const scalars = new Map<string, string>();
  const lists = new Map<string, string[]>();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const eq = line.indexOf("=");
    if (eq < 0) continue;
    const key = line.slice(0, eq);
    const value = line.slice(eq + 1);
    if (key.endsWith("[]")) lists.set(key.slice(0, -2), [...(lists.get(key.slice(0, -2)) ?? []), value]);
    else scalars.set(key, value);
  }
  const finding = (raw: string): Finding => {
    const [id, text, details, solution] = raw.split("|");
    const opt = (s: string | undefined) => (s && s !== "-" ? s : undefined);
    return { id, text: text ?? "", details: opt(details), solution: opt(solution) };
  };
  const num = (k: string) => (scalars.has(k) ? Number(scalars.get(k)) : undefined);
  return {
    hardeningIndex: num("hardening_index"),
    testsPerformed: num("lynis_tests_done"),
    warnings: (lists.get("warning") ?? []).map(finding),
    suggestions: (lists.get("suggestion") ?? []).map(finding),
    lynisVersion: scalars.get("lynis_version"),
  };
}

async function withLimit<T>(what: string, limitMs: number, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result within ${limitMs / 60_000} min`)), limitMs);
  });
  try {
    return await Promise.race([work, limit]);
  } finally {
    clearTimeout(timer);
  }
}

async function product(): Promise<Record<string, unknown>> {
  const git = async (...args: string[]) => (await execFileP("git", ["-C", PROJECT_DIR, ...args], { maxBuffer: 10 * 1024 * 1024 })).stdout.trim();
  // The product is everything but the bench's own results.
  const dirty = await git("status", "--porcelain", "--", ".", ":(exclude)bench/results");
  return { commit: await git("rev-parse", "HEAD"), dirty: dirty !== "", uncommittedChanges: dirty ? dirty.split("\n") : [] };
}

function printTable(r: LynisReport, firstUpS: number, securityUpdates: string | undefined): void {
  const rows: [string, string][] = [
    ["Lynis version", r.lynisVersion ?? "?"],
    ["tests performed", String(r.testsPerformed ?? "?")],
    ["hardening index", String(r.hardeningIndex ?? "?")],
    ["warnings", String(r.warnings.length)],
    ["suggestions", String(r.suggestions.length)],
    ["first up (s)", String(firstUpS)],
    ["security updates (host-base)", securityUpdates ?? "(no line)"],
  ];
  console.log("\nLynis on the provisioned local-cloud droplet");
  for (const [k, v] of rows) console.log(`  ${k.padEnd(30)} ${v}`);
  for (const w of r.warnings) console.log(`  WARNING ${w.id}: ${w.text}${w.details ? ` (${w.details})` : ""}`);
  for (const s of r.suggestions) console.log(`  suggestion ${s.id}: ${s.text}${s.details ? ` (${s.details})` : ""}`);
}

async function main(): Promise<void> {
  if (process.getuid && process.getuid() !== 0) throw new Error("the local cloud needs root (qemu forwards ports 22/80/443): run as root");
  const t0 = Date.now();
  const log = (m: string) => console.log(`[lynis ${((Date.now() - t0) / 1000).toFixed(0).padStart(4)}s] ${m}`);
  const started = new Date().toISOString();
  const measured = await product();
  if (measured.dirty) log(`NOTE: measuring uncommitted changes: ${(measured.uncommittedChanges as string[]).join("; ")}`);

  const work = fs.mkdtempSync(path.join(os.tmpdir(), "dropstack-lynis-"));
  let pebble: Pebble | undefined;
  let cloud: LocalCloud | undefined;
  try {
    await ensureImage(log);
    pebble = await startLocalPebble(work, log);
    const appDir = path.join(work, "app");
    fs.cpSync(path.join(PROJECT_DIR, "app"), appDir, { recursive: true });
    cloud = new LocalCloud({ stateDir: path.join(work, "state"), stack: "lynis", pebble, log: (m) => log(`  ${m}`), config: localConfig(pebble, { appSource: appDir }) });
    const upStarted = Date.now();
    const first: UpResult = await withLimit("the first up", FIRST_UP_LIMIT_MS, cloud.up());
    const firstUpS = Math.round((Date.now() - upStarted) / 1000);
    log(`first up done in ${firstUpS} s`);

    // Connect as the program does: the generated deploy key, and the generated host key pinned.
    const deployKey = first.resources.find((r) => r.name === "deploy-key-key");
    const hostKey = first.resources.find((r) => r.name === "host-key-key");
    if (!deployKey || !hostKey) throw new Error("the deploy key or host key resource is missing from the up's result");
    const conn: SshConnection = {
      host: String(first.outputs.ipv4Address.value),
      user: "deploy",
      privateKey: String(deployKey.state.privateKeyOpenssh),
      hostKey: String(hostKey.state.publicKeyOpenssh).trim(),
    };
    const asRoot = (script: string, timeoutMs = 10 * 60_000) => sshOutput(conn, "sudo bash -s", { stdin: `set -euo pipefail\n${script}\n`, timeoutMs });

    const base = first.resources.find((r) => r.name === "host-base");
    const securityUpdates = /\[dropstack-base\] security updates: [^\n]*/.exec(String(base?.state.stderr ?? ""))?.[0];

    log("installing lynis in the VM (apt)");
    await asRoot("export DEBIAN_FRONTEND=noninteractive\napt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends lynis >/dev/null");
    log("running lynis audit system --quick (as root)");
    const auditStarted = Date.now();
    await asRoot("rm -f /var/log/lynis-report.dat /var/log/lynis.log\nlynis audit system --quick --no-colors >/dev/null", AUDIT_LIMIT_MS);
    const auditS = Math.round((Date.now() - auditStarted) / 1000);
    const report = parseLynisReport(await asRoot("cat /var/log/lynis-report.dat"));
    const names = (text: string) => text.trim().split("\n").filter(Boolean);
    const accounts = names(await asRoot("getent passwd | cut -d: -f1"));
    const groups = names(await asRoot("getent group | cut -d: -f1"));
    // A kernel security update waits for a reboot (Lynis KRNL-5830). The local cloud boots the
    // image's kernel directly (qemu -kernel), so there a reboot would not run the installed one.
    const kernel = {
      running: (await asRoot("uname -r")).trim(),
      installed: names(await asRoot("ls /boot | sed -n 's/^vmlinuz-//p'")),
      rebootRequired: (await asRoot("[ -e /run/reboot-required ] && echo yes || echo no")).trim() === "yes",
    };

    const results = {
      date: started,
      product: measured,
      vm: "local cloud: qemu TCG, 2 vCPUs, 2048 MB, Debian bookworm, provisioned by the first up (localConfig)",
      command: "lynis audit system --quick --no-colors (as root), Debian's lynis package",
      lynisVersion: report.lynisVersion,
      hardeningIndex: report.hardeningIndex,
      testsPerformed: report.testsPerformed,
      warnings: report.warnings,
      suggestions: report.suggestions,
      securityUpdatesLine: securityUpdates ?? null,
      kernel,
      firstUpSeconds: firstUpS,
      auditSeconds: auditS,
      accounts,
      groups,
    };
    fs.mkdirSync(path.dirname(RESULTS), { recursive: true });
    fs.writeFileSync(`${RESULTS}.tmp`, `${JSON.stringify(results, null, 2)}\n`);
    fs.renameSync(`${RESULTS}.tmp`, RESULTS);
    printTable(report, firstUpS, securityUpdates);
    console.log(`\nWritten: ${path.relative(PROJECT_DIR, RESULTS)}`);
  } finally {
    if (cloud) await cloud.down().catch((e) => console.error(`down failed: ${e}`));
    if (pebble) await pebble.stop().catch((e) => console.error(`pebble stop failed: ${e}`));
    fs.rmSync(work, { recursive: true, force: true });
  }
}

// The Pulumi runtime also rejects a failed resource's own promise, which nobody awaits; cloud.up()
// reports the same failure. Log it instead of letting Node end the run before the cleanup.
process.on("unhandledRejection", (e) => console.error(`(unhandled rejection, reported by up as well) ${String(e).split("\n")[0].slice(0, 300)}`));

if (require.main === module) {
  main().catch((e) => {
    process.exitCode = 1;
    console.error(`bench failed: ${e instanceof Error ? e.stack ?? e.message : e}`);
  });
}

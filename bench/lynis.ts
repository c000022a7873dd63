// Lynis on a provisioned droplet (see bench/README.md, "Lynis hardening index"): one VM on the local
// cloud with the real program (the first `up`), then Debian's lynis installed in the VM with apt and
// `lynis audit system --quick` run as root. Writes bench/results/lynis.json (date, commit, hardening
// index, warnings, suggestions, the VM's accounts and groups) and prints a short table. Needs root:
//   flock /tmp/dropstack-vm.lock npm run bench:lynis
import * as path from "path";
import { localConfig } from "../localcloud/localStack";
import { LocalSession } from "../localcloud/session";
import { PROJECT_DIR } from "../localcloud/stackConfig";
import { benchMain, BenchRun, table, writeResults } from "./report";

const RESULTS = path.join(PROJECT_DIR, "bench", "results", "lynis.json");
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
  console.log(table(rows));
  for (const w of r.warnings) console.log(`  WARNING ${w.id}: ${w.text}${w.details ? ` (${w.details})` : ""}`);
  for (const s of r.suggestions) console.log(`  suggestion ${s.id}: ${s.text}${s.details ? ` (${s.details})` : ""}`);
}

async function main({ log, started, product: measured }: BenchRun): Promise<void> {
  // The first up of the sample app; SSH as the program connects: the deploy key, the host key pinned.
  const session = await LocalSession.start({ stack: "lynis", log, config: (pebble, appDir) => localConfig(pebble, { appSource: appDir }) });
  try {
    const firstUpS = Math.round(session.firstUpSeconds);
    log(`first up done in ${firstUpS} s`);
    const asRoot = (script: string, timeoutMs?: number) => session.asRoot(script, timeoutMs);
    const base = session.first.resources.find((r) => r.name === "host-base");
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
    writeResults(RESULTS, {
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
    });
    printTable(report, firstUpS, securityUpdates);
    console.log(`\nWritten: ${path.relative(PROJECT_DIR, RESULTS)}`);
  } finally {
    await session.stop(log);
  }
}

if (require.main === module) benchMain("lynis", main);

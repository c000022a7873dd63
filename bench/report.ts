// What every benchmark reports through: rounding, the text tables, the results file with the
// machine and the product measured (commit, and the diff of any uncommitted change), and the
// sampler of other VMs on this host (another run halves the VM's CPU; every measurement says if one ran).
import { execFile } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { promisify } from "util";
import { PROJECT_DIR } from "../localcloud/stackConfig";
import type { Logger } from "../localcloud/util";

const execFileP = promisify(execFile);

export const round = (x: number, digits = 1) => Math.round(x * 10 ** digits) / 10 ** digits;

/** The middle value (the upper one of an even count). */
export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Columns padded to their widest cell: the first left-aligned, the others right-aligned. */
export function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ")).join("\n");
}

/** Writes `results` as JSON, whole or not at all (through a temporary file). */
export function writeResults(file: string, results: unknown): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(`${file}.tmp`, `${JSON.stringify(results, null, 2)}\n`);
  fs.renameSync(`${file}.tmp`, file);
}

/** This host, the VM's shape, and wrk's version on the host (if any). */
export async function machine(): Promise<Record<string, unknown>> {
  return {
    nproc: os.cpus().length,
    cpu: os.cpus()[0]?.model,
    memoryGb: round(os.totalmem() / 2 ** 30),
    kernel: os.release(),
    node: process.version,
    wrk: (await execFileP("wrk", ["--version"]).catch((e: { stdout?: string }) => ({ stdout: e.stdout ?? "" }))).stdout.split("\n")[0],
    vm: "qemu TCG (no KVM), 2 vCPUs, 2048 MB, Debian bookworm; gunicorn workers: 2 (localConfig)",
  };
}

export interface Product {
  commit: string;
  /** `git status --porcelain` lines of the product (bench/ and package.json left out). */
  uncommittedChanges: string[];
  diff: string;
}

/** The product measured: the commit, and any uncommitted change to it (never measured silently). */
export async function product(): Promise<Product> {
  const git = async (...args: string[]) => (await execFileP("git", ["-C", PROJECT_DIR, ...args], { maxBuffer: 10 * 1024 * 1024 })).stdout.trim();
  const productPaths = ["--", ".", ":(exclude)bench", ":(exclude)package.json"];
  const dirty = await git("status", "--porcelain", ...productPaths);
  return { commit: await git("rev-parse", "HEAD"), uncommittedChanges: dirty ? dirty.split("\n") : [], diff: dirty ? await git("diff", "HEAD", ...productPaths) : "" };
}

/** qemu processes on this host, sampled every 2 s (and whenever asked) from /proc. */
export class OtherVms {
  private readonly seen: { at: number; vm: string; cmd: string }[] = [];
  private timer: NodeJS.Timeout | undefined;

  start(): void {
    this.timer = setInterval(() => this.sample(), 2000);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private sample(): void {
    for (const pid of fs.readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
      let cmd = "";
      try {
        cmd = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ");
      } catch {
        continue;
      }
      if (cmd.startsWith("qemu-system")) this.seen.push({ at: Date.now(), vm: `pid ${pid}: ${cmd.slice(0, 40)}`, cmd });
    }
  }

  /**
   * The VMs seen between t1 and t2 other than ours (whose command line names `ownDir`, the run's
   * scratch folder). Ours is told apart when asked, not when sampled: the sampling starts before
   * the first `up` makes that folder.
   */
  during(t1: number, t2: number, ownDir: string): string[] {
    this.sample();
    return [...new Set(this.seen.filter((o) => o.at >= t1 - 2500 && o.at <= t2 + 2500 && !o.cmd.includes(ownDir)).map((o) => o.vm))];
  }
}

/** What a benchmark's body is given: its log (seconds since the start), when it started, the product measured. */
export interface BenchRun {
  log: Logger;
  started: string;
  product: Product;
}

/**
 * A benchmark's entry point: the local cloud needs root; the log counts seconds from the start;
 * the product measured is read first (a run of uncommitted changes says so); a failure of `body`
 * (after its own cleanup) ends the process with exit code 1.
 */
export function benchMain(name: string, body: (run: BenchRun) => Promise<void>): void {
  // The Pulumi runtime also rejects a failed resource's own promise, which nobody awaits; the up
  // reports the same failure. Log it instead of letting Node end the run before the cleanup.
  process.on("unhandledRejection", (e) => console.error(`(unhandled rejection, reported by up as well) ${String(e).split("\n")[0].slice(0, 300)}`));
  const t0 = Date.now();
  const log = (m: string) => console.log(`[${name} ${((Date.now() - t0) / 1000).toFixed(0).padStart(4)}s] ${m}`);
  (async () => {
    if (process.getuid && process.getuid() !== 0) throw new Error("the local cloud needs root (qemu forwards ports 22/80/443): run as root");
    const started = new Date().toISOString();
    const measured = await product();
    if (measured.uncommittedChanges.length) log(`NOTE: measuring uncommitted changes: ${measured.uncommittedChanges.join("; ")}`);
    await body({ log, started, product: measured });
  })().catch((e) => {
    console.error(`bench ${name} failed: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
    process.exit(1);
  });
}


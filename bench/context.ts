// The run's state, in one object handed to every benchmark: the booted stack, the log, the results
// being filled, the sampler of other VMs, and the app version the site serves.
import * as assert from "assert";
import * as fs from "fs";
import * as path from "path";
import { UpResult } from "../localcloud/engine";
import { LocalSession } from "../localcloud/session";
import { Logger } from "../localcloud/util";
import type { WindowResult } from "./loadWindow";
import { OtherVms, Product } from "./report";

/** bench/results/releases.json. */
export interface Results {
  date: string;
  machine: Record<string, unknown>;
  product: Product | Record<string, never>;
  settings: Record<string, unknown>;
  capacityProbe: Record<string, unknown>;
  releaseUnderLoad: WindowResult[];
  /** Windows that did not cover their action (re-run with a longer window); kept for the record. */
  discardedWindows: WindowResult[];
  upWallTime: Record<string, unknown>;
  throughput: Record<string, unknown>;
  problems: string[];
}

/** Sets the app copy's `VERSION = "v<n>"` line. */
export function setAppVersion(appDir: string, n: number): void {
  const file = path.join(appDir, "app.py");
  const text = fs.readFileSync(file, "utf8");
  const re = /^VERSION = "v\d+"$/m;
  assert.ok(re.test(text), `${file} has no VERSION = "v<n>" line`);
  fs.writeFileSync(file, text.replace(re, `VERSION = "v${n}"`));
}

export class Bench {
  /** The app copy's version number: v1 at the first up, one more for every release. */
  private versionNumber = 1;

  constructor(
    readonly session: LocalSession,
    readonly log: Logger,
    readonly results: Results,
    private readonly others: OtherVms,
  ) {}

  /** The version in the app copy, e.g. "v3" (what the site serves once it is released). */
  get version(): string {
    return `v${this.versionNumber}`;
  }

  /** Changes the app copy's version (not yet released); returns the new one. */
  nextVersion(): string {
    setAppVersion(this.session.appDir, ++this.versionNumber);
    return this.version;
  }

  problem(message: string): void {
    this.results.problems.push(message);
  }

  /** Other VMs seen between t1 and t2 (sampled every 2 s); any is also a problem of the run. */
  othersDuring(t1: number, t2: number): string[] {
    const seen = this.others.during(t1, t2, this.session.work);
    if (seen.length) this.problem(`another VM ran during a measurement (${new Date(t1).toISOString()} .. ${new Date(t2).toISOString()}): ${seen.join("; ")}`);
    return seen;
  }

  /** Waits until the site serves `want` (by default the app copy's version). */
  async waitForVersion(want = this.version, timeoutMs = 120_000): Promise<void> {
    await this.session.waitForSite(`the site serving ${want}`, timeoutMs, (r) => r.body.includes(`version: ${want}<`));
  }

  /** cloud.up(), bounded: the engine's own steps have limits, this bounds the whole. */
  async up(what: string, limitMs: number): Promise<UpResult> {
    let timer: NodeJS.Timeout | undefined;
    const limit = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no result within ${limitMs / 60_000} min`)), limitMs);
    });
    try {
      return await Promise.race([this.session.cloud.up(), limit]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** A measurement that must not end the run: a failure is recorded and the next one runs. */
  async guarded(what: string, fn: () => Promise<unknown>): Promise<void> {
    try {
      await fn();
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      this.problem(`${what}: ${msg.slice(0, 500)}`);
      this.log(`${what} failed: ${msg.slice(0, 2000)}`);
    }
  }
}

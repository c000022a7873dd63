// A stack on the local cloud, booted and reachable the way a user reaches theirs: the image,
// Pebble, the first `up`, SSH pinned to the generated host key, curl with Pebble's root trusted.
// One place for what the end-to-end suite and the benchmarks both need.
import { execFile } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { promisify } from "util";
import { perDroplet } from "../components/server";
import { Pebble } from "./acme";
import { LocalCloud, UpResult } from "./engine";
import { ensureImage } from "./image";
import { LOCAL_FQDN, startLocalPebble } from "./localStack";
import { sshOutput, SshConnection } from "./ssh";
import { PROJECT_DIR } from "./stackConfig";
import { Logger, waitUntil } from "./util";

const execFileP = promisify(execFile);

export interface Http { code: number; body: string; headers: string }

export interface SessionOptions {
  /** Stack name in the local cloud's state. */
  stack: string;
  /** The stack's flat config map, given Pebble (the ACME URL and CA bundle come from it). */
  config: (pebble: Pebble, appDir: string) => Record<string, string>;
  /** Config keys stored as secrets. */
  secretKeys?: string[];
  log: Logger;
}

/** The first `up`'s steps as named phases (seconds), the same names everywhere figures appear. */
export function stepPhases(up: UpResult): [string, number][] {
  const s = (...names: string[]) => up.steps.filter((x) => names.includes(x.name)).reduce((a, x) => a + x.ms, 0) / 1000;
  return [
    ["boot (droplet until ssh answers)", s("server-droplet")],
    ["wait for cloud-init", s("host-cloud-init")],
    ["provisioning (packages, users, nginx)", s("host-base")],
    ["reboot for the updates, when they need it", s("host-reboot", "host-booted")],
    ["certificate (certbot + Pebble)", s("certificate-certbot")],
    ["nginx site", s("site-nginx")],
    ["volume and database (mount, PostgreSQL, seed)", s("data-mount", "database-postgresql", "database-seed-upload", "database-seed")],
    ["release (upload + venv + health check)", s("app-upload", "app-release")],
  ];
}

/** The address the site's name points at after `up`: the load balancer's when there is one. */
function siteAddress(up: UpResult): string {
  const lb = up.outputs.loadBalancerIp?.value;
  return typeof lb === "string" && lb !== "" ? lb : String(up.outputs.ipv4Address.value);
}

/** One booted stack: `LocalSession.start`, then the helpers, then `stop`. */
export class LocalSession {
  /** The droplet the session talks to (changes when an up replaces it). */
  private dropletId: string;

  private constructor(
    /** Scratch folder: the app copy, the state, Pebble's files. Removed by stop(). */
    readonly work: string,
    /** A copy of the sample app, for the test or benchmark to edit. */
    readonly appDir: string,
    readonly pebble: Pebble,
    readonly cloud: LocalCloud,
    /** The first `up`, with its steps and timings. */
    readonly first: UpResult,
    /** Seconds the image took (0 when cached) and the first up took. */
    readonly imageSeconds: number,
    readonly firstUpSeconds: number,
    /** The droplet's address (a replaced droplet has a new one: see follow()); with droplets > 1 the first droplet's. */
    public ip: string,
    /** SSH as the deploy user with the generated key, the host key pinned. */
    public conn: SshConnection,
    /** A file holding the root that Pebble's certificates chain to. */
    readonly rootCa: string,
  ) {
    this.dropletId = String(first.outputs.dropletId.value);
    this.siteIp = siteAddress(first);
  }

  /** Where the site's name points: the droplet, or with droplets > 1 the load balancer. */
  public siteIp: string;

  /** The id of droplet `i` (0: the first) of the stack as `up` left it (named as the program names them: perDroplet). */
  dropletIdOf(up: UpResult, i: number): string {
    const id = up.resources.find((r) => r.name === `${perDroplet("server", i)}-droplet`)?.id;
    if (!id) throw new Error(`the stack has no droplet ${i + 1}`);
    return String(id);
  }

  /** SSH to droplet `i` (0: the first) of the stack as `up` left it, its own host key pinned. */
  dropletConnection(up: UpResult, i: number): SshConnection {
    const addresses = up.outputs.dropletAddresses?.value as string[] | undefined;
    const host = addresses?.[i];
    if (!host) throw new Error(`the stack has no droplet ${i + 1} (addresses: ${JSON.stringify(addresses)})`);
    const hostKey = up.resources.find((r) => r.name === `${perDroplet("host-key", i)}-key`)?.state.publicKeyOpenssh;
    return { ...this.conn, host, hostKey: String(hostKey).trim() };
  }

  /**
   * Builds or reuses the image, starts Pebble, runs the first `up` of the sample app's copy. On any
   * failure what was started is stopped again (the stack deleted, Pebble stopped, the scratch
   * folder removed) before the error is thrown.
   */
  static async start(opts: SessionOptions): Promise<LocalSession> {
    const work = fs.mkdtempSync(path.join(os.tmpdir(), `dropstack-${opts.stack}-`));
    let pebble: Pebble | undefined;
    let cloud: LocalCloud | undefined;
    try {
      const appDir = path.join(work, "app");
      fs.cpSync(path.join(PROJECT_DIR, "app"), appDir, { recursive: true });
      let t = Date.now();
      await ensureImage(opts.log);
      const imageSeconds = (Date.now() - t) / 1000;
      // On 443 like a real ACME server: the droplet's firewall lets HTTPS out and nothing else.
      pebble = await startLocalPebble(work, opts.log);
      cloud = new LocalCloud({
        stateDir: path.join(work, "state"), stack: opts.stack, pebble, log: opts.log,
        config: opts.config(pebble, appDir), secretKeys: opts.secretKeys,
      });
      t = Date.now();
      const first = await cloud.up();
      const firstUpSeconds = (Date.now() - t) / 1000;
      const ip = String(first.outputs.ipv4Address.value);
      const state = (name: string) => first.resources.find((r) => r.name === name)?.state ?? {};
      const conn = {
        host: ip, user: "deploy",
        privateKey: String(state("deploy-key-key").privateKeyOpenssh),
        hostKey: String(state("host-key-key").publicKeyOpenssh).trim(),
      };
      const rootCa = path.join(work, "pebble-root.pem");
      fs.writeFileSync(rootCa, await pebble.rootCertificatePem());
      return new LocalSession(work, appDir, pebble, cloud, first, imageSeconds, firstUpSeconds, ip, conn, rootCa);
    } catch (e) {
      await cloud?.down().catch((d) => opts.log(`down after a failed start: ${d}`));
      await pebble?.stop().catch((d) => opts.log(`pebble stop after a failed start: ${d}`));
      fs.rmSync(work, { recursive: true, force: true });
      throw e;
    }
  }

  /** After an `up` that replaced the droplet: reach the new one, at its address, as the deploy user it has now. */
  follow(up: UpResult, deployUser: string): void {
    this.ip = String(up.outputs.ipv4Address.value);
    this.conn = { ...this.conn, host: this.ip, user: deployUser };
    this.dropletId = String(up.outputs.dropletId.value);
    this.siteIp = siteAddress(up);
  }

  /** Runs a command on the droplet as the deploy user; throws with its output when it fails. */
  onServer(command: string, stdin?: string, timeoutMs = 10 * 60_000): Promise<string> {
    return sshOutput(this.conn, command, { stdin, timeoutMs });
  }

  /** A script run as root on the droplet (bash -s, set -euo pipefail). */
  asRoot(script: string, timeoutMs?: number): Promise<string> {
    return this.onServer("sudo bash -s", `set -euo pipefail\n${script}\n`, timeoutMs);
  }

  /** curl through the site's address (the droplet's, or the load balancer's) with the site's name, trusting Pebble's root. */
  async curl(url: string, extra: string[] = []): Promise<Http> {
    const u = new URL(url);
    const port = u.protocol === "https:" ? 443 : 80;
    const args = ["-sS", "--max-time", "20", "--cacert", this.rootCa, "--resolve", `${u.hostname}:${port}:${this.siteIp}`, "-D", "-", ...extra, url];
    const { stdout } = await execFileP("curl", args, { maxBuffer: 10 * 1024 * 1024 });
    const split = stdout.indexOf("\r\n\r\n");
    const headers = stdout.slice(0, split);
    return { code: Number(/^HTTP\/\S+ (\d+)/.exec(headers)?.[1] ?? 0), headers, body: stdout.slice(split + 4) };
  }

  /** Waits until the site's page answers 200 and `accept` (default: any 200) holds for it. */
  async waitForSite(what: string, timeoutMs: number, accept: (r: Http) => boolean = () => true): Promise<Http> {
    let last = "nothing yet";
    return waitUntil(what, timeoutMs, async () => {
      try {
        const r = await this.curl(`https://${LOCAL_FQDN}/`);
        last = `${r.code} ${r.body.slice(0, 200)}`;
        return r.code === 200 && accept(r) ? r : undefined;
      } catch (e) {
        last = String(e);
        return undefined;
      }
    }, { intervalMs: 500, debug: () => `last answer: ${last}` });
  }

  /** Raises the app copy's VERSION ("v3" → "v4"); the version before and after. */
  bumpVersion(): [string, string] {
    const file = path.join(this.appDir, "app.py");
    const text = fs.readFileSync(file, "utf8");
    const now = /^VERSION = "(v\d+)"$/m.exec(text)?.[1];
    if (!now) throw new Error(`${file} has no VERSION = "v<n>" line`);
    const next = `v${Number(now.slice(1)) + 1}`;
    fs.writeFileSync(file, text.replace(`VERSION = "${now}"`, `VERSION = "${next}"`));
    return [now, next];
  }

  /** The live blue/green slot's supervisor program, e.g. "app-blue". */
  async liveProgram(): Promise<string> {
    const status = await this.onServer("sudo dropstack-switch --status");
    const slot = /slot=(blue|green)/.exec(status)?.[1];
    if (!slot) throw new Error(`no live slot: ${status}`);
    return `app-${slot}`;
  }

  /** The VM's console, last lines (for failure reports). */
  consoleTail(lines = 40): string {
    return this.cloud.vm(this.dropletId)?.consoleTail(lines) ?? "(no VM)";
  }

  /** Deletes the stack (powers the VM off), stops Pebble, removes the scratch folder. */
  async stop(log: Logger): Promise<void> {
    await this.cloud.down().catch((e) => log(`down failed: ${e}`));
    await this.pebble.stop().catch((e) => log(`pebble stop failed: ${e}`));
    fs.rmSync(this.work, { recursive: true, force: true });
  }
}

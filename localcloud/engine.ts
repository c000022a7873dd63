// The local cloud's engine: runs the real program (index.ts) under pulumi.runtime.setMocks, where
// the mocks do for real what DigitalOcean and the command provider would do:
//   - Droplet: boots a VM from the droplet's own userData and registered SSH keys (NoCloud seed).
//   - DnsRecord: adds the record to pebble-challtestsrv's DNS (what Pebble resolves names with).
//   - Firewall / SshKey: recorded and checked for consistency with the droplet.
//   - tls PrivateKey: a real key pair (ssh-keygen).
//   - Volume / VolumeAttachment: a disk file (ext4 when asked), plugged into the droplet's VM as
//     the SCSI disk DigitalOcean presents (scsi-0DO_Volume_<name>); it outlives the droplet.
//   - random RandomPassword: a real random password.
//   - DatabaseCluster / DatabaseDb / DatabaseUser / DatabaseFirewall (managed PostgreSQL): a real
//     PostgreSQL server on this host with TLS and passwords, reached from the VMs at its private
//     address; its firewall's trusted sources are the only entries in pg_hba (managedPostgres.ts).
//   - getVpc: every droplet is in one VPC, qemu's user network.
//   - docker provider / Image: the image is built on the droplet's Docker, reached as the provider
//     says (ssh://user@address, its key and known_hosts files), the base image imported (docker.ts).
//   - local run (command:local:run, the program's drift check) and local Command (the rolling
//     release): the command runs on this host, as the provider runs it (sh -c, the given
//     environment and stdin); a non-zero exit fails it.
//   - remote Command / CopyToRemote: executed over SSH with the given connection, stdin and
//     environment (sent as SSH env requests, as the provider does); a non-zero exit fails the
//     resource with its stderr.
// A state file makes a second `up` behave like the engine: unchanged inputs run nothing and keep
// their outputs; changed ones run `update` (or `create` again without one), changed triggers
// replace; resources no longer registered run their `delete`.
import { spawn } from "child_process";
import * as crypto from "crypto";
import * as fs from "fs";
import * as path from "path";
import * as pulumi from "@pulumi/pulumi";
import { MANAGED_POSTGRES_PORT } from "../components/config";
import { folderHash } from "../components/shell";
import { runProgram, RunResult } from "./program";
import { Pebble } from "./acme";
import { buildImage, providerConnection } from "./docker";
import { issueLetsEncryptCertificate } from "./lbCertificate";
import { LbSpec, LocalLoadBalancer } from "./loadBalancer";
import { isRunning, registerProcess, stopProcess } from "./processes";
import { sftpWriteDir, sshExec, SshConnection, waitForSshLogin } from "./ssh";
import { run } from "./util";
import { attachVolume, bootVm, detachVolume, freeLoopbackAddress, resizeVolume, resumeVm, Vm } from "./vm";
import { createVolumeFile, growVolumeFile, randomPassword, volumeFile, volumeNode } from "./volumes";
import * as managedPg from "./managedPostgres";

type Inputs = Record<string, unknown>;

const CLUSTER = "digitalocean:index/databaseCluster:DatabaseCluster";
const LOAD_BALANCER = "digitalocean:index/loadBalancer:LoadBalancer";
const CERTIFICATE = "digitalocean:index/certificate:Certificate";
/** The one VPC of the local cloud (qemu's user network). */
const LOCAL_VPC_ID = "local-vpc";

/** A managed cluster's record, from its resource's outputs. */
function clusterOf(r: { outputs: Inputs }): managedPg.ClusterRecord {
  return { dataDir: String(r.outputs.dataDir), version: String(r.outputs.version), adminPassword: String(r.outputs.password) };
}


interface StoredResource {
  type: string;
  name: string;
  /** Hash of the comparable inputs (secrets unwrapped, assets by content). */
  inputsHash: string;
  /** Hash of the `triggers` input alone (a change replaces). */
  triggersHash: string;
  id: string;
  outputs: Inputs;
  /** For deletes: the resource's `delete` command and connection, if any. */
  deleteCommand?: string;
  connection?: SshConnection;
}

/** How long a failed up waits for the steps still under way (a remote command's own limit is 30 min). */
const UNDER_WAY_LIMIT_MS = 30 * 60_000;

interface StoredVm { dropletId: string; pid: number; dir: string; address: string }

interface State { resources: Record<string, StoredResource>; vms: Record<string, StoredVm> }

export interface LocalCloudOptions {
  /** Where the state file, VMs and keys live. */
  stateDir: string;
  /** Stack name (droplet names etc.). */
  stack: string;
  /** Flat config map, as the CLI would pass it. */
  config: Record<string, string>;
  secretKeys?: string[];
  /** Zones the simulated DigitalOcean account manages. Default: the stack's dropstack:domain. */
  managedDomains?: string[];
  /** Pebble (mock DNS + ACME) serving this cloud. */
  pebble: Pebble;
  log?: (line: string) => void;
}

export interface StepRecord { type: string; name: string; op: "create" | "update" | "replace" | "same" | "delete"; ms: number }

export interface UpResult extends RunResult {
  steps: StepRecord[];
}

const SIG = pulumi.runtime.specialSigKey;

/** Unwraps the SDK's secret markers, and awaits asset/archive paths. */
async function unwrap(v: unknown): Promise<unknown> {
  if (Array.isArray(v)) return Promise.all(v.map(unwrap));
  if (v && typeof v === "object") {
    const o = v as Record<string, unknown>;
    if (o[SIG] === pulumi.runtime.specialSecretSig) return unwrap(o.value);
    if (pulumi.asset.Archive.isInstance(v) || pulumi.asset.Asset.isInstance(v)) {
      const p = await (o as { path?: Promise<string> }).path;
      // a FileArchive is a folder, a FileAsset one file: either way its content decides
      const hash = !p || !fs.existsSync(p) ? undefined : fs.statSync(p).isDirectory() ? folderHash(p) : sha(fs.readFileSync(p).toString("base64"));
      return { assetPath: p, assetHash: hash };
    }
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(o)) out[k] = await unwrap(x);
    return out;
  }
  return v;
}

/** JSON with sorted keys: equal inputs give equal text. */
function stableJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableJson).join(",")}]`;
  if (v && typeof v === "object") {
    return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${stableJson((v as Record<string, unknown>)[k])}`).join(",")}}`;
  }
  return JSON.stringify(v ?? null);
}

const sha = (s: string) => crypto.createHash("sha256").update(s).digest("hex");
const key = (type: string, name: string) => `${type}::${name}`;

/** DigitalOcean's fingerprint of a public key: MD5 of the key blob, colon-separated. */
function fingerprint(publicKey: string): string {
  const blob = Buffer.from(publicKey.trim().split(/\s+/)[1] ?? "", "base64");
  return crypto.createHash("md5").update(blob).digest("hex").match(/../g)!.join(":");
}

/** `sh -c <command>` as the command provider runs a local command: the environment added to this process's, stdin fed; each output line to `onLine` as it comes. */
function runShell(inputs: Inputs, command: string, onLine?: (stream: "stdout" | "stderr", line: string) => void): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env, ...(inputs.environment as Record<string, string> | undefined) };
    const child = spawn("/bin/sh", ["-c", command], { env, cwd: inputs.dir ? String(inputs.dir) : undefined, stdio: ["pipe", "pipe", "pipe"] });
    const text = { stdout: "", stderr: "" };
    for (const stream of ["stdout", "stderr"] as const) {
      let partial = "";
      child[stream].on("data", (d: Buffer) => {
        text[stream] += d.toString();
        const lines = (partial + d.toString()).split("\n");
        partial = lines.pop() ?? "";
        if (onLine) for (const line of lines) onLine(stream, line);
      });
    }
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout: text.stdout.replace(/\n$/, ""), stderr: text.stderr.replace(/\n$/, "") }));
    child.stdin.end(inputs.stdin === undefined ? "" : String(inputs.stdin));
  });
}

/** Whether a command's `logging` setting ("stdout", "stderr", "stdoutAndStderr", "none") shows a line of `stream` while it runs. */
const streamed = (logging: string, stream: "stdout" | "stderr") => logging === "stdoutAndStderr" || logging === stream;

/** The command provider's local `run`: its output returned; a non-zero exit fails it. */
async function runLocal(inputs: Inputs): Promise<Inputs> {
  const r = await runShell(inputs, String(inputs.command));
  if (r.code !== 0) throw new Error(`local run: exit ${r.code}: ${r.stderr.slice(-2000)}`);
  return { ...inputs, stdout: r.stdout, stderr: r.stderr };
}

function toConnection(c: Inputs): SshConnection {
  return { host: String(c.host), port: c.port ? Number(c.port) : 22, user: String(c.user ?? "root"), privateKey: String(c.privateKey), hostKey: c.hostKey ? String(c.hostKey) : undefined };
}

export class LocalCloud {
  private state: State;
  private readonly statePath: string;
  private readonly vms = new Map<string, Vm>();
  /** The load balancers' HAProxy, by load balancer id (they live as long as this process). */
  private readonly lbs = new Map<string, LocalLoadBalancer>();
  private readonly log: (line: string) => void;
  private steps: StepRecord[] = [];
  private registered = new Set<string>();
  /** Resource operations under way, and whether the up failed (then no new one starts). */
  private readonly underWay = new Set<Promise<unknown>>();
  private failing = false;
  /** Public keys registered as DigitalOcean SSH keys in this run, by fingerprint. */
  private readonly sshKeys = new Map<string, string>();

  constructor(private opts: LocalCloudOptions) {
    this.log = opts.log ?? ((line) => console.log(line));
    fs.mkdirSync(opts.stateDir, { recursive: true, mode: 0o700 });
    this.statePath = path.join(opts.stateDir, "state.json");
    this.state = fs.existsSync(this.statePath) ? JSON.parse(fs.readFileSync(this.statePath, "utf8")) : { resources: {}, vms: {} };
  }

  private save(): void {
    for (const [id, vm] of this.vms) if (this.state.vms[id]) this.state.vms[id].pid = vm.pid; // a reboot starts a new qemu
    fs.writeFileSync(this.statePath, JSON.stringify(this.state, null, 2), { mode: 0o600 });
  }

  /** `pulumi up`: evaluates the program, applying each resource for real. */
  async up(opts: { preview?: boolean } = {}): Promise<UpResult> {
    this.steps = [];
    this.registered = new Set();
    this.failing = false;
    const started = Date.now();
    this.log(`${opts.preview ? "Previewing" : "Updating"} (local cloud, stack ${this.opts.stack})`);
    const result = await runProgram({
      stack: this.opts.stack,
      config: this.opts.config,
      secretKeys: this.opts.secretKeys,
      preview: opts.preview,
      // (the SDK reports a failed invoke by the error's gRPC `details` only: the message goes there too)
      call: async (args) => this.invoke(args).catch((e: Error & { details?: string }) => {
        e.details ??= e.message;
        throw e;
      }),
      newResource: async (args) => {
        if (!args.custom) return { id: "", state: {} }; // component resources: nothing to do
        if (this.failing) throw new Error(`${args.name}: not started, an earlier step of this up failed`);
        const operation = opts.preview ? this.previewResource(args) : this.applyResource(args);
        this.underWay.add(operation);
        try {
          return await operation;
        } finally {
          this.underWay.delete(operation);
        }
      },
      // As Pulumi's engine does when a step fails: nothing new starts, and the steps under way
      // finish (bounded here) before the up fails, so that no cleanup runs beneath them.
      onFailure: async () => {
        this.failing = true;
        const deadline = Date.now() + UNDER_WAY_LIMIT_MS;
        while (this.underWay.size && Date.now() < deadline) {
          this.log(`  (waiting for ${this.underWay.size} step(s) under way to finish)`);
          await Promise.race([Promise.allSettled([...this.underWay]), new Promise((r) => setTimeout(r, Math.max(0, deadline - Date.now())).unref())]);
        }
        if (!opts.preview) this.save();
      },
    });
    if (!opts.preview) {
      await this.deleteUnregistered();
      this.save();
    }
    this.log(`Outputs:`);
    for (const [name, o] of Object.entries(result.outputs)) {
      this.log(`    ${name}: ${o.secret ? "[secret]" : o.known ? JSON.stringify(o.value) : "output<string>"}`);
    }
    this.log(`Duration: ${((Date.now() - started) / 1000).toFixed(1)}s`);
    return { ...result, steps: this.steps };
  }

  /** `pulumi destroy`: runs deletes, powers VMs off, clears DNS, forgets the state. */
  async down(): Promise<void> {
    try {
      for (const k of Object.keys(this.state.resources).reverse()) {
        await this.deleteResource(this.state.resources[k]);
        delete this.state.resources[k];
        this.save();
      }
    } finally {
      // Whether every delete ran or one failed (its resource and those after it stay in the state,
      // as a failed destroy leaves them): nothing the stack started keeps running on this host.
      for (const [id, lb] of this.lbs) {
        await lb.stop().catch((e) => this.log(`    load balancer ${id} did not stop: ${e}`));
        this.lbs.delete(id);
      }
      for (const r of Object.values(this.state.resources)) {
        if (r.type === CLUSTER) await managedPg.stopCluster(clusterOf(r)).catch((e) => this.log(`    managed cluster ${r.name} did not stop: ${e}`));
      }
      for (const vm of Object.values(this.state.vms)) await this.stopVm(vm).catch((e) => this.log(`    VM ${vm.address} did not stop: ${e}`));
    }
    this.state.vms = {};
    this.save();
  }

  /** Data sources: the account's DNS zones, and the droplets' VPC; and local commands. */
  private async invoke(args: pulumi.runtime.MockCallArgs): Promise<Record<string, unknown>> {
    if (args.token === "command:local:run") return runLocal(args.inputs);
    if (args.token === "digitalocean:index/getVpc:getVpc") {
      if (args.inputs.id !== LOCAL_VPC_ID) throw new Error(`local cloud: VPC ${String(args.inputs.id)} does not exist (the local droplets are in ${LOCAL_VPC_ID})`);
      return { id: LOCAL_VPC_ID, name: "local", region: this.opts.config["dropstack:region"] ?? "fra1", default: true, ...managedPg.LOCAL_VPC, urn: `do:vpc:${LOCAL_VPC_ID}` };
    }
    if (args.token !== "digitalocean:index/getDomains:getDomains") throw new Error(`local cloud: no stand-in for invoke ${args.token}`);
    const managed = this.opts.managedDomains ?? [this.opts.config["dropstack:domain"]];
    const wanted = ((args.inputs.filters as { values: string[] }[] | undefined) ?? []).flatMap((f) => f.values);
    const domains = managed.filter((d) => !wanted.length || wanted.includes(d)).map((name) => ({ name, ttl: 1800, urn: `do:domain:${name}`, zoneFile: "" }));
    return { id: "domains", domains };
  }

  /** Changes the stack's config for the next `up` (as `pulumi config set` would). */
  configure(config: Record<string, string>): void {
    this.opts.config = config;
  }

  /** The running VM of a droplet (when booted by this process). */
  vm(dropletId: string): Vm | undefined {
    return this.vms.get(dropletId);
  }

  /** Leaves VMs running after this process exits (for `npm run local -- up`). */
  detachVms(): void {
    for (const vm of this.vms.values()) vm.detach();
    for (const r of Object.values(this.state.resources)) if (r.type === CLUSTER) managedPg.detachCluster(clusterOf(r));
  }

  /** What `pulumi preview` shows: nothing runs; each resource is a create, an update, or the same (its inputs unchanged). */
  private async previewResource(args: pulumi.runtime.MockResourceArgs): Promise<{ id: string; state: Inputs }> {
    const stored = this.state.resources[key(args.type, args.name)];
    const same = stored !== undefined && stored.inputsHash === sha(stableJson(await unwrap(args.inputs)));
    const op: StepRecord["op"] = !stored ? "create" : same ? "same" : "update";
    this.steps.push({ type: args.type, name: args.name, op, ms: 0 });
    if (!same) this.log(`  ${stored ? "~" : "+"} ${args.type} ${args.name} (preview: would ${op}; nothing runs)`);
    return { id: stored?.id ?? "", state: stored?.outputs ?? {} };
  }

  private async applyResource(args: pulumi.runtime.MockResourceArgs): Promise<{ id: string; state: Inputs }> {
    const k = key(args.type, args.name);
    this.registered.add(k);
    const inputs = (await unwrap(args.inputs)) as Inputs;
    const inputsHash = sha(stableJson(inputs));
    const triggersHash = sha(stableJson(inputs.triggers ?? null));
    const stored = this.state.resources[k];
    const started = Date.now();
    let op: StepRecord["op"];
    let res: { id: string; outputs: Inputs };
    if (stored && stored.inputsHash === inputsHash) {
      op = "same";
      res = { id: stored.id, outputs: stored.outputs };
      await this.refresh(args.type, inputs, stored);
    } else {
      op = !stored ? "create" : stored.triggersHash !== triggersHash || this.replacesOnChange(args.type, stored, inputs) ? "replace" : "update";
      this.log(`  ${op === "create" ? "+" : op === "replace" ? "+-" : "~"} ${args.type} ${args.name} ${op}...`);
      try {
        res = await this.perform(args.type, args.name, inputs, op, stored, args.provider);
      } catch (e) {
        this.log(`  ** ${args.type} ${args.name} ${op} failed after ${((Date.now() - started) / 1000).toFixed(1)}s`);
        throw e;
      }
      if (op === "replace" && stored) await this.deleteResource(stored);
    }
    const ms = Date.now() - started;
    this.steps.push({ type: args.type, name: args.name, op, ms });
    if (op !== "same") this.log(`  ${op === "create" ? "+" : op === "replace" ? "+-" : "~"} ${args.type} ${args.name} ${op}d (${(ms / 1000).toFixed(1)}s)`);
    this.state.resources[k] = {
      type: args.type, name: args.name, inputsHash, triggersHash, id: res.id, outputs: res.outputs,
      deleteCommand: typeof inputs.delete === "string" ? inputs.delete : undefined,
      connection: inputs.connection ? toConnection(inputs.connection as Inputs) : undefined,
    };
    this.save();
    return { id: res.id, state: { ...args.inputs, ...res.outputs } };
  }

  /** Droplet fields that DigitalOcean cannot change in place. */
  private replacesOnChange(type: string, stored: StoredResource, inputs: Inputs): boolean {
    if (type !== "digitalocean:index/droplet:Droplet") return false;
    const old = stored.outputs;
    return ["userData", "sshKeys", "image", "region"].some((f) => stableJson(old[f]) !== stableJson(inputs[f]));
  }

  /**
   * Unchanged resources: keep the mock DNS in step (Pebble may have been restarted), and power on
   * a droplet whose VM rebooted while no process watched it (a droplet comes back by itself).
   */
  private async refresh(type: string, inputs: Inputs, stored: StoredResource): Promise<void> {
    if (type === "digitalocean:index/droplet:Droplet") await this.ensureRunning(stored.id);
    if (type === "digitalocean:index/dnsRecord:DnsRecord") await this.applyDns(inputs);
    if (type === "digitalocean:index/sshKey:SshKey") this.sshKeys.set(String(stored.outputs.fingerprint), String(inputs.publicKey));
    if (type === CLUSTER) await managedPg.ensureClusterRunning(clusterOf(stored), (m) => this.log(m));
    if (type === LOAD_BALANCER && !this.lbs.has(stored.id)) await this.applyLoadBalancer(inputs, stored);
  }

  private async perform(type: string, name: string, inputs: Inputs, op: StepRecord["op"], stored?: StoredResource, provider?: string): Promise<{ id: string; outputs: Inputs }> {
    switch (type) {
      case "pulumi:providers:docker":
        return { id: stored?.id ?? sha(name).slice(0, 12), outputs: { ...inputs } };
      case "docker:index/image:Image": {
        // (a provider reference is "<urn>::<id>", the urn ending in "::<name>")
        const parts = String(provider ?? "").split("::");
        const dockerProvider = this.state.resources[key("pulumi:providers:docker", parts[parts.length - 2] ?? "")];
        if (!dockerProvider) throw new Error(`local cloud: ${name} needs its docker provider (got ${JSON.stringify(provider)})`);
        const outputs = await buildImage(providerConnection(dockerProvider.outputs), inputs, (m) => this.log(m));
        return { id: String(outputs.imageId ?? inputs.imageName), outputs };
      }
      case "tls:index/privateKey:PrivateKey":
        return this.createKeyPair(name, inputs);
      case "digitalocean:index/sshKey:SshKey": {
        const fp = fingerprint(String(inputs.publicKey));
        this.sshKeys.set(fp, String(inputs.publicKey));
        return { id: String(parseInt(fp.replace(/:/g, "").slice(0, 7), 16)), outputs: { ...inputs, fingerprint: fp } };
      }
      case "digitalocean:index/droplet:Droplet":
        if (op === "update" && stored) return { id: stored.id, outputs: { vpcUuid: LOCAL_VPC_ID, ...stored.outputs, ...inputs } };
        return this.createDroplet(inputs);
      case "digitalocean:index/firewall:Firewall":
        this.checkFirewall(inputs);
        return { id: stored?.id ?? sha(String(inputs.name)).slice(0, 8), outputs: { ...inputs, status: "succeeded" } };
      case "digitalocean:index/dnsRecord:DnsRecord": {
        const fqdn = await this.applyDns(inputs);
        return { id: stored?.id ?? String(Math.floor(Math.random() * 1e8)), outputs: { ...inputs, fqdn } };
      }
      case "command:remote:Command":
        return this.runRemoteCommand(name, inputs, op, stored);
      case "command:remote:CopyToRemote":
        return this.copyToRemote(inputs);
      case "command:local:Command":
        return this.runLocalCommand(name, inputs, op, stored);
      case "digitalocean:index/volume:Volume":
        return this.applyVolume(inputs, stored);
      case "digitalocean:index/volumeAttachment:VolumeAttachment":
        return this.attachVolume(name, inputs, stored);
      case CLUSTER:
        return this.applyCluster(name, inputs, stored);
      case "digitalocean:index/databaseDb:DatabaseDb":
        await managedPg.createDatabase(this.cluster(inputs.clusterId), String(inputs.name));
        return { id: `${String(inputs.clusterId)}/database/${String(inputs.name)}`, outputs: { ...inputs } };
      case "digitalocean:index/databaseUser:DatabaseUser": {
        const password = await managedPg.createUser(this.cluster(inputs.clusterId), String(inputs.name));
        return { id: `${String(inputs.clusterId)}/user/${String(inputs.name)}`, outputs: { ...inputs, password, role: "normal" } };
      }
      case "digitalocean:index/databaseFirewall:DatabaseFirewall":
        await managedPg.setTrustedSources(this.cluster(inputs.clusterId), this.trustedSources(inputs));
        return { id: String(inputs.clusterId), outputs: { ...inputs } };
      case CERTIFICATE:
        return this.issueCertificate(inputs, stored);
      case LOAD_BALANCER:
        return this.applyLoadBalancer(inputs, stored);
      case "random:index/randomPassword:RandomPassword":
        return { id: stored?.id ?? `pw-${sha(name + Date.now()).slice(0, 8)}`, outputs: { ...inputs, result: randomPassword(inputs) } };
      default:
        throw new Error(`local cloud: no stand-in for resource type ${type} (${name})`);
    }
  }

  /** Where a certificate's chain and key are kept (root only, never in the outputs: DigitalOcean does not hand them out either). */
  private certificateFile(name: string): string {
    return path.join(this.opts.stateDir, "certificates", `${name.replace(/[^A-Za-z0-9._-]/g, "_")}.pem`);
  }

  /** A Let's Encrypt certificate, as DigitalOcean issues one for a load balancer: from Pebble, DNS-01 in Pebble's DNS. */
  private async issueCertificate(inputs: Inputs, stored?: StoredResource): Promise<{ id: string; outputs: Inputs }> {
    if (inputs.type !== "lets_encrypt") throw new Error(`local cloud: certificates of type ${String(inputs.type)} are not stood in for (lets_encrypt is)`);
    const domains = ((inputs.domains as string[] | undefined) ?? []).map(String);
    const zone = this.opts.config["dropstack:domain"];
    for (const d of domains) {
      if (d !== zone && !d.endsWith(`.${zone}`)) throw new Error(`local cloud: a Let's Encrypt certificate needs its names in a zone DigitalOcean manages here (${zone}), not ${d}`);
    }
    const issued = await issueLetsEncryptCertificate(this.opts.pebble, domains, (m) => this.log(m));
    const file = this.certificateFile(String(inputs.name));
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    fs.writeFileSync(file, issued.pem, { mode: 0o600 });
    this.log(`    certificate ${String(inputs.name)} for ${domains.join(", ")} issued by Pebble (until ${issued.notAfter})`);
    const id = stored?.id ?? crypto.randomUUID();
    return { id, outputs: { ...inputs, uuid: id, state: "verified", notAfter: issued.notAfter, sha1Fingerprint: issued.sha1Fingerprint } };
  }

  /** A load balancer: HAProxy on the host, on an address of its own, from the resource's inputs (localcloud/loadBalancer.ts). */
  private async applyLoadBalancer(inputs: Inputs, stored?: StoredResource): Promise<{ id: string; outputs: Inputs }> {
    if (inputs.vpcUuid !== undefined && inputs.vpcUuid !== LOCAL_VPC_ID) throw new Error(`local cloud: load balancer ${String(inputs.name)} is in VPC ${String(inputs.vpcUuid)}; the droplets are in ${LOCAL_VPC_ID}`);
    const droplets = ((inputs.dropletIds as unknown[] | undefined) ?? []).map(String).map((id) => {
      const vm = this.state.vms[id];
      if (!vm) throw new Error(`local cloud: load balancer ${String(inputs.name)} names droplet ${id}, which does not exist`);
      return { id, address: vm.address };
    });
    const certificates: Record<string, string> = {};
    for (const r of Object.values(this.state.resources)) {
      if (r.type === CERTIFICATE && fs.existsSync(this.certificateFile(String(r.outputs.name)))) certificates[String(r.outputs.name)] = fs.readFileSync(this.certificateFile(String(r.outputs.name)), "utf8");
    }
    const spec: LbSpec = {
      forwardingRules: (inputs.forwardingRules as LbSpec["forwardingRules"] | undefined) ?? [],
      healthcheck: (inputs.healthcheck as LbSpec["healthcheck"] | undefined) ?? { protocol: "tcp", port: 80 },
      redirectHttpToHttps: inputs.redirectHttpToHttps === true,
      httpIdleTimeoutSeconds: inputs.httpIdleTimeoutSeconds as number | undefined,
      droplets,
      certificates,
    };
    const id = stored?.id ?? crypto.randomUUID();
    let lb = this.lbs.get(id);
    if (!lb) {
      lb = await LocalLoadBalancer.create(path.join(this.opts.stateDir, "lb", id), stored ? String(stored.outputs.ip) : undefined);
      this.lbs.set(id, lb);
    }
    await lb.apply(spec);
    this.log(`    load balancer ${String(inputs.name)} on ${lb.address}: droplets ${droplets.map((d) => `${d.id} (${d.address})`).join(", ")}`);
    return { id, outputs: { ...inputs, ip: lb.address, ipv6: "", status: "active", urn: `do:loadbalancer:${id}` } };
  }

  /** DigitalOcean's power-off action on a droplet (ACPI, then the plug): it stays off until powerOn. */
  async powerOff(dropletId: string): Promise<void> {
    const vm = this.vms.get(dropletId);
    if (!vm) throw new Error(`local cloud: droplet ${dropletId} has no VM in this process`);
    await vm.powerOff();
    this.log(`    powered droplet ${dropletId} off (${vm.address})`);
  }

  /** DigitalOcean's power-on action: the droplet boots from its disk; resolves once SSH answers. */
  async powerOn(dropletId: string): Promise<void> {
    const stored = this.state.vms[dropletId];
    if (!stored) throw new Error(`local cloud: droplet ${dropletId} does not exist`);
    if (this.vms.get(dropletId)?.isRunning()) return;
    const vm = await resumeVm(stored.dir, (m) => this.log(`    ${m}`));
    this.vms.set(dropletId, vm);
    await vm.waitForSsh(8 * 60_000);
    this.save();
  }

  /** A load balancer's view of its droplets (tests: is a droplet in rotation). */
  async loadBalancerDroplets(): Promise<Record<string, string>> {
    const [lb] = [...this.lbs.values()];
    return lb ? lb.droplets() : {};
  }

  private async createKeyPair(name: string, inputs: Inputs): Promise<{ id: string; outputs: Inputs }> {
    if (inputs.algorithm !== "ED25519") throw new Error(`local cloud: only ED25519 keys are made here, not ${String(inputs.algorithm)}`);
    const dir = fs.mkdtempSync(path.join(this.opts.stateDir, "key-"));
    try {
      await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", name, "-f", path.join(dir, "k")]);
      const privateKeyOpenssh = fs.readFileSync(path.join(dir, "k"), "utf8");
      const publicKeyOpenssh = `${fs.readFileSync(path.join(dir, "k.pub"), "utf8").trim().split(" ").slice(0, 2).join(" ")}\n`;
      return { id: sha(publicKeyOpenssh).slice(0, 16), outputs: { ...inputs, privateKeyOpenssh, publicKeyOpenssh, privateKeyPem: "" } };
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }

  private async createDroplet(inputs: Inputs): Promise<{ id: string; outputs: Inputs }> {
    const fps = (inputs.sshKeys as string[] | undefined) ?? [];
    const publicKeys = fps.map((fp) => {
      const k = this.sshKeys.get(fp);
      if (!k) throw new Error(`local cloud: droplet ${String(inputs.name)} names SSH key ${fp}, which is not registered (DigitalOcean would refuse)`);
      return k;
    });
    const address = await freeLoopbackAddress();
    const name = String(inputs.name);
    this.log(`    booting ${name} on ${address} (qemu, TCG)`);
    // DigitalOcean lets two droplets share a name (a replacement is created before the old one is
    // deleted): each VM gets a folder of its own.
    const workDir = path.join(this.opts.stateDir, "vms");
    const taken = new Set(Object.values(this.state.vms).map((v) => path.resolve(v.dir)));
    let vmName = name;
    for (let n = 2; taken.has(path.resolve(workDir, vmName)); n++) vmName = `${name}-${n}`;
    const vm = await bootVm({
      name: vmName, address, userData: String(inputs.userData ?? ""), publicKeys, hostname: name,
      workDir, log: (m) => this.log(`    ${m}`),
    });
    try {
      await vm.waitForSsh(8 * 60_000);
    } catch (e) {
      await vm.powerOff().catch(() => undefined);
      throw e;
    }
    const id = String(100000000 + (parseInt(sha(vm.dir + Date.now()).slice(0, 6), 16)));
    this.vms.set(id, vm);
    this.state.vms[id] = { dropletId: id, pid: vm.pid, dir: vm.dir, address };
    return { id, outputs: { ...inputs, ipv4Address: address, ipv4AddressPrivate: "10.0.2.15", ipv6Address: undefined, status: "active", vpcUuid: LOCAL_VPC_ID, urn: `do:droplet:${id}` } };
  }

  /** A managed cluster: a PostgreSQL server of the asked major version on this host; it changes in place only in what the local cloud does not simulate (size, nodes). */
  private async applyCluster(name: string, inputs: Inputs, stored?: StoredResource): Promise<{ id: string; outputs: Inputs }> {
    if (inputs.engine !== "pg") throw new Error(`local cloud: database engine ${String(inputs.engine)} is not simulated (pg is)`);
    if (inputs.privateNetworkUuid !== LOCAL_VPC_ID) throw new Error(`local cloud: cluster ${String(inputs.name)} is in VPC ${String(inputs.privateNetworkUuid)}; the droplets are in ${LOCAL_VPC_ID}`);
    if (stored && String(stored.outputs.version) === String(inputs.version)) return { id: stored.id, outputs: { ...stored.outputs, ...inputs } };
    if (stored) throw new Error(`local cloud: changing a cluster's version (${String(stored.outputs.version)} to ${String(inputs.version)}) is not simulated`);
    const key = `${sha(path.resolve(this.opts.stateDir)).slice(0, 10)}-${String(inputs.name)}`;
    const c = await managedPg.createCluster(key, String(inputs.version), (m) => this.log(m));
    const id = crypto.randomUUID();
    const port = MANAGED_POSTGRES_PORT;
    const uri = (host: string) => `postgresql://doadmin:${c.adminPassword}@${host}:${port}/defaultdb?sslmode=require`;
    this.log(`    cluster ${name}: ${managedPg.PRIVATE_HOST}:${port} from the droplets`);
    return {
      id,
      outputs: {
        ...inputs, host: "127.0.0.1", privateHost: managedPg.PRIVATE_HOST, port, user: "doadmin", password: c.adminPassword, database: "defaultdb",
        uri: uri("127.0.0.1"), privateUri: uri(managedPg.PRIVATE_HOST), dataDir: c.dataDir, urn: `do:dbaas:${id}`,
      },
    };
  }

  /** The cluster a database resource names (by id), from the state. */
  private cluster(clusterId: unknown): managedPg.ClusterRecord {
    const r = Object.values(this.state.resources).find((x) => x.type === CLUSTER && x.id === String(clusterId));
    if (!r) throw new Error(`local cloud: database cluster ${String(clusterId)} does not exist`);
    return clusterOf(r);
  }

  /** A database firewall's rules as networks the server sees: a droplet is its VM's own loopback address (qemu forwards from it). */
  private trustedSources(inputs: Inputs): string[] {
    return ((inputs.rules as { type: string; value: string }[] | undefined) ?? []).map((rule) => {
      if (rule.type === "droplet") {
        const vm = this.state.vms[String(rule.value)];
        if (!vm) throw new Error(`local cloud: database firewall trusts droplet ${rule.value}, which does not exist`);
        return `${vm.address}/32`;
      }
      if (rule.type === "ip_addr") return rule.value.includes("/") ? rule.value : `${rule.value}/32`;
      throw new Error(`local cloud: database firewall rule type ${rule.type} is not simulated (droplet and ip_addr are)`);
    });
  }

  private checkFirewall(inputs: Inputs): void {
    const ids = ((inputs.dropletIds as unknown[]) ?? []).map(String);
    const known = Object.keys(this.state.vms);
    for (const id of ids) {
      if (!known.includes(id)) throw new Error(`local cloud: firewall ${String(inputs.name)} names droplet ${id}, which does not exist`);
    }
    if (!ids.length) throw new Error(`local cloud: firewall ${String(inputs.name)} applies to no droplet`);
  }

  private async applyDns(inputs: Inputs): Promise<string> {
    const fqdn = inputs.name === "@" ? String(inputs.domain) : `${String(inputs.name)}.${String(inputs.domain)}`;
    if (inputs.type === "A") await this.opts.pebble.addARecord(fqdn, String(inputs.value));
    else if (inputs.type === "AAAA") await this.opts.pebble.addAAAARecord(fqdn, String(inputs.value));
    else throw new Error(`local cloud: DNS record type ${String(inputs.type)} is not simulated`);
    return fqdn;
  }

  private async exec(conn: SshConnection, command: string, stdin: string | undefined, env: Record<string, string> | undefined, logging: string, label: string, dialTimeoutMs = 10 * 60_000): Promise<{ stdout: string; stderr: string }> {
    // The provider retries dialing (dialErrorLimit x perDialTimeout) before it gives up.
    await waitForSshLogin(conn, dialTimeoutMs);
    // Output is shown line by line as it comes, as `pulumi up` streams a command's output.
    const onLine = (stream: "stdout" | "stderr", line: string) => {
      if (streamed(logging, stream)) this.log(`    ${label} ${stream === "stderr" ? "!" : "|"} ${line}`);
    };
    const r = await sshExec(conn, command, { stdin, env, timeoutMs: 30 * 60_000, onLine });
    if (r.code !== 0) {
      // As the provider does: the error carries the command and its whole output, whatever
      // `logging` says (logging only governs what is streamed while the command runs).
      const shownCommand = command.length > 200 ? `${command.slice(0, 200)}...` : command;
      throw new Error(`${label}: Process exited with status ${r.code}${r.signal ? ` (signal ${r.signal})` : ""}: running ${JSON.stringify(shownCommand)}:\n${r.stdout}${r.stderr}`);
    }
    return { stdout: r.stdout, stderr: r.stderr };
  }

  private async runRemoteCommand(name: string, inputs: Inputs, op: StepRecord["op"], stored?: StoredResource): Promise<{ id: string; outputs: Inputs }> {
    const c = inputs.connection as Inputs;
    const conn = toConnection(c);
    const dialMs = Number(c.dialErrorLimit ?? 10) * Number(c.perDialTimeout ?? 15) * 1000;
    const command = op === "update" && typeof inputs.update === "string" ? inputs.update : inputs.create;
    if (typeof command !== "string") return { id: stored?.id ?? name, outputs: { ...inputs, stdout: "", stderr: "" } };
    const logging = String(inputs.logging ?? "stdoutAndStderr");
    const env = inputs.environment as Record<string, string> | undefined;
    const out = await this.exec(conn, command, inputs.stdin as string | undefined, env, logging, name, dialMs);
    return { id: stored?.id ?? `${name}-${sha(String(Date.now())).slice(0, 8)}`, outputs: { ...inputs, ...out } };
  }

  /** A local command (the rolling release): `sh -c` on this host, as the provider runs it, its output streamed; a non-zero exit fails it with its output. */
  private async runLocalCommand(name: string, inputs: Inputs, op: StepRecord["op"], stored?: StoredResource): Promise<{ id: string; outputs: Inputs }> {
    const command = op === "update" && typeof inputs.update === "string" ? inputs.update : inputs.create;
    if (typeof command !== "string") return { id: stored?.id ?? name, outputs: { ...inputs, stdout: "", stderr: "" } };
    const logging = String(inputs.logging ?? "stdoutAndStderr");
    const r = await runShell(inputs, command, (stream, line) => {
      if (streamed(logging, stream)) this.log(`    ${name} ${stream === "stderr" ? "!" : "|"} ${line}`);
    });
    // (as the provider does: the error carries the whole output, whatever `logging` says)
    if (r.code !== 0) throw new Error(`${name}: local command exited with status ${r.code}:\n${r.stdout}\n${r.stderr}`);
    const out = { stdout: r.stdout, stderr: r.stderr };
    return { id: stored?.id ?? `${name}-${sha(String(Date.now())).slice(0, 8)}`, outputs: { ...inputs, ...out } };
  }

  private async copyToRemote(inputs: Inputs): Promise<{ id: string; outputs: Inputs }> {
    const conn = toConnection(inputs.connection as Inputs);
    const source = inputs.source as { assetPath?: string };
    if (!source?.assetPath) throw new Error("local cloud: CopyToRemote source must be path based (FileAsset or FileArchive)");
    await sftpWriteDir(conn, source.assetPath, String(inputs.remotePath));
    return { id: sha(String(inputs.remotePath)).slice(0, 12), outputs: { ...inputs } };
  }

  /** A volume: created (formatted when asked), or grown in place; its file outlives any droplet. */
  private async applyVolume(inputs: Inputs, stored?: StoredResource): Promise<{ id: string; outputs: Inputs }> {
    const name = String(inputs.name);
    const file = volumeFile(this.opts.stateDir, name);
    if (!stored) {
      await createVolumeFile(file, Number(inputs.size), inputs.initialFilesystemType as string | undefined);
      const id = crypto.randomUUID();
      return { id, outputs: { ...inputs, filesystemType: inputs.initialFilesystemType, urn: `do:volume:${id}` } };
    }
    if (String(stored.outputs.name) !== name) throw new Error(`local cloud: renaming volume ${String(stored.outputs.name)} to ${name} is not simulated`);
    const bytes = growVolumeFile(file, Number(inputs.size));
    const attached = this.attachmentOf(stored.id);
    if (attached) {
      const vm = this.state.vms[attached.dropletId];
      if (vm) await resizeVolume(vm.dir, volumeNode(stored.id), bytes);
    }
    return { id: stored.id, outputs: { ...stored.outputs, ...inputs } };
  }

  /** The attachment that holds a volume now (from the state), if any. */
  private attachmentOf(volumeId: string, except?: string): { key: string; dropletId: string } | undefined {
    for (const [k, r] of Object.entries(this.state.resources)) {
      if (r.type === "digitalocean:index/volumeAttachment:VolumeAttachment" && k !== except && String(r.outputs.volumeId) === volumeId) {
        return { key: k, dropletId: String(r.outputs.dropletId) };
      }
    }
    return undefined;
  }

  /** Plugs a volume into a droplet's VM; a changed droplet moves it (unplugged from the old one first). */
  private async attachVolume(name: string, inputs: Inputs, stored?: StoredResource): Promise<{ id: string; outputs: Inputs }> {
    const dropletId = String(inputs.dropletId);
    const volumeId = String(inputs.volumeId);
    const volume = Object.values(this.state.resources).find((r) => r.type === "digitalocean:index/volume:Volume" && r.id === volumeId);
    if (!volume) throw new Error(`local cloud: volume attachment ${name} names volume ${volumeId}, which does not exist`);
    const vm = this.state.vms[dropletId];
    if (!vm) throw new Error(`local cloud: volume attachment ${name} names droplet ${dropletId}, which does not exist`);
    if (stored) await this.detachStored(stored);
    const other = this.attachmentOf(volumeId, key("digitalocean:index/volumeAttachment:VolumeAttachment", name));
    if (other) throw new Error(`local cloud: volume ${String(volume.outputs.name)} is already attached to droplet ${other.dropletId} (a volume attaches to one droplet at a time)`);
    await attachVolume(vm.dir, { node: volumeNode(volumeId), file: volumeFile(this.opts.stateDir, String(volume.outputs.name)), serial: String(volume.outputs.name) });
    return { id: stored?.id ?? `${dropletId}-${volumeId}`, outputs: { ...inputs } };
  }

  /** Unplugs a stored attachment's volume from its droplet's VM, if that VM still exists. */
  private async detachStored(stored: StoredResource): Promise<void> {
    const vm = this.state.vms[String(stored.outputs.dropletId)];
    if (vm) await detachVolume(vm.dir, volumeNode(String(stored.outputs.volumeId)));
  }

  private async ensureRunning(dropletId: string): Promise<void> {
    const stored = this.state.vms[dropletId];
    if (!stored || this.vms.has(dropletId) || isRunning(stored.pid, path.join(stored.dir, "qmp.sock"))) return;
    this.log(`    the VM of droplet ${dropletId} is not running (it rebooted while no process watched it): powering it on`);
    const vm = await resumeVm(stored.dir, (m) => this.log(`    ${m}`));
    this.vms.set(dropletId, vm);
    await vm.waitForSsh(8 * 60_000);
    this.save();
  }

  private async deleteUnregistered(): Promise<void> {
    for (const [k, stored] of Object.entries(this.state.resources).reverse()) {
      if (this.registered.has(k)) continue;
      const started = Date.now();
      await this.deleteResource(stored);
      delete this.state.resources[k];
      this.steps.push({ type: stored.type, name: stored.name, op: "delete", ms: Date.now() - started });
      this.log(`  - ${stored.type} ${stored.name} deleted`);
    }
  }

  private async deleteResource(stored: StoredResource): Promise<void> {
    if (stored.type === "command:remote:Command" && stored.deleteCommand && stored.connection) {
      // As the provider does: the delete runs with the resource's last inputs, stdin and environment included.
      const o = stored.outputs;
      await this.exec(stored.connection, stored.deleteCommand, o.stdin as string | undefined, o.environment as Record<string, string> | undefined,
        String(o.logging ?? "stdoutAndStderr"), `${stored.name} (delete)`);
    }
    if (stored.type === "digitalocean:index/volumeAttachment:VolumeAttachment") await this.detachStored(stored);
    if (stored.type === "digitalocean:index/volume:Volume") {
      const attached = this.attachmentOf(stored.id);
      if (attached && this.state.vms[attached.dropletId]) {
        throw new Error(`local cloud: volume ${String(stored.outputs.name)} is attached to droplet ${attached.dropletId}; detach it first (DigitalOcean refuses to delete an attached volume)`);
      }
      fs.rmSync(volumeFile(this.opts.stateDir, String(stored.outputs.name)), { force: true });
    }
    const clusterGone = (id: unknown) => !Object.values(this.state.resources).some((x) => x.type === CLUSTER && x.id === String(id));
    if (stored.type === "digitalocean:index/databaseFirewall:DatabaseFirewall" && !clusterGone(stored.outputs.clusterId)) {
      await managedPg.setTrustedSources(this.cluster(stored.outputs.clusterId), []);
    }
    if (stored.type === "digitalocean:index/databaseUser:DatabaseUser" && !clusterGone(stored.outputs.clusterId)) {
      await managedPg.dropUser(this.cluster(stored.outputs.clusterId), String(stored.outputs.name));
    }
    if (stored.type === "digitalocean:index/databaseDb:DatabaseDb" && !clusterGone(stored.outputs.clusterId)) {
      await managedPg.dropDatabase(this.cluster(stored.outputs.clusterId), String(stored.outputs.name));
    }
    if (stored.type === CLUSTER) await managedPg.deleteCluster(clusterOf(stored));
    if (stored.type === LOAD_BALANCER) {
      await this.lbs.get(stored.id)?.stop();
      this.lbs.delete(stored.id);
    }
    if (stored.type === CERTIFICATE) fs.rmSync(this.certificateFile(String(stored.outputs.name)), { force: true });
    if (stored.type === "digitalocean:index/droplet:Droplet") {
      const vm = this.state.vms[stored.id];
      if (vm) await this.stopVm(vm);
      delete this.state.vms[stored.id];
    }
  }

  private async stopVm(stored: StoredVm): Promise<void> {
    const live = this.vms.get(stored.dropletId);
    if (live) {
      await live.powerOff();
      this.vms.delete(stored.dropletId);
    } else if (isRunning(stored.pid, path.join(stored.dir, "qmp.sock"))) {
      // A VM left running by an earlier `up` (another process): adopt it, then stop it.
      registerProcess(stored.pid, { kind: "qemu", cmdlineMark: path.join(stored.dir, "qmp.sock"), description: `qemu for ${stored.address}` });
      await stopProcess(stored.pid, "SIGTERM", 30_000);
    }
    this.log(`    powered off the VM at ${stored.address}`);
  }
}

// The DigitalOcean Load Balancer on the local cloud: Debian's HAProxy on the host, on a loopback
// address of its own (its ports 80 and 443 stand for the load balancer's public IP), configured
// from the LoadBalancer resource's own inputs with DigitalOcean's semantics:
//   - forwarding rules: HTTPS entry terminated with the named certificate, HTTP entry redirected to
//     HTTPS (redirectHttpToHttps), both to the droplets' target port over plain HTTP, round robin,
//     X-Forwarded-For/-Proto/-Port added;
//   - the health check: GET <path> every checkIntervalSeconds, answered within
//     responseTimeoutSeconds with 200-399; a droplet leaves the rotation after unhealthyThreshold
//     failures in a row and joins after healthyThreshold passes; a droplet added to the load
//     balancer starts DOWN (DigitalOcean: "begin in the DOWN state") and gets no request until it
//     passed;
//   - an update (droplets added or removed, settings changed) keeps every remaining droplet's health
//     and drops no connection: a new HAProxy takes the listening sockets over from the old one
//     (-x, -sf), which finishes the requests it has.
import { ChildProcess, spawn } from "child_process";
import * as fs from "fs";
import * as net from "net";
import * as path from "path";
import { registerProcess, stopProcess, unregisterProcess } from "./processes";
import { tailFile, waitUntil } from "./util";
import { freeLoopbackAddress } from "./vm";

export interface LbForwardingRule {
  entryProtocol: string;
  entryPort: number;
  targetProtocol: string;
  targetPort: number;
  certificateName?: string;
}

export interface LbHealthcheck {
  protocol: string;
  port: number;
  path?: string;
  checkIntervalSeconds?: number;
  responseTimeoutSeconds?: number;
  healthyThreshold?: number;
  unhealthyThreshold?: number;
}

/** What HAProxy is configured from: the LoadBalancer's inputs, the droplets' addresses and the certificates' PEM. */
export interface LbSpec {
  forwardingRules: LbForwardingRule[];
  healthcheck: LbHealthcheck;
  redirectHttpToHttps: boolean;
  httpIdleTimeoutSeconds?: number;
  /** The droplets in rotation: a stable name (the droplet id) and where their target ports are (the VM's loopback address). */
  droplets: { id: string; address: string }[];
  /** Certificate name → PEM of the chain and its private key. */
  certificates: Record<string, string>;
}

/** DigitalOcean's health-check defaults (a LoadBalancer without them set). */
const DO_DEFAULTS = { checkIntervalSeconds: 10, responseTimeoutSeconds: 5, healthyThreshold: 5, unhealthyThreshold: 3 };

const serverName = (dropletId: string) => `droplet-${dropletId}`;

/** The HAProxy configuration for `spec`, listening on `address`, its files in `dir`. */
export function renderHaproxyConfig(spec: LbSpec, address: string, dir: string, adminSocket: string): string {
  const h = { ...DO_DEFAULTS, ...Object.fromEntries(Object.entries(spec.healthcheck).filter(([, v]) => v !== undefined)) } as Required<LbHealthcheck>;
  if (h.protocol !== "http") throw new Error(`local cloud: load balancer health checks over ${h.protocol} are not stood in for (http only)`);
  const lines = [
    "# Written by the local cloud from a digitalocean.LoadBalancer's inputs (localcloud/loadBalancer.ts).",
    "global",
    `    stats socket ${adminSocket} mode 600 level admin expose-fd listeners`,
    `    server-state-file ${path.join(dir, "server-state")}`,
    "    ssl-default-bind-options ssl-min-ver TLSv1.2",
    "defaults",
    "    mode http",
    "    load-server-state-from-file global",
    "    timeout connect 5s",
    `    timeout client ${spec.httpIdleTimeoutSeconds ?? 60}s`,
    `    timeout server ${spec.httpIdleTimeoutSeconds ?? 60}s`,
    "    option forwardfor",
  ];
  for (const [i, rule] of spec.forwardingRules.entries()) {
    if (rule.targetProtocol !== "http") throw new Error(`local cloud: forwarding to droplets over ${rule.targetProtocol} is not stood in for (http only)`);
    lines.push(`frontend entry-${i}-${rule.entryProtocol}-${rule.entryPort}`);
    if (rule.entryProtocol === "https") {
      const pem = rule.certificateName === undefined ? undefined : spec.certificates[rule.certificateName];
      if (pem === undefined) throw new Error(`local cloud: the HTTPS forwarding rule names certificate ${JSON.stringify(rule.certificateName)}, which does not exist`);
      const file = path.join(dir, `certificate-${i}.pem`);
      fs.writeFileSync(file, pem, { mode: 0o600 });
      lines.push(`    bind ${address}:${rule.entryPort} ssl crt ${file} alpn http/1.1`,
        "    http-request set-header X-Forwarded-Proto https", `    http-request set-header X-Forwarded-Port ${rule.entryPort}`);
    } else if (rule.entryProtocol === "http") {
      lines.push(`    bind ${address}:${rule.entryPort}`);
      if (spec.redirectHttpToHttps) lines.push("    http-request redirect scheme https code 301");
      lines.push("    http-request set-header X-Forwarded-Proto http", `    http-request set-header X-Forwarded-Port ${rule.entryPort}`);
    } else {
      throw new Error(`local cloud: entry protocol ${rule.entryProtocol} is not stood in for (http and https only)`);
    }
    lines.push(`    default_backend droplets-${rule.targetPort}`);
  }
  for (const port of [...new Set(spec.forwardingRules.map((r) => r.targetPort))]) {
    lines.push(`backend droplets-${port}`, "    balance roundrobin",
      // (HTTP/1.1 like DigitalOcean's checks; the host named is the load balancer's address, not the site's)
      `    option httpchk`, `    http-check send meth GET uri ${h.path ?? "/"} ver HTTP/1.1 hdr Host ${address}`, "    http-check expect status 200-399",
      `    timeout check ${h.responseTimeoutSeconds}s`,
      `    default-server check port ${h.port} inter ${h.checkIntervalSeconds}s fall ${h.unhealthyThreshold} rise ${h.healthyThreshold}`,
      ...spec.droplets.map((d) => `    server ${serverName(d.id)} ${d.address}:${port}`));
  }
  return `${lines.join("\n")}\n`;
}

/** One request to HAProxy's admin socket; its answer. */
function admin(socket: string, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = net.connect(socket);
    let out = "";
    c.setTimeout(10_000, () => c.destroy(new Error(`no answer from ${socket} to ${request}`)));
    c.on("connect", () => c.end(`${request}\n`));
    c.on("data", (d) => (out += d));
    c.on("end", () => resolve(out));
    c.on("error", reject);
  });
}

/**
 * The server-state file HAProxy loads: the state of the droplets that were there before (so an
 * update changes nobody's health), and every new droplet DOWN with no passed check.
 */
function serverState(previous: string, spec: LbSpec): string {
  const lines = previous.split("\n").filter((l) => l.trim() !== "");
  const header = lines.filter((l) => l.startsWith("#"));
  const known = lines.filter((l) => !l.startsWith("#") && /^\d+ /.test(l));
  const names = new Set(known.map((l) => l.split(" ")[3]));
  const ports = [...new Set(spec.forwardingRules.map((r) => r.targetPort))];
  const added = ports.flatMap((port, b) => spec.droplets.filter((d) => !names.has(serverName(d.id))).map((d, s) =>
    // be_id be_name srv_id srv_name srv_addr op_state(0: stopped) admin_state uweight iweight last_change check_status check_result check_health(0) check_state ...
    `${b + 3} droplets-${port} ${s + 1000} ${serverName(d.id)} ${d.address} 0 0 1 1 0 1 0 0 6 0 0 0 - ${port} - 0 0 - - 0`));
  return ["1", ...(header.length ? header : ["# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port"]),
    ...known, ...added, ""].join("\n");
}

/** A load balancer on the host: one HAProxy at a time, replaced (sockets handed over) on every update. */
export class LocalLoadBalancer {
  private child?: ChildProcess;
  private socket?: string;
  private generation = 0;

  private constructor(readonly dir: string, readonly address: string) {}

  /** A load balancer: its own loopback address (ports 80 and 443 free; or the one it had, kept across runs), its files in `dir`. */
  static async create(dir: string, address?: string): Promise<LocalLoadBalancer> {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    return new LocalLoadBalancer(dir, address ?? await freeLoopbackAddress());
  }

  /** Configures HAProxy for `spec`: started the first time, replaced without dropping a connection after. */
  async apply(spec: LbSpec): Promise<void> {
    const gen = ++this.generation;
    const socket = path.join(this.dir, `admin-${gen}.sock`);
    const previous = this.socket ? await admin(this.socket, "show servers state") : "";
    fs.writeFileSync(path.join(this.dir, "server-state"), serverState(previous, spec));
    const config = path.join(this.dir, "haproxy.cfg");
    fs.writeFileSync(config, renderHaproxyConfig(spec, this.address, this.dir, socket));
    const log = path.join(this.dir, "haproxy.log");
    const check = spawn("haproxy", ["-c", "-q", "-f", config], { stdio: ["ignore", "ignore", "pipe"] });
    let checkErr = "";
    check.stderr?.on("data", (d) => (checkErr += d));
    if (await new Promise<number | null>((resolve) => check.on("exit", resolve)) !== 0) throw new Error(`local cloud: HAProxy refused the load balancer's configuration:\n${checkErr}`);
    const old = this.child;
    const handover = old?.pid !== undefined && this.socket ? ["-x", this.socket, "-sf", String(old.pid)] : [];
    const out = fs.openSync(log, "a");
    const child = spawn("haproxy", ["-db", "-f", config, ...handover], { stdio: ["ignore", out, out] });
    fs.closeSync(out);
    if (child.pid === undefined) throw new Error(`local cloud: cannot start haproxy (see ${log})`);
    child.on("error", () => undefined);
    registerProcess(child.pid, { kind: "haproxy", cmdlineMark: config, description: `haproxy (load balancer ${this.address}, log ${log})` });
    if (old?.pid !== undefined) {
      const oldPid = old.pid;
      // (the old one finishes its connections, then exits: -sf)
      if (old.exitCode !== null) unregisterProcess(oldPid);
      else old.once("exit", () => unregisterProcess(oldPid));
    }
    await waitUntil(`HAProxy for the load balancer on ${this.address} to answer`, 30_000, async () => {
      if (child.exitCode !== null) throw new Error(`haproxy exited (${child.exitCode}):\n${tailFile(log, 20)}`);
      return (await admin(socket, "show info").catch(() => "")).includes("Pid:") ? true : undefined;
    }, { intervalMs: 100 });
    this.child = child;
    this.socket = socket;
  }

  /** Each droplet's state as the load balancer sees it: "UP", "DOWN", or a transition ("UP 1/3", "DOWN 2/5"). */
  async droplets(): Promise<Record<string, string>> {
    if (!this.socket) return {};
    const csv = await admin(this.socket, "show stat");
    const header = csv.split("\n")[0].replace(/^# /, "").split(",");
    const [name, status] = [header.indexOf("svname"), header.indexOf("status")];
    const states: Record<string, string> = {};
    for (const row of csv.split("\n").slice(1).map((l) => l.split(","))) {
      const m = /^droplet-(.+)$/.exec(row[name] ?? "");
      if (m) states[m[1]] = row[status];
    }
    return states;
  }

  /** Stops HAProxy (and one still finishing its connections). */
  async stop(): Promise<void> {
    const pid = this.child?.pid;
    this.child = undefined;
    this.socket = undefined;
    if (pid !== undefined) await stopProcess(pid, "SIGTERM", 10_000);
  }
}

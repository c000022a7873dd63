// A real ACME server on loopback: pebble (Let's Encrypt's test server) plus
// pebble-challtestsrv as its DNS. Pebble validates HTTP-01 challenges by
// connecting to port 80 of the address that challtestsrv gives for the name, so
// pointing a name at a VM's loopback address lets a guest obtain certificates.
//
// Pebble's own HTTPS listener uses a certificate from a small CA made here with
// openssl; clients must trust that CA (`caBundlePem`). Certificates that pebble
// issues chain to a different root, fetched with `rootCertificatePem()`.
import { ChildProcess, spawn } from "child_process";
import * as fs from "fs";
import * as fsp from "fs/promises";
import * as http from "http";
import * as https from "https";
import * as path from "path";
import { registerProcess, stopProcess } from "./processes";
import { canBind, freePort, Logger, noLog, run, tailFile, waitUntil } from "./util";

export interface StartPebbleOptions {
  /** Certificates, config and logs go into <workDir>/pebble/. */
  workDir: string;
  log?: Logger;
  /**
   * Ports of pebble's ACME and management listeners on 127.0.0.1. Given ones
   * must be free. By default 14000 and 15000, or, when either is taken (e.g. by
   * another test run's pebble), two free ports: the URLs below always say which.
   */
  acmePort?: number;
  managementPort?: number;
}

export interface Pebble {
  /** The ACME directory as a qemu user-network guest reaches it, e.g. https://10.0.2.2:14000/dir. */
  directoryUrlForGuest: string;
  directoryUrlForHost: string;
  /** The CA that signed pebble's HTTPS certificate (for REQUESTS_CA_BUNDLE / curl --cacert). */
  caBundlePem: string;
  caBundlePath: string;
  /** The mock DNS server pebble resolves names with, "127.0.0.1:<port>". */
  dnsServer: string;
  /** Address challtestsrv answers for names without a record (nothing listens there). */
  defaultIPv4: string;
  /** The root that certificates issued by pebble chain to (fetched from the management API). */
  rootCertificatePem(): Promise<string>;
  /** Sets the host's A record to this address (replacing any other). */
  addARecord(host: string, ipv4: string): Promise<void>;
  addAAAARecord(host: string, ipv6: string): Promise<void>;
  /** Removes the A and AAAA records of `host`. */
  clearRecord(host: string): Promise<void>;
  /** Sets the TXT record of `host` (a DNS-01 challenge, e.g. _acme-challenge.<name>), replacing any other. */
  setTxtRecord(host: string, value: string): Promise<void>;
  clearTxtRecord(host: string): Promise<void>;
  stop(): Promise<void>;
}

const LISTEN_HOST = "127.0.0.1";
const DEFAULT_ACME_PORT = 14000;
const DEFAULT_MANAGEMENT_PORT = 15000;
const GUEST_HOST_ADDRESS = "10.0.2.2";
/** Outside freeLoopbackAddress()'s range 127.0.0.20-250, so no VM ever has it. */
const DEFAULT_IPV4 = "127.0.0.254";

interface Ports {
  acme: number;
  management: number;
  dns: number;
  dnsManagement: number;
}

interface Certs {
  caPem: string;
  caPath: string;
  leafCert: string;
  leafKey: string;
}

export async function startPebble(opts: StartPebbleOptions): Promise<Pebble> {
  const log = opts.log ?? noLog;
  const dir = path.resolve(opts.workDir, "pebble");
  await fsp.rm(dir, { recursive: true, force: true });
  await fsp.mkdir(dir, { recursive: true });
  const ports = await choosePorts(opts, log);
  // The HTTPS CA is kept beside the state (not in pebble's scratch folder): the droplet trusts it
  // through dropstack:acmeCaBundle, so a new one would re-run the certificate step on every up.
  const certDir = path.resolve(opts.workDir, "pebble-https");
  const certs = (await reusableCertificates(certDir)) ?? (await makeCertificates(certDir));
  const started: ChildProcess[] = [];
  try {
    started.push(startChalltestsrv(dir, ports));
    started.push(await startPebbleServer(dir, certs, ports));
    await waitForServers(dir, certs.caPem, ports, started);
  } catch (err) {
    await stopChildren(started);
    throw err;
  }
  log(`pebble: ACME directory https://${LISTEN_HOST}:${ports.acme}/dir, mock DNS ${LISTEN_HOST}:${ports.dns}`);
  return makePebble(certs, ports, started);
}

async function choosePorts(opts: StartPebbleOptions, log: Logger): Promise<Ports> {
  const dns = await freePort(LISTEN_HOST);
  const dnsManagement = await freePort(LISTEN_HOST);
  if (opts.acmePort !== undefined || opts.managementPort !== undefined) {
    const acme = opts.acmePort ?? DEFAULT_ACME_PORT;
    const management = opts.managementPort ?? DEFAULT_MANAGEMENT_PORT;
    for (const port of [acme, management]) {
      if (!(await canBind(LISTEN_HOST, port))) {
        throw new Error(`startPebble: ${LISTEN_HOST}:${port} is already in use (is another pebble running?)`);
      }
    }
    return { acme, management, dns, dnsManagement };
  }
  if ((await canBind(LISTEN_HOST, DEFAULT_ACME_PORT)) && (await canBind(LISTEN_HOST, DEFAULT_MANAGEMENT_PORT))) {
    return { acme: DEFAULT_ACME_PORT, management: DEFAULT_MANAGEMENT_PORT, dns, dnsManagement };
  }
  const ports = { acme: await freePort(LISTEN_HOST), management: await freePort(LISTEN_HOST), dns, dnsManagement };
  log(`pebble: ${DEFAULT_ACME_PORT} or ${DEFAULT_MANAGEMENT_PORT} is taken (another pebble?); using ${ports.acme} and ${ports.management}`);
  return ports;
}

const certFiles = (dir: string) => ({ ca: path.join(dir, "ca.pem"), leafCert: path.join(dir, "leaf.pem"), leafKey: path.join(dir, "leaf.key") });

/** The CA and leaf of an earlier run, when both are still valid for two days; else undefined. */
async function reusableCertificates(dir: string): Promise<Certs | undefined> {
  const f = certFiles(dir);
  if (![f.ca, f.leafCert, f.leafKey].every((x) => fs.existsSync(x))) return undefined;
  for (const cert of [f.ca, f.leafCert]) {
    const r = await run("openssl", ["x509", "-checkend", String(2 * 86400), "-noout", "-in", cert], { allowFailure: true });
    if (r.code !== 0) return undefined;
  }
  return { caPem: await fsp.readFile(f.ca, "utf8"), caPath: f.ca, leafCert: f.leafCert, leafKey: f.leafKey };
}

/** A CA and a leaf for pebble's HTTPS listeners, valid for every address it is reached at. */
async function makeCertificates(dir: string): Promise<Certs> {
  await fsp.rm(dir, { recursive: true, force: true });
  await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
  const p = (name: string) => path.join(dir, name);
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  await run("openssl", [
    ...["req", "-x509", ...ec, "-keyout", p("ca.key"), "-out", p("ca.pem"), "-days", "30"],
    ...["-subj", "/CN=dropstack localcloud pebble HTTPS CA"],
    ...["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
  ]);
  await run("openssl", ["req", "-new", ...ec, "-keyout", p("leaf.key"), "-out", p("leaf.csr"), "-subj", "/CN=localhost"]);
  await fsp.writeFile(
    p("leaf.ext"),
    [
      `subjectAltName=DNS:localhost,IP:127.0.0.1,IP:${GUEST_HOST_ADDRESS}`,
      "basicConstraints=critical,CA:FALSE",
      "keyUsage=critical,digitalSignature",
      "extendedKeyUsage=serverAuth",
      "subjectKeyIdentifier=hash",
      "authorityKeyIdentifier=keyid,issuer",
      "",
    ].join("\n"),
  );
  await run("openssl", [
    ...["x509", "-req", "-in", p("leaf.csr"), "-CA", p("ca.pem"), "-CAkey", p("ca.key"), "-CAcreateserial"],
    ...["-days", "30", "-extfile", p("leaf.ext"), "-out", p("leaf.pem")],
  ]);
  return { caPem: await fsp.readFile(p("ca.pem"), "utf8"), caPath: p("ca.pem"), leafCert: p("leaf.pem"), leafKey: p("leaf.key") };
}

function startChalltestsrv(dir: string, ports: Ports): ChildProcess {
  const args = [
    ...["-dns01", `${LISTEN_HOST}:${ports.dns}`, "-management", `${LISTEN_HOST}:${ports.dnsManagement}`],
    ...["-http01", "", "-https01", "", "-tlsalpn01", ""],
    ...["-defaultIPv4", DEFAULT_IPV4, "-defaultIPv6", ""],
  ];
  return startDaemon("pebble-challtestsrv", args, path.join(dir, "challtestsrv.log"), "challtestsrv", {});
}

async function startPebbleServer(dir: string, certs: Certs, ports: Ports): Promise<ChildProcess> {
  const configFile = path.join(dir, "pebble-config.json");
  const config = {
    pebble: {
      listenAddress: `${LISTEN_HOST}:${ports.acme}`,
      managementListenAddress: `${LISTEN_HOST}:${ports.management}`,
      certificate: certs.leafCert,
      privateKey: certs.leafKey,
      httpPort: 80,
      tlsPort: 443,
      ocspResponderURL: "",
      externalAccountBindingRequired: false,
    },
  };
  await fsp.writeFile(configFile, JSON.stringify(config, null, 2));
  const args = ["-config", configFile, "-dnsserver", `${LISTEN_HOST}:${ports.dns}`];
  // Pebble rejects 5 % of valid nonces by default (to exercise clients' retries); certbot retries
  // once, so two in a row fail a run now and then: Let's Encrypt does not do that, and a
  // deterministic suite cannot either.
  return startDaemon("pebble", args, path.join(dir, "pebble.log"), "pebble", { PEBBLE_VA_NOSLEEP: "1", PEBBLE_WFE_NONCEREJECT: "0" });
}

function startDaemon(
  cmd: string,
  args: string[],
  logFile: string,
  kind: "pebble" | "challtestsrv",
  env: Record<string, string>,
): ChildProcess {
  const out = fs.openSync(logFile, "a");
  const child = spawn(cmd, args, { stdio: ["ignore", out, out], env: { ...process.env, ...env } });
  fs.closeSync(out);
  if (child.pid === undefined) throw new Error(`cannot start ${cmd} (see ${logFile}): ${tailFile(logFile, 20)}`);
  // Node records the exit here, so the registry never signals a recycled PID for long.
  child.on("error", () => undefined);
  registerProcess(child.pid, { kind, cmdlineMark: cmd, description: `${cmd} (log ${logFile})` });
  return child;
}

async function waitForServers(dir: string, caPem: string, ports: Ports, children: ChildProcess[]): Promise<void> {
  const debug = () =>
    `--- challtestsrv.log ---\n${tailFile(path.join(dir, "challtestsrv.log"), 30)}\n` +
    `--- pebble.log ---\n${tailFile(path.join(dir, "pebble.log"), 30)}`;
  await waitUntil(
    "pebble and pebble-challtestsrv to answer",
    30_000,
    async () => {
      const dead = children.find((c) => c.exitCode !== null || c.signalCode !== null);
      if (dead) throw new Error(`${dead.spawnfile} exited (${dead.exitCode ?? dead.signalCode}) while starting\n${debug()}`);
      const dns = await httpRequest(`http://${LISTEN_HOST}:${ports.dnsManagement}/`, "GET").catch(() => undefined);
      const acme = await httpRequest(`https://${LISTEN_HOST}:${ports.acme}/dir`, "GET", { ca: caPem }).catch(() => undefined);
      return dns && acme?.status === 200 ? true : undefined;
    },
    { intervalMs: 200, debug },
  );
}

async function stopChildren(children: ChildProcess[]): Promise<void> {
  for (const child of children) if (child.pid !== undefined) await stopProcess(child.pid, "SIGTERM", 10_000);
}

function makePebble(certs: Certs, ports: Ports, children: ChildProcess[]): Pebble {
  const dnsApi = async (endpoint: string, body: object) => {
    const url = `http://${LISTEN_HOST}:${ports.dnsManagement}${endpoint}`;
    const res = await httpRequest(url, "POST", { body: JSON.stringify(body) });
    if (res.status !== 200) throw new Error(`challtestsrv POST ${endpoint} ${JSON.stringify(body)}: HTTP ${res.status} ${res.body}`);
  };
  return {
    directoryUrlForGuest: `https://${GUEST_HOST_ADDRESS}:${ports.acme}/dir`,
    directoryUrlForHost: `https://${LISTEN_HOST}:${ports.acme}/dir`,
    caBundlePem: certs.caPem,
    caBundlePath: certs.caPath,
    dnsServer: `${LISTEN_HOST}:${ports.dns}`,
    defaultIPv4: DEFAULT_IPV4,
    rootCertificatePem: async () => {
      const url = `https://${LISTEN_HOST}:${ports.management}/roots/0`;
      const res = await httpRequest(url, "GET", { ca: certs.caPem });
      if (res.status !== 200 || !res.body.includes("BEGIN CERTIFICATE")) {
        throw new Error(`pebble GET ${url}: HTTP ${res.status} ${res.body.slice(0, 500)}`);
      }
      return res.body;
    },
    // A record's value replaces the one before (challtestsrv's add-a would add a second address,
    // and Pebble would keep validating a replaced droplet's old one).
    addARecord: async (host, ipv4) => {
      await dnsApi("/clear-a", { host: fqdn(host) });
      await dnsApi("/add-a", { host: fqdn(host), addresses: [ipv4] });
    },
    addAAAARecord: async (host, ipv6) => {
      await dnsApi("/clear-aaaa", { host: fqdn(host) });
      await dnsApi("/add-aaaa", { host: fqdn(host), addresses: [ipv6] });
    },
    clearRecord: async (host) => {
      await dnsApi("/clear-a", { host: fqdn(host) });
      await dnsApi("/clear-aaaa", { host: fqdn(host) });
    },
    setTxtRecord: async (host, value) => {
      await dnsApi("/set-txt", { host: fqdn(host), value });
    },
    clearTxtRecord: async (host) => {
      await dnsApi("/clear-txt", { host: fqdn(host) });
    },
    stop: () => stopChildren(children),
  };
}

function fqdn(host: string): string {
  return host.endsWith(".") ? host : `${host}.`;
}

interface HttpResponse {
  status: number;
  body: string;
}

/** One HTTP(S) request to a loopback server; `ca` is the only CA trusted for HTTPS. */
function httpRequest(url: string, method: string, opts: { ca?: string; body?: string } = {}): Promise<HttpResponse> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const lib = u.protocol === "https:" ? https : http;
    const req = lib.request(
      u,
      { method, ca: opts.ca, timeout: 10_000, headers: opts.body ? { "content-type": "application/json" } : {} },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => (body += chunk));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error(`${method} ${url}: no answer within 10 s`)));
    req.on("error", (err) => reject(new Error(`${method} ${url}: ${err.message}`)));
    req.end(opts.body);
  });
}

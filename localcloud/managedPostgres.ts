// The local cloud's DigitalOcean Managed PostgreSQL: a real PostgreSQL server from Debian's
// packages on this host, with TLS and password (scram) authentication, listening on the host's
// loopback at the managed port. A VM reaches it at the cluster's private address
// (PRIVATE_HOST:MANAGED_POSTGRES_PORT), which qemu forwards from each VM's own loopback address
// (vm.ts), so the server sees every droplet at an address of its own and the database firewall's
// trusted sources are pg_hba lines: a connection from anywhere else finds no entry and is refused.
import * as crypto from "crypto";
import * as fs from "fs";
import * as path from "path";
import { MANAGED_POSTGRES_PORT } from "../components/config";
import { isRunning, registerProcess, stopProcess, unregisterProcess } from "./processes";
import { run } from "./util";

/** The private address of the managed cluster inside every VM (qemu forwards it to this host). */
export const PRIVATE_HOST = "10.0.2.100";
/** The VPC every local droplet is in: qemu's user network. */
export const LOCAL_VPC = { ipRange: "10.0.2.0/24" };
const ROOT = "/var/tmp/dropstack-localcloud-pg";
const ADMIN = "doadmin";

/** What the engine keeps of a cluster (in the resource's outputs). */
export interface ClusterRecord {
  /** The data directory (owned by the postgres account; PostgreSQL refuses to run as root). */
  dataDir: string;
  version: string;
  adminPassword: string;
}

const bin = (version: string, tool: string) => `/usr/lib/postgresql/${version}/bin/${tool}`;
/** The cluster's own folder (the postgres account's): its data directory and its server log. */
const home = (c: ClusterRecord) => path.dirname(c.dataDir);
const logFile = (c: ClusterRecord) => path.join(home(c), "server.log");
const asPostgres = (cmd: string, args: string[], opts: { timeoutMs?: number } = {}) =>
  run("runuser", ["-u", "postgres", "--", cmd, ...args], { cwd: "/", timeoutMs: opts.timeoutMs ?? 120_000 });

/** A SQL identifier quoted for PostgreSQL. */
function ident(name: string): string {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(name)) throw new Error(`local cloud: ${JSON.stringify(name)} is not a name DigitalOcean accepts for a database or user`);
  return `"${name}"`;
}

/** Runs SQL as the cluster's admin over its unix socket (in the data directory, reachable by postgres only). */
export async function sql(c: ClusterRecord, database: string, text: string): Promise<string> {
  const r = await asPostgres(bin(c.version, "psql"), ["-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", c.dataDir, "-p", String(MANAGED_POSTGRES_PORT), "-U", ADMIN, "-d", database, "-c", text]);
  return r.stdout.trim();
}

/** The server's postmaster pid, or undefined when it does not run. */
function serverPid(c: ClusterRecord): number | undefined {
  try {
    const pid = Number.parseInt(fs.readFileSync(path.join(c.dataDir, "postmaster.pid"), "utf8").split("\n")[0], 10);
    return Number.isFinite(pid) && isRunning(pid, c.dataDir) ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Creates a cluster: initdb with an admin and its password, a self-signed TLS certificate, the managed port on loopback; then starts it. */
export async function createCluster(key: string, version: string, log: (m: string) => void): Promise<ClusterRecord> {
  if (!fs.existsSync(bin(version, "initdb"))) {
    const have = fs.existsSync("/usr/lib/postgresql") ? fs.readdirSync("/usr/lib/postgresql").join(", ") : "none";
    throw new Error(`local cloud: a managed PostgreSQL ${version} cluster needs Debian's postgresql-${version} on this host (installed: ${have}); set dropstack:databaseVersion to one of them for the local cloud`);
  }
  if (!/^[a-z0-9-]{1,80}$/.test(key)) throw new Error(`local cloud: bad cluster key ${key}`);
  fs.mkdirSync(ROOT, { recursive: true, mode: 0o755 });
  const c: ClusterRecord = { dataDir: path.join(ROOT, key, "data"), version, adminPassword: crypto.randomBytes(24).toString("base64url") };
  if (fs.existsSync(home(c))) throw new Error(`local cloud: a cluster's folder already exists at ${home(c)} (another stack's? remove it once nothing uses it)`);
  fs.mkdirSync(c.dataDir, { recursive: true, mode: 0o700 });
  const pwfile = path.join(home(c), "admin.pw");
  fs.writeFileSync(pwfile, `${c.adminPassword}\n`, { mode: 0o600 });
  try {
    await run("chown", ["-R", "postgres:postgres", home(c)]);
    fs.chmodSync(home(c), 0o700);
    await asPostgres(bin(version, "initdb"), ["-D", c.dataDir, "-U", ADMIN, `--pwfile=${pwfile}`, "-E", "UTF8", "--no-locale", "--auth-local=trust", "--auth-host=scram-sha-256"]);
  } finally {
    fs.rmSync(pwfile, { force: true });
  }
  const [crt, keyFile] = [path.join(c.dataDir, "server.crt"), path.join(c.dataDir, "server.key")];
  await run("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "30",
    "-subj", "/CN=local managed postgresql", "-keyout", keyFile, "-out", crt]);
  await run("chown", ["postgres:postgres", crt, keyFile]);
  fs.chmodSync(keyFile, 0o600);
  fs.appendFileSync(path.join(c.dataDir, "postgresql.conf"), [
    "# the local cloud's managed cluster",
    "listen_addresses = '127.0.0.1'",
    `port = ${MANAGED_POSTGRES_PORT}`,
    `unix_socket_directories = '${c.dataDir}'`,
    "ssl = on", "ssl_cert_file = 'server.crt'", "ssl_key_file = 'server.key'",
    "password_encryption = scram-sha-256",
    "",
  ].join("\n"));
  await setTrustedSources(c, []);
  await ensureClusterRunning(c, log);
  return c;
}

/** Starts the cluster's server unless it runs (a cluster stays up, as a managed one does). */
export async function ensureClusterRunning(c: ClusterRecord, log: (m: string) => void): Promise<void> {
  const running = serverPid(c);
  if (running) {
    registerProcess(running, { kind: "postgres", cmdlineMark: c.dataDir, description: `managed PostgreSQL ${c.dataDir}` });
    return;
  }
  await asPostgres(bin(c.version, "pg_ctl"), ["-D", c.dataDir, "-l", logFile(c), "-w", "-t", "60", "start"]).catch((e) => {
    throw new Error(`local cloud: the managed PostgreSQL at ${c.dataDir} did not start (is port ${MANAGED_POSTGRES_PORT} on 127.0.0.1 taken?): ${(e as Error).message}\n${tail(logFile(c))}`);
  });
  const pid = serverPid(c);
  if (!pid) throw new Error(`local cloud: the managed PostgreSQL at ${c.dataDir} started but wrote no pid\n${tail(logFile(c))}`);
  registerProcess(pid, { kind: "postgres", cmdlineMark: c.dataDir, description: `managed PostgreSQL ${c.dataDir}` });
  log(`    managed PostgreSQL ${c.version} on 127.0.0.1:${MANAGED_POSTGRES_PORT} (pid ${pid}, TLS, scram)`);
}

/** Leaves the server running after this process exits (`npm run local -- up`). */
export function detachCluster(c: ClusterRecord): void {
  const pid = serverPid(c);
  if (pid) unregisterProcess(pid);
}

/** Stops the server, its data kept (ensureClusterRunning starts it again). */
export async function stopCluster(c: ClusterRecord): Promise<void> {
  const pid = serverPid(c);
  if (pid) {
    await asPostgres(bin(c.version, "pg_ctl"), ["-D", c.dataDir, "-m", "fast", "-w", "-t", "60", "stop"]).catch(() => undefined);
    registerProcess(pid, { kind: "postgres", cmdlineMark: c.dataDir, description: `managed PostgreSQL ${c.dataDir}` });
    await stopProcess(pid, "SIGTERM", 10_000);
  }
}

/** Stops the server and removes its data: the cluster is gone. */
export async function deleteCluster(c: ClusterRecord): Promise<void> {
  await stopCluster(c);
  fs.rmSync(home(c), { recursive: true, force: true });
}

/**
 * The database firewall: each trusted source becomes the only kind of TCP entry pg_hba has (TLS and
 * a password); anything else is refused before authentication. `sources` are addresses or networks.
 */
export async function setTrustedSources(c: ClusterRecord, sources: string[]): Promise<void> {
  for (const s of sources) if (!/^[0-9.]+\/\d{1,2}$/.test(s)) throw new Error(`local cloud: trusted source ${s} is not an IPv4 network (DigitalOcean takes no IPv6 trusted sources)`);
  const lines = [
    "# the local cloud's database firewall: the trusted sources only, over TLS, with a password",
    "local all all trust",
    ...sources.map((s) => `hostssl all all ${s} scram-sha-256`),
    "",
  ];
  const file = path.join(c.dataDir, "pg_hba.conf");
  fs.writeFileSync(file, lines.join("\n"), { mode: 0o600 });
  await run("chown", ["postgres:postgres", file]);
  if (serverPid(c)) await sql(c, "postgres", "SELECT pg_reload_conf()");
}

/** A database owned by the admin, as DigitalOcean creates one. */
export async function createDatabase(c: ClusterRecord, name: string): Promise<void> {
  const exists = await sql(c, "postgres", `SELECT count(*) FROM pg_database WHERE datname = '${name.replace(/'/g, "")}'`);
  if (exists === "0") await sql(c, "postgres", `CREATE DATABASE ${ident(name)}`);
}

export async function dropDatabase(c: ClusterRecord, name: string): Promise<void> {
  await sql(c, "postgres", `DROP DATABASE IF EXISTS ${ident(name)} WITH (FORCE)`);
}

/** A login user with a generated password (what DigitalOcean returns as the user's password). */
export async function createUser(c: ClusterRecord, name: string): Promise<string> {
  const password = crypto.randomBytes(24).toString("base64url");
  await sql(c, "postgres", `DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '${name}') THEN CREATE ROLE ${ident(name)} LOGIN; END IF; END $$`);
  await sql(c, "postgres", `ALTER ROLE ${ident(name)} LOGIN PASSWORD '${password}'`);
  return password;
}

/** Drops a user: what it owns in every database goes to the admin first. */
export async function dropUser(c: ClusterRecord, name: string): Promise<void> {
  const dbs = (await sql(c, "postgres", "SELECT datname FROM pg_database WHERE datallowconn")).split("\n").filter(Boolean);
  for (const db of dbs) await sql(c, db, `DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '${name}') THEN REASSIGN OWNED BY ${ident(name)} TO ${ADMIN}; DROP OWNED BY ${ident(name)}; END IF; END $$`);
  await sql(c, "postgres", `DROP ROLE IF EXISTS ${ident(name)}`);
}

function tail(file: string): string {
  try {
    return fs.readFileSync(file, "utf8").split("\n").slice(-20).join("\n");
  } catch {
    return "(no server log)";
  }
}

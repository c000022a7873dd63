// SSH to a simulated droplet with the ssh2 package, behaving like the Pulumi
// command provider's remote.Command / remote.CopyToRemote: `env` goes out as SSH
// "env" requests (which sshd silently drops unless it has AcceptEnv), stdin is
// written and then closed, and a given hostKey must match the server's exactly.
import * as fs from "fs";
import * as fsp from "fs/promises";
import * as path from "path";
import { Client, ClientChannel, ConnectConfig, SFTPWrapper, Stats } from "ssh2";
import { lastLines, lineSplitter, waitUntil } from "./util";

export interface SshConnection {
  host: string;
  port?: number;
  user: string;
  /** Private key in OpenSSH or PEM format. */
  privateKey: string;
  /** Expected host key as an OpenSSH public key line, e.g. "ssh-ed25519 AAAA... comment". */
  hostKey?: string;
}

export interface ExecOptions {
  stdin?: string;
  /** A local file streamed to the command's stdin instead (large inputs: an image, a build context). */
  stdinFile?: string;
  env?: Record<string, string>;
  /** Whole-command limit, connecting included. Default 10 minutes. */
  timeoutMs?: number;
  /** Called with each complete output line as it arrives (the last partial one at the end). */
  onLine?: (stream: "stdout" | "stderr", line: string) => void;
}

export interface ExecResult {
  /** Exit status; -1 when the command died from a signal or sent none. */
  code: number;
  stdout: string;
  stderr: string;
  signal?: string;
}

export class HostKeyMismatchError extends Error {}

function target(conn: SshConnection): string {
  return `${conn.user}@${conn.host}:${conn.port ?? 22}`;
}

/** The server host key algorithms that make the server present a key of this type. */
function hostKeyAlgorithms(keyType: string): ConnectConfig["algorithms"] {
  if (keyType === "ssh-rsa") return { serverHostKey: ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] };
  return { serverHostKey: [keyType as "ssh-ed25519"] };
}

/** Opens an authenticated connection; rejects with a clear error on host key mismatch. */
export function connect(conn: SshConnection, readyTimeoutMs = 30_000): Promise<Client> {
  return new Promise((resolve, reject) => {
    const client = new Client();
    const config: ConnectConfig = {
      host: conn.host,
      port: conn.port ?? 22,
      username: conn.user,
      privateKey: conn.privateKey,
      readyTimeout: readyTimeoutMs,
      keepaliveInterval: 10_000,
    };
    let mismatch: string | undefined;
    if (conn.hostKey) {
      const [type, blob] = conn.hostKey.trim().split(/\s+/);
      if (!type || !blob) throw new Error(`hostKey "${conn.hostKey}" is not an OpenSSH public key line`);
      config.algorithms = hostKeyAlgorithms(type);
      config.hostVerifier = (key: Buffer) => {
        const got = key.toString("base64");
        if (got === blob) return true;
        mismatch = `host key mismatch for ${target(conn)}: expected ${type} ${blob}, server presented ${got}`;
        return false;
      };
    }
    let settled = false;
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      client.end();
      reject(err);
    };
    // ssh2's readyTimeout stops when the socket closes, and a connection the server drops after
    // its version line (an sshd going down for a reboot) closes without an error: without this
    // timer and the close handler the promise would never settle.
    const timer = setTimeout(() => fail(new Error(`ssh ${target(conn)}: not logged in within ${readyTimeoutMs} ms`)), readyTimeoutMs + 5000);
    client.once("ready", () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(client);
    });
    client.on("error", (err) => {
      if (settled) client.end(); // after the login: the command under way sees the connection close
      fail(mismatch ? new HostKeyMismatchError(mismatch) : new Error(`ssh ${target(conn)}: ${err.message}`));
    });
    client.once("close", () => fail(new Error(`ssh ${target(conn)}: the connection closed before the login finished`)));
    client.connect(config);
  });
}

/** sshExec for a command that must succeed: resolves with its stdout, throws with its status and output otherwise. */
export async function sshOutput(conn: SshConnection, command: string, opts: ExecOptions = {}): Promise<string> {
  const r = await sshExec(conn, command, opts);
  if (r.code !== 0) throw new Error(`on the server: ${command.slice(0, 200)}\nexit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  return r.stdout;
}

/** Runs `command` over SSH and resolves with its exit code and output (never throws on a non-zero exit). */
export async function sshExec(conn: SshConnection, command: string, opts: ExecOptions = {}): Promise<ExecResult> {
  const timeoutMs = opts.timeoutMs ?? 10 * 60_000;
  const deadline = Date.now() + timeoutMs;
  const client = await connect(conn, Math.min(30_000, timeoutMs));
  try {
    return await execOn(client, conn, command, opts, Math.max(1, deadline - Date.now()));
  } finally {
    client.end();
  }
}

function execOn(client: Client, conn: SshConnection, command: string, opts: ExecOptions, timeoutMs: number): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const result: ExecResult = { code: -1, stdout: "", stderr: "" };
    const timer = setTimeout(() => {
      client.end();
      reject(new Error(`ssh ${target(conn)}: command timed out after ${timeoutMs} ms: ${command}${outputTail(result)}`));
    }, timeoutMs);
    client.exec(command, { env: opts.env }, (err, stream: ClientChannel) => {
      if (err) {
        clearTimeout(timer);
        reject(new Error(`ssh ${target(conn)}: cannot start command ${command}: ${err.message}`));
        return;
      }
      const lines = { stdout: lineSplitter((l) => opts.onLine?.("stdout", l)), stderr: lineSplitter((l) => opts.onLine?.("stderr", l)) };
      const take = (which: "stdout" | "stderr", d: Buffer) => {
        result[which] += d.toString();
        lines[which].push(d.toString());
      };
      const flush = () => {
        lines.stdout.flush();
        lines.stderr.flush();
      };
      stream.on("data", (d: Buffer) => take("stdout", d));
      stream.stderr.on("data", (d: Buffer) => take("stderr", d));
      let exited = false;
      stream.on("exit", (code: number | null, signal?: string) => {
        exited = true;
        if (typeof code === "number") result.code = code;
        if (signal) result.signal = signal;
      });
      stream.on("close", () => {
        clearTimeout(timer);
        flush();
        if (exited) resolve(result);
        else reject(new Error(`ssh ${target(conn)}: connection closed before "${command}" reported an exit status${outputTail(result)}`));
      });
      if (opts.stdinFile) fs.createReadStream(opts.stdinFile).on("error", () => stream.close()).pipe(stream);
      else stream.end(opts.stdin ?? "");
    });
  });
}

function outputTail(result: ExecResult): string {
  return (
    `\n--- stdout (last 30 lines) ---\n${lastLines(result.stdout, 30)}` +
    `\n--- stderr (last 30 lines) ---\n${lastLines(result.stderr, 30)}`
  );
}

/**
 * Retries logging in until it succeeds (a fresh droplet answers on port 22
 * before cloud-init has installed the keys). A host key mismatch fails at once.
 */
export async function waitForSshLogin(conn: SshConnection, timeoutMs: number): Promise<void> {
  let lastError = "no attempt finished";
  await waitUntil(
    `an SSH login as ${target(conn)}`,
    timeoutMs,
    async () => {
      try {
        const res = await sshExec(conn, "true", { timeoutMs: 30_000 });
        if (res.code === 0) return true;
        lastError = `"true" exited with ${res.code}: ${res.stderr}`;
      } catch (err) {
        if (err instanceof HostKeyMismatchError) throw err;
        lastError = (err as Error).message;
      }
      return undefined;
    },
    { intervalMs: 2000, debug: () => `last error: ${lastError}` },
  );
}

/**
 * Uploads a local directory (or one file) over SFTP like `scp -r localDir remotePath` (and
 * @pulumi/command's CopyToRemote with a FileArchive or FileAsset source): if remotePath is an
 * existing directory, localDir is copied into it (as remotePath/<basename>);
 * otherwise remotePath itself is created, and its parent must already exist.
 * File and directory modes are preserved; symlinks are followed.
 */
export async function sftpWriteDir(conn: SshConnection, localDir: string, remotePath: string): Promise<void> {
  const local = path.resolve(localDir);
  const stats = await fsp.stat(local);
  if (!stats.isDirectory() && !stats.isFile()) throw new Error(`sftpWriteDir: ${local} is neither a file nor a directory`);
  const client = await connect(conn);
  try {
    const sftp = await openSftp(client, conn);
    const dest = await resolveDestination(sftp, conn, local, remotePath);
    // a file (a FileAsset) is copied as `scp file remote` copies it, with its mode
    if (stats.isFile()) await uploadFile(sftp, local, dest, stats.mode & 0o7777);
    else await uploadDir(sftp, local, dest);
  } finally {
    client.end();
  }
}

function openSftp(client: Client, conn: SshConnection): Promise<SFTPWrapper> {
  return new Promise((resolve, reject) =>
    client.sftp((err, sftp) => (err ? reject(new Error(`ssh ${target(conn)}: cannot open SFTP: ${err.message}`)) : resolve(sftp))),
  );
}

async function resolveDestination(sftp: SFTPWrapper, conn: SshConnection, local: string, remotePath: string): Promise<string> {
  const existing = await remoteStat(sftp, remotePath);
  if (existing?.isDirectory()) return path.posix.join(remotePath, path.basename(local));
  if (existing) throw new Error(`sftpWriteDir ${target(conn)}: ${remotePath} exists and is not a directory`);
  const parent = path.posix.dirname(remotePath.replace(/\/+$/, "")) || ".";
  if (!(await remoteStat(sftp, parent))?.isDirectory()) {
    throw new Error(`sftpWriteDir ${target(conn)}: cannot create ${remotePath}: parent directory ${parent} does not exist`);
  }
  return remotePath;
}

function remoteStatRaw(sftp: SFTPWrapper, p: string): Promise<Stats> {
  return new Promise((resolve, reject) => sftp.stat(p, (err, stats) => (err ? reject(err) : resolve(stats))));
}

/** stat() of a remote path, or undefined if it does not exist. */
async function remoteStat(sftp: SFTPWrapper, p: string): Promise<Stats | undefined> {
  try {
    return await remoteStatRaw(sftp, p);
  } catch (err) {
    if ((err as { code?: number }).code === 2) return undefined; // SSH_FX_NO_SUCH_FILE
    throw new Error(`SFTP stat ${p}: ${(err as Error).message}`);
  }
}

function sftpCall(what: string, fn: (cb: (err?: Error | null) => void) => void): Promise<void> {
  return new Promise((resolve, reject) =>
    fn((err) => (err ? reject(new Error(`SFTP ${what}: ${err.message}`)) : resolve())),
  );
}

async function uploadDir(sftp: SFTPWrapper, local: string, remote: string): Promise<void> {
  const mode = (await fsp.stat(local)).mode & 0o7777;
  const existing = await remoteStat(sftp, remote);
  if (existing && !existing.isDirectory()) throw new Error(`SFTP: ${remote} exists and is not a directory`);
  if (!existing) await sftpCall(`mkdir ${remote}`, (cb) => sftp.mkdir(remote, { mode: mode | 0o700 }, cb));
  await sftpCall(`chmod ${remote}`, (cb) => sftp.chmod(remote, mode | 0o700, cb));
  for (const name of (await fsp.readdir(local)).sort()) {
    const from = path.join(local, name);
    const to = path.posix.join(remote, name);
    const stats = await fsp.stat(from);
    if (stats.isDirectory()) await uploadDir(sftp, from, to);
    else if (stats.isFile()) await uploadFile(sftp, from, to, stats.mode & 0o7777);
    else throw new Error(`sftpWriteDir: ${from} is neither a file nor a directory`);
  }
  // Set the real mode last, so a read-only directory can still be filled.
  await sftpCall(`chmod ${remote}`, (cb) => sftp.chmod(remote, mode, cb));
}

async function uploadFile(sftp: SFTPWrapper, local: string, remote: string, mode: number): Promise<void> {
  await fs.promises.access(local, fs.constants.R_OK);
  await sftpCall(`put ${local} -> ${remote}`, (cb) => sftp.fastPut(local, remote, { mode }, (err) => cb(err)));
  await sftpCall(`chmod ${remote}`, (cb) => sftp.chmod(remote, mode, cb));
}

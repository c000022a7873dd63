// Small helpers shared by the local cloud modules: running commands, bounded
// polling, file tails and free-port checks. Nothing here talks to the network
// beyond loopback.
import { spawn } from "child_process";
import * as fs from "fs";
import * as net from "net";

export type Logger = (msg: string) => void;

export const noLog: Logger = () => undefined;

export interface RunOptions {
  /** Written to the command's stdin, which is then closed. */
  input?: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Append the command's stdout and stderr to this file as well. */
  logFile?: string;
  /** Kill the command (SIGKILL) after this long. Default: 10 minutes. */
  timeoutMs?: number;
  /** Resolve with the result instead of throwing on a non-zero exit. */
  allowFailure?: boolean;
  /** Called with each output line (stdout and stderr) as it arrives. */
  onLine?: (line: string) => void;
}

/** Cuts a stream's chunks into lines: `push` each chunk, `flush` at the end for a last partial line. */
export function lineSplitter(onLine: (line: string) => void): { push(chunk: string): void; flush(): void } {
  let pending = "";
  return {
    push(chunk) {
      const lines = (pending + chunk).split("\n");
      pending = lines.pop() ?? "";
      for (const line of lines) onLine(line);
    },
    flush() {
      if (pending) onLine(pending);
      pending = "";
    },
  };
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function lastLines(text: string, lines: number): string {
  const all = text.replace(/\s+$/, "").split("\n");
  return all.slice(Math.max(0, all.length - lines)).join("\n");
}

/** The last `lines` lines of a file, or a note saying why there are none. */
export function tailFile(file: string, lines: number): string {
  try {
    return lastLines(fs.readFileSync(file, "utf8"), lines);
  } catch (err) {
    return `(cannot read ${file}: ${(err as Error).message})`;
  }
}

export function describeCommand(cmd: string, args: string[]): string {
  const quote = (a: string) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, "'\\''")}'`);
  return [cmd, ...args].map(quote).join(" ");
}

/** Runs a command to completion; throws (with its stderr tail) on failure. */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: ["pipe", "pipe", "pipe"],
    });
    const log = opts.logFile ? fs.createWriteStream(opts.logFile, { flags: "a" }) : undefined;
    let stdout = "";
    let stderr = "";
    const lines = { stdout: lineSplitter((l) => opts.onLine?.(l)), stderr: lineSplitter((l) => opts.onLine?.(l)) };
    child.stdout.on("data", (d: Buffer) => {
      stdout += d.toString();
      log?.write(d);
      lines.stdout.push(d.toString());
    });
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
      log?.write(d);
      lines.stderr.push(d.toString());
    });
    const timeoutMs = opts.timeoutMs ?? 10 * 60_000;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, timeoutMs);
    child.on("error", (err) => {
      clearTimeout(timer);
      log?.end();
      reject(new Error(`cannot start ${describeCommand(cmd, args)}: ${err.message}`));
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      log?.end();
      lines.stdout.flush();
      lines.stderr.flush();
      const result = { code: code ?? -1, stdout, stderr };
      if (code === 0 || (opts.allowFailure && !timedOut)) {
        resolve(result);
        return;
      }
      const why = timedOut
        ? `timed out after ${timeoutMs} ms`
        : signal
          ? `was killed by ${signal}`
          : `exited with code ${code}`;
      reject(new Error(`${describeCommand(cmd, args)} ${why}\n${formatOutput(stdout, stderr)}`));
    });
    child.stdin.on("error", () => undefined); // the command may exit without reading stdin
    child.stdin.end(opts.input ?? "");
  });
}

function formatOutput(stdout: string, stderr: string): string {
  const parts: string[] = [];
  if (stderr.trim()) parts.push(`--- stderr (last 60 lines) ---\n${lastLines(stderr, 60)}`);
  if (stdout.trim()) parts.push(`--- stdout (last 30 lines) ---\n${lastLines(stdout, 30)}`);
  return parts.length ? parts.join("\n") : "(no output)";
}

export interface WaitOptions {
  /** Time between two checks. Default 500 ms. */
  intervalMs?: number;
  /** Extra text for the error when the wait times out (e.g. a console tail). */
  debug?: () => string | Promise<string>;
}

/**
 * Polls `check` until it returns a value other than undefined, or throws after
 * `timeoutMs`. `check` may throw to abort the wait at once (e.g. the process died).
 */
export async function waitUntil<T>(
  what: string,
  timeoutMs: number,
  check: () => Promise<T | undefined> | T | undefined,
  opts: WaitOptions = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  const interval = opts.intervalMs ?? 500;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() >= deadline) {
      const extra = opts.debug ? `\n${await opts.debug()}` : "";
      throw new Error(`timed out after ${Math.round(timeoutMs / 1000)} s waiting for ${what}${extra}`);
    }
    await delay(Math.min(interval, Math.max(0, deadline - Date.now())));
  }
}

/** A pause inside a bounded poll loop; not to be used as a fixed wait. */
function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** True when `port` can be bound on `host` right now. */
export function canBind(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once("error", () => resolve(false));
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/** Ports freePort() handed out in this process: a caller may not have bound one yet. */
const handedOut = new Set<number>();

/**
 * A TCP port on `host` that was free when asked (the kernel picks it) and that this process has not
 * handed out before: a caller may not have bound that one yet, and the kernel may give a closed
 * port out again at once. A port already handed out is held while the kernel is asked again.
 */
export async function freePort(host = "127.0.0.1"): Promise<number> {
  const held: net.Server[] = [];
  try {
    // (one port and at most 20 more tries)
    while (held.length <= 21) {
      const server = net.createServer();
      held.push(server);
      const port = await new Promise<number>((resolve, reject) => {
        server.once("error", reject);
        server.listen({ host, port: 0, exclusive: true }, () => {
          const address = server.address();
          resolve(typeof address === "object" && address ? address.port : 0);
        });
      });
      if (!port) throw new Error(`no free port on ${host}`);
      if (!handedOut.has(port)) {
        handedOut.add(port);
        return port;
      }
    }
    throw new Error(`no free port on ${host} that this process has not handed out`);
  } finally {
    await Promise.all(held.map((server) => new Promise<void>((resolve) => (server.listening ? server.close(() => resolve()) : resolve()))));
  }
}

export function formatDuration(ms: number): string {
  const s = ms / 1000;
  return s < 60 ? `${s.toFixed(1)} s` : `${Math.floor(s / 60)} min ${(s % 60).toFixed(0)} s`;
}

/** Runs `fn`, logging how long it took under `label`. */
export async function timed<T>(log: Logger, label: string, fn: () => Promise<T>): Promise<T> {
  const start = Date.now();
  const result = await fn();
  log(`${label}: ${formatDuration(Date.now() - start)}`);
  return result;
}

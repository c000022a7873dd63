// A registry of the long-running processes the local cloud starts (qemu, pebble,
// pebble-challtestsrv, the managed PostgreSQL server, the load balancers' HAProxy), so that none of them outlives the Node process that
// started it: on exit, Ctrl-C or SIGTERM every registered PID is killed.
// Before a PID is signalled its command line is checked, so a recycled PID that
// now belongs to some other program is never touched.
import * as fs from "fs";
import { waitUntil } from "./util";

export type ProcessKind = "qemu" | "pebble" | "challtestsrv" | "postgres" | "haproxy";

interface Entry {
  kind: ProcessKind;
  /** A string that the process's /proc/<pid>/cmdline must contain. */
  cmdlineMark: string;
  description: string;
}

const registry = new Map<number, Entry>();
let handlersInstalled = false;

export function registerProcess(pid: number, entry: Entry): void {
  registry.set(pid, entry);
  installHandlers();
}

export function unregisterProcess(pid: number): void {
  registry.delete(pid);
}

export function registeredProcesses(): { pid: number; kind: ProcessKind; description: string }[] {
  return [...registry].map(([pid, e]) => ({ pid, kind: e.kind, description: e.description }));
}

/** True if `pid` is running and its command line contains `mark`. */
export function isRunning(pid: number, mark: string): boolean {
  try {
    const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ");
    if (!cmdline.includes(mark)) return false;
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

/** Sends `signal` to a registered PID if it is still the process we started. */
export function signalProcess(pid: number, signal: NodeJS.Signals): boolean {
  const entry = registry.get(pid);
  if (!entry || !isRunning(pid, entry.cmdlineMark)) return false;
  try {
    process.kill(pid, signal);
    return true;
  } catch {
    return false;
  }
}

/**
 * Stops a registered process: `signal` first, SIGKILL if it has not exited
 * within `timeoutMs`. Resolves once it is gone, and unregisters it.
 */
export async function stopProcess(pid: number, signal: NodeJS.Signals, timeoutMs: number): Promise<void> {
  const entry = registry.get(pid);
  if (!entry) return;
  const gone = () => (isRunning(pid, entry.cmdlineMark) ? undefined : true);
  signalProcess(pid, signal);
  try {
    await waitUntil(`${entry.description} (pid ${pid}) to exit after ${signal}`, timeoutMs, gone, {
      intervalMs: 100,
    });
  } catch {
    signalProcess(pid, "SIGKILL");
    await waitUntil(`${entry.description} (pid ${pid}) to exit after SIGKILL`, 10_000, gone, { intervalMs: 100 });
  }
  unregisterProcess(pid);
}

/** Synchronously SIGKILLs every registered process of the given kinds (all if none given). */
export function killRegistered(kinds?: ProcessKind[]): void {
  for (const [pid, entry] of [...registry]) {
    if (kinds && !kinds.includes(entry.kind)) continue;
    signalProcess(pid, "SIGKILL");
    registry.delete(pid);
  }
}

function installHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on("exit", () => killRegistered());
  for (const [signal, code] of [
    ["SIGINT", 130],
    ["SIGTERM", 143],
  ] as const) {
    process.once(signal, () => {
      killRegistered();
      process.exit(code);
    });
  }
}

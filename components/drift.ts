// Hand edits on the server, found at every preview and up, and repaired by the step that wrote the
// file. A remote step re-runs only when its own inputs change, so the program reads the server's
// dropstack-check report before the steps are declared and gives each step with drift a new
// REPAIR value on stdin: the preview shows exactly those steps changing, the up re-runs them, and
// they write their files again. The token a step ran with is recorded on the server, so the next
// evaluation of a clean server gives it the same value and nothing runs.
import * as path from "path";
import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { shellQuote } from "./shell";
import type { Connection } from "./steps";

/** What `dropstack-check --porcelain` found, as read by scripts/read-server-check.sh. */
export interface CheckReport {
  /** checked: the report was read; none: the server has no check yet (a new droplet); unreachable: SSH failed. */
  status: "checked" | "none" | "unreachable";
  /** Why the server could not be checked (ssh's error), for unreachable. */
  reason?: string;
  /** The repair token each step last ran with (step name as on the server, e.g. "dropstack-site"). */
  repairs: Record<string, string>;
  /** Each difference: the step that owns the file, what differs (changed, mode, missing, new), the path. */
  drift: { step: string; what: string; path: string }[];
}

const SCRIPT = path.join(__dirname, "..", "scripts", "read-server-check.sh");

/** Parses the reader's output; anything it does not understand is an error (never a silent "clean"). */
export function parseCheck(stdout: string): CheckReport {
  const report: CheckReport = { status: "checked", repairs: {}, drift: [] };
  let status: string | undefined;
  for (const line of stdout.split("\n").map((l) => l.trim()).filter(Boolean)) {
    const [kind, ...rest] = line.split(" ");
    if (kind === "unreachable") return { status: "unreachable", reason: rest.join(" ").trim() || "ssh failed", repairs: {}, drift: [] };
    if (kind === "status") status = rest[0];
    else if (kind === "repair" && rest.length === 2 && /^dropstack-[a-z-]+$/.test(rest[0])) report.repairs[rest[0]] = rest[1];
    else if (kind === "drift" && rest.length === 3 && /^dropstack-[a-z-]+$/.test(rest[0])) report.drift.push({ step: rest[0], what: rest[1], path: rest[2] });
    else throw new Error(`dropstack-check: unexpected line in the server's report: ${JSON.stringify(line.slice(0, 200))}`);
  }
  if (status === "none") return { status: "none", repairs: {}, drift: [] };
  if (status !== "0" && status !== "1") throw new Error(`dropstack-check failed on the server (exit ${status ?? "unknown"}): ${stdout.slice(0, 500)}`);
  if ((status === "1") !== report.drift.length > 0) throw new Error(`dropstack-check's exit ${status} does not match its ${report.drift.length} differences`);
  return report;
}

/** The token after `token`: r1 after none ("-"), r2 after r1, ... */
export function nextToken(token: string | undefined): string {
  const n = token && /^r[0-9]+$/.test(token) ? Number(token.slice(1)) : 0;
  return `r${n + 1}`;
}

/**
 * The REPAIR value of each step (by server step name): a step with drift gets the token after the
 * one it last ran with; a clean step keeps its token (none: the value is left out of its stdin).
 */
export function repairTokens(report: CheckReport): Record<string, string> {
  const tokens: Record<string, string> = {};
  for (const [step, token] of Object.entries(report.repairs)) if (token !== "-") tokens[step] = token;
  for (const step of new Set(report.drift.map((d) => d.step))) tokens[step] = nextToken(report.repairs[step]);
  return tokens;
}

/** The differences in one line, for the warning a preview and an up print. */
export function describeDrift(report: CheckReport): string {
  return report.drift.map((d) => `${d.what} ${d.path} (${d.step.replace(/^dropstack-/, "")} step)`).join("; ");
}

export interface ServerCheckArgs {
  /** How to reach the droplet: its address, the deploy user, the generated key, the pinned host key. */
  connection: pulumi.Input<Connection>;
  /** Read only once this is known: the step that waits for the droplet to boot (so a new droplet is up, and a preview of one reads nothing). */
  after: pulumi.Input<string>;
}

/**
 * Reads the server's drift report at evaluation time (preview and up) with the command provider's
 * local `run`, and returns each step's REPAIR token. A server that cannot be reached is reported
 * as a warning and treated as clean: the steps' own SSH then says why an up cannot proceed.
 */
export function serverRepairs(args: ServerCheckArgs): pulumi.Output<Record<string, string>> {
  const report = pulumi.all([args.connection, args.after]).apply(async ([c]) => {
    const r = await command.local.run({
      command: `bash ${shellQuote(SCRIPT)}`,
      environment: { CHECK_HOST: String(c.host), CHECK_USER: String(c.user), CHECK_KEY: String(c.privateKey), CHECK_HOST_KEY: String(c.hostKey).trim() },
      logging: "none",
    });
    return parseCheck(r.stdout);
  });
  // Nothing in the report is secret (step names, tokens, paths); the key it was read with is.
  return pulumi.unsecret(report).apply((r) => {
    if (r.status === "unreachable") {
      pulumi.log.warn(`dropstack-check: could not reach the server to look for hand edits (${r.reason}); this run assumes there are none`);
    } else if (r.drift.length) {
      pulumi.log.warn(`dropstack-check: the server differs from what dropstack wrote: ${describeDrift(r)}. The steps that wrote these files run again and restore them.`);
    }
    return repairTokens(r);
  });
}

// A remote step as a Pulumi resource: one script from remote/, its settings on stdin.
import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { contentHash, encodeValues, scriptText, stepCommand } from "./shell";

export type Connection = command.types.input.remote.ConnectionArgs;

/** What every component that works on the droplet over SSH is given. */
export interface OnServerArgs {
  /** How to reach the droplet as the deploy user (pinned host key, generated key). */
  connection: pulumi.Input<Connection>;
  /** Droplet id: a new droplet re-runs the component's steps. */
  dropletId: pulumi.Input<string>;
  /** Each step's REPAIR token from the server's drift check (components/drift.ts), by server step name; unset: none. @example { "dropstack-site": "r1" } */
  repairs?: pulumi.Input<Record<string, string>>;
}

export interface RemoteStepArgs {
  /** How to reach the server (host, deploy user, generated key). */
  connection: pulumi.Input<Connection>;
  /** Script in remote/ without ".sh", e.g. "base". */
  script: string;
  /** Settings passed on stdin (length-prefixed raw bytes, never on the command line). */
  values: Record<string, pulumi.Input<string>>;
  /** True when a value is a secret: stdin stays secret and nothing is logged. Default false. */
  secret?: boolean;
  /** Extra values whose change re-runs the step (e.g. the droplet id). Default none. */
  triggers?: pulumi.Input<string>[];
  /** The drift check's REPAIR tokens (see OnServerArgs): the step's own, when it has one, goes on stdin as REPAIR. */
  repairs?: pulumi.Input<Record<string, string>>;
}

/** Creates the Command that runs `remote/<script>.sh` with `values` on stdin. */
export function remoteStep(name: string, args: RemoteStepArgs, opts: pulumi.CustomResourceOptions): command.remote.Command {
  const encoded = pulumi.all([pulumi.all(args.values), args.repairs ?? {}]).apply(([v, repairs]) => {
    const repair = repairs[`dropstack-${args.script}`];
    return encodeValues(repair ? { ...v, REPAIR: repair } : v);
  });
  return new command.remote.Command(name, {
    connection: args.connection,
    create: stepCommand(args.script),
    stdin: args.secret ? pulumi.secret(encoded) : encoded,
    triggers: [contentHash(scriptText(args.script)), ...(args.triggers ?? [])],
    logging: args.secret ? "none" : "stdoutAndStderr",
    addPreviousOutputInEnv: false,
  }, { ...opts, additionalSecretOutputs: args.secret ? ["stdout", "stderr"] : undefined });
}

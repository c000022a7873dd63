import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import type { LbHealth } from "./config";
import { encodeValues, localCommand, stepCommand } from "./shell";
import { OnServerArgs } from "./steps";

/** One droplet of the roll: how to reach it, and its staged release step's output (a new stage re-runs its turn). */
export interface RollDroplet extends OnServerArgs {
  /** The droplet's release step output (AppRelease.stdout): it changes with every stage. */
  staged: pulumi.Input<string>;
}

export interface RollingReleaseArgs {
  /** App name. @example "shop" */
  app: string;
  /** The release every droplet staged. @example "r3f2a9c1b7e4d" */
  releaseId: string;
  /** The droplets, in the order they switch. */
  droplets: RollDroplet[];
  /** The health path the load balancer checks through nginx. @example "/healthz" */
  healthPath: string;
  /** The load balancer's health check: how long it takes to take a droplet out and back. @example { intervalSeconds: 10, timeoutSeconds: 5, healthyThreshold: 5, unhealthyThreshold: 3 } */
  health: LbHealth;
  /** Who triggers releases, for the servers' audit logs. @example "pulumi:prod" */
  triggeredBy: string;
}

/**
 * A droplet's membership of the load balancer's pool: created with the droplet (no drain flag
 * left), and deleted before it, draining it (remote/lb-leave.sh) so that its last requests finish
 * before the droplet goes. Not a remoteStep: a change of its scripts must not replace it (a
 * replacement would drain a droplet that stays).
 */
function member(name: string, d: RollDroplet, values: Record<string, string>, parent: pulumi.Resource, dependsOn: pulumi.Input<pulumi.Input<pulumi.Resource>[]> | pulumi.Input<pulumi.Resource> | undefined): command.remote.Command {
  return new command.remote.Command(name, {
    connection: d.connection,
    create: stepCommand("lb-member"),
    delete: stepCommand("lb-leave"),
    stdin: encodeValues(values),
    triggers: [d.dropletId],
    logging: "stdoutAndStderr",
    addPreviousOutputInEnv: false,
  }, { parent, dependsOn });
}

/** What the roll reaches each droplet with, from the droplets' connections: one deploy user and key, each droplet's address, port and pinned host key. */
function reach(droplets: RollDroplet[]) {
  return pulumi.all(droplets.map((d) => d.connection)).apply((cs) => {
    const users = new Set(cs.map((c) => String(c.user ?? "root")));
    const keys = new Set(cs.map((c) => String(c.privateKey ?? "")));
    if (users.size !== 1 || keys.size !== 1 || keys.has("")) throw new Error("the rolling release reaches every droplet as one deploy user with one private key");
    const lines = cs.map((c, i) => {
      if (!c.hostKey) throw new Error(`droplet ${i + 1} of the roll has no pinned host key`);
      return `${String(c.host)} ${Number(c.port ?? 22)} ${String(c.hostKey).trim()}`;
    });
    return { user: [...users][0], key: [...keys][0], droplets: lines.join("\n") };
  });
}

/**
 * A rolling release behind the load balancer, after every droplet staged it (booted in its idle
 * slot, health-checked): one local command (scripts/roll-fleet.sh, where `pulumi` runs) gives each
 * droplet its turn over SSH in order: it leaves the rotation (its health path answers 503 until the
 * load balancer has seen it fail), switches to the staged release through the health gate, and
 * comes back (until the load balancer has seen it pass) before the next one starts. A release
 * refused while staging stops the up before any droplet switched; a turn that fails later stops
 * the roll and switches the droplets that had switched back to their previous release.
 */
export class RollingRelease extends pulumi.ComponentResource {
  /** The roll: every droplet's turn, in order, and the switch-back when one fails. Its stdout has a line "turn=<n> seconds=<s>" per passed turn. */
  readonly roll: command.local.Command;
  /** Each droplet's membership of the pool (drained before the droplet is deleted). */
  readonly members: command.remote.Command[];

  constructor(name: string, args: RollingReleaseArgs, opts?: pulumi.ComponentResourceOptions) {
    super("dropstack:index:RollingRelease", name, {}, opts);
    const h = args.health;
    const check = { APP: args.app, HEALTH_PATH: args.healthPath, CHECK_INTERVAL: String(h.intervalSeconds), CHECK_TIMEOUT: String(h.timeoutSeconds) };
    this.members = args.droplets.map((d, i) => member(`${name}-member-${i + 1}`, d, { ...check, UNHEALTHY_THRESHOLD: String(h.unhealthyThreshold) }, this, opts?.dependsOn));
    const turn = {
      ...check,
      RELEASE_ID: args.releaseId,
      HEALTHY_THRESHOLD: String(h.healthyThreshold),
      UNHEALTHY_THRESHOLD: String(h.unhealthyThreshold),
      TRIGGERED_BY: args.triggeredBy,
    };
    const to = reach(args.droplets);
    this.roll = new command.local.Command(name, {
      create: localCommand("roll-fleet"),
      // (the deploy key on stdin, a secret; the rest in the environment, which a preview shows)
      stdin: pulumi.secret(to.key),
      environment: {
        // (derived from the connections, key included, so marked secret: neither is)
        ROLL_USER: pulumi.unsecret(to.user),
        ROLL_DROPLETS: pulumi.unsecret(to.droplets),
        ROLL_STEP: stepCommand("roll"),
        ROLL_VALUES: encodeValues(turn),
        ROLL_BACK_VALUES: encodeValues({ ...turn, MODE: "back" }),
      },
      // (a new stage, a new droplet or a new release rolls again; a turn on a droplet already on it does nothing)
      triggers: [args.releaseId, ...args.droplets.map((d) => d.dropletId), ...args.droplets.map((d) => d.staged)],
      logging: "stdoutAndStderr",
      addPreviousOutputInEnv: false,
    }, { parent: this, dependsOn: this.members });
    this.registerOutputs({});
  }
}

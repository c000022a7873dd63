import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import type { LbHealth } from "./config";
import { encodeValues, stepCommand } from "./shell";
import { OnServerArgs, remoteStep } from "./steps";

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

/**
 * A rolling release behind the load balancer, after every droplet staged it (booted in its idle
 * slot, health-checked): one droplet at a time leaves the rotation (its health path answers 503
 * until the load balancer has seen it fail), switches to the staged release through the health
 * gate, and comes back (until the load balancer has seen it pass) before the next one starts. A
 * release refused anywhere is refused while staging, before any droplet switched.
 */
export class RollingRelease extends pulumi.ComponentResource {
  /** Each droplet's turn, in order. */
  readonly turns: command.remote.Command[];
  /** Each droplet's membership of the pool (drained before the droplet is deleted). */
  readonly members: command.remote.Command[];

  constructor(name: string, args: RollingReleaseArgs, opts?: pulumi.ComponentResourceOptions) {
    super("dropstack:index:RollingRelease", name, {}, opts);
    const h = args.health;
    const check = { APP: args.app, HEALTH_PATH: args.healthPath, CHECK_INTERVAL: String(h.intervalSeconds), CHECK_TIMEOUT: String(h.timeoutSeconds) };
    this.members = args.droplets.map((d, i) => member(`${name}-member-${i + 1}`, d, { ...check, UNHEALTHY_THRESHOLD: String(h.unhealthyThreshold) }, this, opts?.dependsOn));
    this.turns = [];
    args.droplets.forEach((d, i) => {
      const previous = this.turns[i - 1];
      this.turns.push(remoteStep(`${name}-${i + 1}`, {
        connection: d.connection,
        repairs: d.repairs,
        script: "roll",
        values: {
          ...check,
          RELEASE_ID: args.releaseId,
          HEALTHY_THRESHOLD: String(h.healthyThreshold),
          UNHEALTHY_THRESHOLD: String(h.unhealthyThreshold),
          TRIGGERED_BY: args.triggeredBy,
        },
        triggers: [args.releaseId, d.dropletId, d.staged],
      }, { parent: this, dependsOn: previous ? [previous] : this.members }));
    });
    this.registerOutputs({});
  }
}

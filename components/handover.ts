import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { OnServerArgs, remoteStep } from "./steps";

/** Seconds added to the record's TTL before the first droplet stops serving HTTPS itself: DigitalOcean's name servers answering with the new record. */
export const HANDOVER_MARGIN_SECONDS = 30;

export interface HandoverArgs extends OnServerArgs {
  /** App name (its nginx files). @example "shop" */
  app: string;
  /** The site's name, whose certbot certificate the first droplet may still have. @example "shop.example.com" */
  fqdn: string;
  /** The record's TTL in seconds: how long resolvers may keep the first droplet's address after the name moved. @example 300 */
  ttl: number;
}

/**
 * The end of a handover from one droplet to the load balancer (droplets > 1), on the first
 * droplet, once the name points at the load balancer: if the droplet still serves HTTPS itself
 * (the stack grew from one droplet; remote/site.sh kept that server), it goes on for the record's
 * TTL and a margin, for clients that resolved the name before, then stops, and certbot's
 * certificate and renewal go too. Nothing to do on a stack that started with several droplets.
 */
export class Handover extends pulumi.ComponentResource {
  /** The step (the droplets' cloud firewall closes HTTPS only after it). */
  readonly done: command.remote.Command;

  constructor(name: string, args: HandoverArgs, opts?: pulumi.ComponentResourceOptions) {
    super("dropstack:index:Handover", name, {}, opts);
    this.done = remoteStep(`${name}-finish`, {
      connection: args.connection,
      repairs: args.repairs,
      script: "handover",
      values: { APP: args.app, FQDN: args.fqdn, WAIT_SECONDS: String(args.ttl + HANDOVER_MARGIN_SECONDS) },
      triggers: [args.dropletId],
    }, { parent: this, dependsOn: opts?.dependsOn });
    this.registerOutputs({});
  }
}

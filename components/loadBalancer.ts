import * as digitalocean from "@pulumi/digitalocean";
import * as pulumi from "@pulumi/pulumi";
import type { LbHealth } from "./config";
import { dropletNumber } from "./server";

/** The port the load balancer reaches each droplet's nginx on, inside the VPC (plain HTTP). */
export const BACKEND_PORT = 80;

export interface LoadBalancerArgs {
  /** Load balancer name (also the certificate's). @example "shop-prod" */
  lbName: string;
  /** Region slug, the droplets'. @example "fra1" */
  region: string;
  /** The VPC of the droplets (the region's default VPC): the load balancer reaches them there. */
  vpcUuid: pulumi.Input<string>;
  /** The droplets in rotation. */
  dropletIds: pulumi.Input<string>[];
  /** Name the certificate is issued for, in a DigitalOcean-managed zone. @example "shop.example.com" */
  fqdn: string;
  /** Path of the health check through each droplet's nginx (a droplet answering 503 there is draining). @example "/healthz" */
  healthPath: string;
  /** Interval, timeout and thresholds of the health check. @example { intervalSeconds: 10, timeoutSeconds: 5, healthyThreshold: 5, unhealthyThreshold: 3 } */
  health: LbHealth;
  /** Protect the load balancer (its IP is the site's address) from deletion. @example true */
  protect: boolean;
}

/** The load balancer's forwarding rules: HTTPS (the certificate) and HTTP (redirected), both to the droplets' nginx over HTTP. */
export function forwardingRules(certificateName: pulumi.Input<string>): digitalocean.types.input.LoadBalancerForwardingRule[] {
  return [
    { entryProtocol: "https", entryPort: 443, targetProtocol: "http", targetPort: BACKEND_PORT, certificateName },
    { entryProtocol: "http", entryPort: 80, targetProtocol: "http", targetPort: BACKEND_PORT },
  ];
}

/** The health check: the app's health path through nginx, DigitalOcean's semantics. */
export function healthcheck(path: string, h: LbHealth): digitalocean.types.input.LoadBalancerHealthcheck {
  return {
    protocol: "http", port: BACKEND_PORT, path,
    checkIntervalSeconds: h.intervalSeconds, responseTimeoutSeconds: h.timeoutSeconds,
    healthyThreshold: h.healthyThreshold, unhealthyThreshold: h.unhealthyThreshold,
  };
}

/**
 * A DigitalOcean Load Balancer in front of the droplets: HTTPS terminated with a Let's Encrypt
 * certificate DigitalOcean issues and renews for the site's name, HTTP redirected to HTTPS,
 * traffic to each droplet's nginx over HTTP inside the VPC, a droplet in rotation only while
 * its health path answers.
 */
export class LoadBalancer extends pulumi.ComponentResource {
  /** The public address the site's DNS record points at. */
  readonly ip: pulumi.Output<string>;
  /** The load balancer's id: the droplets' cloud firewall admits web traffic from it alone. */
  readonly lbId: pulumi.Output<string>;

  constructor(name: string, args: LoadBalancerArgs, opts?: pulumi.ComponentResourceOptions) {
    super("dropstack:index:LoadBalancer", name, {}, opts);
    const certificate = new digitalocean.Certificate(`${name}-certificate`, {
      name: args.lbName,
      type: "lets_encrypt",
      domains: [args.fqdn],
    }, { parent: this });
    const lb = new digitalocean.LoadBalancer(`${name}-lb`, {
      name: args.lbName,
      region: args.region,
      vpcUuid: args.vpcUuid,
      dropletIds: args.dropletIds.map(dropletNumber),
      forwardingRules: forwardingRules(certificate.name),
      redirectHttpToHttps: true,
      healthcheck: healthcheck(args.healthPath, args.health),
      // dropstack writes the site's records itself (the Dns component)
      disableLetsEncryptDnsRecords: true,
    }, { parent: this, protect: args.protect });
    this.ip = lb.ip;
    this.lbId = lb.id;
    this.registerOutputs({ ip: this.ip, lbId: this.lbId });
  }
}

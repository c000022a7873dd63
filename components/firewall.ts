import * as digitalocean from "@pulumi/digitalocean";
import * as pulumi from "@pulumi/pulumi";
import type { EgressRule } from "./config";
import { dropletNumber } from "./server";

/** One extra outbound rule (the `egress` setting, validated): its type comes from the config schema. */
export type { EgressRule };

const EVERYWHERE = ["0.0.0.0/0", "::/0"];

export interface FirewallArgs {
  /** Firewall name. @example "shop-prod" */
  firewallName: string;
  /** Droplets the firewall applies to (one, or every droplet behind the load balancer). */
  dropletIds: pulumi.Input<string>[];
  /** With a load balancer: its id; web traffic (port 80, HTTPS ends at the load balancer) is admitted from it alone. Unset: HTTP and HTTPS from anywhere. */
  webFromLoadBalancer?: pulumi.Input<string>;
  /** Networks that may reach SSH. No default: allow-all must be written out. @example ["203.0.113.0/24"] */
  sshAllowedCidrs: string[];
  /** Extra outbound rules beyond DNS, HTTP/HTTPS and NTP (a managed database's adds its port within the VPC). Default: none. @example [{ protocol: "tcp", ports: "25060", to: ["10.114.0.0/20"] }] */
  egress?: pulumi.Input<EgressRule[]>;
}

/** Inbound rules: SSH from the configured networks, HTTP and HTTPS from anywhere (behind a load balancer: HTTP from it alone), ICMP. */
export function inboundRules(sshAllowedCidrs: string[], loadBalancerId?: pulumi.Input<string>): digitalocean.types.input.FirewallInboundRule[] {
  const web: digitalocean.types.input.FirewallInboundRule[] = loadBalancerId === undefined
    ? [{ protocol: "tcp", portRange: "80", sourceAddresses: EVERYWHERE }, { protocol: "tcp", portRange: "443", sourceAddresses: EVERYWHERE }]
    : [{ protocol: "tcp", portRange: "80", sourceLoadBalancerUids: [loadBalancerId] }];
  return [
    { protocol: "tcp", portRange: "22", sourceAddresses: sshAllowedCidrs },
    ...web,
    { protocol: "icmp", sourceAddresses: EVERYWHERE },
  ];
}

/** Outbound rules: only what the server needs (DNS, HTTP/HTTPS for apt and ACME, NTP, ICMP), then the configured extras. */
export function outboundRules(egress: EgressRule[] = []): digitalocean.types.input.FirewallOutboundRule[] {
  return [
    { protocol: "udp", portRange: "53", destinationAddresses: EVERYWHERE },
    { protocol: "tcp", portRange: "53", destinationAddresses: EVERYWHERE },
    { protocol: "tcp", portRange: "80", destinationAddresses: EVERYWHERE },
    { protocol: "tcp", portRange: "443", destinationAddresses: EVERYWHERE },
    { protocol: "udp", portRange: "123", destinationAddresses: EVERYWHERE },
    { protocol: "icmp", destinationAddresses: EVERYWHERE },
    ...egress.map((r) => ({ protocol: r.protocol, portRange: r.ports, destinationAddresses: r.to })),
  ];
}

/** DigitalOcean cloud firewall attached to the droplets. */
export class Firewall extends pulumi.ComponentResource {
  /** Firewall id. */
  readonly firewallId: pulumi.Output<string>;

  constructor(name: string, args: FirewallArgs, opts?: pulumi.ComponentResourceOptions) {
    super("dropstack:index:Firewall", name, {}, opts);
    const fw = new digitalocean.Firewall(`${name}-fw`, {
      name: args.firewallName,
      dropletIds: args.dropletIds.map(dropletNumber),
      inboundRules: inboundRules(args.sshAllowedCidrs, args.webFromLoadBalancer),
      outboundRules: pulumi.output(args.egress ?? []).apply((e) => outboundRules(e)),
    }, { parent: this, dependsOn: opts?.dependsOn });
    this.firewallId = fw.id;
    this.registerOutputs({ firewallId: this.firewallId });
  }
}

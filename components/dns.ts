import * as digitalocean from "@pulumi/digitalocean";
import * as pulumi from "@pulumi/pulumi";

export interface DnsArgs {
  /** DigitalOcean-managed zone. @example "example.com" */
  domain: string;
  /** Record name within the zone; "@" for the apex. @default "@" */
  host: string;
  /** Address for the A record. */
  ipv4Address: pulumi.Input<string>;
  /** Address for the AAAA record; omitted when IPv6 is off. */
  ipv6Address?: pulumi.Input<string>;
  /** Record TTL in seconds. @default 300 */
  ttl?: number;
}

/** The site's A (and AAAA) record in a zone managed by DigitalOcean DNS. */
export class Dns extends pulumi.ComponentResource {
  /** Fully qualified name of the record. */
  readonly fqdn: pulumi.Output<string>;

  constructor(name: string, args: DnsArgs, opts?: pulumi.ComponentResourceOptions) {
    super("dropstack:index:Dns", name, {}, opts);
    const a = this.createRecord(`${name}-a`, "A", args.ipv4Address, args);
    if (args.ipv6Address !== undefined) this.createRecord(`${name}-aaaa`, "AAAA", args.ipv6Address, args);
    this.fqdn = a.fqdn;
    this.registerOutputs({ fqdn: this.fqdn });
  }

  private createRecord(name: string, type: "A" | "AAAA", value: pulumi.Input<string>, args: DnsArgs): digitalocean.DnsRecord {
    return new digitalocean.DnsRecord(name, {
      domain: args.domain,
      type,
      name: args.host,
      value,
      ttl: args.ttl ?? 300,
    }, { parent: this });
  }
}

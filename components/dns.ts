import * as digitalocean from "@pulumi/digitalocean";
import * as pulumi from "@pulumi/pulumi";

export interface DnsArgs {
  /** DigitalOcean-managed zone. @example "example.com" */
  domain: string;
  /** Record name within the zone; "@" for the apex. @example "api" */
  host: string;
  /** Address for the A record. */
  ipv4Address: pulumi.Input<string>;
  /** Address for the AAAA record; omitted when IPv6 is off. */
  ipv6Address?: pulumi.Input<string>;
  /** Record TTL in seconds (the `dnsTtl` setting). @default 300 */
  ttl?: number;
}

/**
 * Fails with a clear message when the zone is not managed by DigitalOcean DNS in this account
 * (records could not be created, and certificates could never be issued).
 */
export function requireManagedDomain(domain: string, opts?: pulumi.InvokeOutputOptions): pulumi.Output<string> {
  return digitalocean.getDomainsOutput({ filters: [{ key: "name", values: [domain] }] }, opts).apply((result) => {
    if (!result.domains.some((d) => d.name === domain)) {
      throw new Error(`dropstack:domain: ${JSON.stringify(domain)} is not a domain managed by DigitalOcean DNS in this account; `
        + "add it under Networking > Domains (and point the registrar's NS records at ns1-3.digitalocean.com), e.g. example.com");
    }
    return domain;
  });
}

/** The site's A (and AAAA) record in a zone managed by DigitalOcean DNS. */
export class Dns extends pulumi.ComponentResource {
  /** Fully qualified name of the record. */
  readonly fqdn: pulumi.Output<string>;
  /** The zone, once DigitalOcean confirmed it manages it. */
  readonly zone: pulumi.Output<string>;

  constructor(name: string, args: DnsArgs, opts?: pulumi.ComponentResourceOptions) {
    super("dropstack:index:Dns", name, {}, opts);
    this.zone = requireManagedDomain(args.domain, { parent: this });
    const a = this.createRecord(`${name}-a`, "A", args.ipv4Address, args, opts?.dependsOn);
    if (args.ipv6Address !== undefined) this.createRecord(`${name}-aaaa`, "AAAA", args.ipv6Address, args, opts?.dependsOn);
    this.fqdn = a.fqdn;
    this.registerOutputs({ fqdn: this.fqdn });
  }

  private createRecord(name: string, type: "A" | "AAAA", value: pulumi.Input<string>, args: DnsArgs, dependsOn: pulumi.ResourceOptions["dependsOn"]): digitalocean.DnsRecord {
    return new digitalocean.DnsRecord(name, {
      domain: this.zone,
      type,
      name: args.host,
      value,
      ttl: args.ttl ?? 300,
    }, { parent: this, dependsOn });
  }
}

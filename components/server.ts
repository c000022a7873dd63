import * as digitalocean from "@pulumi/digitalocean";
import * as pulumi from "@pulumi/pulumi";
import { renderCloudConfig } from "./render";

export interface ServerArgs {
  /** Droplet name. @example "shop-prod" */
  dropletName: string;
  /** Region slug. Changing it replaces the droplet. @default "fra1" */
  region: string;
  /** Size slug; resized in place. @default "s-1vcpu-1gb" */
  size: string;
  /** Image slug. Changing it replaces the droplet. @default "debian-12-x64" */
  image: string;
  /** Public IPv6 address. @default true */
  ipv6: boolean;
  /** DigitalOcean monitoring agent. @default true */
  monitoring: boolean;
  /** Weekly backups. @default false (prod: true) */
  backups: boolean;
  /** Tags. @default ["dropstack", "dropstack-<stack>"] plus the configured ones */
  tags: string[];
  /** Login user created by cloud-init. @default "deploy" */
  deployUser: string;
  /** Public key of the generated deploy key (stable for the stack's life). */
  deployPublicKey: pulumi.Input<string>;
  /** Fingerprint of the deploy key registered with DigitalOcean. */
  deployKeyFingerprint: pulumi.Input<string>;
  /** Refuse to delete or replace the droplet. @default false (prod: true) */
  protect: boolean;
}

/**
 * The droplet. Its user data and SSH keys only ever hold the deploy user and the generated deploy
 * key: both stay the same for the stack's life, because changing either replaces the droplet (and
 * its disk). Admin keys, packages and configs are applied over SSH instead.
 */
export class Server extends pulumi.ComponentResource {
  /** Droplet id. */
  readonly dropletId: pulumi.Output<string>;
  /** Public IPv4 address. */
  readonly ipv4Address: pulumi.Output<string>;
  /** Public IPv6 address ("" when IPv6 is off). */
  readonly ipv6Address: pulumi.Output<string>;
  /** The droplet resource (for firewall and DNS). */
  readonly droplet: digitalocean.Droplet;

  constructor(name: string, args: ServerArgs, opts?: pulumi.ComponentResourceOptions) {
    super("dropstack:index:Server", name, {}, opts);
    this.droplet = this.createDroplet(name, args);
    this.dropletId = this.droplet.id;
    this.ipv4Address = this.droplet.ipv4Address;
    this.ipv6Address = this.droplet.ipv6Address.apply((a) => a ?? "");
    this.registerOutputs({ dropletId: this.dropletId, ipv4Address: this.ipv4Address, ipv6Address: this.ipv6Address });
  }

  private createDroplet(name: string, args: ServerArgs): digitalocean.Droplet {
    const userData = pulumi.output(args.deployPublicKey).apply((deployPublicKey) =>
      renderCloudConfig({ deployUser: args.deployUser, deployPublicKey }));
    return new digitalocean.Droplet(`${name}-droplet`, {
      name: args.dropletName,
      region: args.region,
      size: args.size,
      image: args.image,
      ipv6: args.ipv6,
      monitoring: args.monitoring,
      backups: args.backups,
      tags: args.tags,
      sshKeys: [args.deployKeyFingerprint],
      userData,
    }, { parent: this, protect: args.protect });
  }
}

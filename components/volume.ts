import * as digitalocean from "@pulumi/digitalocean";
import * as pulumi from "@pulumi/pulumi";
import { OnServerArgs, remoteStep } from "./steps";
import { dropletNumber } from "./server";

export interface DataVolumeArgs extends OnServerArgs {
  /** App name: /srv/<app>/shared moves onto the volume. @example "shop" */
  app: string;
  /** Volume name in the account (lower case letters, digits, '-'; unique per region). @example "shop-prod-data" */
  volumeName: string;
  /** Region: the droplet's (a volume attaches only to droplets in its own region). @example "fra1" */
  region: string;
  /** Size in GiB; a larger value grows the volume and its filesystem in place. @example 10 */
  sizeGib: number;
  /** Refuse to delete or replace the volume (Pulumi protect). @example true */
  protect: boolean;
}

/** The volume's mount point on the droplet. */
export function volumeMount(volumeName: string): string {
  return `/mnt/${volumeName}`;
}

/**
 * A DigitalOcean Block Storage volume that outlives the droplet: ext4, mounted by UUID with
 * `nofail`, holding /srv/<app>/shared (bind-mounted; what was there is copied over the first
 * time) and, with a database on the droplet, PostgreSQL's data. A replaced droplet gets the same
 * volume attached (the old attachment goes first: a volume attaches to one droplet at a time), and
 * its services wait for the mount rather than start on an empty disk.
 */
export class DataVolume extends pulumi.ComponentResource {
  /** Where the volume is mounted on the droplet. @example "/mnt/shop-prod-data" */
  readonly mount: string;
  /** The last step: the volume is mounted and shared/ lives on it. */
  readonly ready: pulumi.Resource;
  /** The volume's id. */
  readonly volumeId: pulumi.Output<string>;

  constructor(name: string, args: DataVolumeArgs, opts?: pulumi.ComponentResourceOptions) {
    super("dropstack:index:DataVolume", name, {}, opts);
    this.mount = volumeMount(args.volumeName);
    const volume = this.createVolume(name, args);
    const attachment = this.attach(name, args, volume);
    this.volumeId = volume.id;
    this.ready = this.mountOnServer(name, args, attachment, opts?.dependsOn);
    this.registerOutputs({ volumeId: this.volumeId, mount: this.mount });
  }

  private createVolume(name: string, args: DataVolumeArgs): digitalocean.Volume {
    return new digitalocean.Volume(`${name}-volume`, {
      name: args.volumeName,
      region: args.region,
      size: args.sizeGib,
      initialFilesystemType: "ext4",
      description: `dropstack: /srv/${args.app}/shared and the database of ${args.app}`,
    }, { parent: this, protect: args.protect });
  }

  private attach(name: string, args: DataVolumeArgs, volume: digitalocean.Volume): digitalocean.VolumeAttachment {
    return new digitalocean.VolumeAttachment(`${name}-attachment`, {
      dropletId: dropletNumber(args.dropletId),
      volumeId: volume.id,
    }, { parent: this, deleteBeforeReplace: true });
  }

  /** The mount step: after the attachment (its id is a trigger) and whatever the component waits for (the host's setup). */
  private mountOnServer(name: string, args: DataVolumeArgs, attachment: digitalocean.VolumeAttachment,
    after: pulumi.ComponentResourceOptions["dependsOn"]): pulumi.Resource {
    return remoteStep(`${name}-mount`, {
      connection: args.connection,
      repairs: args.repairs,
      script: "volume",
      values: { APP: args.app, VOLUME_NAME: args.volumeName, MOUNT: this.mount },
      triggers: [args.dropletId, attachment.id, String(args.sizeGib)],
    }, { parent: this, dependsOn: after });
  }
}

import * as fs from "fs";
import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import { renderDbScript } from "./render";
import { contentHash } from "./shell";
import { OnServerArgs, remoteStep } from "./steps";

export interface DropletDatabaseArgs extends OnServerArgs {
  /** Database and role name (the app's name, '-' as '_'). @example "shop" */
  name: string;
  /** The volume's mount point: the data directory lives under it. @example "/mnt/shop-prod-data" */
  mount: string;
  /** PostgreSQL major version of the droplet's Debian release. @example 15 */
  postgresMajor: number;
  /** A pg_dump file restored once into the empty database before the first release; unset: none. @example { file: "/home/me/shop/db/seed.dump", format: "custom" } */
  seed?: { file: string; format: "custom" | "plain" };
  /** Deploy user: the seed is uploaded into its home. @example "deploy" */
  deployUser: string;
  /** Days the nightly backups on the volume are kept (the newest always). @example 7 */
  backupKeepDays: number;
}

/** The database's name for an app name: PostgreSQL identifiers without quoting take no '-'. */
export function databaseName(app: string): string {
  return app.replace(/-/g, "_");
}

/**
 * PostgreSQL on the droplet with its data on the volume: Debian's server, one database owned by
 * the app's role, whose password is generated (@pulumi/random) and kept secret in the state.
 * `url` is the app's DATABASE_URL over the unix socket (a secret output); the server listens on
 * no TCP port. A seed dump, when given, is restored once into the empty database. Nightly backups
 * (a systemd timer running `dropstack-db backup`) go onto the volume; `dropstack-db restore`
 * brings one back in a single transaction.
 */
export class DropletDatabase extends pulumi.ComponentResource {
  /** DATABASE_URL for the app (secret). @example "postgresql://shop:...@/shop?host=/var/run/postgresql" */
  readonly url: pulumi.Output<string>;
  /** The last step: the database is ready (and seeded). */
  readonly ready: pulumi.Resource;

  constructor(name: string, args: DropletDatabaseArgs, opts?: pulumi.ComponentResourceOptions) {
    super("dropstack:index:DropletDatabase", name, {}, opts);
    const db = databaseName(args.name);
    const password = new random.RandomPassword(`${name}-password`, { length: 40, special: false }, { parent: this });
    const server = this.install(name, args, db, password.result, opts?.dependsOn);
    this.ready = args.seed ? restoreSeed(this, name, { ...args, seed: args.seed, db }, server) : server;
    this.url = pulumi.secret(pulumi.interpolate`postgresql://${db}:${password.result}@/${db}?host=/var/run/postgresql`);
    this.registerOutputs({ url: this.url });
  }

  private install(name: string, args: DropletDatabaseArgs, db: string, password: pulumi.Output<string>, after: pulumi.ComponentResourceOptions["dependsOn"]): command.remote.Command {
    return remoteStep(`${name}-postgresql`, {
      connection: args.connection,
      repairs: args.repairs,
      script: "database",
      secret: true,
      values: {
        DB_NAME: db,
        DB_USER: db,
        DB_PASSWORD: password,
        DATA_DIR: `${args.mount}/postgresql/${args.postgresMajor}/main`,
        MOUNT: args.mount,
        PG_MAJOR: String(args.postgresMajor),
        DB_SCRIPT: renderDbScript(),
        KEEP_DAYS: String(args.backupKeepDays),
      },
      triggers: [args.dropletId],
    }, { parent: this, dependsOn: after });
  }
}

/** Where a seed goes: the database and role, and for a server elsewhere (managed) how the droplet reaches it as that role. */
export interface SeedTarget extends OnServerArgs {
  seed: { file: string; format: string };
  /** Database and role name. */
  db: string;
  /** Deploy user: the dump is uploaded into its home. */
  deployUser: string;
  /** A server other than the droplet's own: its host, port and the role's password (secret). */
  server?: { host: pulumi.Input<string>; port: pulumi.Input<string>; password: pulumi.Input<string> };
}

/** Uploads the seed dump and restores it once into the empty database (remote/database-seed.sh). */
export function restoreSeed(parent: pulumi.Resource, name: string, t: SeedTarget, after: pulumi.Resource): command.remote.Command {
  const hash = contentHash(fs.readFileSync(t.seed.file).toString("base64")).slice(0, 16);
  const remotePath = `/home/${t.deployUser}/dropstack-seed-${hash}`;
  const upload = new command.remote.CopyToRemote(`${name}-seed-upload`, {
    connection: t.connection,
    source: new pulumi.asset.FileAsset(t.seed.file),
    remotePath,
    triggers: [hash, t.dropletId],
  }, { parent, dependsOn: [after] });
  return remoteStep(`${name}-seed`, {
    connection: t.connection,
    script: "database-seed",
    secret: t.server !== undefined,
    values: {
      DB_NAME: t.db, DB_USER: t.db, SEED_FILE: remotePath, SEED_FORMAT: t.seed.format,
      DB_HOST: t.server?.host ?? "", DB_PORT: t.server?.port ?? "", DB_PASSWORD: t.server?.password ?? "",
    },
    triggers: [hash, t.dropletId],
  }, { parent, dependsOn: [upload] });
}

import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { renderEnvJson, renderGunicornConf, renderSupervisorSlot } from "./render";
import { CACHE_ENTRIES, contentHash, folderHash } from "./shell";
import { OnServerArgs, remoteStep } from "./steps";

export interface AppReleaseArgs extends OnServerArgs {
  /** App name: its user, folders and supervisor programs. @example "shop" */
  app: string;
  /** Local folder with the app's source. @example "/home/me/shop/app" */
  sourceDir: string;
  /** Local folder of a built web client, released in the same folder as the app (releases/<id>/.client) and switched with it; unset: none. @example "/home/me/shop/client/dist" */
  clientDir?: string;
  /** WSGI target gunicorn serves. @example "shop.wsgi:create_app()" */
  wsgi: string;
  /** gunicorn workers; unset: 2 x CPUs + 1, decided on the server. @example 3 */
  workers?: number;
  /** Plain environment variables. @example { LOG_LEVEL: "info" } */
  env: Record<string, string>;
  /** Secret environment variables: when there are any, the step logs nothing and its stdin and outputs are secret. @example { DATABASE_URL: "postgres://..." } */
  secretEnv: Record<string, string>;
  /** True when another value this step carries (env, the release command) was stored with --secret: the step is then secret too. @default false */
  secretSettings?: boolean;
  /** The app's DATABASE_URL when dropstack runs its database (secret: the step is then secret). @example "postgresql://shop:...@/shop?host=/var/run/postgresql" */
  databaseUrl?: pulumi.Input<string>;
  /** Path the health check requests through the new slot's socket. @example "/healthz" */
  healthPath: string;
  /** Status the health check must answer. @example 200 */
  healthStatus: number;
  /** Seconds one health check may take. @example 5 */
  healthTimeout: number;
  /** Health checks (one a second) before the release is refused. @example 30 */
  healthAttempts: number;
  /** Command run in the new release before it goes live (migrations); unset: none. @example "flask db upgrade" */
  releaseCommand?: string;
  /** Version label shown in the release id; unset: the id is the hash alone. @example "v1.4.2" */
  releaseVersion?: string;
  /** Host header of the health check. */
  fqdn: string;
  /** Releases kept on the server (the live and previous ones always). @example 5 */
  keepReleases: number;
  /** Deploy user (owns the upload). @example "deploy" */
  deployUser: string;
  /** Who triggers releases, for the server's audit log. @example "pulumi:prod" */
  triggeredBy: string;
  /** Runtime docker: the image built on the droplet (components/container.ts), run in each slot as a container with this memory limit; unset: runtime python (gunicorn under supervisor). @example { image: "dropstack/shop:3f2a9c1b7e4d", memoryMib: 512 } */
  container?: { image: pulumi.Input<string>; memoryMib: number };
  /** One droplet of several behind the load balancer: the release is booted and health-checked in the idle slot, and the roll (components/roll.ts) switches it; the release command runs on one droplet only. Unset: the release switches itself. @example { runReleaseCommand: true } */
  stage?: { runReleaseCommand: boolean };
}

/**
 * The app released into /srv/<app>/releases/<id> with its own virtualenv, booted in the idle
 * blue/green slot beside the live one, health-checked through its own socket and only then given
 * the traffic (an atomic socket-symlink swap: no request dropped, no nginx reload); a release that
 * fails its release command or health check never goes live. The id is a hash of the app's files
 * and its settings, so the release runs again exactly when one of them changes, and a release
 * still on the server is reused (rolling back through Pulumi is instant).
 */
export class AppRelease extends pulumi.ComponentResource {
  /** Release id (content hash), as on the server. */
  readonly releaseId: string;
  /** The release step's output (secret when the environment holds secrets); staged, it names the slot and time of the stage. */
  readonly stdout: pulumi.Output<string>;
  /** The release step (the roll waits for every droplet's). */
  readonly step: command.remote.Command;

  constructor(name: string, args: AppReleaseArgs, opts?: pulumi.ComponentResourceOptions) {
    super("dropstack:index:AppRelease", name, {}, opts);
    const gunicornConf = renderGunicornConf({ app: args.app, workers: args.workers });
    const supervisorConf = renderSupervisorSlot({ app: args.app, wsgi: args.wsgi });
    // (a release without a client hashes as it always did: no new id for existing stacks)
    const parts = [folderHash(args.sourceDir), gunicornConf, supervisorConf, args.releaseCommand ?? "", ...(args.clientDir ? [`client:${folderHash(args.clientDir)}`] : []),
      ...(args.container ? ["runtime:docker"] : [])];
    const hash = contentHash(...parts).slice(0, 12);
    this.releaseId = args.releaseVersion ? `${args.releaseVersion}-${hash.slice(0, 8)}` : `r${hash}`;
    const uploadDir = `/home/${args.deployUser}/dropstack-upload-${this.releaseId}`;
    const uploads = [this.upload(`${name}-upload`, args, args.sourceDir, uploadDir, opts?.dependsOn)];
    const clientUploadDir = args.clientDir ? `${uploadDir}-client` : "";
    if (args.clientDir) uploads.push(this.upload(`${name}-client-upload`, args, args.clientDir, clientUploadDir, opts?.dependsOn));
    const step = this.release(name, args, { uploadDir, clientUploadDir, gunicornConf, supervisorConf }, uploads);
    this.stdout = step.stdout;
    this.step = step;
    this.registerOutputs({ releaseId: this.releaseId });
  }

  private upload(resourceName: string, args: AppReleaseArgs, localDir: string, remotePath: string, after: pulumi.Input<pulumi.Input<pulumi.Resource>[]> | pulumi.Input<pulumi.Resource> | undefined): command.remote.CopyToRemote {
    return new command.remote.CopyToRemote(resourceName, {
      connection: args.connection,
      source: new pulumi.asset.FileArchive(localDir),
      remotePath,
      triggers: [this.releaseId, args.dropletId],
    }, { parent: this, dependsOn: after });
  }

  private release(name: string, args: AppReleaseArgs, files: { uploadDir: string; clientUploadDir: string; gunicornConf: string; supervisorConf: string },
    after: pulumi.Resource[]): command.remote.Command {
    const secret = Object.keys(args.secretEnv).length > 0 || (args.secretSettings ?? false) || args.databaseUrl !== undefined;
    const envJson = pulumi.secret(pulumi.output(args.databaseUrl).apply((url) =>
      renderEnvJson({ ...args.env, ...args.secretEnv, ...(url === undefined ? {} : { DATABASE_URL: url }) })));
    return remoteStep(`${name}-release`, {
      connection: args.connection,
      repairs: args.repairs,
      script: "release",
      secret,
      values: {
        APP: args.app,
        RELEASE_ID: this.releaseId,
        UPLOAD_DIR: files.uploadDir,
        CLIENT_UPLOAD_DIR: files.clientUploadDir,
        ENV_JSON: envJson,
        GUNICORN_CONF: files.gunicornConf,
        SUPERVISOR_SLOT: files.supervisorConf,
        HEALTH_PATH: args.healthPath,
        HEALTH_HOST: args.fqdn,
        HEALTH_STATUS: String(args.healthStatus),
        HEALTH_TIMEOUT: String(args.healthTimeout),
        HEALTH_ATTEMPTS: String(args.healthAttempts),
        RELEASE_COMMAND: args.releaseCommand ?? "",
        KEEP_RELEASES: String(args.keepReleases),
        CACHE_ENTRIES: CACHE_ENTRIES.join("\n"),
        TRIGGERED_BY: args.triggeredBy,
        // (runtime python sends none of these: existing stacks keep their stdin)
        ...(args.container ? { RUNTIME: "docker", IMAGE: args.container.image, CONTAINER_MEMORY: String(args.container.memoryMib) } : {}),
        // (nor these, with one droplet)
        ...(args.stage ? { STAGE: "1", RUN_RELEASE_COMMAND: args.stage.runReleaseCommand ? "1" : "0" } : {}),
      },
      triggers: [this.releaseId, args.dropletId],
    }, { parent: this, dependsOn: after });
  }
}

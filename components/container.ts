import * as crypto from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import { renderDockerDaemon, renderEnvExec } from "./render";
import { folderHash } from "./shell";
import { OnServerArgs, remoteStep } from "./steps";

export interface ContainerImageArgs extends OnServerArgs {
  /** App name: the image is dropstack/<app>:<content hash>. @example "shop" */
  app: string;
  /** Local app folder with its Dockerfile: the build context. @example "/home/me/shop/app" */
  sourceDir: string;
  /** Deploy user: reaches the droplet's Docker daemon over SSH. @example "deploy" */
  deployUser: string;
}

/**
 * Runtime docker: Docker Engine from Debian's packages on the droplet (its daemon never writes
 * firewall rules and has no bridge: containers use the host's network behind its nftables), and
 * the app's image built **on the droplet** by `@pulumi/docker`, whose provider reaches the daemon
 * over SSH as the deploy user with the generated key and the pinned host key. The image is tagged
 * by the app folder's content hash, so an unchanged app builds nothing; a failed build fails the
 * `up` with the build's output before any release step runs (the live release keeps serving).
 * Releasing a built image (blue/green, health-gated) is the release step's job: `docker.Container`
 * replaces delete-before-create, which would drop requests.
 */
export class ContainerImage extends pulumi.ComponentResource {
  /** The image's name on the droplet, e.g. dropstack/shop:3f2a9c1b7e4d. */
  readonly imageName: pulumi.Output<string>;

  constructor(name: string, args: ContainerImageArgs, opts?: pulumi.ComponentResourceOptions) {
    super("dropstack:index:ContainerImage", name, {}, opts);
    const engine = this.installEngine(`${name}-engine`, args, opts?.dependsOn);
    const provider = this.provider(`${name}-docker`, args, engine);
    const tag = folderHash(args.sourceDir).slice(0, 12);
    const image = new docker.Image(`${name}-image`, {
      imageName: `dropstack/${args.app}:${tag}`,
      skipPush: true,
      build: {
        context: args.sourceDir,
        dockerfile: path.join(args.sourceDir, "Dockerfile"),
        platform: "linux/amd64",
        // (the daemon has no bridge network: RUN steps use the droplet's, behind its firewall)
        network: "host",
        builderVersion: "BuilderV1",
      },
    }, { parent: this, provider, dependsOn: [engine] });
    this.imageName = image.imageName;
    this.registerOutputs({ imageName: this.imageName });
  }

  private installEngine(name: string, args: ContainerImageArgs, after: pulumi.Input<pulumi.Input<pulumi.Resource>[]> | pulumi.Input<pulumi.Resource> | undefined) {
    return remoteStep(name, {
      connection: args.connection,
      repairs: args.repairs,
      script: "docker",
      values: { DEPLOY_USER: args.deployUser, DAEMON_JSON: renderDockerDaemon(), ENV_EXEC: renderEnvExec() },
      triggers: [args.dropletId],
    }, { parent: this, dependsOn: after });
  }

  /**
   * The Docker provider runs the local `ssh` (`docker system dial-stdio` on the droplet): the key and
   * the pinned host key must be files. They are written where the program runs, into a directory
   * only this user can read, for as long as the program runs.
   */
  private provider(name: string, args: ContainerImageArgs, engine: pulumi.Resource): docker.Provider {
    const connection = pulumi.output(args.connection);
    const files = pulumi.all([connection.host, connection.privateKey, connection.hostKey]).apply(([host, key, hostKey]) =>
      writeSshFiles(String(host), String(key ?? ""), String(hostKey ?? "")));
    // (the address and the file names are not secret; the connection they come from holds the key)
    return new docker.Provider(name, {
      host: pulumi.unsecret(pulumi.interpolate`ssh://${args.deployUser}@${connection.host}`),
      sshOpts: pulumi.unsecret(files).apply((f) => ["-i", f.key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
        "-o", `UserKnownHostsFile=${f.knownHosts}`, "-o", "GlobalKnownHostsFile=/dev/null"]),
    }, { parent: this, dependsOn: [engine] });
  }
}

/** Writes the deploy key and a known_hosts line pinning the host key, 0600 in a 0700 directory of this user's; removed when the program exits. */
function writeSshFiles(host: string, privateKey: string, hostKey: string): { key: string; knownHosts: string } {
  const id = crypto.createHash("sha256").update(`${host}\n${hostKey}`).digest("hex").slice(0, 12);
  const dir = path.join(os.tmpdir(), `dropstack-docker-ssh-${process.getuid?.() ?? "u"}-${id}`);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = fs.lstatSync(dir);
  if (!st.isDirectory() || (process.getuid && st.uid !== process.getuid()) || (st.mode & 0o077) !== 0) {
    throw new Error(`${dir} is not a private directory of this user's: refusing to write the deploy key there`);
  }
  const key = path.join(dir, "deploy_key");
  const knownHosts = path.join(dir, "known_hosts");
  fs.writeFileSync(key, privateKey.endsWith("\n") ? privateKey : `${privateKey}\n`, { mode: 0o600 });
  fs.writeFileSync(knownHosts, `${host} ${hostKey.trim()}\n`, { mode: 0o600 });
  process.once("exit", () => fs.rmSync(dir, { recursive: true, force: true }));
  return { key, knownHosts };
}

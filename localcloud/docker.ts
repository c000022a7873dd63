// The local cloud's stand-in for @pulumi/docker: the provider's own settings (ssh://user@host, the
// key and known_hosts files in sshOpts) say how to reach the droplet's Docker daemon, and an Image
// is built there for real, as the provider builds it: the context packed here, sent to the daemon,
// built with the given Dockerfile, platform and network. No registry is reachable from these
// machines, so the base image a Dockerfile names (Debian bookworm) is imported first from the
// local cloud's own minimal root filesystem (image.ts).
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { shellQuote } from "../components/shell";
import { CONTAINER_BASE_NAMES, ensureContainerBase } from "./image";
import { sshExec, SshConnection } from "./ssh";
import { Logger } from "./util";

type Inputs = Record<string, unknown>;

/** A provider input as the mocks hand it over (non-string values arrive JSON-encoded). */
function decoded<T>(v: unknown): T {
  return (typeof v === "string" && /^[[{]/.test(v) ? JSON.parse(v) : v) as T;
}

/** How the provider reaches the daemon: its host and the -i / UserKnownHostsFile of its sshOpts. */
export function providerConnection(provider: Inputs): SshConnection {
  const host = String(provider.host ?? "");
  const m = /^ssh:\/\/([a-z_][a-z0-9_-]*)@([0-9.]+)(?::(\d+))?$/.exec(host);
  if (!m) throw new Error(`local cloud: the docker provider's host must be ssh://user@address, not ${JSON.stringify(host)}`);
  const opts = decoded<string[]>(provider.sshOpts ?? []);
  const keyFile = opts[opts.indexOf("-i") + 1];
  const knownHosts = opts.map((o) => /^UserKnownHostsFile=(.+)$/.exec(o)?.[1]).find(Boolean);
  if (opts.indexOf("-i") < 0 || !keyFile || !knownHosts) throw new Error("local cloud: the docker provider's sshOpts must name the key (-i) and a known_hosts file");
  if (!opts.includes("StrictHostKeyChecking=yes")) throw new Error("local cloud: the docker provider must pin the host key (StrictHostKeyChecking=yes)");
  const line = fs.readFileSync(knownHosts, "utf8").trim().split("\n").find((l) => l.split(" ")[0] === m[2]);
  if (!line) throw new Error(`local cloud: ${knownHosts} has no host key for ${m[2]}`);
  return { host: m[2], port: m[3] ? Number(m[3]) : 22, user: m[1], privateKey: fs.readFileSync(keyFile, "utf8"), hostKey: line.split(" ").slice(1).join(" ") };
}

/** The base images a Dockerfile builds FROM (stage names excluded). */
export function baseImages(dockerfile: string): string[] {
  const stages = new Set<string>();
  const bases: string[] = [];
  for (const line of dockerfile.split("\n")) {
    const m = /^\s*FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?/i.exec(line);
    if (!m) continue;
    if (!stages.has(m[1].toLowerCase())) bases.push(m[1]);
    if (m[2]) stages.add(m[2].toLowerCase());
  }
  return bases;
}

/** docker.Image: the base imported when missing, then `docker build` on the droplet with the context sent over SSH. */
export async function buildImage(conn: SshConnection, inputs: Inputs, log: Logger): Promise<Inputs> {
  const build = decoded<{ context: string; dockerfile?: string; platform?: string; network?: string; builderVersion?: string }>(inputs.build);
  const imageName = String(inputs.imageName);
  const dockerfile = build.dockerfile ?? path.join(build.context, "Dockerfile");
  const text = fs.readFileSync(dockerfile, "utf8");
  for (const base of baseImages(text)) {
    if (!CONTAINER_BASE_NAMES.includes(base)) {
      throw new Error(`local cloud: no registry is reachable here; a Dockerfile may build FROM ${CONTAINER_BASE_NAMES.join(" or ")} (the local cloud provides them), not ${base}`);
    }
    const have = await sshExec(conn, `docker image inspect ${base} >/dev/null 2>&1`, { timeoutMs: 120_000 });
    if (have.code === 0) continue;
    const tar = await ensureContainerBase(log);
    log(`    importing the local cloud's ${base} into the droplet's Docker`);
    const r = await sshExec(conn, `docker import - ${base}`, { stdinFile: tar, timeoutMs: 20 * 60_000 });
    if (r.code !== 0) throw new Error(`local cloud: docker import ${base} failed: ${r.stderr}`);
  }
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "dropstack-docker-context-"));
  try {
    const tar = path.join(work, "context.tar");
    const rel = path.relative(build.context, dockerfile);
    if (rel.startsWith("..")) throw new Error(`local cloud: the Dockerfile ${dockerfile} must be inside the context ${build.context}`);
    execFileSync("tar", ["--numeric-owner", "-C", build.context, "-cf", tar, "."]);
    const args = ["docker", "build", "-t", imageName, "-f", rel,
      ...(build.platform ? ["--platform", build.platform] : []), ...(build.network ? ["--network", build.network] : []), "-"];
    const started = Date.now();
    const r = await sshExec(conn, `DOCKER_BUILDKIT=${build.builderVersion === "BuilderBuildKit" ? 1 : 0} ${args.map(shellQuote).join(" ")}`, {
      stdinFile: tar, timeoutMs: 40 * 60_000,
      onLine: (_s, line) => log(`    build | ${line}`),
    });
    if (r.code !== 0) {
      const tail = `${r.stdout}${r.stderr}`.trim().split("\n").slice(-40).join("\n");
      throw new Error(`docker build of ${imageName} failed (exit ${r.code}):\n${tail}`);
    }
    log(`    built ${imageName} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    const digest = await sshExec(conn, `docker image inspect --format '{{.Id}}' ${shellQuote(imageName)}`);
    return { ...inputs, imageName, repoDigest: "", baseImageName: imageName, registryServer: "", dockerfile, context: build.context, platform: build.platform, imageId: digest.stdout.trim() };
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

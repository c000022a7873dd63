// Runtime docker under mocks: the engine step, the provider over SSH with the pinned host key, the
// image built on the droplet and tagged by content, and the release that runs it.
import * as assert from "assert";
import * as fs from "fs";
import * as path from "path";
import { decodeValues, folderHash, readRemoteFile } from "../../components/shell";
import { baseImages } from "../../localcloud/docker";
import { PROJECT_DIR } from "../../localcloud/stackConfig";
import { DEPLOY_PRIVATE_KEY, DROPLET_IPV4, HOST_PUBLIC_KEY, runFake } from "./fakeCloud";

const DOCKER = { runtime: "docker" };
type Run = Awaited<ReturnType<typeof runFake>>;
const find = (run: Run, type: string) => run.resources.filter((r) => r.type === type);
const stdinOf = (run: Run, name: string) => {
  const stdin = run.resources.find((r) => r.name === name)!.inputs.stdin as string | { value: string };
  return decodeValues(typeof stdin === "string" ? stdin : stdin.value);
};

describe("runtime docker", function () {
  this.timeout(60_000);

  it("python (the default) declares nothing of Docker's and sends the release step nothing new", async () => {
    const run = await runFake();
    assert.deepStrictEqual(run.resources.filter((r) => /docker/i.test(r.type) || r.name.startsWith("container")).map((r) => r.name), []);
    const release = stdinOf(run, "app-release");
    for (const k of ["RUNTIME", "IMAGE", "CONTAINER_MEMORY"]) assert.strictEqual(release[k], undefined, k);
  });

  it("installs Docker Engine over SSH, then builds the image on the droplet through a provider that pins the host key", async () => {
    const run = await runFake({ overrides: DOCKER });
    const engine = run.resources.find((r) => r.name === "container-engine")!;
    assert.ok(engine, "the engine step");
    const values = stdinOf(run, "container-engine");
    assert.deepStrictEqual(JSON.parse(values.DAEMON_JSON), JSON.parse(readRemoteFile("templates/docker-daemon.json")));
    assert.strictEqual(JSON.parse(values.DAEMON_JSON).iptables, false, "Docker writes no firewall rules");
    assert.strictEqual(JSON.parse(values.DAEMON_JSON).bridge, "none");

    const [provider] = find(run, "pulumi:providers:docker");
    assert.strictEqual(provider.inputs.host, `ssh://deploy@${DROPLET_IPV4}`);
    const opts = (typeof provider.inputs.sshOpts === "string" ? JSON.parse(provider.inputs.sshOpts) : provider.inputs.sshOpts) as string[];
    assert.ok(opts.includes("StrictHostKeyChecking=yes"), opts.join(" "));
    const knownHosts = opts.find((o) => o.startsWith("UserKnownHostsFile="))!.slice("UserKnownHostsFile=".length);
    assert.strictEqual(fs.readFileSync(knownHosts, "utf8"), `${DROPLET_IPV4} ${HOST_PUBLIC_KEY}\n`, "known_hosts holds only the pinned key");
    const keyFile = opts[opts.indexOf("-i") + 1];
    assert.strictEqual(fs.readFileSync(keyFile, "utf8"), DEPLOY_PRIVATE_KEY);
    assert.strictEqual(fs.statSync(keyFile).mode & 0o777, 0o600);
    assert.strictEqual(fs.statSync(path.dirname(keyFile)).mode & 0o777, 0o700);

    const [image] = find(run, "docker:index/image:Image");
    const build = (typeof image.inputs.build === "string" ? JSON.parse(image.inputs.build) : image.inputs.build) as Record<string, string>;
    assert.strictEqual(build.platform, "linux/amd64");
    assert.strictEqual(build.context, path.join(PROJECT_DIR, "app"));
    assert.strictEqual(image.inputs.imageName, `dropstack/app:${folderHash(path.join(PROJECT_DIR, "app")).slice(0, 12)}`, "tagged by the app folder's content");
    assert.strictEqual(image.inputs.skipPush, true);
  });

  it("releases the image: the release step names it and the memory limit, and a new release id for the new runtime", async () => {
    const python = await runFake();
    const run = await runFake({ overrides: { ...DOCKER, containerMemory: 256 } });
    const release = stdinOf(run, "app-release");
    assert.strictEqual(release.RUNTIME, "docker");
    assert.match(release.IMAGE, /^dropstack\/app:[0-9a-f]{12}$/);
    assert.strictEqual(release.CONTAINER_MEMORY, "256");
    assert.notStrictEqual(run.outputs.releaseId.value, python.outputs.releaseId.value);
  });

  it("builds only from the base images the local cloud provides (a Dockerfile's stages are not bases)", () => {
    assert.deepStrictEqual(baseImages(fs.readFileSync(path.join(PROJECT_DIR, "app", "Dockerfile"), "utf8")), ["debian:bookworm-slim"]);
    assert.deepStrictEqual(baseImages("FROM --platform=linux/amd64 debian:bookworm AS build\nRUN true\nFROM build\nFROM debian:bookworm-slim\n"), ["debian:bookworm", "debian:bookworm-slim"]);
  });
});

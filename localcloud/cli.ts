// `npm run local -- up|down|preview`: the whole stack on the local cloud (a qemu VM standing in for
// the droplet, Pebble for Let's Encrypt and DigitalOcean DNS), with the sample app.
// Needs root (qemu binds ports 22/80/443 on a loopback address) and the packages from
// .ci/install-host-packages.sh.
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { LocalCloud } from "./engine";
import { ensureImage } from "./image";
import { LOCAL_FQDN, localConfig, startLocalPebble } from "./localStack";

const STATE_DIR = process.env.DROPSTACK_LOCAL_STATE ?? path.resolve(__dirname, "..", ".localcloud");

/**
 * The local cloud needs root (qemu binds ports 22/80/443 on a loopback address). As root this
 * returns; as another user it runs the same npm command again under sudo and exits with its status.
 */
function becomeRoot(): void {
  if (!process.getuid || process.getuid() === 0) return;
  const npm = process.env.npm_execpath;
  const hasSudo = spawnSync("sh", ["-c", "command -v sudo"]).status === 0;
  if (!hasSudo || !npm) {
    throw new Error(`the local cloud needs root (qemu binds ports 22/80/443 on a loopback address): run it as root${hasSudo ? " (npm run local -- ...)" : " (sudo is not installed)"}`);
  }
  const r = spawnSync("sudo", ["--preserve-env=DROPSTACK_LOCAL_STATE,DROPSTACK_LOCALCLOUD_CACHE", process.execPath, npm, "run", "local", "--", ...process.argv.slice(2)],
    { stdio: "inherit", cwd: path.resolve(__dirname, "..") });
  process.exit(r.status ?? 1);
}

async function main(): Promise<void> {
  const cmd = process.argv[2] ?? "up";
  if (!["up", "down", "preview"].includes(cmd)) throw new Error(`usage: npm run local -- up|preview|down (got ${cmd})`);
  becomeRoot();
  const log = (m: string) => console.log(m);
  fs.mkdirSync(STATE_DIR, { recursive: true });
  const t0 = Date.now();
  if (cmd !== "down") await ensureImage(log);
  const pebble = await startLocalPebble(STATE_DIR, log);
  try {
    const cloud = new LocalCloud({ stateDir: STATE_DIR, stack: "local", config: localConfig(pebble), secretKeys: [], pebble, log });
    if (cmd === "down") {
      await cloud.down();
      console.log("Local stack destroyed.");
      return;
    }
    const result = await cloud.up({ preview: cmd === "preview" });
    if (cmd === "preview") return;
    cloud.detachVms();
    const root = path.join(STATE_DIR, "pebble-root.pem");
    fs.writeFileSync(root, await pebble.rootCertificatePem());
    const ip = String(result.outputs.ipv4Address.value);
    console.log(`\nThe site is up (${((Date.now() - t0) / 1000).toFixed(0)}s). Try:`);
    console.log(`  curl --cacert ${root} --resolve ${LOCAL_FQDN}:443:${ip} https://${LOCAL_FQDN}/`);
    const key = result.resources.find((r) => r.name === "deploy-key-key");
    const keyPath = path.join(STATE_DIR, "deploy_key");
    fs.writeFileSync(keyPath, String(key?.state.privateKeyOpenssh ?? ""), { mode: 0o600 });
    const knownHosts = path.join(STATE_DIR, "known_hosts");
    fs.writeFileSync(knownHosts, `${String(result.outputs.knownHostsLine.value)}\n`);
    console.log(`  ssh -i ${keyPath} -o UserKnownHostsFile=${knownHosts} deploy@${ip}`);
    console.log(`The VM keeps running; stop it with: npm run local -- down`);
  } finally {
    await pebble.stop();
  }
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});

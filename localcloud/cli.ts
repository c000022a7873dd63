// `npm run local -- <command> [--stack NAME]`: a stack on the local cloud (a qemu VM standing in for
// the droplet, Pebble for Let's Encrypt and DigitalOcean DNS), with the stack's own app and
// settings (Pulumi.<stack>.yaml); only the zone, the ACME server, SSH's networks and IPv6 are
// swapped. Needs root (qemu binds ports 22/80/443 on a loopback address) and the packages from
// .ci/install-host-packages.sh.
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { LocalCloud, UpResult } from "./engine";
import { ensureImage } from "./image";
import { localStackConfig, startLocalPebble } from "./localStack";
import { stepPhases } from "./session";

const PROJECT_DIR = path.resolve(__dirname, "..");
const COMMANDS = ["up", "preview", "down", "ssh", "logs", "status", "check"] as const;
type Command = (typeof COMMANDS)[number];
const USAGE = `usage: npm run local -- ${COMMANDS.join("|")} [--stack NAME] [-- command for ssh]`;

/** What `up` leaves for ssh, logs and status: how to reach the droplet (host key pinned). */
interface Access { ip: string; user: string; keyPath: string; knownHosts: string; fqdn: string }

function parseArgs(argv: string[]): { cmd: Command; stack: string; rest: string[] } {
  const dash = argv.indexOf("--");
  const own = dash < 0 ? argv : argv.slice(0, dash);
  const rest = dash < 0 ? [] : argv.slice(dash + 1);
  let stack = "staging";
  const words: string[] = [];
  for (let i = 0; i < own.length; i++) {
    if (own[i] === "--stack") stack = own[++i] ?? "";
    else if (own[i].startsWith("--stack=")) stack = own[i].slice("--stack=".length);
    else words.push(own[i]);
  }
  const cmd = (words[0] ?? "up") as Command;
  if (!COMMANDS.includes(cmd) || words.length > 1) throw new Error(`${USAGE} (got ${words.join(" ")})`);
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(stack)) throw new Error(`--stack: expected a stack name such as "staging" (got ${JSON.stringify(stack)})`);
  return { cmd, stack, rest };
}

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
  const r = spawnSync("sudo", ["--preserve-env=DROPSTACK_LOCAL_STATE,DROPSTACK_LOCALCLOUD_CACHE,DROPSTACK_LOCAL_SECRETS", process.execPath, npm, "run", "local", "--", ...process.argv.slice(2)],
    { stdio: "inherit", cwd: PROJECT_DIR });
  process.exit(r.status ?? 1);
}

/** Local values for the stack file's encrypted settings: the environment, else a git-ignored file. */
function localSecrets(stateRoot: string, stack: string): { text: string | undefined; where: string } {
  const file = path.join(stateRoot, `${stack}.secrets.yaml`);
  const where = `${path.relative(PROJECT_DIR, file)} (git-ignored) or DROPSTACK_LOCAL_SECRETS (the same YAML)`;
  if (process.env.DROPSTACK_LOCAL_SECRETS) return { text: process.env.DROPSTACK_LOCAL_SECRETS, where };
  return { text: fs.existsSync(file) ? fs.readFileSync(file, "utf8") : undefined, where };
}

/** The steps an `up` ran and how long each phase took. */
function phaseTable(result: UpResult, totalSeconds: number): string {
  const ran = result.steps.filter((s) => s.op !== "same");
  const rows: [string, string][] = [
    ...stepPhases(result).filter(([, s]) => s > 0).map(([name, s]): [string, string] => [name, `${s.toFixed(1)} s`]),
    ["remote steps and resources changed", ran.length ? ran.map((s) => `${s.name} (${s.op})`).join(", ") : "none"],
    ["total", `${totalSeconds.toFixed(1)} s`],
  ];
  const width = Math.max(...rows.map(([n]) => n.length));
  return rows.map(([n, v]) => `  ${n.padEnd(width)}  ${v}`).join("\n");
}

function readAccess(stateDir: string, stack: string): Access {
  const file = path.join(stateDir, "access.json");
  if (!fs.existsSync(file)) throw new Error(`stack ${stack} is not up on the local cloud: npm run local -- up --stack ${stack}`);
  return JSON.parse(fs.readFileSync(file, "utf8")) as Access;
}

/** Runs ssh to the droplet with the pinned host key; returns its exit status. */
function ssh(a: Access, command: string[], tty: boolean): number {
  const args = ["-i", a.keyPath, "-o", `UserKnownHostsFile=${a.knownHosts}`, "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes",
    ...(tty ? ["-t"] : []), `${a.user}@${a.ip}`, ...command];
  return spawnSync("ssh", args, { stdio: "inherit" }).status ?? 1;
}

async function up(cmd: "up" | "preview" | "down", stack: string, stateRoot: string, stateDir: string): Promise<void> {
  const log = (m: string) => console.log(m);
  const t0 = Date.now();
  if (cmd !== "down") await ensureImage(log);
  const pebble = await startLocalPebble(stateDir, log);
  try {
    const secrets = localSecrets(stateRoot, stack);
    const local = localStackConfig(stack, pebble, secrets.text, secrets.where);
    const cloud = new LocalCloud({ stateDir, stack, config: local.config, secretKeys: local.secretKeys, pebble, log });
    if (cmd === "down") {
      await cloud.down();
      fs.rmSync(path.join(stateDir, "access.json"), { force: true });
      console.log(`Local stack ${stack} destroyed.`);
      return;
    }
    const result = await cloud.up({ preview: cmd === "preview" });
    if (cmd === "preview") return;
    cloud.detachVms();
    const ip = String(result.outputs.ipv4Address.value);
    const key = result.resources.find((r) => r.name === "deploy-key-key");
    const access: Access = {
      ip, user: local.config["dropstack:deployUser"] ?? "deploy",
      keyPath: path.join(stateDir, "deploy_key"), knownHosts: path.join(stateDir, "known_hosts"), fqdn: local.fqdn,
    };
    fs.writeFileSync(access.keyPath, String(key?.state.privateKeyOpenssh ?? ""), { mode: 0o600 });
    fs.writeFileSync(access.knownHosts, `${String(result.outputs.knownHostsLine.value)}\n`);
    fs.writeFileSync(path.join(stateDir, "access.json"), `${JSON.stringify(access, null, 2)}\n`, { mode: 0o600 });
    const root = path.join(stateDir, "pebble-root.pem");
    fs.writeFileSync(root, await pebble.rootCertificatePem());
    console.log(`\nPhases:\n${phaseTable(result, (Date.now() - t0) / 1000)}`);
    console.log(`\nStack ${stack} is up. Try:`);
    console.log(`  curl --cacert ${root} --resolve ${local.fqdn}:443:${ip} https://${local.fqdn}/`);
    console.log(`  npm run local -- ssh|logs|status|check --stack ${stack}`);
    console.log(`The VM keeps running; stop it with: npm run local -- down --stack ${stack}`);
  } finally {
    await pebble.stop();
  }
}

async function main(): Promise<void> {
  const { cmd, stack, rest } = parseArgs(process.argv.slice(2));
  becomeRoot();
  const stateRoot = process.env.DROPSTACK_LOCAL_STATE ?? path.join(PROJECT_DIR, ".localcloud");
  const stateDir = path.join(stateRoot, stack);
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  if (cmd === "up" || cmd === "preview" || cmd === "down") return up(cmd, stack, stateRoot, stateDir);
  const access = readAccess(stateDir, stack);
  if (cmd === "ssh") process.exitCode = ssh(access, rest, rest.length === 0);
  if (cmd === "status") process.exitCode = ssh(access, ["sudo", "dropstack-switch", "--status"], false);
  // What differs from what dropstack wrote (exit 1 on drift; `up` restores it).
  if (cmd === "check") process.exitCode = ssh(access, ["sudo", "/usr/local/sbin/dropstack-check"], false);
  if (cmd === "logs") {
    // The live slot's log (app output and gunicorn's access log), followed.
    const script = `set -e; app=$(cat /etc/dropstack/app); slot=$(sudo dropstack-switch --status | sed -n 's/.* slot=\\([a-z]*\\).*/\\1/p'); sudo tail -n 100 -F "/srv/$app/shared/log/$slot.log"`;
    process.exitCode = ssh(access, [script], false);
  }
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});

// End-to-end check of the local cloud: image, pebble, one VM, SSH, cloud-init,
// apt inside the guest, the guest reaching pebble, mock DNS, clean power-off.
//   TS_NODE_TRANSPILE_ONLY=1 npx ts-node localcloud/smoke.ts
import * as dns from "dns";
import * as fsp from "fs/promises";
import * as path from "path";
import { startPebble, Pebble } from "./acme";
import { ensureImage } from "./image";
import { HostKeyMismatchError, sftpWriteDir, sshExec, SshConnection, waitForSshLogin } from "./ssh";
import { formatDuration, run } from "./util";
import { bootVm, freeLoopbackAddress, stopAll, Vm } from "./vm";

const WORK_DIR = path.resolve(__dirname, "../.localcloud/smoke");
const HOSTNAME = "smoke-droplet";
const DNS_NAME = "smoke.example.test";

const timings: [string, number][] = [];
const log = (msg: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);

async function phase<T>(name: string, fn: () => Promise<T>): Promise<T> {
  log(`>> ${name}`);
  const start = Date.now();
  const result = await fn();
  const ms = Date.now() - start;
  timings.push([name, ms]);
  log(`<< ${name}: ${formatDuration(ms)}`);
  return result;
}

function check(condition: boolean, what: string, detail: string): void {
  if (!condition) throw new Error(`smoke check failed: ${what}\n${detail}`);
}

/** Runs a command that must succeed; the error carries its output and the VM console. */
async function mustExec(vm: Vm, conn: SshConnection, command: string, opts: { stdin?: string; timeoutMs?: number } = {}) {
  const res = await sshExec(conn, command, opts);
  check(
    res.code === 0,
    `"${command}" as ${conn.user} exited with ${res.code}`,
    `--- stdout ---\n${res.stdout}\n--- stderr ---\n${res.stderr}\n--- console ---\n${vm.consoleTail(40)}`,
  );
  return res;
}

async function makeKeyPair(dir: string): Promise<{ privateKey: string; publicKey: string }> {
  const keyFile = path.join(dir, "id_ed25519");
  await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "dropstack-smoke", "-f", keyFile]);
  return {
    privateKey: await fsp.readFile(keyFile, "utf8"),
    publicKey: (await fsp.readFile(`${keyFile}.pub`, "utf8")).trim(),
  };
}

function userData(publicKey: string): string {
  return [
    "#cloud-config",
    "users:",
    "  - name: deploy",
    "    shell: /bin/bash",
    "    sudo: 'ALL=(ALL) NOPASSWD:ALL'",
    "    ssh_authorized_keys:",
    `      - ${publicKey}`,
    "ssh_pwauth: false",
    "",
  ].join("\n");
}

async function checkSshSemantics(vm: Vm, deploy: SshConnection, root: SshConnection): Promise<void> {
  const id = await mustExec(vm, root, "id -u");
  check(id.stdout.trim() === "0", "root login with the meta-data public key", id.stdout);
  const env = await sshExec(deploy, 'printf "%s" "${DROPSTACK_SMOKE:-unset}"', { env: { DROPSTACK_SMOKE: "1" } });
  check(env.stdout === "unset", "env requests are dropped by sshd without AcceptEnv", env.stdout);
  const hostKey = (await mustExec(vm, deploy, "cat /etc/ssh/ssh_host_ed25519_key.pub")).stdout.trim();
  await mustExec(vm, { ...deploy, hostKey }, "true");
  const wrongKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm5tYY2uLQyBXLXZPhQn3l6dpmNvB0kkUD6yoy9hbJ+";
  const mismatch = await sshExec({ ...deploy, hostKey: wrongKey }, "true").then(
    () => undefined,
    (err: Error) => err,
  );
  check(mismatch instanceof HostKeyMismatchError, "a wrong hostKey is refused", String(mismatch));
}

async function checkSftp(vm: Vm, deploy: SshConnection): Promise<void> {
  const src = path.join(WORK_DIR, "bundle");
  await fsp.mkdir(path.join(src, "bin"), { recursive: true });
  await fsp.writeFile(path.join(src, "app.txt"), "hello\n", { mode: 0o640 });
  await fsp.writeFile(path.join(src, "bin", "run.sh"), "#!/bin/sh\necho run\n", { mode: 0o755 });
  await sftpWriteDir(deploy, src, "/home/deploy/app"); // created: /home/deploy/app/app.txt
  await sftpWriteDir(deploy, src, "/home/deploy/app"); // exists: /home/deploy/app/bundle/app.txt
  const listing = await mustExec(vm, deploy, "cd /home/deploy/app && stat -c '%a %n' app.txt bin/run.sh bundle/bin/run.sh && bin/run.sh");
  check(listing.stdout === "640 app.txt\n755 bin/run.sh\n755 bundle/bin/run.sh\nrun\n", "sftpWriteDir layout and modes", listing.stdout);
  const missing = await sftpWriteDir(deploy, src, "/home/deploy/no/such/dir").then(
    () => undefined,
    (err: Error) => err,
  );
  check(missing !== undefined, "sftpWriteDir refuses a missing parent directory", "it succeeded");
}

async function checkGuestReachesPebble(vm: Vm, deploy: SshConnection, pebble: Pebble): Promise<void> {
  await mustExec(vm, deploy, "cat > /tmp/pebble-ca.pem", { stdin: pebble.caBundlePem });
  const dir = await mustExec(vm, deploy, `curl -sS --max-time 20 --cacert /tmp/pebble-ca.pem ${pebble.directoryUrlForGuest}`);
  check(dir.stdout.includes('"newOrder"'), "pebble's directory from inside the guest", dir.stdout);
  log(`guest sees pebble directory: newOrder = ${(JSON.parse(dir.stdout) as { newOrder: string }).newOrder}`);
}

async function checkDnsRecord(pebble: Pebble, address: string): Promise<void> {
  await pebble.addARecord(DNS_NAME, address);
  const resolver = new dns.promises.Resolver({ timeout: 2000, tries: 2 });
  resolver.setServers([pebble.dnsServer]);
  const answers = await resolver.resolve4(DNS_NAME);
  check(answers.includes(address), `mock DNS answers ${DNS_NAME} -> ${address}`, JSON.stringify(answers));
}

async function main(): Promise<void> {
  await fsp.rm(WORK_DIR, { recursive: true, force: true });
  await fsp.mkdir(WORK_DIR, { recursive: true });
  await phase("ensureImage", () => ensureImage(log));
  const keys = await phase("ssh key pair", () => makeKeyPair(WORK_DIR));
  const pebble = await phase("start pebble", () => startPebble({ workDir: WORK_DIR, log }));
  let vm: Vm | undefined;
  try {
    const address = await freeLoopbackAddress();
    vm = await phase("boot VM (qemu started)", () =>
      bootVm({ name: "smoke", address, userData: userData(keys.publicKey), publicKeys: [keys.publicKey], hostname: HOSTNAME, workDir: WORK_DIR, log }),
    );
    const booted = vm;
    const deploy: SshConnection = { host: address, user: "deploy", privateKey: keys.privateKey };
    const root: SshConnection = { ...deploy, user: "root" };
    await phase("qemu start -> ssh banner", () => booted.waitForSsh(8 * 60_000));
    await phase("ssh banner -> login as deploy", () => waitForSshLogin(deploy, 5 * 60_000));
    const status = await phase("cloud-init status --wait", () => mustExec(booted, deploy, "cloud-init status --wait --long", { timeoutMs: 10 * 60_000 }));
    log(`cloud-init status:\n${status.stdout.replace(/^\.*\n/, "").trim()}`); // --wait prints dots
    const blame = await mustExec(booted, deploy, "systemd-analyze; systemd-analyze blame --no-pager | head -n 8");
    log(`guest boot (systemd-analyze):\n${blame.stdout.trim()}`);
    check(/status: done/.test(status.stdout), "cloud-init finished without errors", status.stdout);
    await phase("ssh semantics (root key, env, host key)", () => checkSshSemantics(booted, deploy, root));
    await phase("sftpWriteDir", () => checkSftp(booted, deploy));
    await phase("guest apt-get update", () => mustExec(booted, deploy, "sudo apt-get update", { timeoutMs: 5 * 60_000 }));
    await phase("guest curl pebble", () => checkGuestReachesPebble(booted, deploy, pebble));
    await phase("mock DNS A record", () => checkDnsRecord(pebble, address));
    await phase("power off", () => booted.powerOff());
  } finally {
    if (vm?.isRunning()) await vm.powerOff(30_000);
    await pebble.stop();
  }
}

main().then(
  () => {
    console.log("\nsmoke: PASSED\nphase timings:");
    for (const [name, ms] of timings) console.log(`  ${name.padEnd(42)} ${formatDuration(ms)}`);
  },
  (err: Error) => {
    console.error(`\nsmoke: FAILED\n${err.stack ?? err.message}`);
    stopAll();
    process.exitCode = 1;
  },
);

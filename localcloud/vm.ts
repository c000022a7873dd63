// Boots a simulated droplet: a qemu (TCG) VM from the cached Debian image, on a
// fresh copy-on-write overlay, with a NoCloud seed that carries the droplet's
// user-data and SSH keys the way DigitalOcean supplies them. Its ports 22, 80
// and 443 are forwarded from a loopback address of its own (e.g. 127.0.0.23),
// so the "droplet" is reached at that address on its standard ports.
//
// Like a droplet, the VM boots its own newest installed kernel: the first boot
// uses the image's kernel (the only one on the disk); qemu runs with -no-reboot,
// so a reboot inside the guest ends qemu, and the VM is started again with the
// kernel and initrd read from its own disk (a kernel update takes effect, as on
// DigitalOcean). A process that holds the Vm restarts it at once; a VM that
// rebooted while no process watched is powered on by resumeVm.
import * as fs from "fs";
import * as fsp from "fs/promises";
import * as net from "net";
import * as path from "path";
import { randomBytes } from "crypto";
import { stringify } from "yaml";
import { ensureImage } from "./image";
import { isRunning, killRegistered, registerProcess, stopProcess, unregisterProcess } from "./processes";
import { canBind, Logger, noLog, run, tailFile, waitUntil } from "./util";
import { MANAGED_POSTGRES_PORT } from "../components/config";
import { PRIVATE_HOST } from "./managedPostgres";

export interface BootVmOptions {
  /** Names the VM's directory under workDir (and its instance-id). */
  name: string;
  /** Loopback address the VM's ports 22/80/443 are forwarded from, e.g. 127.0.0.23. */
  address: string;
  /** The droplet's user_data, passed to cloud-init unchanged. */
  userData: string;
  /** OpenSSH public key lines, as DigitalOcean passes a droplet's registered SSH keys. */
  publicKeys: string[];
  hostname: string;
  /** The VM's files go into <workDir>/<name>/. */
  workDir: string;
  memoryMb?: number;
  log?: Logger;
}

export interface Vm {
  name: string;
  address: string;
  /** Directory with the overlay, seed, console log, QMP socket and pidfile. */
  dir: string;
  /** qemu's pid (a new one after each reboot). */
  readonly pid: number;
  /** Path of the serial console log (all boots, appended). */
  consoleLog: string;
  consoleTail(lines?: number): string;
  /** Polls until the VM's sshd sends its "SSH-" banner on address:22. */
  waitForSsh(timeoutMs: number): Promise<void>;
  /** ACPI power-down via QMP; kills the process if it has not exited within timeoutMs. */
  powerOff(timeoutMs?: number): Promise<void>;
  isRunning(): boolean;
  /** Stops watching for guest reboots and forgets the process (it outlives this one). */
  detach(): void;
}

/**
 * A Block Storage volume plugged into the VM as DigitalOcean presents one: a SCSI disk whose
 * vendor is "DO", product "Volume" and serial the volume's name, so that the guest's udev names
 * it /dev/disk/by-id/scsi-0DO_Volume_<name>.
 */
export interface VolumeDisk {
  /** qemu's block node and device name stem (letters and digits, at most 20). @example "vol1a2b3c4d" */
  node: string;
  /** The raw disk file on the host. */
  file: string;
  /** The volume's name (the disk's serial). */
  serial: string;
}

/** What a later process needs to power the VM on again (kept in <dir>/vm.json). */
interface VmRecord {
  name: string;
  address: string;
  memoryMb?: number;
  /** Volumes attached to the VM: every qemu start plugs them in again. */
  volumes?: VolumeDisk[];
}

const FORWARDED_PORTS = [22, 80, 443];
/** The emulated CPU model (TCG); overridable for experiments. */
const QEMU_CPU = process.env.DROPSTACK_LOCALCLOUD_QEMU_CPU ?? "max";
/** Addresses handed out by freeLoopbackAddress() in this process and not yet bound by qemu. */
const reserved = new Set<string>();

/**
 * A loopback address 127.0.0.N (20 <= N <= 250) on which ports 22, 80 and 443
 * can all be bound right now, and which this process has not handed out before.
 */
export async function freeLoopbackAddress(): Promise<string> {
  const first = 20;
  const count = 231;
  const offset = Math.floor(Math.random() * count);
  for (let i = 0; i < count; i++) {
    const address = `127.0.0.${first + ((offset + i) % count)}`;
    if (reserved.has(address)) continue;
    if (await allBindable(address)) {
      reserved.add(address);
      return address;
    }
  }
  throw new Error(`no loopback address 127.0.0.${first}-${first + count - 1} has ports ${FORWARDED_PORTS} free`);
}

async function allBindable(address: string): Promise<boolean> {
  for (const port of FORWARDED_PORTS) if (!(await canBind(address, port))) return false;
  return true;
}

/** Kills every VM this process started (SIGKILL, synchronous). */
export function stopAll(): void {
  killRegistered(["qemu"]);
}

export async function bootVm(opts: BootVmOptions): Promise<Vm> {
  const log = opts.log ?? noLog;
  if (!/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(opts.address)) {
    throw new Error(`bootVm(${opts.name}): address ${opts.address} is not a loopback (127.0.0.0/8) address`);
  }
  const image = await ensureImage(log);
  const dir = path.resolve(opts.workDir, opts.name);
  let pid: number;
  try {
    await prepareDir(dir);
    await writeSeed(dir, opts);
    await run("qemu-img", ["create", "-q", "-f", "qcow2", "-F", "raw", "-b", image.disk, overlayPath(dir)]);
    const record: VmRecord = { name: opts.name, address: opts.address, memoryMb: opts.memoryMb };
    await fsp.writeFile(path.join(dir, "vm.json"), JSON.stringify(record));
    pid = await startQemu(dir, image, record);
  } finally {
    reserved.delete(opts.address); // bound by qemu now, or free again
  }
  log(`vm ${opts.name}: qemu pid ${pid} started, ports 22/80/443 on ${opts.address}, console ${consolePath(dir)}`);
  return makeVm(dir, pid, opts, log);
}

/**
 * Powers on a VM whose qemu is no longer running (it rebooted while no process watched it), from
 * its own disk and its own newest kernel, as a droplet that was powered off boots again.
 */
export async function resumeVm(dir: string, log: Logger = noLog): Promise<Vm> {
  const record = await readRecord(dir);
  // (the directory holds the droplet's disk: only checked, never emptied)
  refuseInUse(dir);
  const pid = await startQemu(dir, await installedKernel(dir, log), record);
  log(`vm ${record.name}: powered on again (qemu pid ${pid})`);
  return makeVm(dir, pid, record, log);
}

async function readRecord(dir: string): Promise<VmRecord> {
  return JSON.parse(await fsp.readFile(path.join(dir, "vm.json"), "utf8")) as VmRecord;
}

async function writeRecord(dir: string, record: VmRecord): Promise<void> {
  await fsp.writeFile(path.join(dir, "vm.json.tmp"), JSON.stringify(record));
  await fsp.rename(path.join(dir, "vm.json.tmp"), path.join(dir, "vm.json"));
}

/** qemu's -blockdev for a volume's raw file (JSON: a path with a comma stays one value). */
function blockdevArg(v: VolumeDisk): string {
  return JSON.stringify({ driver: "raw", "node-name": v.node, file: { driver: "file", filename: v.file } });
}

/** qemu's -device for a volume: a SCSI disk as DigitalOcean presents it. */
function scsiDeviceArg(v: VolumeDisk): string {
  return JSON.stringify(scsiDevice(v));
}

function scsiDevice(v: VolumeDisk): Record<string, string> {
  return { driver: "scsi-hd", id: `dev-${v.node}`, bus: "scsi0.0", drive: v.node, vendor: "DO", product: "Volume", serial: v.serial };
}

/** True while the VM's qemu answers on its QMP socket. */
async function qemuAnswers(dir: string): Promise<boolean> {
  try {
    await qmp(qmpPath(dir), ["qmp_capabilities"], 5000);
    return true;
  } catch {
    return false;
  }
}

/**
 * Attaches a volume to the VM in <dir>: recorded for every later start and, when qemu runs, plugged
 * in at once (QMP blockdev-add + device_add, as a hot-plugged DigitalOcean volume appears).
 */
export async function attachVolume(dir: string, disk: VolumeDisk): Promise<void> {
  const record = await readRecord(dir);
  if ((record.volumes ?? []).some((v) => v.node === disk.node)) return;
  await writeRecord(dir, { ...record, volumes: [...(record.volumes ?? []), disk] });
  if (!(await qemuAnswers(dir))) return;
  await qmp(qmpPath(dir), ["qmp_capabilities",
    { execute: "blockdev-add", arguments: { driver: "raw", "node-name": disk.node, file: { driver: "file", filename: disk.file } } },
    { execute: "device_add", arguments: scsiDevice(disk) }], 30_000);
}

/** Detaches a volume: unplugged from a running qemu (waiting until the guest let it go), and forgotten. */
export async function detachVolume(dir: string, node: string, timeoutMs = 60_000): Promise<void> {
  const record = await readRecord(dir);
  await writeRecord(dir, { ...record, volumes: (record.volumes ?? []).filter((v) => v.node !== node) });
  if (!(await qemuAnswers(dir))) return;
  await qmp(qmpPath(dir), ["qmp_capabilities", { execute: "device_del", arguments: { id: `dev-${node}` } }], 30_000);
  const pluggedIn = async () => {
    const blocks = (await qmp(qmpPath(dir), ["qmp_capabilities", "query-named-block-nodes"], 10_000))[1] as { "node-name"?: string }[];
    return blocks.some((b) => b["node-name"] === node);
  };
  // the disk's block node stays until the guest has released the device; then it is removed
  await waitUntil(`the guest to release volume device dev-${node}`, timeoutMs, async () => {
    try {
      await qmp(qmpPath(dir), ["qmp_capabilities", { execute: "blockdev-del", arguments: { "node-name": node } }], 10_000);
      return true;
    } catch {
      return (await pluggedIn()) ? undefined : true;
    }
  }, { intervalMs: 500 });
}

/** Tells a running qemu that a volume's file grew (QMP block_resize), so the guest sees the new size. */
export async function resizeVolume(dir: string, node: string, bytes: number): Promise<void> {
  if (!(await qemuAnswers(dir))) return;
  await qmp(qmpPath(dir), ["qmp_capabilities", { execute: "block_resize", arguments: { "node-name": node, size: bytes } }], 30_000);
}

function overlayPath(dir: string): string {
  return path.join(dir, "overlay.qcow2");
}

/**
 * Copies the newest kernel installed in the guest (/boot/vmlinuz-<version>, highest version, and
 * its initrd) out of the VM's disk into <dir>/boot/. qemu-img flattens the overlay to a sparse raw
 * file that debugfs reads (no mount, no root needed); the file is removed afterwards.
 */
async function installedKernel(dir: string, log: Logger): Promise<{ kernel: string; initrd: string }> {
  const raw = path.join(dir, "disk-read.raw");
  const bootDir = path.join(dir, "boot");
  await fsp.mkdir(bootDir, { recursive: true });
  try {
    await run("qemu-img", ["convert", "-f", "qcow2", "-O", "raw", overlayPath(dir), raw], { timeoutMs: 10 * 60_000 });
    const listing = await run("debugfs", ["-R", "ls -p /boot", raw]);
    // `ls -p` lines: /inode/mode/uid/gid/name/size/
    const names = listing.stdout.split("\n").map((l) => l.split("/")[5]).filter((n): n is string => !!n);
    const versions = names.filter((n) => n.startsWith("vmlinuz-")).map((n) => n.slice("vmlinuz-".length))
      .filter((v) => names.includes(`initrd.img-${v}`))
      .sort((a, b) => a.localeCompare(b, "en", { numeric: true }));
    const version = versions.at(-1);
    if (!version) throw new Error(`no kernel with an initrd in the VM's /boot (${names.join(" ") || "empty"})`);
    const kernel = path.join(bootDir, "vmlinuz");
    const initrd = path.join(bootDir, "initrd.img");
    for (const [from, to] of [[`/boot/vmlinuz-${version}`, kernel], [`/boot/initrd.img-${version}`, initrd]]) {
      await fsp.rm(to, { force: true });
      await run("debugfs", ["-R", `dump ${from} ${to}`, raw]);
      if (!fs.existsSync(to) || fs.statSync(to).size === 0) throw new Error(`debugfs could not copy ${from} out of the VM's disk`);
    }
    log(`vm: booting the guest's own kernel ${version}`);
    return { kernel, initrd };
  } finally {
    await fsp.rm(raw, { force: true });
  }
}

function consolePath(dir: string): string {
  return path.join(dir, "console.log");
}

function qmpPath(dir: string): string {
  return path.join(dir, "qmp.sock");
}

/** Refuses a VM directory that a qemu from an earlier run still uses, or whose QMP socket path is too long. */
function refuseInUse(dir: string): void {
  const pidFile = path.join(dir, "qemu.pid");
  const oldPid = fs.existsSync(pidFile) ? Number.parseInt(fs.readFileSync(pidFile, "utf8"), 10) : NaN;
  if (Number.isFinite(oldPid) && isRunning(oldPid, qmpPath(dir))) {
    throw new Error(`bootVm: a qemu (pid ${oldPid}) from an earlier run still uses ${dir}; stop it first`);
  }
  if (Buffer.byteLength(qmpPath(dir)) > 100) {
    throw new Error(`bootVm: QMP socket path ${qmpPath(dir)} is too long for a unix socket; use a shorter workDir`);
  }
}

/** Creates the VM directory afresh (a new droplet), refusing if a qemu from an earlier run still uses it. */
async function prepareDir(dir: string): Promise<void> {
  refuseInUse(dir);
  await fsp.rm(dir, { recursive: true, force: true });
  await fsp.mkdir(dir, { recursive: true });
}

/** The NoCloud seed: meta-data as DigitalOcean would give it, user-data verbatim. */
async function writeSeed(dir: string, opts: BootVmOptions): Promise<void> {
  const metaData = stringify({
    "instance-id": `${opts.name}-${randomBytes(4).toString("hex")}`,
    "local-hostname": opts.hostname,
    "public-keys": opts.publicKeys.map((k) => k.trim()),
  });
  const userDataFile = path.join(dir, "user-data");
  const metaDataFile = path.join(dir, "meta-data");
  await fsp.writeFile(userDataFile, opts.userData);
  await fsp.writeFile(metaDataFile, metaData);
  await run("cloud-localds", [path.join(dir, "seed.img"), userDataFile, metaDataFile]);
}

async function startQemu(dir: string, image: { kernel: string; initrd: string }, opts: VmRecord): Promise<number> {
  const a = opts.address;
  const forwards = FORWARDED_PORTS.map((p) => `hostfwd=tcp:${a}:${p}-:${p}`).join(",");
  // The managed database's private address: each connection is carried to this host's loopback
  // from the VM's own address (socat, started per connection), so the server can tell the
  // droplets apart (managedPostgres.ts). Commas inside an option value are doubled for qemu.
  const managedDb = `guestfwd=tcp:${PRIVATE_HOST}:${MANAGED_POSTGRES_PORT}-cmd:socat - TCP:127.0.0.1:${MANAGED_POSTGRES_PORT},,bind=${a}`;
  const pidFile = path.join(dir, "qemu.pid");
  const args = [
    ...["-name", opts.name, "-accel", "tcg", "-cpu", QEMU_CPU, "-machine", "q35"],
    ...["-m", String(opts.memoryMb ?? 2048), "-smp", "2"],
    ...["-kernel", image.kernel, "-initrd", image.initrd],
    // norandmaps: the guest starts with address space randomisation off. Under TCG a process whose
    // code sits at the same addresses as the last one reuses qemu's translated code, so starting a
    // program costs a third (200 runs of /bin/true: 13.1 s -> 3.6 s; update-ca-certificates
    // --fresh: 85.7 s -> 29.6 s, measured here on 2026-12-02), which is most of a package install.
    // The droplet's own kernel hardening turns it on again (kernel.randomize_va_space = 2, applied
    // by the base step and by systemd-sysctl at every boot), so everything from the base step's
    // hardening on runs as on a droplet.
    ...["-append", "root=/dev/vda rw console=ttyS0 net.ifnames=0 norandmaps"],
    ...["-drive", `file=${overlayPath(dir)},if=virtio,format=qcow2`],
    ...["-drive", `file=${path.join(dir, "seed.img")},if=virtio,format=raw,readonly=on`],
    ...["-netdev", `user,id=n0,ipv6=off,${forwards},${managedDb}`, "-device", "virtio-net-pci,netdev=n0"],
    ...["-device", "virtio-rng-pci"],
    // the SCSI controller volumes are plugged into (also while the VM runs)
    ...["-device", "virtio-scsi-pci,id=scsi0"],
    ...(opts.volumes ?? []).flatMap((v) => ["-blockdev", blockdevArg(v), "-device", scsiDeviceArg(v)]),
    ...["-chardev", `file,id=console,path=${consolePath(dir)},append=on`, "-serial", "chardev:console"],
    ...["-display", "none", "-monitor", "none", "-no-reboot"],
    ...["-qmp", `unix:${qmpPath(dir)},server=on,wait=off`],
    ...["-pidfile", pidFile, "-daemonize"],
  ];
  await run("qemu-system-x86_64", args, { timeoutMs: 60_000 });
  const pid = Number.parseInt(await fsp.readFile(pidFile, "utf8"), 10);
  if (!Number.isFinite(pid)) throw new Error(`qemu for ${opts.name} wrote no usable pid to ${pidFile}`);
  registerProcess(pid, { kind: "qemu", cmdlineMark: qmpPath(dir), description: `qemu VM ${opts.name}` });
  return pid;
}

function makeVm(dir: string, firstPid: number, opts: VmRecord, log: Logger): Vm {
  const consoleLog = consolePath(dir);
  const consoleTail = (lines = 60) => tailFile(consoleLog, lines);
  let pid = firstPid;
  let stopping = false;
  let restarting = false;
  const running = () => isRunning(pid, qmpPath(dir));
  // A guest reboot ends qemu (-no-reboot): the kernel's last console lines say which it was
  // ("reboot: Restarting system", then maybe "reboot: machine restart"; a power-off says "Power down").
  const rebooted = () => {
    const tail = tailFile(consoleLog, 5);
    return tail.includes("reboot: Restarting system") && !tail.includes("reboot: Power down");
  };
  const restart = async () => {
    restarting = true;
    try {
      unregisterProcess(pid);
      log(`vm ${opts.name}: the guest rebooted; starting it again`);
      pid = await startQemu(dir, await installedKernel(dir, log), await readRecord(dir)); // with the volumes attached now
      log(`vm ${opts.name}: qemu pid ${pid} started again`);
    } catch (err) {
      log(`vm ${opts.name}: could not start again after the guest's reboot: ${(err as Error).message}`);
    } finally {
      restarting = false;
    }
  };
  const watcher = setInterval(() => {
    if (stopping || restarting || running() || !rebooted()) return;
    void restart();
  }, 1000);
  watcher.unref();
  return {
    name: opts.name,
    address: opts.address,
    dir,
    get pid() {
      return pid;
    },
    consoleLog,
    consoleTail,
    isRunning: running,
    waitForSsh: async (timeoutMs) => {
      const start = Date.now();
      await waitUntil(
        `the SSH banner of VM ${opts.name} on ${opts.address}:22`,
        timeoutMs,
        async () => {
          if (!running() && !restarting && !rebooted()) throw new Error(`VM ${opts.name} (qemu pid ${pid}) exited while booting\n${consoleDebug(consoleLog)}`);
          return (await readBanner(opts.address, 22, 5000))?.startsWith("SSH-") ? true : undefined;
        },
        { intervalMs: 1000, debug: () => consoleDebug(consoleLog) },
      );
      log(`vm ${opts.name}: ssh answers ${((Date.now() - start) / 1000).toFixed(1)} s after waiting began`);
    },
    powerOff: async (timeoutMs = 90_000) => {
      stopping = true;
      clearInterval(watcher);
      await waitUntil(`VM ${opts.name} to finish starting again after a reboot`, 10 * 60_000, () => (restarting ? undefined : true), { intervalMs: 500 });
      await powerOff(dir, pid, opts.name, timeoutMs, log);
    },
    detach: () => {
      stopping = true;
      clearInterval(watcher);
      unregisterProcess(pid);
    },
  };
}

function consoleDebug(consoleLog: string): string {
  return `--- VM console ${consoleLog} (last 60 lines) ---\n${tailFile(consoleLog, 60)}`;
}

/** Connects to host:port and returns the first line the server sends, or undefined. */
function readBanner(host: string, port: number, timeoutMs: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    let data = "";
    const done = (value: string | undefined) => {
      socket.destroy();
      resolve(value);
    };
    socket.setTimeout(timeoutMs, () => done(undefined));
    socket.on("data", (d: Buffer) => {
      data += d.toString("latin1");
      if (data.includes("\n") || data.length >= 4) done(data);
    });
    socket.on("error", () => done(undefined));
    socket.on("close", () => done(data || undefined));
  });
}

async function powerOff(dir: string, pid: number, name: string, timeoutMs: number, log: Logger): Promise<void> {
  if (!isRunning(pid, qmpPath(dir))) {
    await stopProcess(pid, "SIGKILL", 5000);
    return;
  }
  const start = Date.now();
  try {
    await qmp(qmpPath(dir), ["qmp_capabilities", "system_powerdown"], 10_000);
  } catch (err) {
    log(`vm ${name}: QMP system_powerdown failed (${(err as Error).message}); killing pid ${pid}`);
    await stopProcess(pid, "SIGKILL", 5000);
    return;
  }
  try {
    await waitUntil(`VM ${name} (qemu pid ${pid}) to power off`, timeoutMs, () => (isRunning(pid, qmpPath(dir)) ? undefined : true), {
      intervalMs: 250,
      debug: () => consoleDebug(consolePath(dir)),
    });
    log(`vm ${name}: powered off in ${((Date.now() - start) / 1000).toFixed(1)} s`);
  } catch (err) {
    log(`vm ${name}: ${(err as Error).message.split("\n")[0]}; killing pid ${pid}`);
  }
  await stopProcess(pid, "SIGKILL", 5000); // no-op when it already exited; unregisters it
}

type QmpCommand = string | { execute: string; arguments: Record<string, unknown> };

/** Sends QMP commands in order over the unix socket, each awaiting its "return"; resolves with the returns. */
function qmp(socketPath: string, commands: QmpCommand[], timeoutMs: number): Promise<unknown[]> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(socketPath);
    const queue = [...commands];
    const returns: unknown[] = [];
    let buffer = "";
    let greeted = false;
    const fail = (msg: string) => {
      socket.destroy();
      reject(new Error(`QMP ${socketPath}: ${msg}`));
    };
    socket.setTimeout(timeoutMs, () => fail(`no answer within ${timeoutMs} ms (pending: ${queue.map((c) => (typeof c === "string" ? c : c.execute)).join(", ")})`));
    const sendNext = () => {
      const command = queue.shift();
      if (command === undefined) {
        socket.end();
        resolve(returns);
        return;
      }
      socket.write(`${JSON.stringify(typeof command === "string" ? { execute: command } : command)}\n`);
    };
    socket.on("data", (d: Buffer) => {
      buffer += d.toString();
      let newline: number;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline).trim();
        buffer = buffer.slice(newline + 1);
        if (!line) continue;
        const msg = JSON.parse(line) as { QMP?: unknown; return?: unknown; error?: { desc?: string } };
        if (msg.error) return fail(`error: ${msg.error.desc ?? line}`);
        if (msg.QMP !== undefined && !greeted) {
          greeted = true;
          sendNext();
        } else if (msg.return !== undefined) {
          returns.push(msg.return);
          sendNext();
        }
      }
    });
    socket.on("error", (err) => fail(err.message));
  });
}

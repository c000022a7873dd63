// Builds (once, cached) a Debian bookworm amd64 disk image that behaves like
// DigitalOcean's `debian-12-x64` image as far as this project can tell: cloud-init
// (NoCloud datasource only) sets up users, SSH keys and the hostname on first
// boot; sshd, sudo, python3, curl, gnupg and en_US.UTF-8 are there; apt points at
// the bookworm, bookworm-updates and bookworm-security suites.
//
// The result is a raw ext4 disk (label `rootfs`, no partition table) plus the
// kernel and initrd for a direct kernel boot. It lives in
// /var/cache/dropstack-localcloud/image-<hash>/, where <hash> covers the whole
// recipe below, so changing the recipe builds a new image.
import { createHash } from "crypto";
import * as fs from "fs";
import * as fsp from "fs/promises";
import * as path from "path";
import { formatDuration, Logger, noLog, run, tailFile, timed, waitUntil } from "./util";

export const CACHE_ROOT = process.env.DROPSTACK_LOCALCLOUD_CACHE ?? "/var/cache/dropstack-localcloud";

export interface Image {
  /** Raw ext4 disk image; treat it as read-only (boot from a qcow2 overlay). */
  disk: string;
  kernel: string;
  initrd: string;
  dir: string;
}

const SUITE = "bookworm";
const ARCH = "amd64";
const MIRROR = "http://deb.debian.org/debian";
const SECURITY_MIRROR = "http://deb.debian.org/debian-security";
const DISK_SIZE = "4G";

const PACKAGES = [
  "linux-image-amd64",
  "systemd-sysv",
  "dbus",
  "openssh-server",
  "cloud-init",
  "cloud-guest-utils",
  // debootstrap does not resolve python3-cryptography's virtual dependency
  // python3-cffi-backend-api-*, so name the package that provides it.
  "python3-cffi-backend",
  "python3",
  "sudo",
  "ca-certificates",
  "curl",
  "wget",
  "gnupg",
  "ifupdown",
  "isc-dhcp-client",
  "iproute2",
  "iputils-ping",
  "netbase",
  "locales",
  "less",
  "vim-tiny",
  "lsb-release",
];

interface FileStep {
  path: string;
  content: string;
  mode: number;
}

/** Files written into the root filesystem after debootstrap (replacing what is there). */
const FILES: FileStep[] = [
  { path: "/etc/fstab", content: "LABEL=rootfs / ext4 defaults 0 1\n", mode: 0o644 },
  {
    path: "/etc/apt/sources.list",
    content:
      `deb ${MIRROR} ${SUITE} main\n` +
      `deb ${MIRROR} ${SUITE}-updates main\n` +
      `deb ${SECURITY_MIRROR} ${SUITE}-security main\n`,
    mode: 0o644,
  },
  {
    // Sorts after the package's 90_dpkg.cfg, so its datasource_list wins: the
    // guest never probes a cloud metadata address. Root gets the meta-data
    // public-keys (as on DigitalOcean) and /etc/hosts names the droplet.
    path: "/etc/cloud/cloud.cfg.d/99_localcloud.cfg",
    content: "datasource_list: [ NoCloud, None ]\ndisable_root: false\nmanage_etc_hosts: true\n",
    mode: 0o644,
  },
  { path: "/etc/locale.gen", content: "en_US.UTF-8 UTF-8\n", mode: 0o644 },
  // What cloud-init's locale module would write; with it in place the module
  // does not run locale-gen again on first boot (~10 s under TCG).
  { path: "/etc/default/locale", content: "LANG=en_US.UTF-8\n", mode: 0o644 },
  // A small initrd with just what a virtio disk with ext4 needs: the 35 MB
  // MODULES=most one costs ~15 s of every boot under TCG (unpacking, udev).
  { path: "/etc/initramfs-tools/conf.d/localcloud.conf", content: "MODULES=list\n", mode: 0o644 },
  { path: "/etc/initramfs-tools/modules", content: "virtio_pci\nvirtio_blk\next4\ncrc32c_generic\n", mode: 0o644 },
  { path: "/etc/network/interfaces", content: "source /etc/network/interfaces.d/*\n", mode: 0o644 },
  { path: "/etc/hostname", content: "localhost\n", mode: 0o644 },
  {
    path: "/etc/hosts",
    content: "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
    mode: 0o644,
  },
  // debootstrap copies the build host's resolver; the guest gets its own by DHCP.
  { path: "/etc/resolv.conf", content: "", mode: 0o644 },
  // Empty: systemd makes a new machine id on first boot.
  { path: "/etc/machine-id", content: "", mode: 0o444 },
];

/** Shell snippets run with `chroot <rootfs> /bin/sh -euc` after the files are written. */
const CHROOT_STEPS = [
  "locale-gen",
  "update-initramfs -u -k all",
  // cloud-init makes new host keys on first boot.
  "rm -f /etc/ssh/ssh_host_*",
  // No NTP traffic from the guest: the VM clock follows the host's.
  "ln -sfn /dev/null /etc/systemd/system/systemd-timesyncd.service",
  "rm -f /var/lib/dbus/machine-id",
  // A fresh cloud image has no package lists: apt-get update comes first.
  "apt-get clean && rm -rf /var/lib/apt/lists/* /var/log/*.log /var/log/apt/* /tmp/* /root/.bash_history",
];

const RECIPE_VERSION = 1;

export function recipeHash(): string {
  const recipe = {
    version: RECIPE_VERSION,
    suite: SUITE,
    arch: ARCH,
    mirror: MIRROR,
    securityMirror: SECURITY_MIRROR,
    diskSize: DISK_SIZE,
    packages: PACKAGES,
    files: FILES,
    chrootSteps: CHROOT_STEPS,
  };
  return createHash("sha256").update(JSON.stringify(recipe)).digest("hex").slice(0, 16);
}

function imagePaths(dir: string): Image {
  return {
    dir,
    disk: path.join(dir, "disk.img"),
    kernel: path.join(dir, "vmlinuz"),
    initrd: path.join(dir, "initrd.img"),
  };
}

/** Returns the cached image for the current recipe, building it first if needed. */
export async function ensureImage(log: Logger = noLog): Promise<Image> {
  const hash = recipeHash();
  const finalDir = path.join(CACHE_ROOT, `image-${hash}`);
  if (fs.existsSync(finalDir)) return imagePaths(finalDir);
  await fsp.mkdir(CACHE_ROOT, { recursive: true });
  const lockFile = `${finalDir}.lock`;
  await acquireLock(lockFile, finalDir, log);
  try {
    if (!fs.existsSync(finalDir)) await buildImage(finalDir, log);
  } finally {
    await fsp.rm(lockFile, { force: true });
  }
  return imagePaths(finalDir);
}

/**
 * Takes the build lock (a file holding the builder's PID). If another live
 * process holds it, waits until it lets go or the image appears; a lock left by
 * a dead process is removed.
 */
async function acquireLock(lockFile: string, finalDir: string, log: Logger): Promise<void> {
  let announced = false;
  await waitUntil(
    `the image build lock ${lockFile}`,
    45 * 60_000,
    async () => {
      if (tryCreateLock(lockFile)) return true;
      if (fs.existsSync(finalDir)) return true; // someone else finished; the caller re-checks
      const holder = readLockHolder(lockFile);
      if (holder !== undefined && !pidAlive(holder)) {
        log(`image: removing stale build lock of dead process ${holder}`);
        await fsp.rm(lockFile, { force: true });
      } else if (!announced) {
        announced = true;
        log(`image: waiting for process ${holder} which is building ${path.basename(finalDir)}`);
      }
      return undefined;
    },
    { intervalMs: 1000, debug: () => `lock file ${lockFile} is held by pid ${readLockHolder(lockFile)}` },
  );
}

function tryCreateLock(lockFile: string): boolean {
  try {
    fs.writeFileSync(lockFile, `${process.pid}\n`, { flag: "wx" });
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw err;
  }
}

function readLockHolder(lockFile: string): number | undefined {
  try {
    const pid = Number.parseInt(fs.readFileSync(lockFile, "utf8").trim(), 10);
    return Number.isFinite(pid) ? pid : undefined;
  } catch {
    return undefined;
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

async function buildImage(finalDir: string, log: Logger): Promise<void> {
  const start = Date.now();
  const tmpDir = `${finalDir}.tmp-${process.pid}`;
  await removeStaleBuilds(log);
  await removeTree(tmpDir);
  await fsp.mkdir(tmpDir, { recursive: true });
  const rootfs = path.join(tmpDir, "rootfs");
  const buildLog = path.join(tmpDir, "build.log");
  log(`image: building ${path.basename(finalDir)} in ${tmpDir} (log: ${buildLog})`);
  try {
    // The build's output is shown as it comes, prefixed, and kept in the build log.
    const show = (step: string) => (line: string) => log(`image ${step} | ${line}`);
    await timed(log, "image: debootstrap", () => debootstrap(rootfs, buildLog, show("debootstrap")));
    await timed(log, "image: customise", () => customise(rootfs, buildLog, show("customise")));
    await timed(log, "image: kernel, initrd and ext4 disk", () => makeDisk(rootfs, tmpDir, buildLog));
    await removeTree(rootfs);
    await fsp.writeFile(path.join(tmpDir, "recipe-hash"), `${recipeHash()}\n`);
    await fsp.rename(tmpDir, finalDir);
  } catch (err) {
    const keptLog = `${finalDir}.failed-build.log`;
    await fsp.copyFile(buildLog, keptLog).catch(() => undefined);
    await removeTree(tmpDir);
    throw new Error(
      `building the local cloud image failed: ${(err as Error).message}\n` +
        `--- build log ${keptLog} (last 60 lines) ---\n${tailFile(keptLog, 60)}`,
    );
  }
  log(`image: built ${finalDir} in ${formatDuration(Date.now() - start)}`);
}

async function debootstrap(rootfs: string, buildLog: string, onLine: (line: string) => void, variant?: "minbase"): Promise<void> {
  const debCache = path.join(CACHE_ROOT, "debs");
  await fsp.mkdir(debCache, { recursive: true });
  const args = [
    `--arch=${ARCH}`,
    `--cache-dir=${debCache}`,
    ...(variant ? [`--variant=${variant}`] : [`--include=${PACKAGES.join(",")}`]),
    SUITE,
    rootfs,
    MIRROR,
  ];
  try {
    await run("debootstrap", args, { logFile: buildLog, timeoutMs: 30 * 60_000, onLine });
  } catch (err) {
    const inner = path.join(rootfs, "debootstrap", "debootstrap.log");
    throw new Error(`${(err as Error).message}\n--- ${inner} (last 40 lines) ---\n${tailFile(inner, 40)}`);
  }
}

async function customise(rootfs: string, buildLog: string, onLine: (line: string) => void): Promise<void> {
  for (const file of FILES) await writeIntoRoot(rootfs, file);
  for (const step of CHROOT_STEPS) {
    await run("chroot", [rootfs, "/bin/sh", "-euc", step], {
      logFile: buildLog,
      onLine,
      env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LANG: "C.UTF-8", DEBIAN_FRONTEND: "noninteractive" },
    });
  }
}

/** Writes a file inside the root filesystem without following a symlink out of it. */
async function writeIntoRoot(rootfs: string, file: FileStep): Promise<void> {
  const target = path.join(rootfs, file.path);
  await fsp.mkdir(path.dirname(target), { recursive: true });
  await fsp.rm(target, { force: true }); // a symlink (e.g. resolv.conf) is replaced, not followed
  await fsp.writeFile(target, file.content, { mode: file.mode, flag: "wx" });
  await fsp.chmod(target, file.mode);
}

async function makeDisk(rootfs: string, outDir: string, buildLog: string): Promise<void> {
  const paths = imagePaths(outDir);
  await fsp.copyFile(await findBootFile(rootfs, "vmlinuz-"), paths.kernel);
  await fsp.copyFile(await findBootFile(rootfs, "initrd.img-"), paths.initrd);
  await run("mkfs.ext4", ["-q", "-L", "rootfs", "-d", rootfs, paths.disk, DISK_SIZE], { logFile: buildLog });
}

async function findBootFile(rootfs: string, prefix: string): Promise<string> {
  const boot = path.join(rootfs, "boot");
  const names = (await fsp.readdir(boot)).filter((n) => n.startsWith(prefix)).sort();
  if (names.length === 0) {
    throw new Error(`no ${prefix}* in ${boot} (found: ${(await fsp.readdir(boot)).join(", ") || "nothing"})`);
  }
  return path.join(boot, names[names.length - 1]);
}

/** Removes the build directories of builders that died (crash, SIGKILL) mid-build. */
async function removeStaleBuilds(log: Logger): Promise<void> {
  for (const name of await fsp.readdir(CACHE_ROOT)) {
    const match = /^image-[0-9a-f]+\.tmp-(\d+)$/.exec(name);
    if (!match || pidAlive(Number(match[1]))) continue;
    log(`image: removing ${name}, left by a build that died`);
    await removeTree(path.join(CACHE_ROOT, name));
  }
}

/** Removes a build tree, unmounting anything a failed debootstrap left mounted inside it first. */
async function removeTree(dir: string): Promise<void> {
  if (!fs.existsSync(dir)) return;
  const real = fs.realpathSync(dir);
  const mounts = fs
    .readFileSync("/proc/mounts", "utf8")
    .split("\n")
    .map((line) => line.split(" ")[1])
    .filter((m): m is string => Boolean(m) && (m === real || m.startsWith(`${real}/`)))
    .sort((a, b) => b.length - a.length);
  for (const mount of mounts) await run("umount", ["-l", mount], { allowFailure: true });
  await fsp.rm(dir, { recursive: true, force: true });
}

/** The names the container base image is imported under (what a Dockerfile's FROM may name). */
export const CONTAINER_BASE_NAMES = ["debian:bookworm", "debian:bookworm-slim"];

/**
 * The base image for containers on the local cloud, where no registry is reachable: a minimal
 * Debian bookworm root filesystem (debootstrap's minbase, the same suite, mirror and apt sources
 * as the droplet image), as a tar for `docker import`. Built once and cached like the disk image.
 */
export async function ensureContainerBase(log: Logger = noLog): Promise<string> {
  const hash = createHash("sha256").update(JSON.stringify({ version: 1, suite: SUITE, arch: ARCH, mirror: MIRROR, sources: FILES[1] })).digest("hex").slice(0, 16);
  const tar = path.join(CACHE_ROOT, `container-base-${hash}.tar`);
  if (fs.existsSync(tar)) return tar;
  await fsp.mkdir(CACHE_ROOT, { recursive: true });
  const lockFile = `${tar}.lock`;
  await acquireLock(lockFile, tar, log);
  try {
    if (fs.existsSync(tar)) return tar;
    const tmpDir = `${tar}.tmp-${process.pid}`;
    await removeTree(tmpDir);
    await fsp.mkdir(tmpDir, { recursive: true });
    const rootfs = path.join(tmpDir, "rootfs");
    const buildLog = path.join(tmpDir, "build.log");
    try {
      await timed(log, "container base: debootstrap (minbase)", () => debootstrap(rootfs, buildLog, (l) => log(`container base | ${l}`), "minbase"));
      await writeIntoRoot(rootfs, FILES[1]);
      await writeIntoRoot(rootfs, { path: "/etc/resolv.conf", content: "", mode: 0o644 });
      await run("chroot", [rootfs, "/bin/sh", "-euc", "apt-get clean && rm -rf /var/lib/apt/lists/* /var/log/*.log /var/log/apt/* /tmp/*"], { logFile: buildLog });
      await run("tar", ["--numeric-owner", "-C", rootfs, "-cf", `${tar}.part`, "."], { logFile: buildLog });
      await fsp.rename(`${tar}.part`, tar);
    } catch (err) {
      throw new Error(`building the local cloud's container base failed: ${(err as Error).message}\n--- build log (last 40 lines) ---\n${tailFile(buildLog, 40)}`);
    } finally {
      await removeTree(tmpDir);
    }
  } finally {
    await fsp.rm(lockFile, { force: true });
  }
  return tar;
}

// The local cloud's Block Storage and random provider: what DigitalOcean does with a volume (a
// disk file, formatted at creation when asked, grown in place, never shrunk) and what
// @pulumi/random does with a RandomPassword. The engine plugs volumes into VMs (vm.ts).
import * as crypto from "crypto";
import * as fs from "fs";
import * as path from "path";
import { run } from "./util";

const GIB = 1024 ** 3;

/** The disk file of a volume under the cloud's state folder. */
export function volumeFile(stateDir: string, name: string): string {
  if (!/^[a-z0-9][a-z0-9-]{0,63}$/.test(name)) throw new Error(`local cloud: volume name ${JSON.stringify(name)} is not one DigitalOcean accepts (lower case letters, digits, '-')`);
  return path.join(stateDir, "volumes", `${name}.img`);
}

/** qemu's node name for a volume: "vol" and the first hex digits of its id. */
export function volumeNode(volumeId: string): string {
  return `vol${volumeId.replace(/[^0-9a-f]/g, "").slice(0, 12)}`;
}

/** Creates a sparse disk file of `sizeGib` GiB; with "ext4", formats it as DigitalOcean does at creation. */
export async function createVolumeFile(file: string, sizeGib: number, filesystem?: string): Promise<void> {
  if (fs.existsSync(file)) throw new Error(`local cloud: a volume file already exists at ${file}`);
  if (filesystem !== undefined && filesystem !== "ext4") throw new Error(`local cloud: initialFilesystemType ${filesystem} is not simulated (ext4 is)`);
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  fs.closeSync(fs.openSync(file, "wx", 0o600));
  fs.truncateSync(file, sizeGib * GIB);
  if (filesystem === "ext4") await run("mkfs.ext4", ["-q", "-F", file]);
}

/** Grows a volume's file to `sizeGib` in place; a smaller size is refused, as DigitalOcean refuses it. */
export function growVolumeFile(file: string, sizeGib: number): number {
  const current = fs.statSync(file).size;
  if (sizeGib * GIB < current) {
    throw new Error(`local cloud: volume ${path.basename(file, ".img")} is ${current / GIB} GiB; a volume can only grow (DigitalOcean refuses ${sizeGib} GiB)`);
  }
  fs.truncateSync(file, sizeGib * GIB);
  return sizeGib * GIB;
}

/** The character classes of @pulumi/random's RandomPassword and its default special characters. */
const CLASSES = { upper: "ABCDEFGHIJKLMNOPQRSTUVWXYZ", lower: "abcdefghijklmnopqrstuvwxyz", numeric: "0123456789", special: "!@#$%&*()-_=+[]{}<>:?" };

/** A password as RandomPassword makes one: `length` characters from the enabled classes (each on unless false). */
export function randomPassword(inputs: Record<string, unknown>): string {
  const length = Number(inputs.length);
  if (!Number.isInteger(length) || length < 1) throw new Error(`local cloud: RandomPassword length ${String(inputs.length)} is not a positive whole number`);
  const special = typeof inputs.overrideSpecial === "string" ? inputs.overrideSpecial : CLASSES.special;
  const alphabet = [
    inputs.upper === false ? "" : CLASSES.upper,
    inputs.lower === false ? "" : CLASSES.lower,
    inputs.numeric === false ? "" : CLASSES.numeric,
    inputs.special === false ? "" : special,
  ].join("");
  if (!alphabet) throw new Error("local cloud: RandomPassword with every character class off");
  return Array.from({ length }, () => alphabet[crypto.randomInt(alphabet.length)]).join("");
}

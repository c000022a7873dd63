// The local cloud's volumes and passwords, without a VM: what DigitalOcean and @pulumi/random do.
import * as assert from "assert";
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { attachVolume, detachVolume } from "../../localcloud/vm";
import { createVolumeFile, growVolumeFile, randomPassword, volumeFile, volumeNode } from "../../localcloud/volumes";

const dumpe2fs = (file: string) => execFileSync("dumpe2fs", ["-h", file], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
const field = (text: string, name: string) => new RegExp(`^${name}:\\s+(.*)$`, "m").exec(text)?.[1];

describe("local cloud volumes", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dropstack-volumes-"));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("creates a sparse disk of the size asked for, formatted ext4 as DigitalOcean formats it", async () => {
    const file = volumeFile(dir, "shop-data");
    await createVolumeFile(file, 1, "ext4");
    assert.strictEqual(fs.statSync(file).size, 1024 ** 3);
    assert.ok(fs.statSync(file).blocks * 512 < 256 * 1024 ** 2, "sparse");
    assert.match(dumpe2fs(file), /^Filesystem magic number:\s+0xEF53$/m);
    await assert.rejects(createVolumeFile(file, 1, "ext4"), /already exists/);
  });

  it("grows in place, keeping the filesystem (same UUID), and refuses to shrink", async () => {
    const file = volumeFile(dir, "grow");
    await createVolumeFile(file, 1, "ext4");
    const uuid = field(dumpe2fs(file), "Filesystem UUID");
    assert.strictEqual(growVolumeFile(file, 2), 2 * 1024 ** 3);
    assert.strictEqual(fs.statSync(file).size, 2 * 1024 ** 3);
    assert.strictEqual(field(dumpe2fs(file), "Filesystem UUID"), uuid);
    assert.throws(() => growVolumeFile(file, 1), /can only grow/);
  });

  it("leaves a volume without initialFilesystemType blank, and refuses names DigitalOcean refuses", async () => {
    const file = volumeFile(dir, "blank");
    await createVolumeFile(file, 1);
    assert.throws(() => dumpe2fs(file));
    assert.throws(() => volumeFile(dir, "Bad_Name"), /not one DigitalOcean accepts/);
    assert.throws(() => volumeFile(dir, "../escape"), /not one DigitalOcean accepts/);
  });

  it("names a volume's qemu node after its id", () => {
    assert.strictEqual(volumeNode("3f2a9c1e-77aa-4b1c-9d2e-0123456789ab"), "vol3f2a9c1e77aa");
  });

  it("makes passwords of the length and classes asked for, different each time", () => {
    const a = randomPassword({ length: 40, special: false });
    assert.match(a, /^[A-Za-z0-9]{40}$/);
    assert.notStrictEqual(randomPassword({ length: 40, special: false }), a);
    assert.match(randomPassword({ length: 64, upper: false, lower: false, special: false }), /^[0-9]{64}$/);
    assert.match(randomPassword({ length: 30, upper: false, lower: false, numeric: false, overrideSpecial: "-_" }), /^[-_]{30}$/);
    assert.throws(() => randomPassword({ length: 0 }), /positive whole number/);
  });
});

describe("local cloud: volumes recorded with the VM", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dropstack-vm-record-"));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const record = () => JSON.parse(fs.readFileSync(path.join(dir, "vm.json"), "utf8")) as { volumes?: unknown[] };

  it("records an attached volume for every later qemu start, once, and forgets it when detached (the VM powered off)", async () => {
    fs.writeFileSync(path.join(dir, "vm.json"), JSON.stringify({ name: "app-test", address: "127.0.0.99" }));
    const disk = { node: "vol1a2b3c4d", file: "/var/tmp/app-data.img", serial: "app-data" };
    await attachVolume(dir, disk);
    await attachVolume(dir, disk);
    assert.deepStrictEqual(record().volumes, [disk]);
    await detachVolume(dir, disk.node);
    assert.deepStrictEqual(record().volumes, []);
  });
});

// The data settings as the program turns them into resources: the volume, PostgreSQL on the
// droplet, the seed, and DATABASE_URL reaching the app without ever being plain.
import * as assert from "assert";
import * as path from "path";
import { decodeValues } from "../../components/shell";
import { PROJECT_DIR } from "../../localcloud/stackConfig";
import { byName, byType, FAKE_DB, FAKE_PASSWORD, FAKE_VPC, isSecretValue, plain, plainStrings, runFake } from "./fakeCloud";

const COMMAND = "command:remote:Command";
const COPY = "command:remote:CopyToRemote";
const VOLUME = "digitalocean:index/volume:Volume";
const ATTACHMENT = "digitalocean:index/volumeAttachment:VolumeAttachment";
const SEED = path.join("test", "fixtures", "seed.dump");
const DATA = { database: "droplet", volumeSize: 10, databaseSeed: SEED };
type Run = Awaited<ReturnType<typeof runFake>>;
const stdinOf = (r: Run, name: string) => decodeValues(String(plain(byName(r, name).inputs.stdin)));

/** Asserts that the remote steps ran in the given order (each after the one before). */
function assertOrder(r: Run, names: string[]): void {
  const order = r.resources.filter((x) => x.type === COMMAND || x.type === COPY).map((x) => x.name);
  const at = names.map((n) => {
    const i = order.indexOf(n);
    assert.ok(i >= 0, `${n} missing from ${order.join(", ")}`);
    return i;
  });
  for (let i = 1; i < at.length; i++) assert.ok(at[i - 1] < at[i], `${names[i - 1]} must run before ${names[i]}: ${order.join(", ")}`);
}

describe("data: a volume and PostgreSQL on the droplet", () => {
  it("creates nothing for data by default", async () => {
    const r = await runFake();
    assert.deepStrictEqual(r.resources.filter((x) => /volume|database|random/i.test(x.type) || x.name.startsWith("data") || x.name.startsWith("database")).map((x) => x.name), []);
    assert.ok(!("DATABASE_URL" in JSON.parse(stdinOf(r, "app-release").ENV_JSON)));
  });

  it("makes an ext4 volume in the droplet's region, attaches it to the droplet, on staging and prod", async () => {
    for (const stack of ["staging", "prod"]) {
      const r = await runFake({ stack, overrides: DATA });
      const [volume] = byType(r, VOLUME);
      assert.strictEqual(volume.inputs.size, 10);
      assert.strictEqual(volume.inputs.initialFilesystemType, "ext4");
      assert.strictEqual(volume.inputs.region, byName(r, "server-droplet").inputs.region);
      assert.strictEqual(volume.inputs.name, `app-${stack}-data`);
      const [attachment] = byType(r, ATTACHMENT);
      assert.strictEqual(attachment.inputs.dropletId, Number(r.outputs.dropletId.value));
      assert.strictEqual(attachment.inputs.volumeId, r.outputs.volumeId.value);
      assert.deepStrictEqual(stdinOf(r, "data-mount"), { APP: "app", MOUNT: `/mnt/app-${stack}-data`, VOLUME_NAME: `app-${stack}-data` });
    }
  });

  it("mounts the volume after the host is set up, then PostgreSQL, the seed, and only then the release", async () => {
    const r = await runFake({ overrides: DATA });
    assertOrder(r, ["host-booted", "data-mount", "database-postgresql", "database-seed-upload", "database-seed", "app-release"]);
    const seed = stdinOf(r, "database-seed");
    assert.strictEqual(seed.SEED_FORMAT, "custom");
    assert.strictEqual(byName(r, "database-seed-upload").inputs.remotePath, seed.SEED_FILE);
    const pg = stdinOf(r, "database-postgresql");
    assert.strictEqual(pg.PG_MAJOR, "15");
    assert.strictEqual(pg.DATA_DIR, "/mnt/app-staging-data/postgresql/15/main");
    assert.strictEqual(pg.KEEP_DAYS, "7");
    assert.match(pg.DB_SCRIPT, /^take_deploy_lock\(\) \{$/m, "dropstack-db restores under the deploy lock");
  });

  it("gives the app DATABASE_URL over the unix socket; the password is in no plain input or output", async () => {
    const r = await runFake({ overrides: DATA });
    const env = JSON.parse(stdinOf(r, "app-release").ENV_JSON) as Record<string, string>;
    assert.strictEqual(env.DATABASE_URL, `postgresql://app:${FAKE_PASSWORD}@/app?host=/var/run/postgresql`);
    assert.strictEqual(stdinOf(r, "database-postgresql").DB_PASSWORD, FAKE_PASSWORD);
    for (const name of ["database-postgresql", "app-release"]) {
      const step = byName(r, name);
      assert.ok(isSecretValue(step.inputs.stdin), `${name}: stdin must be secret`);
      assert.strictEqual(step.inputs.logging, "none", `${name} must log nothing`);
    }
    for (const res of r.resources) {
      for (const s of plainStrings(res.inputs)) assert.ok(!s.value.includes(FAKE_PASSWORD), `${res.name}.${s.path} holds the password in plain`);
    }
    for (const [name, o] of Object.entries(r.outputs)) {
      assert.ok(o.secret || !JSON.stringify(o.value ?? "").includes(FAKE_PASSWORD), `output ${name} holds the password in plain`);
    }
    const password = byType(r, "random:index/randomPassword:RandomPassword");
    assert.deepStrictEqual(password.map((p) => [p.inputs.length, p.inputs.special]), [[40, false]]);
  });

  it("grows the volume in place: a larger size changes the volume and its mount step, never the droplet", async () => {
    const a = await runFake({ overrides: DATA });
    const b = await runFake({ overrides: { ...DATA, volumeSize: 20 } });
    const changed = a.resources.filter((x) => JSON.stringify(plain(x.inputs)) !== JSON.stringify(plain(byName(b, x.name).inputs))).map((x) => x.name).sort();
    assert.deepStrictEqual(changed, ["data-mount", "data-volume"]);
  });

  it("keeps the same volume when the droplet is replaced: only the attachment follows the new droplet", async () => {
    const a = await runFake({ overrides: DATA });
    const b = await runFake({ overrides: { ...DATA, deployUser: "shipper" } });
    assert.notStrictEqual(byName(a, "server-droplet").inputs.userData, byName(b, "server-droplet").inputs.userData);
    assert.deepStrictEqual(plain(byName(b, "data-volume").inputs), plain(byName(a, "data-volume").inputs));
  });

  it("uploads a plain SQL seed as plain and restores nothing without a seed", async () => {
    const plainSeed = await runFake({ overrides: { ...DATA, databaseSeed: path.join(PROJECT_DIR, "test", "fixtures", "seed.sql") } });
    assert.strictEqual(stdinOf(plainSeed, "database-seed").SEED_FORMAT, "plain");
    const none = await runFake({ overrides: { database: "droplet", volumeSize: 10 } });
    assert.deepStrictEqual(none.resources.filter((x) => x.name.startsWith("database-seed")), []);
    assertOrder(none, ["data-mount", "database-postgresql", "app-release"]);
  });

  it("a volume alone holds shared/ without a database", async () => {
    const r = await runFake({ overrides: { volumeSize: 5 } });
    assert.deepStrictEqual(r.resources.filter((x) => x.name.startsWith("database")), []);
    assertOrder(r, ["host-booted", "data-mount", "app-release"]);
  });
});

describe("data: DigitalOcean Managed PostgreSQL", () => {
  const MANAGED = { database: "managed" };
  const CLUSTER = "digitalocean:index/databaseCluster:DatabaseCluster";

  it("makes a pg cluster in the droplet's region and VPC, a database and a user for the app, and trusts only the droplet", async () => {
    const r = await runFake({ overrides: MANAGED });
    const [cluster] = byType(r, CLUSTER);
    assert.deepStrictEqual(
      [cluster.inputs.engine, cluster.inputs.version, cluster.inputs.size, cluster.inputs.nodeCount, cluster.inputs.region, cluster.inputs.privateNetworkUuid, cluster.inputs.name],
      ["pg", "16", "db-s-1vcpu-1gb", 1, "fra1", FAKE_VPC.id, "app-staging-db"]);
    const [db] = byType(r, "digitalocean:index/databaseDb:DatabaseDb");
    const [user] = byType(r, "digitalocean:index/databaseUser:DatabaseUser");
    assert.deepStrictEqual([db.inputs.clusterId, db.inputs.name, user.inputs.clusterId, user.inputs.name], [cluster.id, "app", cluster.id, "app"]);
    const [fw] = byType(r, "digitalocean:index/databaseFirewall:DatabaseFirewall");
    assert.deepStrictEqual(fw.inputs, { clusterId: cluster.id, rules: [{ type: "droplet", value: r.outputs.dropletId.value }] });
    // no volume, no PostgreSQL on the droplet
    assert.deepStrictEqual(r.resources.filter((x) => x.name.startsWith("database-") || x.name.startsWith("data-")).map((x) => x.name), []);
  });

  it("sizes the cluster from the settings", async () => {
    const r = await runFake({ stack: "prod", overrides: { ...MANAGED, databaseVersion: "17", databaseSize: "db-s-2vcpu-4gb", databaseNodes: 3 } });
    const [cluster] = byType(r, CLUSTER);
    assert.deepStrictEqual([cluster.inputs.version, cluster.inputs.size, cluster.inputs.nodeCount, cluster.inputs.name], ["17", "db-s-2vcpu-4gb", 3, "app-prod-db"]);
  });

  it("opens the cluster's port within the VPC in both firewalls, and nothing else", async () => {
    const base = await runFake();
    const r = await runFake({ overrides: MANAGED });
    const [fw] = byType(r, "digitalocean:index/firewall:Firewall");
    const [fwBase] = byType(base, "digitalocean:index/firewall:Firewall");
    assert.deepStrictEqual(fw.inputs.outboundRules, [...(fwBase.inputs.outboundRules as unknown[]), { protocol: "tcp", portRange: "25060", destinationAddresses: [FAKE_VPC.ipRange] }]);
    assert.deepStrictEqual(fw.inputs.inboundRules, fwBase.inputs.inboundRules);
    const nft = stdinOf(r, "host-base").NFTABLES;
    assert.match(nft, /ip daddr \{ 10\.114\.0\.0\/20 \} tcp dport 25060 accept/);
    assert.strictEqual(nft.replace(/\n.*tcp dport 25060 accept/, "\n        # no egress rules configured (dropstack:egress)"), stdinOf(base, "host-base").NFTABLES);
    assert.deepStrictEqual(byName(r, "server-droplet").inputs, byName(base, "server-droplet").inputs, "the droplet is not replaced");
  });

  it("gives the app DATABASE_URL on the private host with sslmode=require; no password is ever plain", async () => {
    const r = await runFake({ overrides: { ...MANAGED, databaseSeed: SEED } });
    const env = JSON.parse(stdinOf(r, "app-release").ENV_JSON) as Record<string, string>;
    assert.strictEqual(env.DATABASE_URL, `postgresql://app:${FAKE_DB.userPassword}@${FAKE_DB.privateHost}:25060/app?sslmode=require`);
    const connect = stdinOf(r, "managed-db-connect");
    assert.deepStrictEqual([connect.DB_HOST, connect.DB_PORT, connect.ADMIN_USER, connect.ADMIN_PASSWORD], [FAKE_DB.privateHost, "25060", "doadmin", FAKE_DB.adminPassword]);
    const seed = stdinOf(r, "managed-db-seed");
    assert.deepStrictEqual([seed.DB_HOST, seed.DB_PORT, seed.DB_PASSWORD], [FAKE_DB.privateHost, "25060", FAKE_DB.userPassword]);
    for (const name of ["managed-db-connect", "managed-db-seed", "app-release"]) {
      assert.ok(isSecretValue(byName(r, name).inputs.stdin), `${name}: stdin must be secret`);
      assert.strictEqual(byName(r, name).inputs.logging, "none", `${name} must log nothing`);
    }
    for (const secret of [FAKE_DB.userPassword, FAKE_DB.adminPassword]) {
      for (const res of r.resources) {
        for (const x of plainStrings(res.inputs)) assert.ok(!x.value.includes(secret), `${res.name}.${x.path} holds a password in plain`);
      }
      for (const [name, o] of Object.entries(r.outputs)) assert.ok(o.secret || !JSON.stringify(o.value ?? "").includes(secret), `output ${name} holds a password in plain`);
    }
  });

  it("connects after the host is set up and the cluster admits the droplet, seeds, and only then releases", async () => {
    const r = await runFake({ overrides: { ...MANAGED, databaseSeed: SEED } });
    assertOrder(r, ["host-booted", "managed-db-connect", "managed-db-seed-upload", "managed-db-seed", "app-release"]);
  });
});

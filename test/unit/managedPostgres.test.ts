// The local cloud's managed PostgreSQL on this host, without a VM: a real server with TLS and
// passwords whose only TCP entries are the database firewall's trusted sources.
import * as assert from "assert";
import { spawnSync } from "child_process";
import { MANAGED_POSTGRES_PORT } from "../../components/config";
import * as managed from "../../localcloud/managedPostgres";

/** psql from this host to the cluster's TCP port (127.0.0.1) as `user` in database shop; the password in the environment. */
function psql(user: string, password: string, sslmode: string, query: string): { ok: boolean; out: string } {
  const r = spawnSync("psql", ["-X", "-At", "-c", query], {
    encoding: "utf8", timeout: 30_000,
    env: { ...process.env, PGHOST: "127.0.0.1", PGPORT: String(MANAGED_POSTGRES_PORT), PGUSER: user, PGPASSWORD: password, PGDATABASE: "shop", PGSSLMODE: sslmode, PGCONNECT_TIMEOUT: "10" },
  });
  return { ok: r.status === 0, out: `${r.stdout}${r.stderr}`.trim() };
}
const connect = (user: string, password: string, sslmode: string) =>
  psql(user, password, sslmode, "SELECT current_user || ' ' || (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())");

describe("local cloud: managed PostgreSQL on the host", function () {
  this.timeout(120_000);
  let cluster: managed.ClusterRecord | undefined;
  let password = "";

  before(async function () {
    if (process.getuid?.() !== 0) this.skip(); // initdb runs as the postgres account: root only (CI runs as root)
    cluster = await managed.createCluster(`unit-test-${process.pid}`, "15", () => undefined);
    await managed.createDatabase(cluster, "shop");
    password = await managed.createUser(cluster, "shop");
  });
  after(async () => {
    if (cluster) await managed.deleteCluster(cluster);
  });

  it("refuses every connection until the firewall trusts its source, then admits it over TLS with the password only", async () => {
    assert.ok(cluster);
    const refused = connect("shop", password, "require");
    assert.ok(!refused.ok);
    assert.match(refused.out, /no pg_hba\.conf entry for host "127\.0\.0\.1"/);
    await managed.setTrustedSources(cluster, ["127.0.0.1/32"]);
    assert.deepStrictEqual(connect("shop", password, "require"), { ok: true, out: "shop true" });
    assert.match(connect("shop", "not-the-password", "require").out, /password authentication failed/);
    assert.match(connect("shop", password, "disable").out, /no pg_hba\.conf entry .* no encryption/);
    await managed.setTrustedSources(cluster, ["127.0.0.2/32"]);
    assert.match(connect("shop", password, "require").out, /no pg_hba\.conf entry for host "127\.0\.0\.1"/, "another droplet's address does not admit this one");
  });

  it("drops a user whose tables are in use by handing them to the admin first", async () => {
    assert.ok(cluster);
    await managed.setTrustedSources(cluster, ["127.0.0.1/32"]);
    // PostgreSQL 15 lets only the database's owner create in public: the program's connect step grants it, so here: refused
    assert.match(psql("shop", password, "require", "CREATE TABLE notes (id int)").out, /permission denied for schema public/);
    await managed.sql(cluster, "shop", 'GRANT ALL ON SCHEMA public TO "shop"');
    const created = psql("shop", password, "require", "CREATE TABLE notes (id int)");
    assert.ok(created.ok, created.out);
    await managed.dropUser(cluster, "shop");
    assert.strictEqual(await managed.sql(cluster, "shop", "SELECT tableowner FROM pg_tables WHERE tablename = 'notes'"), "doadmin");
  });
});

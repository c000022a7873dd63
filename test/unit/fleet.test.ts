// droplets > 1: the program's resources (fake cloud), the site behind the load balancer under a
// real nginx (drain flag, default server, forwarded headers), and the access-log reading the roll
// waits on (remote/lb-checks.sh under bash, over the log that nginx wrote).
import * as assert from "assert";
import { spawn, spawnSync } from "child_process";
import * as fs from "fs";
import * as http from "http";
import * as os from "os";
import * as path from "path";
import { renderNginxDefault, renderNginxSite } from "../../components/render";
import { decodeValues, readRemoteFile } from "../../components/shell";
import { freePort } from "../../localcloud/util";
import { byName, byType, DEPLOY_PRIVATE_KEY, dropletIpv4, FAKE_VPC, HOST_PUBLIC_KEY, isSecretValue, LB_IPV4, plain, plainStrings, runFake } from "./fakeCloud";

const COMMAND = "command:remote:Command";
const stdinOf = (res: { inputs: Record<string, unknown> }) => decodeValues(String(plain(res.inputs.stdin)));
const FLEET = { droplets: 2, database: "managed" };

describe("program with droplets: 2", () => {
  it("creates two droplets alike, the first under the single droplet's names, each with its own host key", async () => {
    const one = await runFake({ overrides: { database: "managed" } });
    const r = await runFake({ overrides: FLEET });
    const droplets = byType(r, "digitalocean:index/droplet:Droplet");
    assert.deepStrictEqual(droplets.map((d) => d.name).sort(), ["server-2-droplet", "server-droplet"]);
    assert.deepStrictEqual(droplets.map((d) => d.inputs.name).sort(), ["app-staging", "app-staging-2"]);
    // growing keeps the first droplet: the same inputs as with one droplet
    assert.deepStrictEqual(byName(r, "server-droplet").inputs, byName(one, "server-droplet").inputs);
    const [a, b] = [byName(r, "server-droplet"), byName(r, "server-2-droplet")];
    assert.deepStrictEqual(a.inputs.sshKeys, b.inputs.sshKeys, "one deploy key");
    assert.strictEqual(a.inputs.region, b.inputs.region);
    assert.strictEqual(a.inputs.size, b.inputs.size);
    assert.deepStrictEqual(byType(r, "tls:index/privateKey:PrivateKey").map((k) => k.name).sort(), ["deploy-key-key", "host-key-2-key", "host-key-key"]);
  });

  it("puts a load balancer in front: HTTPS with a Let's Encrypt certificate for the name, HTTP redirected, the health path through nginx with DigitalOcean's defaults", async () => {
    const r = await runFake({ overrides: FLEET });
    const [lb] = byType(r, "digitalocean:index/loadBalancer:LoadBalancer");
    const [cert] = byType(r, "digitalocean:index/certificate:Certificate");
    assert.deepStrictEqual(plain(cert.inputs), { name: "app-staging", type: "lets_encrypt", domains: ["staging.example.com"] });
    const ids = byType(r, "digitalocean:index/droplet:Droplet").map((d) => Number(d.id)).sort();
    assert.deepStrictEqual([...(lb.inputs.dropletIds as number[])].sort(), ids);
    assert.strictEqual(lb.inputs.vpcUuid, FAKE_VPC.id, "the droplets' VPC");
    assert.strictEqual(lb.inputs.region, "fra1");
    assert.strictEqual(lb.inputs.redirectHttpToHttps, true);
    assert.strictEqual(lb.inputs.disableLetsEncryptDnsRecords, true, "dropstack writes the record itself");
    assert.deepStrictEqual(lb.inputs.forwardingRules, [
      { entryProtocol: "https", entryPort: 443, targetProtocol: "http", targetPort: 80, certificateName: "app-staging" },
      { entryProtocol: "http", entryPort: 80, targetProtocol: "http", targetPort: 80 },
    ]);
    assert.deepStrictEqual(lb.inputs.healthcheck, {
      protocol: "http", port: 80, path: "/healthz", checkIntervalSeconds: 10, responseTimeoutSeconds: 5, healthyThreshold: 5, unhealthyThreshold: 3,
    });
    const tuned = await runFake({ overrides: { ...FLEET, lbCheckInterval: 4, lbResponseTimeout: 3, lbHealthyThreshold: 2, lbUnhealthyThreshold: 2, healthPath: "/up" } });
    assert.deepStrictEqual(byType(tuned, "digitalocean:index/loadBalancer:LoadBalancer")[0].inputs.healthcheck, {
      protocol: "http", port: 80, path: "/up", checkIntervalSeconds: 4, responseTimeoutSeconds: 3, healthyThreshold: 2, unhealthyThreshold: 2,
    });
  });

  it("points the name at the load balancer (no AAAA), exports every droplet's address, and lets web traffic reach the droplets from the load balancer alone", async () => {
    const r = await runFake({ overrides: FLEET });
    const records = byType(r, "digitalocean:index/dnsRecord:DnsRecord");
    assert.deepStrictEqual(records.map((x) => [x.inputs.type, x.inputs.value]), [["A", LB_IPV4]]);
    // the stack outputs: where the name points, and each droplet's address and pinned host key
    assert.strictEqual(r.outputs.loadBalancerIp.value, LB_IPV4);
    assert.deepStrictEqual(r.outputs.dropletAddresses.value, [dropletIpv4("server-droplet"), dropletIpv4("server-2-droplet")]);
    const lines = r.outputs.knownHostsLines.value as string[];
    assert.deepStrictEqual(lines.map((l) => l.split(" ").slice(0, 2).join(" ")), [`${dropletIpv4("server-droplet")} ssh-ed25519`, `${dropletIpv4("server-2-droplet")} ssh-ed25519`]);
    const [fw] = byType(r, "digitalocean:index/firewall:Firewall");
    const [lb] = byType(r, "digitalocean:index/loadBalancer:LoadBalancer");
    assert.deepStrictEqual([...(fw.inputs.dropletIds as number[])].sort(), byType(r, "digitalocean:index/droplet:Droplet").map((d) => Number(d.id)).sort());
    assert.deepStrictEqual(fw.inputs.inboundRules, [
      { protocol: "tcp", portRange: "22", sourceAddresses: ["203.0.113.0/24"] },
      { protocol: "tcp", portRange: "80", sourceLoadBalancerUids: [lb.id] },
      { protocol: "icmp", sourceAddresses: ["0.0.0.0/0", "::/0"] },
    ]);
  });

  it("grown from one droplet, hands the name over: the record moves after the roll, the first droplet serves HTTPS itself for the TTL after that, and only then does the firewall close its HTTPS", async () => {
    const r = await runFake({ overrides: { ...FLEET, dnsTtl: 120 } });
    const at = (name: string) => r.resources.findIndex((x) => x.name === name);
    for (const name of ["roll", "dns-a", "handover-finish", "firewall-fw"]) assert.ok(at(name) >= 0, `${name} exists`);
    assert.ok(at("roll") < at("dns-a") && at("dns-a") < at("handover-finish") && at("handover-finish") < at("firewall-fw"),
      `roll, then the record, then the handover, then the firewall: ${r.resources.map((x) => x.name).join(", ")}`);
    assert.strictEqual(byName(r, "dns-a").inputs.ttl, 120);
    const handover = byName(r, "handover-finish");
    assert.strictEqual((plain(handover.inputs.connection) as { host: string }).host, dropletIpv4("server-droplet"), "on the first droplet");
    assert.deepStrictEqual(stdinOf(handover), { APP: "app", FQDN: "staging.example.com", WAIT_SECONDS: "150" });
    // every droplet's site carries the server a droplet with certbot's certificate keeps until then
    for (const step of ["site-nginx", "site-2-nginx"]) {
      const values = stdinOf(byName(r, step));
      assert.strictEqual(values.FQDN, "staging.example.com");
      assert.match(values.DIRECT_SITE, /listen 443 ssl http2;[^]*ssl_certificate \/etc\/letsencrypt\/live\/staging\.example\.com\/fullchain\.pem;/);
    }
    // one droplet: the record first (the certificate's challenge needs it), no handover
    const one = await runFake({ overrides: { database: "managed" } });
    const oneAt = (name: string) => one.resources.findIndex((x) => x.name === name);
    assert.ok(oneAt("dns-a") >= 0 && oneAt("dns-a") < oneAt("certificate-certbot"));
    assert.strictEqual(oneAt("handover-finish"), -1);
    assert.strictEqual(byName(one, "dns-a").inputs.ttl, 300, "DigitalOcean's usual 300 s unless dnsTtl says otherwise");
    assert.deepStrictEqual(Object.keys(stdinOf(byName(one, "site-nginx"))).sort(), ["APP", "NGINX_SITE"], "one droplet's site step is as before");
  });

  it("provisions each droplet over its own connection, behind the load balancer: no certbot, the site as nginx's default server on port 80", async () => {
    const r = await runFake({ overrides: FLEET });
    const names = r.resources.filter((x) => x.type === COMMAND).map((x) => x.name);
    assert.ok(!names.some((n) => n.startsWith("certificate")), `no certificate step: ${names.join(", ")}`);
    for (const [step, ip] of [["host-base", dropletIpv4("server-droplet")], ["host-2-base", dropletIpv4("server-2-droplet")]]) {
      const res = byName(r, step);
      assert.strictEqual((plain(res.inputs.connection) as { host: string }).host, ip);
      assert.strictEqual(stdinOf(res).NGINX_DEFAULT, renderNginxDefault(true).defaultServer);
    }
    assert.notStrictEqual(dropletIpv4("server-droplet"), dropletIpv4("server-2-droplet"));
    for (const step of ["site-nginx", "site-2-nginx"]) {
      const site = stdinOf(byName(r, step)).NGINX_SITE;
      assert.match(site, /listen 80 default_server;/);
      assert.match(site, /location = \/healthz \{\n\s+if \(-f \/run\/dropstack-app\/drain\) \{\n\s+return 503;/);
      assert.doesNotMatch(site, /listen 443/);
    }
  });

  it("stages the release on every droplet (the release command on the first only), then rolls: one droplet's turn after the other's", async () => {
    const r = await runFake({ overrides: { ...FLEET, releaseCommand: "python migrate.py" } });
    const [first, second] = [stdinOf(byName(r, "app-release")), stdinOf(byName(r, "app-2-release"))];
    assert.strictEqual(first.RELEASE_ID, second.RELEASE_ID, "one release id on every droplet");
    assert.deepStrictEqual([first.STAGE, first.RUN_RELEASE_COMMAND, second.STAGE, second.RUN_RELEASE_COMMAND], ["1", "1", "1", "0"]);
    const order = r.resources.map((x) => x.name);
    const at = (n: string) => {
      assert.ok(order.includes(n), `${n} is created: ${order.join(", ")}`);
      return order.indexOf(n);
    };
    assert.ok(at("app-2-release") > at("app-release"), "the second droplet stages after the first ran the release command");
    for (const m of ["roll-member-1", "roll-member-2"]) assert.ok(at(m) > at("app-2-release") && at(m) > at("lb-lb"), `${m} after every stage and the load balancer`);
    // the roll: one local command giving each droplet its turn over SSH, in order, after both memberships
    const [roll] = byType(r, "command:local:Command");
    assert.strictEqual(roll.name, "roll");
    assert.ok(r.resources.indexOf(roll) > at("roll-member-2"), "the roll after every droplet joined the pool");
    assert.match(String(roll.inputs.create), /^bash -c '.*' dropstack-roll-fleet$/s);
    const env = roll.inputs.environment as Record<string, unknown>;
    assert.ok(isSecretValue(roll.inputs.stdin), "the deploy key, on stdin, is a secret");
    assert.strictEqual(plain(roll.inputs.stdin), DEPLOY_PRIVATE_KEY);
    for (const x of plainStrings(roll.inputs)) assert.ok(!x.value.includes("unit-test-deploy-key"), `roll.${x.path} holds the deploy key in plain`);
    assert.deepStrictEqual(String(env.ROLL_DROPLETS).split("\n"), [
      `${dropletIpv4("server-droplet")} 22 ${HOST_PUBLIC_KEY}`,
      `${dropletIpv4("server-2-droplet")} 22 ${HOST_PUBLIC_KEY}`,
    ], "each droplet in turn order, with its pinned host key");
    assert.strictEqual(env.ROLL_USER, "deploy");
    assert.match(String(env.ROLL_STEP), /dropstack-roll'?$/);
    const turn = decodeValues(String(env.ROLL_VALUES));
    assert.deepStrictEqual({ ...turn, TRIGGERED_BY: undefined }, {
      APP: "app", RELEASE_ID: first.RELEASE_ID, HEALTH_PATH: "/healthz", CHECK_INTERVAL: "10", CHECK_TIMEOUT: "5",
      HEALTHY_THRESHOLD: "5", UNHEALTHY_THRESHOLD: "3", TRIGGERED_BY: undefined,
    });
    assert.deepStrictEqual(decodeValues(String(env.ROLL_BACK_VALUES)), { ...turn, MODE: "back" });
    assert.deepStrictEqual(plain(roll.inputs.triggers), [first.RELEASE_ID, byName(r, "server-droplet").id, byName(r, "server-2-droplet").id,
      plain(byName(r, "app-release").state.stdout), plain(byName(r, "app-2-release").state.stdout)], "a new release, droplet or stage rolls again");
    // leaving the pool drains the droplet (the membership's delete), whatever its scripts become
    const member = byName(r, "roll-member-2");
    assert.match(String(member.inputs.delete), /dropstack-lb-leave/);
    assert.match(String(member.inputs.create), /dropstack-lb-member/);
    assert.deepStrictEqual(member.inputs.triggers, [byName(r, "server-2-droplet").id]);
  });

  it("trusts every droplet at the managed database; the database steps run on the first", async () => {
    const r = await runFake({ overrides: FLEET });
    const [fw] = byType(r, "digitalocean:index/databaseFirewall:DatabaseFirewall");
    assert.deepStrictEqual(fw.inputs.rules, [byName(r, "server-droplet").id, byName(r, "server-2-droplet").id].map((value) => ({ type: "droplet", value })));
    assert.strictEqual((plain(byName(r, "managed-db-connect").inputs.connection) as { host: string }).host, dropletIpv4("server-droplet"));
  });

  it("with one droplet: no load balancer, no roll, no staging", async () => {
    const r = await runFake({ overrides: { database: "managed" } });
    assert.strictEqual(byType(r, "digitalocean:index/loadBalancer:LoadBalancer").length, 0);
    assert.ok(!r.resources.some((x) => x.name.startsWith("roll")));
    assert.strictEqual(stdinOf(byName(r, "app-release")).STAGE, undefined);
  });
});

/** The test's stand-in for the load balancer's VPC address: the rendered site counts it as the VPC's. */
const FROM_VPC = "127.0.0.2";

/** GET through nginx (from the VPC's stand-in unless `from` says otherwise): status, body, headers. */
function get(port: number, urlPath: string, headers: Record<string, string> = {}, from = FROM_VPC): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, path: urlPath, headers, agent: false, localAddress: from }, (res) => {
      let body = "";
      res.on("data", (c) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    });
    req.on("error", reject);
    req.end();
  });
}

describe("the site behind the load balancer, under nginx", function () {
  this.timeout(60_000);
  let dir: string;
  let port: number;
  let nginx: ReturnType<typeof spawn> | undefined;
  let app: http.Server;
  let drainFlag: string;
  let accessLog: string;

  before(async function () {
    if (spawnSync("which", ["nginx"]).status !== 0) throw new Error("nginx is not installed: run .ci/install-host-packages.sh");
    if (process.getuid?.() !== 0) this.skip();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "dropstack-lb-site-"));
    fs.chmodSync(dir, 0o755);
    port = await freePort();
    // the app: answers with what it was given (path, forwarded proto, client address)
    fs.mkdirSync(path.join(dir, "srv", "shop", "live"), { recursive: true });
    const sock = path.join(dir, "srv", "shop", "live", "app.sock");
    app = http.createServer((req, res) => {
      res.setHeader("Content-Type", "application/json");
      res.end(JSON.stringify({ path: req.url, proto: req.headers["x-forwarded-proto"] ?? null, realIp: req.headers["x-real-ip"] ?? null }));
    });
    await new Promise<void>((resolve) => app.listen(sock, resolve));
    fs.chmodSync(sock, 0o777);
    drainFlag = path.join(dir, "run", "drain");
    fs.mkdirSync(path.dirname(drainFlag));
    accessLog = path.join(dir, "access.log");
    // the rendered files, with only their paths and port moved into the test's folder
    const move = (text: string) => text
      .split("/srv/shop/").join(`${dir}/srv/shop/`)
      .split("/run/dropstack-shop/drain").join(drainFlag)
      .replace(/listen 80( default_server)?;/g, (_m, d) => `listen 127.0.0.1:${port}${d ?? ""};`)
      .replace(/\n\s*listen \[::\]:80[^\n]*/g, "")
      .replace(/(\n\s*)(10\.0\.0\.0\/8 1;)/, `$1${FROM_VPC}/32 1;$1$2`);
    const site = renderNginxSite({ app: "shop", fqdn: "shop.example.com", tls: true, maxBodySize: "10m", hsts: true, behindLoadBalancer: { healthPath: "/healthz" } });
    fs.writeFileSync(path.join(dir, "00-default.conf"), move(renderNginxDefault(true).defaultServer));
    fs.writeFileSync(path.join(dir, "site.conf"), move(site));
    fs.writeFileSync(path.join(dir, "nginx.conf"), [
      "daemon off;", "user root;", "worker_processes 1;", `pid ${dir}/nginx.pid;`, `error_log ${dir}/error.log;`, "events {}", "http {",
      `    access_log ${accessLog};`, `    include ${dir}/00-default.conf;`, `    include ${dir}/site.conf;`, "}", "",
    ].join("\n"));
    nginx = spawn("nginx", ["-p", dir, "-c", path.join(dir, "nginx.conf")], { stdio: ["ignore", "ignore", "pipe"] });
    let err = "";
    nginx.stderr?.on("data", (c) => (err += c));
    for (let i = 0; ; i++) {
      if (await get(port, "/healthz").then(() => true, () => false)) break;
      if (i > 100 || nginx.exitCode !== null) throw new Error(`nginx did not start: ${err}${fs.existsSync(path.join(dir, "error.log")) ? fs.readFileSync(path.join(dir, "error.log"), "utf8") : ""}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  });

  after(async () => {
    if (nginx && nginx.exitCode === null) {
      nginx.kill("SIGTERM");
      await new Promise((resolve) => nginx?.once("exit", resolve));
    }
    app?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it("answers the load balancer's health check, which names no host, from the app", async () => {
    const r = await get(port, "/healthz", { Host: "10.114.0.7" });
    assert.strictEqual(r.status, 200);
    assert.strictEqual(JSON.parse(r.body).path, "/healthz");
  });

  it("while the drain flag exists: the health check answers 503, every other request is still the app's", async () => {
    fs.writeFileSync(drainFlag, "");
    try {
      assert.strictEqual((await get(port, "/healthz", { Host: "10.114.0.7" })).status, 503);
      const page = await get(port, "/notes", { Host: "shop.example.com" });
      assert.strictEqual(page.status, 200);
      assert.strictEqual(JSON.parse(page.body).path, "/notes");
    } finally {
      fs.rmSync(drainFlag);
    }
    assert.strictEqual((await get(port, "/healthz")).status, 200, "back once the flag is gone");
  });

  it("passes the load balancer's X-Forwarded-Proto to the app; a client outside the private networks cannot set its own address", async () => {
    const r = JSON.parse((await get(port, "/", { Host: "shop.example.com", "X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.7" })).body);
    assert.strictEqual(r.proto, "https");
    assert.strictEqual(r.realIp, FROM_VPC, "loopback is not a private network: its X-Forwarded-For is not trusted");
  });

  it("sends a request from outside the VPC (one that did not come through the load balancer) to the name over HTTPS; the app does not see it", async () => {
    for (const urlPath of ["/notes?page=2", "/healthz"]) {
      const r = await get(port, urlPath, { Host: "shop.example.com", "X-Forwarded-Proto": "https" }, "127.0.0.1");
      assert.strictEqual(r.status, 301, urlPath);
      assert.strictEqual(r.headers.location, `https://shop.example.com${urlPath}`);
      assert.doesNotMatch(r.body, /"path"/, "not the app's answer");
    }
  });

  it("lb-checks.sh counts the health answers nginx logged: a run of failed checks after the mark, broken by a pass", async () => {
    /** Runs checks_seen STATUS COUNT SINCE over the access log nginx wrote. */
    const seen = (status: number, count: number, since: number) => spawnSync("bash", ["-c", [
      "set -euo pipefail", "log() { :; }; die() { exit 2; }; require() { :; }",
      readRemoteFile("lb-checks.sh"), `access_log=${accessLog}`, "V_HEALTH_PATH=/healthz", `checks_seen ${status} ${count} ${since}`,
    ].join("\n")]).status;
    const size = () => fs.statSync(accessLog).size;
    await get(port, "/healthz");
    const mark = size();
    fs.writeFileSync(drainFlag, "");
    await get(port, "/healthz");
    await get(port, "/other");
    await get(port, "/healthz");
    assert.strictEqual(seen(503, 2, mark), 0, "two 503s in a row (another path between them does not count)");
    assert.strictEqual(seen(503, 3, mark), 1, "not three");
    assert.strictEqual(seen(503, 1, size()), 1, "nothing after a later mark");
    fs.rmSync(drainFlag);
    await get(port, "/healthz");
    await get(port, "/healthz");
    assert.strictEqual(seen(200, 2, mark), 0);
    assert.strictEqual(seen(200, 3, mark), 1, "the 200 before the mark is not counted");
    assert.strictEqual(seen(503, 3, mark), 1, "a pass breaks the run of failures");
  });
});

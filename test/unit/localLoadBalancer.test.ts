// The local cloud's load balancer (HAProxy on the host) with DigitalOcean's semantics, against
// real HTTP servers on loopback standing for the droplets' nginx: droplets start DOWN and join
// after `healthy` passed checks, leave after `unhealthy` failed ones while every request is still
// answered, and an update keeps each droplet's health and drops no request.
import * as assert from "assert";
import { execFileSync, spawnSync } from "child_process";
import * as fs from "fs";
import * as http from "http";
import * as https from "https";
import * as os from "os";
import * as path from "path";
import { LbSpec, LocalLoadBalancer } from "../../localcloud/loadBalancer";
import { freePort, waitUntil } from "../../localcloud/util";

const NAME = "app.lb.test";

/** A droplet's nginx, as far as the load balancer sees it: the health path (healthy or draining) and the app. */
class Droplet {
  healthy = true;
  served = 0;
  checks = 0;
  server!: http.Server;
  constructor(readonly id: string, readonly address: string) {}
  async start(port: number): Promise<void> {
    this.server = http.createServer((req, res) => {
      if (req.url === "/healthz") {
        this.checks++;
        res.statusCode = this.healthy ? 200 : 503;
        res.end();
        return;
      }
      this.served++;
      res.setHeader("Content-Type", "application/json");
      res.end(JSON.stringify({ droplet: this.id, proto: req.headers["x-forwarded-proto"], forwardedFor: req.headers["x-forwarded-for"] ?? null }));
    });
    await new Promise<void>((resolve) => this.server.listen(port, this.address, resolve));
  }
}

describe("local cloud: the load balancer (HAProxy with DigitalOcean's health-check semantics)", function () {
  this.timeout(120_000);
  let dir: string;
  let lb: LocalLoadBalancer;
  let pem: string;
  let cert: string;
  let port: number;
  const entry = { https: 0, http: 0 };
  const droplets = [new Droplet("101", "127.0.0.31"), new Droplet("102", "127.0.0.32"), new Droplet("103", "127.0.0.33")];
  const spec = (on: Droplet[]): LbSpec => ({
    forwardingRules: [
      { entryProtocol: "https", entryPort: entry.https, targetProtocol: "http", targetPort: port, certificateName: "site" },
      { entryProtocol: "http", entryPort: entry.http, targetProtocol: "http", targetPort: port },
    ],
    healthcheck: { protocol: "http", port, path: "/healthz", checkIntervalSeconds: 1, responseTimeoutSeconds: 1, healthyThreshold: 2, unhealthyThreshold: 2 },
    redirectHttpToHttps: true,
    droplets: on.map((d) => ({ id: d.id, address: d.address })),
    certificates: { site: pem },
  });
  /** GET over HTTPS through the load balancer with the site's name (SNI) and certificate. */
  const get = (urlPath = "/"): Promise<{ status: number; body: string }> => new Promise((resolve, reject) => {
    const req = https.request({ host: lb.address, port: entry.https, path: urlPath, servername: NAME, ca: cert, headers: { Host: NAME }, agent: false, timeout: 10_000 }, (res) => {
      let body = "";
      res.on("data", (c) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
    req.end();
  });
  /**
   * Runs `action` while one client requests through the load balancer (a new connection each
   * time, one at a time), then `after` more requests; every failure (status or error) recorded.
   * `action` may await `answered()`: the request in flight when it is called has been answered
   * (the client asks one at a time, so two more started means that one has its answer).
   */
  const steady = async (action: (answered: () => Promise<void>) => Promise<void>, after = 0) => {
    let done = false;
    let n = 0;
    const answered = async () => {
      const mark = n;
      await waitUntil("the request in flight answered", 30_000, async () => (n - mark >= 2 ? true : undefined), { intervalMs: 20 });
    };
    const failures: string[] = [];
    const client = (async () => {
      while (!done) {
        n++;
        const r = await get().catch((e: Error) => ({ status: 0, body: e.message }));
        if (r.status !== 200) failures.push(`${r.status} ${r.body.slice(0, 100)}`);
      }
    })();
    try {
      await action(answered);
      const mark = n;
      await waitUntil(`${after} more requests`, 30_000, async () => (n - mark >= after ? true : undefined), { intervalMs: 50 });
    } finally {
      done = true;
      await client;
    }
    return { n, failures };
  };
  const states = () => lb.droplets();
  const waitState = (id: string, want: string) =>
    waitUntil(`droplet ${id} ${want} at the load balancer`, 30_000, async () => ((await states())[id] === want ? true : undefined), { intervalMs: 200, debug: async () => JSON.stringify(await states()) });

  before(async function () {
    if (spawnSync("which", ["haproxy"]).status !== 0) throw new Error("haproxy is not installed: run .ci/install-host-packages.sh");
    if (process.getuid?.() !== 0) this.skip();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "dropstack-lb-"));
    execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", `/CN=${NAME}`,
      "-addext", `subjectAltName=DNS:${NAME}`, "-keyout", path.join(dir, "key.pem"), "-out", path.join(dir, "cert.pem")], { stdio: "pipe" });
    cert = fs.readFileSync(path.join(dir, "cert.pem"), "utf8");
    pem = cert + fs.readFileSync(path.join(dir, "key.pem"), "utf8");
    port = await freePort();
    [entry.https, entry.http] = [await freePort(), await freePort()];
    for (const d of droplets) await d.start(port);
    lb = await LocalLoadBalancer.create(path.join(dir, "lb"));
  });

  after(async () => {
    await lb?.stop();
    for (const d of droplets) d.server?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it("starts every droplet DOWN and sends it nothing until it passed `healthy` checks; then serves HTTPS round robin with X-Forwarded-*", async () => {
    await lb.apply(spec(droplets.slice(0, 2)));
    const first = await states();
    assert.match(first["101"], /^DOWN/, JSON.stringify(first));
    assert.match(first["102"], /^DOWN/, JSON.stringify(first));
    await waitState("101", "UP");
    await waitState("102", "UP");
    assert.ok(droplets[0].checks >= 2 && droplets[1].checks >= 2, "it checked each at least `healthy` times");
    const seen = new Set<string>();
    for (let i = 0; i < 6; i++) {
      const r = await get();
      assert.strictEqual(r.status, 200);
      const body = JSON.parse(r.body);
      seen.add(body.droplet);
      assert.strictEqual(body.proto, "https");
      assert.ok(body.forwardedFor, "X-Forwarded-For is set");
    }
    assert.deepStrictEqual([...seen].sort(), ["101", "102"]);
  });

  it("redirects HTTP to HTTPS", async () => {
    const r = await new Promise<http.IncomingMessage>((resolve, reject) => http.get({ host: lb.address, port: entry.http, path: "/x", headers: { Host: NAME }, agent: false }, resolve).on("error", reject));
    r.resume();
    assert.strictEqual(r.statusCode, 301);
    assert.strictEqual(r.headers.location, `https://${NAME}/x`);
  });

  it("takes a draining droplet (health 503) out after `unhealthy` failed checks, with every request answered meanwhile", async () => {
    let servedAtDown = 0;
    const { n, failures } = await steady(async (answered) => {
      droplets[0].healthy = false;
      await waitState("101", "DOWN");
      await answered(); // the request in flight when it went DOWN may be the droplet's
      servedAtDown = droplets[0].served;
    }, 200);
    assert.deepStrictEqual(failures, [], `of ${n} requests`);
    assert.strictEqual(droplets[0].served, servedAtDown, "no request reached the droplet once it was DOWN and the request in flight was answered");
  });

  it("an update adds a droplet DOWN and keeps the others' health (the drained one stays out); no request fails across it", async () => {
    const { n, failures } = await steady(async () => {
      await lb.apply(spec(droplets));
      const after = await states();
      assert.match(after["103"], /^DOWN/, `the new droplet starts DOWN: ${JSON.stringify(after)}`);
      assert.match(after["101"], /^DOWN/, `the drained droplet is still out: ${JSON.stringify(after)}`);
      assert.strictEqual(after["102"], "UP", JSON.stringify(after));
      await waitState("103", "UP");
      droplets[0].healthy = true;
      await waitState("101", "UP");
    });
    assert.deepStrictEqual(failures, [], `of ${n} requests`);
    assert.ok(droplets[2].served > 0, "the new droplet serves once UP");
  });

  it("removing a droplet drops no request; once the request in flight at the update is answered, nothing reaches it", async () => {
    let served = 0;
    const { n, failures } = await steady(async (answered) => {
      await lb.apply(spec([droplets[0], droplets[2]]));
      assert.deepStrictEqual(Object.keys(await states()).sort(), ["101", "103"]);
      await answered(); // the old HAProxy finishes the request it has (-sf): it may be the removed droplet's
      served = droplets[1].served;
    }, 200);
    assert.deepStrictEqual(failures, [], `of ${n} requests`);
    assert.strictEqual(droplets[1].served, served, "nothing reaches the removed droplet");
  });
});

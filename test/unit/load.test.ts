// The local cloud's load client against a real HTTPS server on loopback: a request on a kept-alive
// connection that the server closes before answering (as nginx does to idle connections when it
// reloads) is sent again once, on a new connection, and says so; any other failure stays a failure.
import * as assert from "assert";
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as https from "https";
import * as net from "net";
import * as os from "os";
import * as path from "path";
import { closedLoop, failures, underLoad } from "../../localcloud/load";
import { waitUntil } from "../../localcloud/util";

describe("local cloud: the load client", () => {
  let dir: string;
  let key: string;
  let cert: string;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "dropstack-load-"));
    execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=load.test",
      "-addext", "subjectAltName=DNS:load.test", "-keyout", path.join(dir, "key.pem"), "-out", path.join(dir, "cert.pem")], { stdio: "pipe" });
    [key, cert] = [fs.readFileSync(path.join(dir, "key.pem"), "utf8"), fs.readFileSync(path.join(dir, "cert.pem"), "utf8")];
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  /** A server that answers with `answer(n)`: a status, or "close" to drop the connection unanswered (n counts requests per connection). */
  async function serve(answer: (perConnection: number) => number | "close"): Promise<{ server: https.Server; port: number }> {
    const counts = new WeakMap<net.Socket, number>();
    const server = https.createServer({ key, cert, keepAlive: true }, (req, res) => {
      const n = (counts.get(req.socket) ?? 0) + 1;
      counts.set(req.socket, n);
      const a = answer(n);
      if (a === "close") {
        req.socket.destroy();
        return;
      }
      res.statusCode = a;
      res.end("version: v1<");
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return { server, port: (server.address() as net.AddressInfo).port };
  }
  const target = (port: number) => ({ host: "load.test", address: "127.0.0.1", ca: cert, path: "/", port });

  it("sends a request again once when its reused connection was closed before any answer, and records that", async () => {
    // every connection's second request is dropped, as an idle kept-alive connection closed by a reload
    const { server, port } = await serve((n) => (n === 2 ? "close" : 200));
    try {
      const outcomes = await closedLoop({ ...target(port) }, new Promise(() => undefined), { connections: 1, maxRequests: 4 });
      assert.strictEqual(failures(outcomes).length, 0, JSON.stringify(outcomes));
      assert.ok(outcomes.some((o) => o.retried && /socket hang up|ECONNRESET/.test(o.retried)), `one outcome says it was retried: ${JSON.stringify(outcomes)}`);
      assert.ok(outcomes.filter((o) => o.retried).length < outcomes.length);
    } finally {
      server.close();
    }
  });

  it("under open-loop load, sends requests while the action runs and none after it; each outcome names the address that answered", async () => {
    let served = 0;
    const { server, port } = await serve(() => {
      served++;
      return 200;
    });
    try {
      const run = await underLoad(target(port), () => waitUntil("10 requests served", 30_000, () => (served >= 10 ? "done" : undefined), { intervalMs: 20 }), { rate: 50 });
      assert.strictEqual(run.result, "done");
      assert.ok(run.outcomes.length >= 10, `${run.outcomes.length} outcomes`);
      assert.strictEqual(served, run.outcomes.length, "every request sent was recorded, and none went out after the action");
      assert.strictEqual(failures(run.outcomes).length, 0);
      assert.deepStrictEqual([...new Set(run.outcomes.map((o) => o.address))], ["127.0.0.1"]);
    } finally {
      server.close();
    }
  });

  it("keeps every other failure: a dropped first request on a new connection, and a 502", async () => {
    const dropped = await serve(() => "close");
    const bad = await serve(() => 502);
    try {
      const a = await closedLoop(target(dropped.port), new Promise(() => undefined), { connections: 1, maxRequests: 2 });
      assert.strictEqual(failures(a).length, a.length, JSON.stringify(a));
      const b = await closedLoop(target(bad.port), new Promise(() => undefined), { connections: 1, maxRequests: 2 });
      assert.deepStrictEqual(b.map((o) => o.status), [502, 502]);
      assert.ok(b.every((o) => !o.retried));
    } finally {
      dropped.server.close();
      bad.server.close();
    }
  });
});

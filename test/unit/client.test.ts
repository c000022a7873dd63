// A built client beside the API, served by the real nginx from the rendered site (plain HTTP on a
// loopback port), with the server's layout: live -> slots/<slot>, each slot holding its gunicorn
// socket (here a small HTTP server on a unix socket) and its release (the client in .client).
import * as assert from "assert";
import { ChildProcess, spawn, spawnSync } from "child_process";
import * as fs from "fs";
import * as http from "http";
import * as os from "os";
import * as path from "path";
import { renderNginxDefault, renderNginxSite } from "../../components/render";
import { freePort, waitUntil } from "../../localcloud/util";

interface Answer { status: number; headers: http.IncomingHttpHeaders; body: string }

function get(port: number, urlPath: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: "127.0.0.1", port, path: urlPath, headers: { Host: "shop.test" }, timeout: 5000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on("timeout", () => req.destroy(new Error(`GET ${urlPath}: no answer within 5 s`)));
    req.on("error", reject);
  });
}

/** Replaces `from` in `text`, failing when it is not there (a changed template is noticed). */
function sub(text: string, from: string | RegExp, to: string): string {
  assert.ok(typeof from === "string" ? text.includes(from) : from.test(text), `the rendered site has no ${from}`);
  return typeof from === "string" ? text.split(from).join(to) : text.replace(from, to);
}

describe("a built client beside the API (nginx, rendered site)", function () {
  this.timeout(60_000);
  let dir = "";
  let port = 0;
  let nginx: ChildProcess | undefined;
  const upstreams: http.Server[] = [];
  const srv = () => path.join(dir, "srv", "shop");
  const relink = (target: string, link: string) => {
    fs.symlinkSync(target, `${link}.tmp`);
    fs.renameSync(`${link}.tmp`, link);
  };

  before(async () => {
    if (spawnSync("which", ["nginx"]).status !== 0) throw new Error("nginx is not installed: run .ci/install-host-packages.sh");
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "dropstack-client-"));
    fs.chmodSync(dir, 0o755); // nginx's workers run as nobody
    // r0: a release from before the stack had a client
    fs.mkdirSync(path.join(srv(), "releases", "r0"), { recursive: true });
    for (const [release, slot] of [["r1", "blue"], ["r2", "green"]]) {
      const client = path.join(srv(), "releases", release, ".client");
      fs.mkdirSync(path.join(client, "assets"), { recursive: true });
      fs.writeFileSync(path.join(client, "index.html"), `<p>client ${release}</p>\n`);
      fs.writeFileSync(path.join(client, "assets", `app-${release}abcdef01.js`), `console.log("${release}");\n`);
      fs.writeFileSync(path.join(client, "robots.txt"), "User-agent: *\n");
      fs.mkdirSync(path.join(srv(), "slots", slot), { recursive: true });
      fs.mkdirSync(path.join(dir, "run"), { recursive: true });
      const socket = path.join(dir, "run", `${slot}.sock`);
      const server = http.createServer((req, res) => {
        res.setHeader("Content-Type", "text/plain");
        res.end(`api ${slot} ${req.url}`);
      });
      await new Promise<void>((resolve) => server.listen(socket, resolve));
      fs.chmodSync(socket, 0o777);
      upstreams.push(server);
      fs.symlinkSync(socket, path.join(srv(), "slots", slot, "app.sock"));
      fs.symlinkSync(path.join(srv(), "releases", release), path.join(srv(), "slots", slot, "release"));
    }
    for (const d of [dir, path.join(dir, "srv"), srv()]) fs.chmodSync(d, 0o755);
    fs.symlinkSync(path.join(srv(), "slots", "blue"), path.join(srv(), "live"));

    port = await freePort();
    let site = renderNginxSite({ app: "shop", fqdn: "shop.test", tls: false, maxBodySize: "1m", hsts: false, apiPrefix: "/api" });
    site = sub(sub(sub(site, "/srv/shop/", `${srv()}/`), /^\s*listen \[::\]:80;\n/m, ""), "listen 80;", `listen 127.0.0.1:${port};`);
    fs.mkdirSync(path.join(dir, "snippets"));
    fs.writeFileSync(path.join(dir, "snippets", "dropstack-acme.conf"), renderNginxDefault().acmeSnippet);
    fs.writeFileSync(path.join(dir, "site.conf"), site);
    fs.writeFileSync(path.join(dir, "nginx.conf"), [
      "daemon off;", `pid ${dir}/nginx.pid;`, `error_log ${dir}/error.log;`, "events {}", "http {",
      "    include /etc/nginx/mime.types;", "    access_log off;", `    include ${dir}/site.conf;`, "}", "",
    ].join("\n"));
    nginx = spawn("nginx", ["-p", dir, "-c", path.join(dir, "nginx.conf"), "-e", path.join(dir, "error.log")], { stdio: "ignore" });
    await waitUntil("nginx to answer", 20_000, () => get(port, "/robots.txt").then(() => true, () => undefined), {
      intervalMs: 100, debug: () => fs.readFileSync(path.join(dir, "error.log"), "utf8"),
    });
  });

  after(async () => {
    nginx?.kill("SIGTERM");
    for (const s of upstreams) s.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it("serves index.html at / and for client-side routes, revalidated on every load, with the security headers", async () => {
    for (const p of ["/", "/notes/42", "/settings/profile?tab=keys", "/apiary"]) {
      const r = await get(port, p);
      assert.strictEqual(r.status, 200, p);
      assert.strictEqual(r.body, "<p>client r1</p>\n", p);
      assert.strictEqual(r.headers["cache-control"], "no-cache", p);
      assert.strictEqual(r.headers["x-content-type-options"], "nosniff", p);
      assert.strictEqual(r.headers["x-frame-options"], "SAMEORIGIN", p);
    }
    assert.strictEqual((await get(port, "/robots.txt")).body, "User-agent: *\n", "a file of the client is served as it is");
  });

  it("caches content-hashed assets for a year and never answers a missing one with index.html", async () => {
    const r = await get(port, "/assets/app-r1abcdef01.js");
    assert.strictEqual(r.status, 200);
    assert.strictEqual(r.body, 'console.log("r1");\n');
    assert.strictEqual(r.headers["cache-control"], "public, max-age=31536000, immutable");
    assert.strictEqual(r.headers["x-content-type-options"], "nosniff");
    assert.strictEqual((await get(port, "/assets/app-0000000000.js")).status, 404);
  });

  it("hands the API prefix, and only it, to the app with the path unchanged", async () => {
    assert.strictEqual((await get(port, "/api/notes?after=3")).body, "api blue /api/notes?after=3");
    assert.strictEqual((await get(port, "/api")).body, "api blue /api");
    assert.strictEqual((await get(port, "/api/assets/app-r1abcdef01.js")).body, "api blue /api/assets/app-r1abcdef01.js", "the API's own paths never reach the client's rules");
  });

  it("leaves / to the app while the live release has no client (the first release with one is on its way)", async () => {
    relink(path.join(srv(), "releases", "r0"), path.join(srv(), "slots", "blue", "release"));
    try {
      assert.strictEqual((await get(port, "/")).body, "api blue /");
      assert.strictEqual((await get(port, "/index.html")).body, "api blue /index.html");
      assert.strictEqual((await get(port, "/notes/42")).body, "api blue /notes/42");
    } finally {
      relink(path.join(srv(), "releases", "r1"), path.join(srv(), "slots", "blue", "release"));
    }
  });

  it("switches the client and the API together when live is re-linked to the other slot", async () => {
    relink(path.join(srv(), "slots", "green"), path.join(srv(), "live"));
    try {
      assert.strictEqual((await get(port, "/")).body, "<p>client r2</p>\n");
      assert.strictEqual((await get(port, "/api/version")).body, "api green /api/version");
      assert.strictEqual((await get(port, "/assets/app-r1abcdef01.js")).status, 404, "the old release's assets are gone with it");
    } finally {
      relink(path.join(srv(), "slots", "blue"), path.join(srv(), "live"));
    }
  });
});

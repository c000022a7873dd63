import * as assert from "assert";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { decodeValues } from "../../components/shell";
import { spawnSync } from "child_process";
import { runProgram } from "../../localcloud/program";
import { PROJECT_DIR, stackConfig } from "../../localcloud/stackConfig";
import { byName, byType, DEPLOY_PRIVATE_KEY, DROPLET_IPV4, DROPLET_IPV6, HOST_PUBLIC_KEY, isSecretValue, plain, plainStrings, runFake } from "./fakeCloud";

const COMMAND = "command:remote:Command";
const COPY = "command:remote:CopyToRemote";
const remoteResources = (r: Awaited<ReturnType<typeof runFake>>) => r.resources.filter((x) => x.type === COMMAND || x.type === COPY);
const stdinOf = (res: { inputs: Record<string, unknown> }) => decodeValues(String(plain(res.inputs.stdin)));

for (const stack of ["staging", "prod"]) {
  describe(`program on the ${stack} stack`, () => {
    it("attaches a firewall with exactly the documented rules to the droplet", async () => {
      const r = await runFake({ stack });
      const [fw] = byType(r, "digitalocean:index/firewall:Firewall");
      const droplet = byName(r, "server-droplet");
      assert.deepStrictEqual(fw.inputs.dropletIds, [Number(droplet.id)]);
      const all = ["0.0.0.0/0", "::/0"];
      assert.deepStrictEqual(fw.inputs.inboundRules, [
        { protocol: "tcp", portRange: "22", sourceAddresses: ["203.0.113.0/24"] },
        { protocol: "tcp", portRange: "80", sourceAddresses: all },
        { protocol: "tcp", portRange: "443", sourceAddresses: all },
        { protocol: "icmp", sourceAddresses: all },
      ]);
      assert.deepStrictEqual(fw.inputs.outboundRules, [
        { protocol: "udp", portRange: "53", destinationAddresses: all },
        { protocol: "tcp", portRange: "53", destinationAddresses: all },
        { protocol: "tcp", portRange: "80", destinationAddresses: all },
        { protocol: "tcp", portRange: "443", destinationAddresses: all },
        { protocol: "udp", portRange: "123", destinationAddresses: all },
        { protocol: "icmp", destinationAddresses: all },
      ]);
    });

    it("opens the configured egress in the cloud firewall and the host firewall, and nothing else changes", async () => {
      const egress = [{ ports: 25060, to: ["10.114.0.0/20"] }, { protocol: "udp", ports: "5000-5010", to: ["2001:db8::/32"] }];
      const base = await runFake({ stack });
      const r = await runFake({ stack, overrides: { egress } });
      const [fw] = byType(r, "digitalocean:index/firewall:Firewall");
      const [fwBase] = byType(base, "digitalocean:index/firewall:Firewall");
      assert.deepStrictEqual(fw.inputs.outboundRules, [
        ...(fwBase.inputs.outboundRules as unknown[]),
        { protocol: "tcp", portRange: "25060", destinationAddresses: ["10.114.0.0/20"] },
        { protocol: "udp", portRange: "5000-5010", destinationAddresses: ["2001:db8::/32"] },
      ]);
      const nft = stdinOf(byName(r, "host-base")).NFTABLES;
      assert.match(nft, /ip daddr \{ 10\.114\.0\.0\/20 \} tcp dport 25060 accept/);
      assert.match(nft, /ip6 daddr \{ 2001:db8::\/32 \} udp dport 5000-5010 accept/);
      // Firewalls change in place: the droplet (user data, keys) is the same.
      assert.deepStrictEqual(byName(r, "server-droplet").inputs, byName(base, "server-droplet").inputs);
    });

    it("points the A and AAAA records at the droplet's addresses", async () => {
      const r = await runFake({ stack });
      const records = byType(r, "digitalocean:index/dnsRecord:DnsRecord");
      assert.deepStrictEqual(records.map((x) => [x.inputs.type, x.inputs.value, x.inputs.domain]).sort(),
        [["A", DROPLET_IPV4, "example.com"], ["AAAA", DROPLET_IPV6, "example.com"]]);
      const noV6 = await runFake({ stack, overrides: { ipv6: false } });
      assert.deepStrictEqual(byType(noV6, "digitalocean:index/dnsRecord:DnsRecord").map((x) => x.inputs.type), ["A"]);
    });

    it("connects every remote command to the droplet as the deploy user with the generated key, pinning the host key", async () => {
      const r = await runFake({ stack });
      const remote = remoteResources(r);
      assert.ok(remote.length >= 5, `expected the remote steps, got ${remote.map((x) => x.name)}`);
      for (const res of remote) {
        assert.ok(isSecretValue(res.inputs.connection), `${res.name}: connection must be secret`);
        const conn = plain(res.inputs.connection) as Record<string, unknown>;
        assert.strictEqual(conn.host, DROPLET_IPV4, res.name);
        assert.strictEqual(conn.user, "deploy", res.name);
        assert.strictEqual(conn.privateKey, DEPLOY_PRIVATE_KEY, res.name);
        assert.strictEqual(conn.hostKey, HOST_PUBLIC_KEY, `${res.name} must pin the host key`);
      }
      const droplet = byName(r, "server-droplet");
      assert.ok(isSecretValue(droplet.inputs.userData), "user data holds the host's private key: it must be secret");
      const userData = String(plain(droplet.inputs.userData));
      assert.match(userData, /ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDropstackUnitTestPublicKey/);
      assert.ok(userData.includes(JSON.stringify(HOST_PUBLIC_KEY)), "the pinned host key is the one cloud-init installs");
      assert.strictEqual(r.outputs.knownHostsLine.value, `${String(r.outputs.fqdn.value)},${DROPLET_IPV4} ${HOST_PUBLIC_KEY}`);
      assert.deepStrictEqual(droplet.inputs.sshKeys, ["3b:16:bf:e4:8b:00:8b:b8:59:8c:a9:d3:f0:19:45:fa"]);
    });

    it("runs the steps in order: cloud-init, base, reboot, booted, certificate, site, upload, release", async () => {
      const r = await runFake({ stack });
      const order = remoteResources(r).map((x) => x.name);
      const pos = (n: string) => {
        const i = order.indexOf(n);
        assert.ok(i >= 0, `${n} missing from ${order}`);
        return i;
      };
      assert.ok(pos("host-cloud-init") < pos("host-base"));
      assert.ok(pos("host-base") < pos("host-reboot"));
      assert.ok(pos("host-reboot") < pos("host-booted"));
      assert.ok(pos("host-booted") < pos("certificate-certbot"));
      assert.ok(pos("certificate-certbot") < pos("site-nginx"));
      assert.ok(pos("site-nginx") < pos("app-release"));
      assert.ok(pos("app-upload") < pos("app-release"));
    });

    it("gives identical resource inputs on two evaluations (a no-change up changes nothing)", async () => {
      const a = await runFake({ stack });
      const b = await runFake({ stack });
      const byNameInputs = (r: typeof a) => Object.fromEntries(r.resources.map((x) => [x.name, plain(x.inputs)]));
      assert.deepStrictEqual(Object.keys(byNameInputs(b)).sort(), Object.keys(byNameInputs(a)).sort());
      assert.deepStrictEqual(byNameInputs(b), byNameInputs(a));
    });
  });
}

describe("what an app change re-runs", () => {
  let copy: string;
  before(() => {
    copy = fs.mkdtempSync(path.join(os.tmpdir(), "dropstack-app-"));
    fs.cpSync(path.join(PROJECT_DIR, "app"), copy, { recursive: true });
  });
  after(() => fs.rmSync(copy, { recursive: true, force: true }));

  it("changes only the upload and the release, never provisioning", async () => {
    const before = await runFake({ overrides: { appSource: copy } });
    fs.appendFileSync(path.join(copy, "app.py"), "\n# a change\n");
    const after = await runFake({ overrides: { appSource: copy } });
    const changed = after.resources
      .filter((res) => JSON.stringify(plain(res.inputs)) !== JSON.stringify(plain(byName(before, res.name).inputs)))
      .map((res) => res.name).sort();
    assert.deepStrictEqual(changed, ["app-release", "app-upload"]);
    const outBefore = before.outputs.releaseId.value;
    assert.notStrictEqual(after.outputs.releaseId.value, outBefore);
  });

  it("releases a built client with the app: uploaded beside it, part of the release id, the site handing only /api to the app", async () => {
    const client = fs.mkdtempSync(path.join(os.tmpdir(), "dropstack-client-"));
    try {
      fs.writeFileSync(path.join(client, "index.html"), "<p>v1</p>\n");
      const without = await runFake({ overrides: { appSource: copy } });
      const first = await runFake({ overrides: { appSource: copy, clientSource: client } });
      const upload = byName(first, "app-client-upload");
      const values = stdinOf(byName(first, "app-release"));
      assert.strictEqual(values.CLIENT_UPLOAD_DIR, `${values.UPLOAD_DIR}-client`);
      assert.strictEqual(upload.inputs.remotePath, values.CLIENT_UPLOAD_DIR);
      assert.strictEqual(stdinOf(byName(without, "app-release")).CLIENT_UPLOAD_DIR, "");
      assert.notStrictEqual(first.outputs.releaseId.value, without.outputs.releaseId.value);
      assert.match(stdinOf(byName(first, "site-nginx")).NGINX_SITE, /location \^~ \/api\/ \{/);
      // a changed client is a new release; provisioning and the site stay as they are
      fs.writeFileSync(path.join(client, "index.html"), "<p>v2</p>\n");
      const second = await runFake({ overrides: { appSource: copy, clientSource: client } });
      const changed = second.resources
        .filter((res) => JSON.stringify(plain(res.inputs)) !== JSON.stringify(plain(byName(first, res.name).inputs)))
        .map((res) => res.name).sort();
      assert.deepStrictEqual(changed, ["app-client-upload", "app-release", "app-upload"]);
    } finally {
      fs.rmSync(client, { recursive: true, force: true });
    }
  });

  it("keeps the app's content and settings out of provisioning triggers and stdin", async () => {
    const r = await runFake({ overrides: { appSource: copy, wsgi: "app:app", env: { MARKER_ENV: "marker-value-1" } } });
    for (const name of ["host-cloud-init", "host-base", "host-reboot", "host-booted", "certificate-certbot", "site-nginx"]) {
      const text = JSON.stringify(plain(byName(r, name).inputs));
      assert.ok(!text.includes("marker-value-1"), `${name} carries an app setting`);
      assert.ok(!text.includes(copy), `${name} carries the app folder`);
      assert.ok(!text.includes(String(r.outputs.releaseId.value)), `${name} carries the release id`);
    }
  });
});

describe("readable previews", () => {
  it("shows a one-line change of a rendered nginx file as that line, in text, in the step's stdin", async () => {
    const before = String(plain(byName(await runFake({ overrides: { maxBodySize: "10m" } }), "site-nginx").inputs.stdin));
    const after = String(plain(byName(await runFake({ overrides: { maxBodySize: "25m" } }), "site-nginx").inputs.stdin));
    const a = before.split("\n");
    const b = after.split("\n");
    assert.strictEqual(a.length, b.length);
    const changed = a.flatMap((line, i) => (line === b[i] ? [] : [[line, b[i]]]));
    assert.deepStrictEqual(changed.map(([x, y]) => [x.trim(), y.trim()]), [["client_max_body_size 10m;", "client_max_body_size 25m;"]]);
    assert.strictEqual(decodeValues(after).NGINX_SITE.split("\n").filter((l) => l.includes("client_max_body_size")).length, 1);
  });
});

describe("secrets", () => {
  const secretValue = "s3cr3t-'\"$HOME`id`\\n-ünïcode";
  const run = () => runFake({
    overrides: { secretEnv: { API_TOKEN: secretValue } },
    secretKeys: ["dropstack:secretEnv"],
  });

  it("keeps a secret env value secret in every input and out of every plain value", async () => {
    const r = await run();
    for (const res of r.resources) {
      for (const s of plainStrings(res.inputs)) {
        assert.ok(!s.value.includes(secretValue), `${res.name}.${s.path} holds the secret in plain text`);
        assert.ok(!s.value.includes(Buffer.from(secretValue).toString("base64")), `${res.name}.${s.path} holds the secret base64-encoded`);
      }
    }
    for (const [name, o] of Object.entries(r.outputs)) {
      assert.ok(!JSON.stringify(o.value ?? "").includes(secretValue), `output ${name} holds the secret`);
    }
    const release = byName(r, "app-release");
    assert.ok(isSecretValue(release.inputs.stdin), "release stdin must be secret");
    assert.strictEqual(release.inputs.logging, "none");
    assert.strictEqual(JSON.parse(stdinOf(release).ENV_JSON).API_TOKEN, secretValue, "the value arrives unchanged");
  });

  /** Asserts that no plain input of any resource and no output holds `value` (nor its base64). */
  function assertNowherePlain(r: Awaited<ReturnType<typeof runFake>>, value: string): void {
    for (const res of r.resources) {
      for (const s of plainStrings(res.inputs)) {
        assert.ok(!s.value.includes(value), `${res.name}.${s.path} holds the secret in plain text`);
        assert.ok(!s.value.includes(Buffer.from(value).toString("base64")), `${res.name}.${s.path} holds the secret base64-encoded`);
      }
    }
    for (const [name, o] of Object.entries(r.outputs)) assert.ok(!JSON.stringify(o.value ?? "").includes(value), `output ${name} holds the secret`);
  }

  it("keeps a credential in the ACME URL secret when it was stored with --secret: the certificate step logs nothing", async () => {
    const acmeServer = "https://acme:hunter2-token@acme.internal.example.com/directory";
    const plainRun = await runFake({ overrides: { acmeServer } });
    assert.strictEqual(byName(plainRun, "certificate-certbot").inputs.logging, "stdoutAndStderr", "without --secret the step logs as usual");
    const r = await runFake({ overrides: { acmeServer }, secretKeys: ["dropstack:acmeServer"] });
    assertNowherePlain(r, "hunter2-token");
    const cert = byName(r, "certificate-certbot");
    assert.ok(isSecretValue(cert.inputs.stdin), "certificate stdin must be secret");
    assert.strictEqual(cert.inputs.logging, "none");
    assert.strictEqual(stdinOf(cert).ACME_SERVER, acmeServer, "the value arrives unchanged");
    assert.strictEqual(byName(r, "site-nginx").inputs.logging, "stdoutAndStderr", "steps without the secret still log");
  });

  it("keeps plain env and the release command secret when they were stored with --secret", async () => {
    const r = await runFake({ overrides: { env: { DSN: "db-password-42" }, releaseCommand: "PGPASSWORD=db-password-42 migrate" }, secretKeys: ["dropstack:env", "dropstack:releaseCommand"] });
    assertNowherePlain(r, "db-password-42");
    assert.strictEqual(byName(r, "app-release").inputs.logging, "none");
  });

  it("keeps the deploy and host private keys out of plain inputs and outputs", async () => {
    const r = await run();
    for (const res of r.resources) {
      for (const k of ["unit-test-deploy-key", "unit-test-host-key"]) {
        assert.ok(!plainStrings(res.inputs).some((s) => s.value.includes(k)), `${res.name} holds ${k}`);
      }
    }
    assert.ok(!JSON.stringify(r.outputs).includes("unit-test-deploy-key"));
    assert.ok(!JSON.stringify(r.outputs).includes("unit-test-host-key"));
  });
});

describe("staging and prod differ where they must", () => {
  it("names, host, ACME server, size, backups and protection", async () => {
    const staging = await runFake({ stack: "staging" });
    const prod = await runFake({ stack: "prod" });
    const dStaging = byName(staging, "server-droplet");
    const dProd = byName(prod, "server-droplet");
    assert.strictEqual(dStaging.inputs.name, "app-staging");
    assert.strictEqual(dProd.inputs.name, "app-prod");
    assert.notStrictEqual(dStaging.inputs.size, dProd.inputs.size);
    assert.strictEqual(dProd.inputs.backups, true);
    assert.strictEqual(staging.outputs.fqdn.value, "staging.example.com");
    assert.strictEqual(prod.outputs.fqdn.value, "example.com");
    assert.strictEqual(stdinOf(byName(staging, "certificate-certbot")).ACME_SERVER, "https://acme-staging-v02.api.letsencrypt.org/directory");
    assert.strictEqual(stdinOf(byName(prod, "certificate-certbot")).ACME_SERVER, "https://acme-v02.api.letsencrypt.org/directory");
    assert.notStrictEqual(byName(staging, "deploy-key-do").inputs.name, byName(prod, "deploy-key-do").inputs.name);
  });
});

describe("DNS zone", () => {
  // A failed invoke leaves the SDK's registrations pending, as it would end a real `pulumi up`:
  // this run gets a process of its own so later tests start from a clean SDK.
  const runIsolated = (managedDomains: string[]) => spawnSync(process.execPath, ["-r", "ts-node/register", "-e",
    `require("./test/unit/fakeCloud").runFake({ managedDomains: ${JSON.stringify(managedDomains)} })
       .then(() => { console.log("RESOLVED"); process.exit(0); }, (e) => { console.log("REJECTED " + e.message); process.exit(1); });`],
  { cwd: PROJECT_DIR, env: { ...process.env, TS_NODE_TRANSPILE_ONLY: "1" }, encoding: "utf8", timeout: 120_000 });

  it("fails with a clear message when the domain is not managed by DigitalOcean", () => {
    const r = runIsolated(["other.org"]);
    assert.strictEqual(r.status, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /REJECTED .*dropstack:domain: "example\.com" is not a domain managed by DigitalOcean DNS in this account/);
  });

  it("goes ahead when it is", () => {
    const r = runIsolated(["example.com", "other.org"]);
    assert.strictEqual(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /RESOLVED/);
  });

  it("fails the run when a resource fails, as the engine fails the update", async () => {
    await assert.rejects(runProgram({
      stack: "staging", config: stackConfig("staging"),
      call: async (c) => (c.token === "command:local:run" ? { stdout: "status none" } : { domains: [{ name: "example.com" }] }),
      newResource: async (a) => {
        if (a.name === "app-release") throw new Error("release refused");
        return { id: `${a.name}-id`, state: { ...a.inputs, ipv4Address: "203.0.113.7", publicKeyOpenssh: "ssh-ed25519 AAAA", privateKeyOpenssh: "k", fingerprint: "fp" } };
      },
    }), /release refused/);
  });

  it("on a failure, lets the caller wait for what is under way before the run fails (as the engine waits for its steps)", async () => {
    const events: string[] = [];
    let slowDone = false;
    await assert.rejects(runProgram({
      stack: "staging", config: stackConfig("staging"),
      call: async (c) => (c.token === "command:local:run" ? { stdout: "status none" } : { domains: [{ name: "example.com" }] }),
      newResource: async (a) => {
        if (a.name === "host-key-key") throw new Error("key refused");
        if (a.name === "deploy-key-key") {
          await new Promise((r) => setTimeout(r, 300));
          slowDone = true;
        }
        return { id: `${a.name}-id`, state: { ...a.inputs, ipv4Address: "203.0.113.7", publicKeyOpenssh: "ssh-ed25519 AAAA", privateKeyOpenssh: "k", fingerprint: "fp" } };
      },
      onFailure: async () => {
        events.push(`onFailure (slow step done: ${slowDone})`);
        while (!slowDone) await new Promise((r) => setTimeout(r, 20));
        events.push("waited");
      },
    }).finally(() => events.push("rejected")), /key refused/);
    assert.deepStrictEqual(events, ["onFailure (slow step done: false)", "waited", "rejected"]);
  });
});

describe("preview", () => {
  it("evaluates with unknown outputs and no errors", async () => {
    const r = await runFake({ preview: true });
    assert.ok(r.resources.length >= 10, `registered ${r.resources.length} resources`);
    assert.strictEqual(r.outputs.ipv4Address.known, false);
    assert.strictEqual(r.outputs.fqdn.value, "staging.example.com");
  });
});

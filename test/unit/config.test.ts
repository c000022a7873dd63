import * as assert from "assert";
import { ConfigError, loadConfig, NAMESPACE, OBJECT_KEYS, schema } from "../../components/config";
import { PROJECT_DIR, projectFile, stackConfig } from "../support/stackConfig";
import { runFake } from "./fakeCloud";

const GOOD_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq0ZmVgtq7V5H7lJ0sN7H1n2mE6w3xZ1YlB2m8jF0aQ alice@laptop";
const load = (stack: string, overrides: Record<string, unknown> = {}) => loadConfig(stackConfig(stack, overrides), PROJECT_DIR);

/** [what, overrides, key the error must name, words it must contain] */
const BAD: [string, Record<string, unknown>, string, RegExp][] = [
  ["missing domain", { domain: undefined }, "domain", /required/],
  ["domain with a scheme", { domain: "https://example.com" }, "domain", /e\.g\. example\.com/],
  ["domain upper case", { domain: "Example.COM" }, "domain", /DNS zone/],
  ["domain single label", { domain: "localhost" }, "domain", /DNS zone/],
  ["host with a space", { host: "my api" }, "host", /host label/],
  ["host with trailing dot", { host: "api." }, "host", /host label/],
  ["host with underscore", { host: "my_api" }, "host", /host label/],
  ["region not a slug", { region: "Frankfurt" }, "region", /region slug/],
  ["size not a slug", { size: "large" }, "size", /size slug/],
  ["image with spaces", { image: "debian 12" }, "image", /image slug/],
  ["ipv6 not boolean", { ipv6: "yes" }, "ipv6", /true or false/],
  ["bad CIDR", { sshAllowedCidrs: ["10.0.0.0/33"] }, "sshAllowedCidrs", /CIDR/],
  ["CIDR without prefix", { sshAllowedCidrs: ["203.0.113.7"] }, "sshAllowedCidrs", /CIDR/],
  ["IPv6 CIDR malformed", { sshAllowedCidrs: ["2001:db8:::/32"] }, "sshAllowedCidrs", /CIDR/],
  ["no SSH networks", { sshAllowedCidrs: [] }, "sshAllowedCidrs", /at least one/],
  ["SSH networks missing", { sshAllowedCidrs: undefined }, "sshAllowedCidrs", /required/],
  ["egress not a list", { egress: { ports: 5432 } }, "egress", /list of rules/],
  ["egress without networks", { egress: [{ ports: 5432 }] }, "egress[0].to", /required/],
  ["egress with no networks", { egress: [{ ports: 5432, to: [] }] }, "egress[0].to", /at least one network/],
  ["egress network not a CIDR", { egress: [{ ports: 5432, to: ["db.internal"] }] }, "egress[0].to[0]", /CIDR/],
  ["egress port 0", { egress: [{ ports: 0, to: ["10.0.0.0/8"] }] }, "egress[0].ports", /1 to 65535/],
  ["egress port too high", { egress: [{ ports: 70000, to: ["10.0.0.0/8"] }] }, "egress[0].ports", /1 to 65535/],
  ["egress range backwards", { egress: [{ ports: "9000-8000", to: ["10.0.0.0/8"] }] }, "egress[0].ports", /range/],
  ["egress port list", { egress: [{ ports: "5432,6379", to: ["10.0.0.0/8"] }] }, "egress[0].ports", /e\.g\. 5432/],
  ["egress protocol icmp", { egress: [{ protocol: "icmp", ports: 1, to: ["10.0.0.0/8"] }] }, "egress[0].protocol", /"tcp" or "udp"/],
  ["egress field typo", { egress: [{ port: 5432, ports: 5432, to: ["10.0.0.0/8"] }] }, "egress[0]", /unknown field port\b/],
  ["egress without ports", { egress: [{ to: ["10.0.0.0/8"] }] }, "egress[0].ports", /required/],
  ["empty public key", { adminSshKeys: [""] }, "adminSshKeys", /public key/],
  ["private key given as admin key", { adminSshKeys: ["-----BEGIN OPENSSH PRIVATE KEY-----"] }, "adminSshKeys", /never a private key/],
  ["public key with wrong type inside", { adminSshKeys: ["ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIGq0ZmVgtq7V5H7lJ0sN7H1n2mE6w3xZ1YlB2m8jF0aQ"] }, "adminSshKeys", /public key/],
  ["public key truncated", { adminSshKeys: ["ssh-ed25519 AAAA"] }, "adminSshKeys", /public key/],
  ["deploy user root", { deployUser: "root" }, "deployUser", /must not be "root"/],
  ["deploy user with capitals", { deployUser: "Deploy" }, "deployUser", /Unix user name/],
  ["workers zero", { workers: 0 }, "workers", /at least 1/],
  ["workers fractional", { workers: 1.5 }, "workers", /whole number/],
  ["workers as text", { workers: "many" }, "workers", /whole number/],
  ["WSGI target without callable", { wsgi: "app" }, "wsgi", /module:callable/],
  ["WSGI target with path", { wsgi: "app/app.py:app" }, "wsgi", /module:callable/],
  ["WSGI module not in the app folder", { wsgi: "missing:app" }, "wsgi", /not in app\//],
  ["missing email with TLS on", { acmeEmail: undefined }, "acmeEmail", /required when dropstack:tls/],
  ["email malformed", { acmeEmail: "ops-at-example.com" }, "acmeEmail", /email/],
  ["ACME server over http", { acmeServer: "http://acme.example.com/dir" }, "acmeServer", /https/],
  ["ACME CA bundle not PEM", { acmeCaBundle: "not a cert" }, "acmeCaBundle", /PEM/],
  ["app folder missing", { appSource: "no-such-folder" }, "appSource", /does not exist/],
  ["app name with capitals", { appName: "MyApp" }, "appName", /lower-case/],
  ["apt package with shell", { aptPackages: ["curl; rm -rf /"] }, "aptPackages", /Debian package/],
  ["env name with dash", { env: { "BAD-NAME": "x" } }, "env", /environment variable names/],
  ["env not a map", { env: ["A=1"] }, "env", /map/],
  ["env also in secretEnv", { env: { A: "1" }, secretEnv: { A: "2" } }, "env", /one of them/],
  ["health path without slash", { healthPath: "healthz" }, "healthPath", /starting with \//],
  ["keepReleases 1", { keepReleases: 1 }, "keepReleases", /at least 2/],
  ["max body size with unit typo", { maxBodySize: "10mb" }, "maxBodySize", /nginx size/],
  ["unknown setting (typo)", { regoin: "fra1" }, "regoin", /not a dropstack setting/],
  ["tags with spaces", { tags: ["my tag"] }, "tags", /tags of letters/],
  ["hsts not boolean", { hsts: "on" }, "hsts", /true or false/],
  ["health status 500", { healthStatus: 500 }, "healthStatus", /2xx or 3xx/],
  ["health timeout 0", { healthTimeout: 0 }, "healthTimeout", /at least 1 second/],
  ["health attempts 0", { healthAttempts: 0 }, "healthAttempts", /at least 1 attempt/],
  ["empty release command", { releaseCommand: "" }, "releaseCommand", /shell command/],
  ["release version with a space", { releaseVersion: "v 1" }, "releaseVersion", /version label/],
];

describe("config validation", () => {
  for (const [what, overrides, key, words] of BAD) {
    it(`rejects ${what}, naming ${NAMESPACE}:${key}`, () => {
      assert.throws(() => load("staging", overrides), (e: unknown) => {
        assert.ok(e instanceof ConfigError, `expected a ConfigError, got ${e}`);
        const line = e.problems.find((p) => p.startsWith(`${NAMESPACE}:${key}`));
        assert.ok(line, `no problem names ${NAMESPACE}:${key}: ${e.problems.join(" | ")}`);
        assert.match(line, words);
        return true;
      });
    });
  }

  it("reports every problem at once", () => {
    assert.throws(() => load("staging", { region: "x", size: "y", keepReleases: 0 }), (e: ConfigError) => e.problems.length === 3);
  });

  it("accepts both stacks and a full set of good values", () => {
    assert.strictEqual(load("staging").fqdn, "staging.example.com");
    assert.strictEqual(load("prod").fqdn, "example.com");
    const c = load("staging", {
      adminSshKeys: [GOOD_KEY], sshAllowedCidrs: ["0.0.0.0/0", "::/0", "2001:db8::/32"], workers: 1,
      wsgi: "app:app", host: "api.eu", tls: false, acmeEmail: undefined,
    });
    assert.strictEqual(c.fqdn, "api.eu.example.com");
    assert.strictEqual(c.workers, 1);
    assert.strictEqual(c.hasStatic, true);
  });

  it("reads egress rules: tcp by default, a port as number or text, a range, both address families", () => {
    assert.deepStrictEqual(load("staging").egress, []);
    const c = load("staging", { egress: [
      { ports: 25060, to: ["10.114.0.0/20"] },
      { protocol: "udp", ports: "5000-5010", to: ["192.0.2.0/24", "2001:db8::/32"] },
      { ports: "6379", to: ["0.0.0.0/0"] },
    ] });
    assert.deepStrictEqual(c.egress, [
      { protocol: "tcp", ports: "25060", to: ["10.114.0.0/20"] },
      { protocol: "udp", ports: "5000-5010", to: ["192.0.2.0/24", "2001:db8::/32"] },
      { protocol: "tcp", ports: "6379", to: ["0.0.0.0/0"] },
    ]);
  });

  it("rejects bad config before any resource is registered", async () => {
    await assert.rejects(runFake({ overrides: { domain: undefined } }), (e: unknown) => {
      assert.ok(e instanceof Error && /dropstack:domain: required/.test(e.message), String(e));
      return true;
    });
  });

  it("protects and backs up prod, and only prod", () => {
    assert.strictEqual(load("prod").protect, true);
    assert.strictEqual(load("prod").backups, true);
    assert.strictEqual(load("staging").protect, false);
    assert.strictEqual(load("prod").hsts, true);
    assert.strictEqual(load("staging").hsts, false);
    assert.match(load("staging").acmeServer, /acme-staging/);
    assert.doesNotMatch(load("prod").acmeServer, /staging/);
  });
});

describe("Pulumi.yaml's config block", () => {
  const declared = projectFile().config;
  const shape = schema.shape as Record<string, { _def: { defaultValue?: () => unknown }; isOptional(): boolean }>;

  it("declares every setting except the object and optional ones, with the schema's default", () => {
    for (const [key, field] of Object.entries(shape)) {
      const decl = declared[`${NAMESPACE}:${key}`];
      const schemaDefault = field._def.defaultValue?.();
      if ((OBJECT_KEYS as readonly string[]).includes(key) || (field.isOptional() && schemaDefault === undefined)) {
        assert.strictEqual(decl, undefined, `${key} cannot be declared (no object type / no optional values in Pulumi.yaml)`);
        continue;
      }
      assert.ok(decl, `Pulumi.yaml does not declare ${NAMESPACE}:${key}`);
      assert.ok(decl.description, `${key} has no description`);
      assert.deepStrictEqual(decl.default, schemaDefault, `default of ${key}`);
    }
    for (const key of Object.keys(declared)) {
      assert.ok(key.slice(NAMESPACE.length + 1) in shape, `Pulumi.yaml declares ${key}, which the program does not read`);
    }
  });
});

import * as assert from "assert";
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { ConfigError, loadConfig, NAMESPACE, OBJECT_KEYS, RESERVED_ACCOUNTS, schema } from "../../components/config";
import { runProgram } from "../../localcloud/program";
import { PROJECT_DIR, projectFile, stackConfig } from "../../localcloud/stackConfig";

const GOOD_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq0ZmVgtq7V5H7lJ0sN7H1n2mE6w3xZ1YlB2m8jF0aQ alice@laptop";
const load = (stack: string, overrides: Record<string, unknown> = {}, secretKeys: string[] = []) =>
  loadConfig(stackConfig(stack, overrides), PROJECT_DIR, secretKeys);

/** An OpenSSH public key line whose blob is built from the given fields (to make incomplete keys). */
function keyLine(...fields: (string | Buffer)[]): string {
  const parts = fields.map((f) => {
    const b = typeof f === "string" ? Buffer.from(f, "latin1") : f;
    const len = Buffer.alloc(4);
    len.writeUInt32BE(b.length);
    return Buffer.concat([len, b]);
  });
  return `ssh-ed25519 ${Buffer.concat(parts).toString("base64")} x@y`;
}

/** Made once for the table: a real CA certificate and its key, app folders with forbidden content. */
const work = fs.mkdtempSync(path.join(os.tmpdir(), "dropstack-config-"));
execFileSync("openssl", ["req", "-x509", "-newkey", "ed25519", "-nodes", "-subj", "/CN=test ACME CA", "-days", "2",
  "-keyout", path.join(work, "ca.key"), "-out", path.join(work, "ca.pem")], { stdio: "ignore" });
const CERT = fs.readFileSync(path.join(work, "ca.pem"), "utf8");
const PRIVATE_KEY = fs.readFileSync(path.join(work, "ca.key"), "utf8");
const PUBLIC_KEY_PEM = execFileSync("openssl", ["pkey", "-in", path.join(work, "ca.key"), "-pubout"], { encoding: "utf8" });
function appWith(name: string, inside: string): string {
  const dir = path.join(work, name);
  fs.mkdirSync(path.join(dir, inside), { recursive: true });
  fs.writeFileSync(path.join(dir, "app.py"), "app = None\n");
  return dir;
}
const APP_WITH_GIT = appWith("with-git", ".git");
const APP_WITH_NODE_MODULES = appWith("with-node-modules", "static/js/node_modules");
const APP_WITH_VENV = appWith("with-venv", ".venv");
/** Seed dumps the server could not restore, made from the real fixtures. */
const SEED_DUMP = path.join(PROJECT_DIR, "test", "fixtures", "seed.dump");
const SEED_SQL = path.join(PROJECT_DIR, "test", "fixtures", "seed.sql");
function seedVariant(name: string, content: Buffer): string {
  fs.writeFileSync(path.join(work, name), content);
  return path.join(work, name);
}
const dumpBytes = fs.readFileSync(SEED_DUMP);
const fromPg17 = Buffer.from(dumpBytes.toString("latin1").replace(/15\.(\d+) \(Debian 15\./g, "17.$1 (Debian 17."), "latin1");
const NEWER_DUMP = seedVariant("pg17.dump", fromPg17);
const OWNERS_SQL = seedVariant("owners.sql", Buffer.concat([fs.readFileSync(SEED_SQL), Buffer.from("ALTER TABLE public.notes OWNER TO olduser;\n")]));
const GZIPPED = seedVariant("seed.sql.gz", execFileSync("gzip", ["-c", SEED_SQL]));
const NOT_A_DUMP = seedVariant("notes.txt", Buffer.from("hello\n"));
const DB = { database: "droplet", volumeSize: 10 };
/** Client folders: a built one, one that is a client's source, one with node_modules. */
function clientWith(name: string, files: string[]): string {
  const dir = path.join(work, name);
  for (const f of files) {
    fs.mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
    fs.writeFileSync(path.join(dir, f), "x\n");
  }
  return dir;
}
const CLIENT = clientWith("client-built", ["index.html", "assets/app-0123abcd.js"]);
const CLIENT_SOURCE = clientWith("client-source", ["src/main.js", "package.json"]);
const CLIENT_NODE_MODULES = clientWith("client-node-modules", ["index.html", "node_modules/x/index.js"]);
after(() => fs.rmSync(work, { recursive: true, force: true }));

const HUGE = "a".repeat(160_000);
const ED25519_KEY = Buffer.alloc(32, 7);

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
  ["dnsTtl below DigitalOcean's lowest", { dnsTtl: 10 }, "dnsTtl", /at least 30 seconds/],
  ["max body size with unit typo", { maxBodySize: "10mb" }, "maxBodySize", /nginx size/],
  ["unknown setting (typo)", { regoin: "fra1" }, "regoin", /not a dropstack setting/],
  ["tags with spaces", { tags: ["my tag"] }, "tags", /tags of letters/],
  ["hsts not boolean", { hsts: "on" }, "hsts", /true or false/],
  ["health status 500", { healthStatus: 500 }, "healthStatus", /2xx or 3xx/],
  ["health timeout 0", { healthTimeout: 0 }, "healthTimeout", /at least 1 second/],
  ["health attempts 0", { healthAttempts: 0 }, "healthAttempts", /at least 1 attempt/],
  ["empty release command", { releaseCommand: "" }, "releaseCommand", /shell command/],
  ["release version with a space", { releaseVersion: "v 1" }, "releaseVersion", /version label/],
  // allow-all in disguise, and networks nftables would refuse
  ["SSH from two IPv4 halves", { sshAllowedCidrs: ["0.0.0.0/1", "128.0.0.0/1"] }, "sshAllowedCidrs", /cover every IPv4 address: that is allow-all; write "0\.0\.0\.0\/0"/],
  ["SSH from IPv6 halves in capitals", { sshAllowedCidrs: ["203.0.113.0/24", "::/1", "8000::/1"] }, "sshAllowedCidrs", /cover every IPv6 address/],
  ["SSH from all of IPv4 in uneven pieces", { sshAllowedCidrs: ["0.0.0.0/2", "64.0.0.0/2", "128.0.0.0/2", "192.0.0.0/3", "224.0.0.0/3"] }, "sshAllowedCidrs", /allow-all/],
  ["SSH allow-all spelt another way", { sshAllowedCidrs: ["0:0::/0"] }, "sshAllowedCidrs", /write "::\/0"/],
  ["egress to all of IPv4 in halves", { egress: [{ ports: 5432, to: ["0.0.0.0/1", "128.0.0.0/1"] }] }, "egress[0].to", /cover every IPv4 address/],
  ["SSH network with host bits", { sshAllowedCidrs: ["203.0.113.7/24"] }, "sshAllowedCidrs[0]", /host bits set: write the network "203\.0\.113\.0\/24" or the one address "203\.0\.113\.7\/32"/],
  ["IPv6 network with host bits, in capitals", { sshAllowedCidrs: ["2001:DB8::1/32"] }, "sshAllowedCidrs[0]", /"2001:db8::\/32"/],
  ["egress network with host bits", { egress: [{ ports: 5432, to: ["10.114.0.5/20"] }] }, "egress[0].to[0]", /host bits/],
  ["prefix length with a leading zero", { sshAllowedCidrs: ["10.0.0.0/08"] }, "sshAllowedCidrs[0]", /leading zero/],
  ["IPv4 octet with a leading zero", { sshAllowedCidrs: ["010.0.0.0/8"] }, "sshAllowedCidrs[0]", /CIDR/],
  ["the same SSH network twice, spelt differently", { sshAllowedCidrs: ["2001:db8::/32", "2001:DB8:0::/32"] }, "sshAllowedCidrs[1]", /listed twice/],
  ["overlapping SSH networks", { sshAllowedCidrs: ["10.0.0.0/8", "10.1.0.0/16"] }, "sshAllowedCidrs[1]", /overlaps "10\.0\.0\.0\/8"/],
  ["a network beside the explicit allow-all", { sshAllowedCidrs: ["0.0.0.0/0", "203.0.113.0/24"] }, "sshAllowedCidrs[1]", /overlaps "0\.0\.0\.0\/0"/],
  // accounts that exist on the droplet, or each other
  ["app named like the deploy user", { appName: "deploy" }, "appName", /same as dropstack:deployUser.*password-less sudo/],
  ["app named www-data (nginx's user)", { appName: "www-data" }, "appName", /exists on a Debian droplet; the app would run as it/],
  ["app named root", { appName: "root" }, "appName", /exists on a Debian droplet/],
  ["app named like a group (sudo)", { appName: "sudo" }, "appName", /exists on a Debian droplet/],
  ["deploy user that is a system account", { deployUser: "daemon" }, "deployUser", /exists on a Debian droplet; it would get password-less sudo/],
  ["deploy user named like a group (adm)", { deployUser: "adm" }, "deployUser", /exists on a Debian droplet/],
  ["deploy user named like sshd's account", { deployUser: "sshd" }, "deployUser", /exists on a Debian droplet/],
  // private keys where they do not belong
  ["CA bundle with a private key", { acmeCaBundle: CERT + PRIVATE_KEY }, "acmeCaBundle", /holds a private key/],
  ["CA bundle that is only a private key", { acmeCaBundle: PRIVATE_KEY }, "acmeCaBundle", /holds a private key/],
  ["CA bundle with a public key block", { acmeCaBundle: CERT + PUBLIC_KEY_PEM }, "acmeCaBundle", /holds a PUBLIC KEY block at line \d+; expected only certificates/],
  ["CA bundle with text before the PEM", { acmeCaBundle: `issuer: test\n${CERT}` }, "acmeCaBundle", /line 1 is outside any PEM block/],
  ["CA bundle with text between certificates", { acmeCaBundle: `${CERT}junk\n${CERT}` }, "acmeCaBundle", /outside any PEM block/],
  ["CA bundle whose certificate does not parse", { acmeCaBundle: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n" }, "acmeCaBundle", /cannot be parsed/],
  ["CA bundle cut short", { acmeCaBundle: CERT.slice(0, 200) }, "acmeCaBundle", /no -----END CERTIFICATE----- line/],
  ["private key in a plain env value", { env: { TLS_KEY: PRIVATE_KEY } }, "env.TLS_KEY", /private key: put it in dropstack:secretEnv/],
  // failures that would otherwise happen only on the server
  ["FQDN over 253 characters", { host: Array(4).fill("a".repeat(63)).join(".") }, "host", /at most 253/],
  ["host label over 63 characters", { host: "a".repeat(64) }, "host", /host label/],
  ["host given as the full name", { host: "staging.example.com" }, "host", /full name; give the name within example\.com only, e\.g\. "staging"/],
  ["host given as the zone itself", { host: "example.com" }, "host", /e\.g\. "@"/],
  ["release version read as an option", { releaseVersion: "-rf" }, "releaseVersion", /starting with a letter or digit/],
  ["release version that hides the release", { releaseVersion: ".v1" }, "releaseVersion", /starting with a letter or digit/],
  ["email read as an option", { acmeEmail: "-ops@example.com" }, "acmeEmail", /email/],
  ["whitespace-only release command", { releaseCommand: " \n\t " }, "releaseCommand", /not blank/],
  ["public key with only its type in the blob", { adminSshKeys: [keyLine("ssh-ed25519")] }, "adminSshKeys[0]", /public key/],
  ["public key whose key is cut short", { adminSshKeys: [keyLine("ssh-ed25519", ED25519_KEY.subarray(0, 31))] }, "adminSshKeys[0]", /public key/],
  ["public key with bytes after the key", { adminSshKeys: [keyLine("ssh-ed25519", ED25519_KEY, "extra")] }, "adminSshKeys[0]", /public key/],
  ["public key with base64 that is not canonical", { adminSshKeys: [`${GOOD_KEY.split(" ").slice(0, 2).join(" ")}==`] }, "adminSshKeys[0]", /public key/],
  ["two keys in one entry", { adminSshKeys: [`${GOOD_KEY}\n${GOOD_KEY}`] }, "adminSshKeys[0]", /public key/],
  ["an Ubuntu image", { image: "ubuntu-24-04-x64" }, "image", /Debian image slug/],
  ["a custom image id", { image: "123456789" }, "image", /Debian image slug/],
  ["domain given as a list", { domain: ["example.com"] }, "domain", /expected a single string, got a list/],
  ["release command given as a list", { releaseCommand: ["flask", "db", "upgrade"] }, "releaseCommand", /expected a single string, got a list/],
  ["WSGI target given as a map", { wsgi: { module: "app" } }, "wsgi", /expected a single string, got a map/],
  ["app folder that is the project", { appSource: "." }, "appSource", /is the project folder or contains it/],
  ["app folder above the project", { appSource: ".." }, "appSource", /is the project folder or contains it/],
  ["app folder with .git", { appSource: APP_WITH_GIT }, "appSource", /contains \.git\/, which must not reach the server/],
  ["app folder with node_modules deep inside", { appSource: APP_WITH_NODE_MODULES }, "appSource", /contains static\/js\/node_modules\//],
  ["app folder with a virtualenv", { appSource: APP_WITH_VENV }, "appSource", /contains \.venv\//],
  // bounded validation time: lengths are checked before any pattern
  ["a 160 kB email", { acmeEmail: `${HUGE}@example.com` }, "acmeEmail", /too long/],
  ["a 160 kB domain", { domain: `${HUGE}.com` }, "domain", /too long/],
  ["a 160 kB ACME URL", { acmeServer: `https://${HUGE}` }, "acmeServer", /too long/],
  ["a 160 kB public key", { adminSshKeys: [`ssh-ed25519 ${HUGE}`] }, "adminSshKeys[0]", /too long/],
  ["a 160 kB network", { sshAllowedCidrs: [HUGE] }, "sshAllowedCidrs[0]", /too long/],
  ["a 160 kB env value", { env: { A: `${HUGE}${HUGE}` } }, "env.A", /at most 64 KiB/],
  // data
  ["a volume of 0 GiB", { volumeSize: 0 }, "volumeSize", /at least 1 GiB/],
  ["a volume of 1.5 GiB", { volumeSize: 1.5 }, "volumeSize", /whole number of GiB/],
  ["a volume larger than DigitalOcean's largest", { volumeSize: 20000 }, "volumeSize", /at most 16384/],
  ["an unknown database mode", { database: "mysql" }, "database", /expected one of "none", "droplet", "managed"/],
  ["a database on the droplet without a volume", { database: "droplet" }, "volumeSize", /required when dropstack:database is "droplet"/],
  ["a database on an image without a known PostgreSQL", { ...DB, image: "debian-10-x64" }, "image", /no known PostgreSQL release/],
  ["a DATABASE_URL of one's own beside database: droplet", { ...DB, env: { DATABASE_URL: "postgres://x" } }, "env", /gives the app its own DATABASE_URL/],
  ["a secret DATABASE_URL beside database: droplet", { ...DB, secretEnv: { DATABASE_URL: "postgres://x" } }, "secretEnv", /remove it/],
  ["a seed without a database", { databaseSeed: SEED_DUMP }, "databaseSeed", /no database to restore it into/],
  ["a seed file that does not exist", { ...DB, databaseSeed: "db/missing.dump" }, "databaseSeed", /does not exist/],
  ["a seed that is not a dump", { ...DB, databaseSeed: NOT_A_DUMP }, "databaseSeed", /neither a custom-format dump/],
  ["a gzipped seed", { ...DB, databaseSeed: GZIPPED }, "databaseSeed", /gzip-compressed/],
  ["a seed from a newer PostgreSQL than the server's", { ...DB, databaseSeed: NEWER_DUMP }, "databaseSeed", /made by PostgreSQL 17, newer than the server's PostgreSQL 15/],
  ["a seed from PostgreSQL 15 for Debian 11's PostgreSQL 13", { ...DB, image: "debian-11-x64", databaseSeed: SEED_SQL }, "databaseSeed", /made by PostgreSQL 15, newer than the server's PostgreSQL 13/],
  ["backups kept 0 days", { backupKeepDays: 0 }, "backupKeepDays", /at least 1 day/],
  ["a plain seed that sets owners", { ...DB, databaseSeed: OWNERS_SQL }, "databaseSeed", /--no-owner --no-privileges/],
  // a managed database
  ["a managed PostgreSQL version DigitalOcean does not offer", { database: "managed", databaseVersion: "12" }, "databaseVersion", /DigitalOcean offers \(13, 14, 15, 16, 17\)/],
  ["four managed nodes", { database: "managed", databaseNodes: 4 }, "databaseNodes", /1, 2 or 3 nodes/],
  ["a droplet size as the database size", { database: "managed", databaseSize: "s-1vcpu-1gb" }, "databaseSize", /database size slug/],
  ["a database size without a managed database", { database: "droplet", volumeSize: 10, databaseSize: "db-s-1vcpu-1gb" }, "databaseSize", /only used with dropstack:database "managed"/],
  ["a DATABASE_URL of one's own beside database: managed", { database: "managed", secretEnv: { DATABASE_URL: "postgres://x" } }, "secretEnv", /with dropstack:database "managed" dropstack gives the app its own DATABASE_URL/],
  ["a seed from PostgreSQL 17 for a managed PostgreSQL 16", { database: "managed", image: "debian-13-x64", databaseVersion: "16", databaseSeed: NEWER_DUMP }, "databaseSeed", /made by PostgreSQL 17, newer than the server's PostgreSQL 16/],
  ["a seed from PostgreSQL 17 for a managed 17 the droplet's tools (15) cannot read", { database: "managed", databaseVersion: "17", databaseSeed: NEWER_DUMP }, "databaseSeed", /newer than the droplet's PostgreSQL 15 tools/],
  // a static front end
  ["a client folder that does not exist", { clientSource: "client/missing" }, "clientSource", /does not exist; expected a built client with index\.html/],
  ["a client's source instead of its build", { clientSource: CLIENT_SOURCE }, "clientSource", /has no index\.html; expected a built client/],
  ["a client folder with node_modules", { clientSource: CLIENT_NODE_MODULES }, "clientSource", /contains node_modules\/, which must not be served/],
  ["the project as the client", { clientSource: "." }, "clientSource", /is the project folder or contains it/],
  ["a client inside the app folder", { clientSource: "app/templates" }, "clientSource", /overlap/],
  ["an API prefix without a client", { apiPrefix: "/api" }, "apiPrefix", /only used with dropstack:clientSource/],
  ["an API prefix with a trailing slash", { clientSource: CLIENT, apiPrefix: "/api/" }, "apiPrefix", /no trailing \//],
  ["an API prefix of /", { clientSource: CLIENT, apiPrefix: "/" }, "apiPrefix", /a URL path prefix such as \/api/],
  ["an API prefix that takes nginx's /static", { clientSource: CLIENT, apiPrefix: "/static" }, "apiPrefix", /overlaps \/static/],
  ["an API prefix over the ACME challenges", { clientSource: CLIENT, apiPrefix: "/.well-known/acme-challenge" }, "apiPrefix", /overlaps \/\.well-known/],
  // runtime docker
  ["an unknown runtime", { runtime: "podman" }, "runtime", /expected "python" or "docker"/],
  ["runtime docker for an app folder without a Dockerfile", { runtime: "docker", appSource: "client" }, "runtime", /needs a Dockerfile in client\/ .*or set dropstack:runtime to "python"/],
  ["a container memory limit below 64 MiB", { runtime: "docker", containerMemory: 16 }, "containerMemory", /at least 64 MiB/],
  ["a container memory limit in a string", { runtime: "docker", containerMemory: "1g" }, "containerMemory", /MiB as a whole number, e.g. 512/],
  // droplets > 1
  ["no droplets", { droplets: 0 }, "droplets", /at least 1 droplet, e.g. 2/],
  ["half a droplet", { droplets: 1.5 }, "droplets", /whole number of droplets/],
  ["several droplets sharing the droplet's PostgreSQL", { droplets: 2, ...DB }, "droplets", /cannot share PostgreSQL on one droplet's volume .*pulumi config set dropstack:database managed/],
  ["several droplets with a volume", { droplets: 2, volumeSize: 10 }, "volumeSize", /attaches to one droplet.*Spaces/],
  ["several droplets without TLS", { droplets: 3, tls: false }, "tls", /Let's Encrypt certificate DigitalOcean issues/],
  ["a load balancer setting with one droplet", { lbCheckInterval: 5 }, "lbCheckInterval", /only used with dropstack:droplets above 1/],
  ["a health check interval under DigitalOcean's minimum", { droplets: 2, lbCheckInterval: 1 }, "lbCheckInterval", /at least 3 seconds/],
  ["an unhealthy threshold over DigitalOcean's maximum", { droplets: 2, lbUnhealthyThreshold: 11 }, "lbUnhealthyThreshold", /at most 10 checks/],
  ["a health check timeout longer than its interval", { droplets: 2, lbCheckInterval: 5, lbResponseTimeout: 10 }, "lbResponseTimeout", /longer than the checks' interval/],
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

  it("accepts a database on the droplet with a seed in either format, and knows the server's PostgreSQL", () => {
    for (const [file, format] of [[SEED_DUMP, "custom"], [SEED_SQL, "plain"]]) {
      const c = load("staging", { ...DB, databaseSeed: path.relative(PROJECT_DIR, file) });
      assert.strictEqual(c.postgresMajor, 15);
      assert.deepStrictEqual(c.seed, { file, format });
    }
    assert.strictEqual(load("staging", { ...DB, image: "debian-13-x64" }).postgresMajor, 17);
    assert.strictEqual(load("staging").postgresMajor, undefined);
  });

  it("accepts a managed database, its cluster settings defaulted to DigitalOcean's smallest, no volume needed", () => {
    const c = load("staging", { database: "managed", databaseSeed: path.relative(PROJECT_DIR, SEED_DUMP) });
    assert.deepStrictEqual(c.managed, { version: "16", size: "db-s-1vcpu-1gb", nodes: 1 });
    assert.strictEqual(c.postgresMajor, 16);
    assert.deepStrictEqual(load("staging", { database: "managed", databaseVersion: "14", databaseNodes: 2 }).managed, { version: "14", size: "db-s-1vcpu-1gb", nodes: 2 });
    assert.strictEqual(load("staging", { database: "managed", databaseVersion: 15 }).managed?.version, "15", "a version that reads as a number");
    assert.strictEqual(load("staging").managed, undefined);
  });

  it("accepts several droplets with a managed database or none, the load balancer's health check defaulted to DigitalOcean's", () => {
    assert.deepStrictEqual(load("staging", { droplets: 2, database: "managed" }).fleet,
      { droplets: 2, health: { intervalSeconds: 10, timeoutSeconds: 5, healthyThreshold: 5, unhealthyThreshold: 3 } });
    assert.deepStrictEqual(load("staging", { droplets: 3, lbCheckInterval: 3, lbResponseTimeout: 3, lbHealthyThreshold: 2, lbUnhealthyThreshold: 2 }).fleet,
      { droplets: 3, health: { intervalSeconds: 3, timeoutSeconds: 3, healthyThreshold: 2, unhealthyThreshold: 2 } });
    assert.strictEqual(load("staging").fleet, undefined);
    assert.strictEqual(load("staging", { droplets: 1 }).fleet, undefined);
  });

  it("accepts a built client, its API under /api unless apiPrefix says otherwise", () => {
    assert.deepStrictEqual(load("staging", { clientSource: "client" }).client, { dir: path.join(PROJECT_DIR, "client"), apiPrefix: "/api" });
    assert.deepStrictEqual(load("staging", { clientSource: CLIENT, apiPrefix: "/v1/api" }).client, { dir: CLIENT, apiPrefix: "/v1/api" });
    assert.strictEqual(load("staging").client, undefined);
  });

  it("reports every problem at once", () => {
    assert.throws(() => load("staging", { region: "x", size: "y", keepReleases: 0 }), (e: ConfigError) => e.problems.length === 3);
  });

  it("accepts both stacks and a full set of good values", () => {
    assert.strictEqual(load("staging").fqdn, "staging.example.com");
    assert.strictEqual(load("prod").fqdn, "example.com");
    const rsa = execFileSync("bash", ["-c", `ssh-keygen -q -t rsa -b 2048 -N '' -C bob@desk -f ${work}/rsa && cat ${work}/rsa.pub`], { encoding: "utf8" });
    const ecdsa = execFileSync("bash", ["-c", `ssh-keygen -q -t ecdsa -b 384 -N '' -C carol -f ${work}/ec && cat ${work}/ec.pub`], { encoding: "utf8" });
    const c = load("staging", {
      // keys as `cat key.pub` gives them, trailing newline included
      adminSshKeys: [GOOD_KEY, rsa, ecdsa], sshAllowedCidrs: ["0.0.0.0/0", "::/0"], workers: 1,
      wsgi: "app:app", host: "api.eu", tls: false, acmeEmail: undefined, acmeCaBundle: `${CERT}\n${CERT}`,
      releaseCommand: "[ -f manage.py ] && python manage.py migrate", releaseVersion: "v1.4.2",
    });
    assert.strictEqual(c.fqdn, "api.eu.example.com");
    assert.strictEqual(c.workers, 1);
    assert.strictEqual(c.hasStatic, true);
    assert.deepStrictEqual(c.adminSshKeys, [GOOD_KEY, rsa.trimEnd(), ecdsa.trimEnd()]);
    assert.deepStrictEqual(c.warnings, []);
  });

  it("writes networks in one canonical form: lower case, shortest IPv6", () => {
    const c = load("staging", { sshAllowedCidrs: ["2001:DB8:0:0:0:0:0:0/32", "198.51.100.0/24", "FD00::/8"], egress: [{ ports: 5432, to: ["2001:0db8:0001::/48"] }] });
    assert.deepStrictEqual(c.sshAllowedCidrs, ["2001:db8::/32", "198.51.100.0/24", "fd00::/8"]);
    assert.deepStrictEqual(c.egress[0].to, ["2001:db8:1::/48"]);
  });

  it("reserves every account and group of Debian's base-passwd", () => {
    for (const file of ["passwd.master", "group.master"]) {
      const master = path.join("/usr/share/base-passwd", file);
      if (!fs.existsSync(master)) continue; // not a Debian host; the list in config.ts stands
      for (const name of fs.readFileSync(master, "utf8").split("\n").filter(Boolean).map((l) => l.split(":")[0])) {
        assert.ok(RESERVED_ACCOUNTS.includes(name), `${name} (${file}) is not reserved`);
      }
    }
  });

  it("warns about a namespace that looks like a typo of dropstack:, and ignores other namespaces", () => {
    const all = { ...stackConfig("staging"), "dropstak:workers": "3", "Dropstack:region": "nyc3", "digitalocean:token": "x", "dropstackx:host": "a" };
    const c = loadConfig(all, PROJECT_DIR);
    assert.deepStrictEqual(c.warnings.map((w) => w.split(":").slice(0, 2).join(":")).sort(), ["Dropstack:region", "dropstackx:host", "dropstak:workers"]);
    for (const w of c.warnings) assert.match(w, /looks like a typo of "dropstack"; dropstack reads only dropstack:\* settings, so this one is ignored/);
    assert.strictEqual(c.workers, 1, "the typo'd setting is not read");
  });

  it("keeps secrets secret: a setting stored with --secret marks the step it flows into; public settings cannot be secret", () => {
    assert.deepStrictEqual(load("staging").secretSteps, []);
    assert.deepStrictEqual(load("staging", { secretEnv: { A: "1" } }, ["dropstack:secretEnv"]).secretSteps, ["release"]);
    assert.deepStrictEqual(load("staging", {}, ["dropstack:acmeServer"]).secretSteps, ["certificate"]);
    assert.deepStrictEqual(load("staging", { releaseCommand: "run" }, ["dropstack:releaseCommand", "dropstack:acmeCaBundle"]).secretSteps, ["certificate", "release"]);
    assert.deepStrictEqual(load("staging", {}, ["other:key"]).secretSteps, []);
    assert.throws(() => load("staging", {}, ["dropstack:domain"]), (e: ConfigError) =>
      /^dropstack:domain: stored as a secret, but this setting is public .* set it without --secret/.test(e.problems[0]));
  });

  it("warns (and still hides them) when secretEnv values are not stored with --secret", () => {
    const plainStored = load("staging", { secretEnv: { API_TOKEN: "t" } });
    assert.match(plainStored.warnings.join("\n"), /dropstack:secretEnv: stored in plain text.*--secret --path 'dropstack:secretEnv\.NAME'/);
    assert.deepStrictEqual(plainStored.secretSteps, ["release"]);
    assert.deepStrictEqual(load("staging", { secretEnv: { API_TOKEN: "t" } }, ["dropstack:secretEnv"]).warnings, []);
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

  const DANGEROUS: [string, Record<string, unknown>, string[]][] = [
    ["missing domain", { domain: undefined }, []],
    ["SSH allow-all in disguise", { sshAllowedCidrs: ["0.0.0.0/1", "128.0.0.0/1"] }, []],
    ["the app as nginx's user", { appName: "www-data" }, []],
    ["the app as the deploy user", { appName: "deploy" }, []],
    ["an existing account with sudo", { deployUser: "daemon" }, []],
    ["a private key in the CA bundle", { acmeCaBundle: CERT + PRIVATE_KEY }, []],
    ["a private key in a plain env value", { env: { KEY: PRIVATE_KEY } }, []],
    ["a public setting stored as a secret", {}, ["dropstack:domain"]],
    ["the project folder as the app", { appSource: "." }, []],
  ];
  for (const [what, overrides, secretKeys] of DANGEROUS) {
    it(`refuses ${what} before any resource is registered`, async () => {
      const registered: string[] = [];
      await assert.rejects(runProgram({
        stack: "staging", config: stackConfig("staging", overrides), secretKeys,
        newResource: async (args) => {
          registered.push(args.name);
          return { id: args.name, state: args.inputs };
        },
      }), (e: unknown) => {
        // the program loads its own copy of components/config: compare by name
        assert.ok(e instanceof Error && e.name === "ConfigError", String(e));
        return true;
      });
      assert.deepStrictEqual(registered, []);
    });
  }

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

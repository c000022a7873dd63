// Stand-in outputs for the unit tests: what DigitalOcean, tls and the command provider would
// return, deterministic so that two evaluations can be compared.
import * as assert from "assert";
import * as crypto from "crypto";
import * as pulumi from "@pulumi/pulumi";
import { runProgram, RunResult } from "../../localcloud/program";
import { stackConfig } from "../../localcloud/stackConfig";

export const DROPLET_IPV4 = "203.0.113.10";
export const DROPLET_IPV6 = "2001:db8::10";
/** With droplets > 1: droplet N's address (the first is DROPLET_IPV4), and the load balancer's. */
export const dropletIpv4 = (name: string) => (/^server-(\d+)-droplet$/.test(name) ? `203.0.113.${9 + Number(/\d+/.exec(name)![0])}` : DROPLET_IPV4);
export const LB_IPV4 = "203.0.113.200";
export const DEPLOY_PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDropstackUnitTestPublicKeyAAAAAAAAAAAAAAAA";
export const DEPLOY_PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nunit-test-deploy-key\n-----END OPENSSH PRIVATE KEY-----\n";
export const HOST_PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDropstackUnitTestHostKeyAAAAAAAAAAAAAAAAAAA";
/** What the fake random provider generates for every password. */
export const FAKE_PASSWORD = "UnitTestGeneratedPassword0123456789abcd";
/** The fake droplet's VPC and its range; the managed cluster's private host, its admin's and its user's passwords. */
export const FAKE_VPC = { id: "vpc-fra1-default", ipRange: "10.114.0.0/20" };
export const FAKE_DB = { privateHost: "private-db.example.internal", adminPassword: "UnitTestClusterAdminPassword000", userPassword: "UnitTestClusterUserPassword0000" };
export const HOST_PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nunit-test-host-key\n-----END OPENSSH PRIVATE KEY-----\n";

function fakeState(args: pulumi.runtime.MockResourceArgs): Record<string, unknown> {
  switch (args.type) {
    case "tls:index/privateKey:PrivateKey":
      return args.name.startsWith("host-key")
        ? { ...args.inputs, publicKeyOpenssh: `${HOST_PUBLIC_KEY}\n`, privateKeyOpenssh: HOST_PRIVATE_KEY }
        : { ...args.inputs, publicKeyOpenssh: `${DEPLOY_PUBLIC_KEY}\n`, privateKeyOpenssh: DEPLOY_PRIVATE_KEY };
    case "digitalocean:index/sshKey:SshKey":
      return { ...args.inputs, fingerprint: "3b:16:bf:e4:8b:00:8b:b8:59:8c:a9:d3:f0:19:45:fa" };
    case "digitalocean:index/droplet:Droplet":
      return { ...args.inputs, ipv4Address: dropletIpv4(args.name), ipv6Address: args.inputs.ipv6 ? DROPLET_IPV6 : undefined, status: "active", vpcUuid: FAKE_VPC.id };
    case "digitalocean:index/databaseCluster:DatabaseCluster":
      return { ...args.inputs, privateHost: FAKE_DB.privateHost, host: "db.example.com", port: 25060, user: "doadmin", password: FAKE_DB.adminPassword };
    case "digitalocean:index/databaseUser:DatabaseUser":
      return { ...args.inputs, password: FAKE_DB.userPassword };
    case "digitalocean:index/dnsRecord:DnsRecord":
      return { ...args.inputs, fqdn: `${args.inputs.name === "@" ? "" : `${args.inputs.name}.`}${args.inputs.domain}` };
    case "digitalocean:index/loadBalancer:LoadBalancer":
      return { ...args.inputs, ip: LB_IPV4, status: "active" };
    case "command:remote:Command":
      return { ...args.inputs, stdout: "", stderr: "" };
    case "random:index/randomPassword:RandomPassword":
      return { ...args.inputs, result: FAKE_PASSWORD };
    default:
      return { ...args.inputs };
  }
}

export interface FakeRunOptions {
  /** Zones the fake DigitalOcean account manages. Default: example.com. */
  managedDomains?: string[];
  stack?: string;
  overrides?: Record<string, unknown>;
  secretKeys?: string[];
  preview?: boolean;
  /** What the server's drift check reads (scripts/read-server-check.sh's output). Default: a server without the check yet. */
  serverCheck?: string;
  /** Each local run the program asks for (the drift check), as the command provider would get it. */
  localRuns?: Record<string, unknown>[];
}

/** Runs the program over a stack's config with stand-in outputs. */
export function runFake(opts: FakeRunOptions = {}): Promise<RunResult> {
  const stack = opts.stack ?? "staging";
  return runProgram({
    stack,
    config: stackConfig(stack, opts.overrides),
    secretKeys: opts.secretKeys,
    preview: opts.preview,
    call: async (args) => {
      if (args.token === "command:local:run") {
        opts.localRuns?.push(args.inputs);
        return { ...args.inputs, stdout: opts.serverCheck ?? "status none", stderr: "" };
      }
      if (args.token === "digitalocean:index/getVpc:getVpc") {
        assert.strictEqual(args.inputs.id, FAKE_VPC.id, "the VPC asked for is the droplet's");
        return { ...FAKE_VPC, name: "default-fra1", region: "fra1", default: true };
      }
      if (args.token !== "digitalocean:index/getDomains:getDomains") throw new Error(`unexpected invoke ${args.token}`);
      const wanted = (args.inputs.filters as { values: string[] }[])[0].values;
      const managed = opts.managedDomains ?? ["example.com"];
      return { id: "domains", domains: managed.filter((d) => wanted.includes(d)).map((name) => ({ name, ttl: 1800, urn: `do:domain:${name}` })) };
    },
    newResource: async (args) => {
      const digest = crypto.createHash("sha256").update(args.type + args.name).digest();
      // Each resource takes a different (but repeatable) time, as real ones do: an order that
      // only holds because of registration speed, not a declared dependency, shows up in tests.
      await new Promise((resolve) => setTimeout(resolve, digest[0] % 50));
      return {
        // DigitalOcean's droplet ids are numbers (a volume attachment takes one)
        id: opts.preview ? "" : args.type === "digitalocean:index/droplet:Droplet" ? String(digest.readUInt32BE(0)) : `${args.name}-${digest.toString("hex").slice(0, 8)}`,
        state: opts.preview ? args.inputs : fakeState(args),
      };
    },
  });
}

// Secrets arrive in mock inputs as {[specialSigKey]: specialSecretSig, value}.
const SIG = pulumi.runtime.specialSigKey;
export function isSecretValue(v: unknown): v is { value: unknown } {
  return typeof v === "object" && v !== null && (v as Record<string, unknown>)[SIG] === pulumi.runtime.specialSecretSig;
}

/** Unwraps secret markers everywhere (for assertions on content). */
export function plain(v: unknown): unknown {
  if (isSecretValue(v)) return plain(v.value);
  if (Array.isArray(v)) return v.map(plain);
  if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
  return v;
}

/** Every string in `v` that is not inside a secret, with its path. */
export function plainStrings(v: unknown, at = ""): { path: string; value: string }[] {
  if (isSecretValue(v)) return [];
  if (typeof v === "string") return [{ path: at, value: v }];
  if (Array.isArray(v)) return v.flatMap((x, i) => plainStrings(x, `${at}[${i}]`));
  if (v && typeof v === "object") return Object.entries(v).flatMap(([k, x]) => plainStrings(x, at ? `${at}.${k}` : k));
  return [];
}

export const byType = (r: RunResult, type: string) => r.resources.filter((x) => x.type === type);
export const byName = (r: RunResult, name: string) => {
  const found = r.resources.find((x) => x.name === name);
  if (!found) throw new Error(`no resource named ${name}; have: ${r.resources.map((x) => x.name).join(", ")}`);
  return found;
};

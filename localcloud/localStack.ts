// The stack configuration the local cloud runs the program with: a stack's own settings (its
// Pulumi.<stack>.yaml), with only what cannot exist here swapped: the DNS zone, the ACME server,
// the networks SSH comes from (the harness) and IPv6 (qemu's network has none).
import * as fs from "fs";
import * as path from "path";
import * as YAML from "yaml";
import { Pebble, startPebble } from "./acme";
import { PROJECT_DIR, stackConfig } from "./stackConfig";
import { freePort, Logger } from "./util";

export const LOCAL_DOMAIN = "dropstack.test";
export const LOCAL_HOST = "app";
export const LOCAL_FQDN = `${LOCAL_HOST}.${LOCAL_DOMAIN}`;

/** The settings no stack can keep on the local cloud, and what stands in for them. */
function localSwaps(pebble: Pebble): Record<string, unknown> {
  return {
    domain: LOCAL_DOMAIN,
    acmeServer: pebble.directoryUrlForGuest,
    acmeCaBundle: pebble.caBundlePem,
    // qemu's user network presents the harness (on the host) to the guest as 10.0.2.2: that is
    // the address the host firewall must let through to SSH.
    sshAllowedCidrs: ["10.0.2.2/32"],
    // qemu's user network has no IPv6 here.
    ipv6: false,
  };
}

/** The sample app on the local cloud (end-to-end suite, benchmarks): the staging stack, swapped. */
export function localConfig(pebble: Pebble, overrides: Record<string, unknown> = {}): Record<string, string> {
  return stackConfig("staging", {
    ...localSwaps(pebble),
    host: LOCAL_HOST,
    acmeEmail: "ops@dropstack.test",
    workers: 2,
    env: { APP_TITLE: "dropstack on the local cloud" },
    ...overrides,
  });
}

/** True when a stack file's value holds an encrypted (`secure:`) part anywhere. */
function holdsSecure(value: unknown): boolean {
  if (Array.isArray(value)) return value.some(holdsSecure);
  if (value && typeof value === "object") return "secure" in value || Object.values(value).some(holdsSecure);
  return false;
}

export interface LocalStack {
  config: Record<string, string>;
  /** Keys whose values are secrets (encrypted in the stack file, given locally). */
  secretKeys: string[];
  /** The name the site answers on locally. */
  fqdn: string;
}

/**
 * A stack's own settings for the local cloud. Values the stack file holds encrypted cannot be
 * decrypted without Pulumi: `secrets` (YAML: full config key → value, from a git-ignored file or
 * the environment) gives their local values, and every such key must be given.
 */
export function localStackConfig(stack: string, pebble: Pebble, secrets: string | undefined, where: string): LocalStack {
  const file = path.join(PROJECT_DIR, `Pulumi.${stack}.yaml`);
  if (!fs.existsSync(file)) throw new Error(`no stack file ${path.basename(file)}: expected --stack NAME with a Pulumi.NAME.yaml in ${PROJECT_DIR}`);
  const fromFile = (YAML.parse(fs.readFileSync(file, "utf8"))?.config ?? {}) as Record<string, unknown>;
  const local = (secrets ? YAML.parse(secrets) : {}) as Record<string, unknown> | null;
  if (local !== null && (typeof local !== "object" || Array.isArray(local))) throw new Error(`${where}: expected a map of config keys to values, e.g. "dropstack:secretEnv: {SECRET_KEY: local-value}"`);
  const encrypted = Object.keys(fromFile).filter((k) => holdsSecure(fromFile[k]));
  const missing = encrypted.filter((k) => !(k in (local ?? {})));
  if (missing.length) {
    throw new Error(`${path.basename(file)} holds encrypted values for ${missing.join(", ")}, which the local cloud cannot decrypt: give local values in ${where}, e.g.\n  ${missing[0]}: ...`);
  }
  const config = stackConfig(stack, { ...(local ?? {}), ...localSwaps(pebble) });
  const host = config["dropstack:host"] ?? "@";
  return { config, secretKeys: Object.keys(local ?? {}), fqdn: host === "@" ? LOCAL_DOMAIN : `${host}.${LOCAL_DOMAIN}` };
}

/**
 * Pebble for the local cloud, on port 443 like a real ACME server: the droplet's host firewall
 * lets HTTPS out and nothing else, so an ACME directory on another port would be unreachable.
 */
export async function startLocalPebble(workDir: string, log?: Logger): Promise<Pebble> {
  return startPebble({ workDir, log, acmePort: 443, managementPort: await freePort("127.0.0.1") });
}

// The stack configuration the local cloud runs the program with: the staging stack's settings,
// pointed at the local ACME server (Pebble) and the simulated droplet.
import { stackConfig } from "./stackConfig";
import { Pebble, startPebble } from "./acme";
import { freePort, Logger } from "./util";

export const LOCAL_DOMAIN = "dropstack.test";
export const LOCAL_HOST = "app";
export const LOCAL_FQDN = `${LOCAL_HOST}.${LOCAL_DOMAIN}`;

export function localConfig(pebble: Pebble, overrides: Record<string, unknown> = {}): Record<string, string> {
  return stackConfig("staging", {
    domain: LOCAL_DOMAIN,
    host: LOCAL_HOST,
    acmeEmail: "ops@dropstack.test",
    acmeServer: pebble.directoryUrlForGuest,
    acmeCaBundle: pebble.caBundlePem,
    // qemu's user network presents the harness (on the host) to the guest as 10.0.2.2: that is
    // the address the host firewall must let through to SSH.
    sshAllowedCidrs: ["10.0.2.2/32"],
    // qemu's user network has no IPv6 here.
    ipv6: false,
    // The guest reaches Debian's mirror, not PyPI: Flask comes from Debian.
    aptPackages: ["python3-flask"],
    workers: 2,
    env: { APP_TITLE: "dropstack on the local cloud" },
    ...overrides,
  });
}

/**
 * Pebble for the local cloud, on port 443 like a real ACME server: the droplet's host firewall
 * lets HTTPS out and nothing else, so an ACME directory on another port would be unreachable.
 */
export async function startLocalPebble(workDir: string, log?: Logger): Promise<Pebble> {
  return startPebble({ workDir, log, acmePort: 443, managementPort: await freePort("127.0.0.1") });
}

// The stack configuration the local cloud runs the program with: the staging stack's settings,
// pointed at the local ACME server (Pebble) and the simulated droplet.
import { stackConfig } from "../support/stackConfig";
import { Pebble } from "./acme";

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
    // The harness reaches the VM's port 22 on a loopback address.
    sshAllowedCidrs: ["127.0.0.0/8"],
    // qemu's user network has no IPv6 here.
    ipv6: false,
    // The guest reaches Debian's mirror, not PyPI: Flask comes from Debian.
    aptPackages: ["python3-flask"],
    workers: 2,
    env: { APP_TITLE: "dropstack on the local cloud" },
    ...overrides,
  });
}

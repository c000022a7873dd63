import * as assert from "assert";
import * as fs from "fs";
import * as path from "path";
import { loadConfig } from "../../components/config";
import type { Pebble } from "../../localcloud/acme";
import { localStackConfig } from "../../localcloud/localStack";
import { PROJECT_DIR } from "../../localcloud/stackConfig";

// What localStackConfig reads of Pebble: its guest URL and CA bundle.
const pebble = { directoryUrlForGuest: "https://10.0.2.2/dir", caBundlePem: fs.readFileSync("/etc/ssl/certs/ca-certificates.crt", "utf8").split(/(?<=-----END CERTIFICATE-----\n)/)[0] } as Pebble;

describe("a stack's own settings on the local cloud", () => {
  it("keeps the staging stack's app and settings, swapping only the zone, ACME, SSH's networks and IPv6", () => {
    const local = localStackConfig("staging", pebble, undefined, "secrets.yaml");
    const cfg = loadConfig(local.config, PROJECT_DIR, local.secretKeys);
    assert.strictEqual(cfg.fqdn, "staging.dropstack.test");
    assert.strictEqual(local.fqdn, cfg.fqdn);
    assert.strictEqual(cfg.workers, 1, "the stack file's own setting");
    assert.deepStrictEqual(cfg.env, { APP_TITLE: "dropstack staging" });
    assert.deepStrictEqual(cfg.aptPackages, ["python3-flask"]);
    assert.strictEqual(cfg.acmeServer, "https://10.0.2.2/dir");
    assert.deepStrictEqual(cfg.sshAllowedCidrs, ["10.0.2.2/32"]);
    assert.strictEqual(cfg.ipv6, false);
  });

  it("needs local values for what the stack file holds encrypted, and marks them secret", () => {
    const stack = `unit-local-${process.pid}`;
    const file = path.join(PROJECT_DIR, `Pulumi.${stack}.yaml`);
    fs.writeFileSync(file, [
      "config:",
      "  dropstack:domain: example.com",
      "  dropstack:acmeEmail: ops@example.com",
      "  dropstack:sshAllowedCidrs: [203.0.113.0/24]",
      "  dropstack:secretEnv:",
      "    SECRET_KEY:",
      "      secure: AAABAExampleCiphertext",
      "",
    ].join("\n"));
    try {
      assert.throws(() => localStackConfig(stack, pebble, undefined, "the secrets file"),
        /holds encrypted values for dropstack:secretEnv, which the local cloud cannot decrypt: give local values in the secrets file/);
      const local = localStackConfig(stack, pebble, "dropstack:secretEnv:\n  SECRET_KEY: local-value\n", "the secrets file");
      assert.deepStrictEqual(local.secretKeys, ["dropstack:secretEnv"]);
      const cfg = loadConfig(local.config, PROJECT_DIR, local.secretKeys);
      assert.deepStrictEqual(cfg.secretEnv, { SECRET_KEY: "local-value" });
      assert.deepStrictEqual(cfg.warnings, []);
      assert.throws(() => localStackConfig(stack, pebble, "- a list\n", "the secrets file"), /expected a map of config keys/);
    } finally {
      fs.rmSync(file, { force: true });
    }
  });

  it("names the stack file it could not find", () => {
    assert.throws(() => localStackConfig("no-such-stack", pebble, undefined, "x"), /no stack file Pulumi\.no-such-stack\.yaml/);
  });
});

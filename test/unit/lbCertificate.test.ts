// The local cloud's stand-in for a Let's Encrypt certificate on the load balancer: ordered from a
// real Pebble with the DNS-01 challenge answered in Pebble's DNS, chaining to Pebble's root.
import * as assert from "assert";
import { spawnSync } from "child_process";
import * as crypto from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { Pebble, startPebble } from "../../localcloud/acme";
import { issueLetsEncryptCertificate } from "../../localcloud/lbCertificate";

describe("local cloud: the load balancer's Let's Encrypt certificate (Pebble, DNS-01)", function () {
  this.timeout(120_000);
  let dir: string;
  let pebble: Pebble;

  before(async function () {
    if (spawnSync("which", ["pebble"]).status !== 0) throw new Error("pebble is not installed: run .ci/install-host-packages.sh");
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "dropstack-lbcert-"));
    pebble = await startPebble({ workDir: dir });
  });

  after(async () => {
    await pebble?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it("issues a certificate for the name with its key, chaining to Pebble's root", async () => {
    const name = "shop.dropstack.test";
    const issued = await issueLetsEncryptCertificate(pebble, [name], () => undefined);
    const certs = issued.pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
    assert.ok(certs.length >= 2, "the leaf and its intermediate");
    const leaf = new crypto.X509Certificate(String(certs[0]));
    assert.match(leaf.subjectAltName ?? "", new RegExp(`DNS:${name.replace(/\./g, "\\.")}`));
    const key = crypto.createPrivateKey(issued.pem.slice(issued.pem.indexOf("-----BEGIN", issued.pem.lastIndexOf("-----END CERTIFICATE-----"))));
    assert.ok(leaf.checkPrivateKey(key), "the key is the certificate's");
    const root = new crypto.X509Certificate(await pebble.rootCertificatePem());
    const intermediate = new crypto.X509Certificate(String(certs[1]));
    assert.ok(leaf.verify(intermediate.publicKey) && intermediate.verify(root.publicKey), "leaf → intermediate → Pebble's root");
    assert.ok(Date.parse(issued.notAfter) > Date.now());
    assert.strictEqual(issued.sha1Fingerprint, leaf.fingerprint.replace(/:/g, "").toLowerCase());
  });
});

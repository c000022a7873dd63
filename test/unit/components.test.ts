import * as assert from "assert";
import * as pulumi from "@pulumi/pulumi";
import { Server } from "../../components/server";

describe("Server component", () => {
  before(() => pulumi.runtime.setMocks({
    newResource: (args) => ({ id: `${args.name}-id`, state: { ...args.inputs, ipv4Address: "203.0.113.9" } }),
    call: (args) => args.inputs,
  }, "dropstack", "unit", false));

  const make = (name: string, protect: boolean) => new Server(name, {
    dropletName: name, region: "fra1", size: "s-1vcpu-1gb", image: "debian-12-x64", ipv6: false, monitoring: true,
    backups: false, tags: ["dropstack"], deployUser: "deploy", deployPublicKey: "ssh-ed25519 AAAA", deployKeyFingerprint: "fp",
    hostPrivateKey: "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n", hostPublicKey: "ssh-ed25519 AAAAhost",
    protect,
  });

  it("passes protect to the droplet (prod cannot be deleted or replaced by accident)", () => {
    // The SDK keeps a resource's protect option on the resource object (no public getter).
    assert.strictEqual((make("p", true).droplet as unknown as { __protect: boolean }).__protect, true);
    assert.strictEqual((make("s", false).droplet as unknown as { __protect: boolean }).__protect, false);
  });

  it("exports an empty IPv6 address when IPv6 is off", async () => {
    const server = make("v4", false);
    const v6 = await new Promise((resolve) => server.ipv6Address.apply(resolve));
    assert.strictEqual(v6, "");
  });
});

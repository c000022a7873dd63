// The policy pack's policies, called directly (a PolicyPack would start a server): each with the
// program's own resources under mocks, once where it passes and once where it must object.
import * as assert from "assert";
import type { PolicyResourceOptions, ResourceValidationArgs, ResourceValidationPolicy } from "@pulumi/policy";
import { policies, stackOf } from "../../policy/policies";
import { byName, plain, runFake } from "./fakeCloud";

type Run = Awaited<ReturnType<typeof runFake>>;

const byPolicy = (name: string): ResourceValidationPolicy => {
  const p = policies.find((x) => x.name === name);
  if (!p) throw new Error(`no policy ${name}`);
  return p;
};

/** Runs one policy on a resource (its type, inputs and stack as the program made them); returns the violations. */
function check(policyName: string, stack: string, resource: { type: string; name: string; inputs: Record<string, unknown> },
  options: { protect?: boolean; config?: Record<string, unknown>; props?: Record<string, unknown> } = {}): string[] {
  const policy = byPolicy(policyName);
  const violations: string[] = [];
  const defaults = Object.fromEntries(Object.entries(policy.configSchema?.properties ?? {}).map(([k, v]) => [k, (v as { default?: unknown }).default]));
  const args: ResourceValidationArgs = {
    type: resource.type,
    name: resource.name,
    urn: `urn:pulumi:${stack}::dropstack::${resource.type}::${resource.name}`,
    props: { ...(plain(resource.inputs) as Record<string, unknown>), ...options.props },
    opts: { protect: options.protect ?? false, ignoreChanges: [], aliases: [], customTimeouts: {}, additionalSecretOutputs: [] } as unknown as PolicyResourceOptions,
    stackTags: new Map(),
    isType: () => false,
    asType: () => undefined,
    getConfig: <T extends object>() => ({ ...defaults, ...options.config }) as T,
    notApplicable: (reason?: string): never => { throw new Error(`not applicable: ${reason}`); },
  };
  const validate = policy.validateResource;
  for (const v of Array.isArray(validate) ? validate : validate ? [validate] : []) void v(args, (message: string) => violations.push(message));
  return violations;
}

describe("policy pack", () => {
  let staging: Run;
  let prod: Run;
  before(async function () {
    this.timeout(60_000);
    staging = await runFake({ stack: "staging", overrides: { database: "droplet", volumeSize: 10 } });
    prod = await runFake({ stack: "prod", overrides: { database: "droplet", volumeSize: 10 } });
  });

  it("reads the stack from a resource's URN", () => {
    assert.strictEqual(stackOf("urn:pulumi:prod::dropstack::digitalocean:index/droplet:Droplet::server-droplet"), "prod");
  });

  it("dropstack-prod-protect: a prod droplet, volume or database cluster without protect is refused; staging is not held to it", async () => {
    const managed = { prod: await runFake({ stack: "prod", overrides: { database: "managed" } }), staging: await runFake({ stack: "staging", overrides: { database: "managed" } }) };
    for (const [runs, name] of [[{ prod, staging }, "server-droplet"], [{ prod, staging }, "data-volume"], [managed, "managed-db-cluster"]] as const) {
      const [prod, staging] = [runs.prod, runs.staging];
      assert.deepStrictEqual(check("dropstack-prod-protect", "prod", byName(prod, name), { protect: true }), []);
      assert.match(check("dropstack-prod-protect", "prod", byName(prod, name), { protect: false })[0], /set dropstack:protect to true/);
      assert.deepStrictEqual(check("dropstack-prod-protect", "staging", byName(staging, name), { protect: false }), []);
    }
    assert.match(check("dropstack-prod-protect", "live", byName(prod, "server-droplet"), { config: { prodStacks: ["live"] } })[0], /no protect on stack live/);
  });

  it("dropstack-prod-backups: prod's droplet has backups; one without is refused", () => {
    assert.deepStrictEqual(check("dropstack-prod-backups", "prod", byName(prod, "server-droplet")), []);
    assert.match(check("dropstack-prod-backups", "prod", byName(staging, "server-droplet"))[0], /set dropstack:backups to true/);
  });

  it("dropstack-prod-tls-hsts: prod's site has TLS and HSTS; staging's site (no HSTS) would be refused on prod", async () => {
    assert.deepStrictEqual(check("dropstack-prod-tls-hsts", "prod", byName(prod, "site-nginx")), []);
    assert.match(check("dropstack-prod-tls-hsts", "prod", byName(staging, "site-nginx"))[0], /set dropstack:hsts to true/);
    const plainHttp = await runFake({ stack: "prod", overrides: { tls: false, acmeEmail: undefined } });
    assert.match(check("dropstack-prod-tls-hsts", "prod", byName(plainHttp, "site-nginx"))[0], /set dropstack:tls to true/);
    assert.deepStrictEqual(check("dropstack-prod-tls-hsts", "prod", byName(prod, "app-release")), [], "other steps are not the site");
  });

  it("dropstack-ssh-not-open-to-all: the stacks' firewalls pass; SSH open to everyone is refused unless the config allows it", async () => {
    assert.deepStrictEqual(check("dropstack-ssh-not-open-to-all", "prod", byName(prod, "firewall-fw")), []);
    const open = await runFake({ stack: "staging", overrides: { sshAllowedCidrs: ["0.0.0.0/0", "::/0"] } });
    const violations = check("dropstack-ssh-not-open-to-all", "staging", byName(open, "firewall-fw"));
    assert.match(violations[0], /opens SSH \(22\) to 0\.0\.0\.0\/0 and ::\/0/);
    assert.deepStrictEqual(check("dropstack-ssh-not-open-to-all", "staging", byName(open, "firewall-fw"), { config: { allowSshFromAnywhere: true } }), []);
  });

  it("dropstack-debian-image: the program's droplet passes; another image is refused", () => {
    assert.deepStrictEqual(check("dropstack-debian-image", "prod", byName(prod, "server-droplet")), []);
    assert.match(check("dropstack-debian-image", "prod", byName(prod, "server-droplet"), { props: { image: "ubuntu-24-04-x64" } })[0], /use a Debian image/);
  });

  it("dropstack-database-trusts-only-droplets: the program's own firewall (the droplet), tag rules and single addresses pass; a network is refused", async () => {
    const own = byName(await runFake({ stack: "prod", overrides: { database: "managed" } }), "managed-db-firewall");
    assert.deepStrictEqual(check("dropstack-database-trusts-only-droplets", "prod", own), []);
    const fw = { type: "digitalocean:index/databaseFirewall:DatabaseFirewall", name: "db-fw", inputs: { clusterId: "c1", rules: [{ type: "droplet", value: String(prod.outputs.dropletId.value) }, { type: "tag", value: "dropstack-prod" }, { type: "ip_addr", value: "203.0.113.7" }] } };
    assert.deepStrictEqual(check("dropstack-database-trusts-only-droplets", "prod", fw), []);
    const wide = { ...fw, inputs: { clusterId: "c1", rules: [{ type: "ip_addr", value: "0.0.0.0/0" }] } };
    assert.match(check("dropstack-database-trusts-only-droplets", "prod", wide)[0], /trusts ip_addr "0\.0\.0\.0\/0"/);
  });

  it("dropstack-lb-redirects-to-https: a load balancer must redirect HTTP", () => {
    const lb = { type: "digitalocean:index/loadBalancer:LoadBalancer", name: "lb", inputs: { region: "fra1", redirectHttpToHttps: true } };
    assert.deepStrictEqual(check("dropstack-lb-redirects-to-https", "prod", lb), []);
    assert.match(check("dropstack-lb-redirects-to-https", "prod", { ...lb, inputs: { region: "fra1" } })[0], /redirectHttpToHttps/);
  });

  it("every policy is mandatory by default and has a description", () => {
    for (const p of policies) {
      assert.strictEqual(p.enforcementLevel, "mandatory", p.name);
      assert.ok(p.description.length > 20, p.name);
    }
  });
});

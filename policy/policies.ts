// dropstack's guardrails as CrossGuard policies: what a reviewer must not have to catch by eye.
// Each policy reads only what `pulumi preview` hands it (a resource's inputs and options, and the
// stack's name from its URN) and names what to change. This module only defines them; index.ts
// makes the pack (PolicyPack starts a server, so tests call these policies directly).
import type { EnforcementLevel, ReportViolation, ResourceValidationArgs, ResourceValidationPolicy } from "@pulumi/policy";
import { decodeValues } from "../components/shell";

const DROPLET = "digitalocean:index/droplet:Droplet";
const VOLUME = "digitalocean:index/volume:Volume";
const FIREWALL = "digitalocean:index/firewall:Firewall";
const DATABASE_FIREWALL = "digitalocean:index/databaseFirewall:DatabaseFirewall";
const DATABASE_CLUSTER = "digitalocean:index/databaseCluster:DatabaseCluster";
const LOAD_BALANCER = "digitalocean:index/loadBalancer:LoadBalancer";
const COMMAND = "command:remote:Command";

/** The stack a resource belongs to, from its URN (urn:pulumi:<stack>::<project>::...). */
export function stackOf(urn: string): string {
  return urn.replace(/^urn:pulumi:/, "").split("::")[0];
}

/** Settings every prod-only policy takes: which stacks count as production. */
const prodSchema = {
  properties: { prodStacks: { type: "array" as const, items: { type: "string" as const }, default: ["prod"] } },
};
const isProd = (args: ResourceValidationArgs) => (args.getConfig<{ prodStacks?: string[] }>().prodStacks ?? ["prod"]).includes(stackOf(args.urn));

/** A policy whose enforcement level defaults to mandatory (the pack's config can lower it). */
function policy(name: string, description: string, validate: (args: ResourceValidationArgs, report: ReportViolation) => void,
  configSchema?: ResourceValidationPolicy["configSchema"], enforcementLevel: EnforcementLevel = "mandatory"): ResourceValidationPolicy {
  return { name, description, enforcementLevel, configSchema, validateResource: validate };
}

/** Values of a remote step's stdin, when it is plain text (a secret or unknown stdin gives none). */
function stepValues(props: Record<string, unknown>): Record<string, string> | undefined {
  return typeof props.stdin === "string" ? decodeValues(props.stdin) : undefined;
}

export const policies: ResourceValidationPolicy[] = [
  policy("dropstack-prod-protect", "Production droplets, volumes and database clusters are protected: a replaced droplet or a deleted volume or cluster is lost data.", (args, report) => {
    if (![DROPLET, VOLUME, DATABASE_CLUSTER].includes(args.type) || !isProd(args)) return;
    if (!args.opts.protect) report(`${args.name} has no protect on stack ${stackOf(args.urn)}: set dropstack:protect to true (pulumi config set dropstack:protect true)`);
  }, prodSchema),

  policy("dropstack-prod-backups", "Production droplets have DigitalOcean's backups on.", (args, report) => {
    if (args.type !== DROPLET || !isProd(args)) return;
    if (args.props.backups !== true) report(`${args.name} has backups off on stack ${stackOf(args.urn)}: set dropstack:backups to true`);
  }, prodSchema),

  policy("dropstack-prod-tls-hsts", "Production sites answer over HTTPS only and send Strict-Transport-Security.", (args, report) => {
    if (args.type !== COMMAND || !isProd(args)) return;
    const site = stepValues(args.props)?.NGINX_SITE;
    if (site === undefined) return; // not the site step
    if (!/^\s*listen 443 ssl/m.test(site)) report(`${args.name}: the site has no TLS on stack ${stackOf(args.urn)}: set dropstack:tls to true`);
    else if (!/Strict-Transport-Security/.test(site)) report(`${args.name}: the site sends no HSTS on stack ${stackOf(args.urn)}: set dropstack:hsts to true`);
  }, prodSchema),

  policy("dropstack-ssh-not-open-to-all", "SSH is open only to the networks that need it, unless this policy's config allows every address.", (args, report) => {
    if (args.type !== FIREWALL) return;
    if (args.getConfig<{ allowSshFromAnywhere?: boolean }>().allowSshFromAnywhere) return;
    const rules = (args.props.inboundRules ?? []) as { portRange?: string; sourceAddresses?: string[] }[];
    for (const rule of rules) {
      const open = (rule.sourceAddresses ?? []).filter((a) => a === "0.0.0.0/0" || a === "::/0");
      if (rule.portRange === "22" && open.length) {
        report(`${args.name} opens SSH (22) to ${open.join(" and ")}: list your own networks in dropstack:sshAllowedCidrs, e.g. ["203.0.113.0/24"], or allow it in this policy's config (allowSshFromAnywhere: true)`);
      }
    }
  }, { properties: { allowSshFromAnywhere: { type: "boolean", default: false } } }),

  policy("dropstack-debian-image", "Droplets run a Debian image: the remote steps use apt and Debian's packages.", (args, report) => {
    if (args.type !== DROPLET) return;
    const image = String(args.props.image ?? "");
    if (!/^debian-\d+-x64$/.test(image)) report(`${args.name} uses image ${JSON.stringify(image)}: use a Debian image such as "debian-12-x64"`);
  }),

  policy("dropstack-database-trusts-only-droplets", "A managed database trusts no network wider than the stack's own droplets.", (args, report) => {
    if (args.type !== DATABASE_FIREWALL) return;
    const rules = (args.props.rules ?? []) as { type?: string; value?: string }[];
    for (const rule of rules) {
      const single = rule.type === "ip_addr" && /^[0-9.]+(\/32)?$|^[0-9a-f:]+(\/128)?$/i.test(rule.value ?? "");
      if (!(rule.type === "droplet" || rule.type === "tag" || single)) {
        report(`${args.name} trusts ${rule.type} ${JSON.stringify(rule.value)}: trust the stack's droplets (type "droplet" or "tag") or single addresses only`);
      }
    }
  }),

  policy("dropstack-lb-redirects-to-https", "A load balancer redirects HTTP to HTTPS.", (args, report) => {
    if (args.type !== LOAD_BALANCER) return;
    if (args.props.redirectHttpToHttps !== true) report(`${args.name} serves plain HTTP: set redirectHttpToHttps to true`);
  }),
];

// Rendering of the files dropstack installs on the server, from the templates in remote/templates.
// Pure functions of validated settings: unit-tested as text and checked by nginx -t and supervisor.
import type { EgressRule } from "./firewall";
import { readRemoteFile, renderTemplate, withoutShebang } from "./shell";

/** Placeholders filled with text the program rendered itself (not user input). */
const RENDERED = new Set(["proxy", "headers", "routes", "forwarded_proto", "tls_server"]);

/** Values spliced into config files may not break out of their line or directive. */
function inert(name: string, value: string): void {
  if (/[\r\n{};#"'`$\\]/.test(value) && !RENDERED.has(name)) {
    throw new Error(`value for {{${name}}} contains a character that could change the file's meaning: ${JSON.stringify(value)}`);
  }
}

export interface SiteSettings {
  /** App name (validated: [a-z][a-z0-9-]*). */
  app: string;
  /** Host name the site answers on. */
  fqdn: string;
  /** HTTPS with a certificate in /etc/letsencrypt/live/<fqdn>/. */
  tls: boolean;
  /** nginx client_max_body_size. */
  maxBodySize: string;
  /** Send Strict-Transport-Security (TLS sites only). */
  hsts: boolean;
  /** With a built client: nginx serves it at / and hands only this prefix to the app; unset: the app answers at /. */
  apiPrefix?: string;
  /** Behind the stack's load balancer (droplets > 1): plain HTTP from it, and the health path it checks, which answers 503 while the droplet drains. */
  behindLoadBalancer?: { healthPath: string };
}

const HSTS = 'add_header Strict-Transport-Security "max-age=63072000; includeSubDomains" always;';

/** Headers every answer carries (nginx drops the server's add_header lines in a location that has its own: they are repeated there). */
const SECURITY_HEADERS = [
  "add_header X-Content-Type-Options nosniff always;",
  "add_header X-Frame-Options SAMEORIGIN always;",
  "add_header Referrer-Policy strict-origin-when-cross-origin always;",
];

/** The proxy part of a server block: headers, body size, the app's routes (and a built client's). */
function renderProxy(s: SiteSettings): string {
  const hsts = s.tls && s.hsts ? HSTS : "# HSTS off for this stack (dropstack:hsts)";
  const headers = (indent: string) => [...SECURITY_HEADERS, hsts].map((h) => indent + h).join("\n");
  if (s.apiPrefix !== undefined && !/^(?:\/[A-Za-z0-9._~-]+)+$/.test(s.apiPrefix)) throw new Error(`not an API prefix: ${JSON.stringify(s.apiPrefix)}`);
  const routes = s.apiPrefix === undefined
    ? renderTemplate(readRemoteFile("templates/nginx-routes-app.conf"), { app: s.app }, inert)
    : renderTemplate(readRemoteFile("templates/nginx-routes-client.conf"), { app: s.app, api_prefix: s.apiPrefix, headers: headers("        ") }, inert);
  // (behind the load balancer the request reached it over HTTPS: it says so in X-Forwarded-Proto)
  return renderTemplate(readRemoteFile("templates/nginx-proxy.conf"), {
    app: s.app, max_body_size: s.maxBodySize, headers: headers("    "), routes: routes.replace(/\n$/, ""),
    forwarded_proto: s.behindLoadBalancer ? "$http_x_forwarded_proto" : "$scheme",
  }, inert).replace(/\n$/, "");
}

/** The app's nginx site. nginx's own $variables pass through untouched. */
export function renderNginxSite(s: SiteSettings): string {
  const proxy = renderProxy(s);
  if (s.behindLoadBalancer) {
    if (!/^\/[A-Za-z0-9._~/-]*$/.test(s.behindLoadBalancer.healthPath)) throw new Error(`not a health path: ${JSON.stringify(s.behindLoadBalancer.healthPath)}`);
    return renderTemplate(readRemoteFile("templates/nginx-site-lb.conf"),
      { app: s.app, app_var: s.app.replace(/-/g, "_"), fqdn: s.fqdn, health_path: s.behindLoadBalancer.healthPath, proxy }, inert);
  }
  if (!s.tls) return renderTemplate(readRemoteFile("templates/nginx-site-http.conf"), { app: s.app, fqdn: s.fqdn, proxy }, inert);
  return renderTemplate(readRemoteFile("templates/nginx-site-tls.conf"), { app: s.app, fqdn: s.fqdn, tls_server: tlsServer(s, proxy) }, inert);
}

/** The HTTPS server block of a droplet that serves the site itself (certbot's certificate for the name). */
function tlsServer(s: SiteSettings, proxy: string): string {
  return renderTemplate(readRemoteFile("templates/nginx-tls-server.conf"), { app: s.app, fqdn: s.fqdn, proxy }, inert);
}

/**
 * Behind the load balancer, for a droplet that served the site itself before (a stack grown from
 * one droplet, while it still has certbot's certificate): HTTPS straight to it, as it answered
 * before, for clients that still have its address. Installed beside the site while the
 * certificate exists; the handover step removes it (remote/handover.sh).
 */
export function renderDirectSite(s: Omit<SiteSettings, "tls" | "behindLoadBalancer">): string {
  const direct = { ...s, tls: true };
  return renderTemplate(readRemoteFile("templates/nginx-site-direct.conf"), { app: s.app, fqdn: s.fqdn, tls_server: tlsServer(direct, renderProxy(direct)) }, inert);
}

/** nginx's catch-all server and the ACME challenge snippet; behind a load balancer the app's site is the default server instead. */
export function renderNginxDefault(behindLoadBalancer = false): { defaultServer: string; acmeSnippet: string } {
  return {
    defaultServer: readRemoteFile(behindLoadBalancer ? "templates/nginx-default-lb.conf" : "templates/nginx-default.conf"),
    acmeSnippet: readRemoteFile("templates/nginx-acme.conf"),
  };
}

/**
 * supervisor's program section for one blue/green slot. The switch script on the server fills
 * @SLOT@ and @RELEASE@; `%` is doubled because supervisor expands %(name)s.
 */
export function renderSupervisorSlot(s: { app: string; wsgi: string }): string {
  return renderTemplate(readRemoteFile("templates/supervisor-slot.conf"), { app: s.app, wsgi: s.wsgi.replace(/%/g, "%%") }, inert);
}

/** A server-side command from remote/templates with the shared deploy lock rendered in at its `# @deploy-lock@` line. */
function withDeployLock(templateFile: string): string {
  const marker = /^# @deploy-lock@.*$/m;
  const template = readRemoteFile(templateFile);
  if (!marker.test(template)) throw new Error(`${templateFile} has no # @deploy-lock@ line`);
  return template.replace(marker, () => withoutShebang(readRemoteFile("deploy-lock.sh")));
}

/** The server-side switch/rollback command (installed as /usr/local/sbin/dropstack-switch), with the shared deploy lock. */
export function renderSwitchScript(): string {
  return withDeployLock("templates/dropstack-switch.sh");
}

/** The database's backup and restore command (installed as /usr/local/sbin/dropstack-db), with the shared deploy lock. */
export function renderDbScript(): string {
  return withDeployLock("templates/dropstack-db.sh");
}

/** gunicorn's config file; workers unset means 2 x CPUs + 1 on the server. */
export function renderGunicornConf(s: { app: string; workers?: number }): string {
  const workers = s.workers === undefined ? "multiprocessing.cpu_count() * 2 + 1" : String(s.workers);
  return renderTemplate(readRemoteFile("templates/gunicorn.conf.py"), { app: s.app, workers }, inert);
}

/**
 * The droplet's cloud-init user data: the deploy user and its key, and the SSH host key, nothing
 * that changes later. It holds the host's private key: keep it secret.
 */
export function renderCloudConfig(s: { deployUser: string; deployPublicKey: string; hostPrivateKey: string; hostPublicKey: string }): string {
  // JSON is YAML: the multi-line private key is escaped, never spliced as raw text.
  const sshKeys = JSON.stringify({ ed25519_private: s.hostPrivateKey, ed25519_public: s.hostPublicKey.trim() });
  return renderTemplate(readRemoteFile("templates/cloud-config.yaml"), {
    deploy_user: s.deployUser,
    deploy_public_key: s.deployPublicKey.trim(),
    ssh_keys_json: sshKeys,
  }, (name, value) => {
    if (/[\r\n]/.test(value) || (name === "deploy_user" && !/^[a-z_][a-z0-9_-]*$/.test(value))) {
      throw new Error(`cloud-config value {{${name}}} is not a single safe line: ${JSON.stringify(value)}`);
    }
  });
}

/** The app's environment as JSON with sorted keys (stable text: no change, no re-run). */
export function renderEnvJson(env: Record<string, string>): string {
  const sorted: Record<string, string> = {};
  for (const k of Object.keys(env).sort()) sorted[k] = env[k];
  return `${JSON.stringify(sorted, null, 2)}\n`;
}

/** sshd drop-in: keys only, no root, only the deploy user. */
export function renderSshdConfig(s: { deployUser: string }): string {
  return renderTemplate(readRemoteFile("templates/sshd-dropstack.conf"), { deploy_user: s.deployUser }, inert);
}

/**
 * The host firewall (nftables), the same policy as the cloud firewall. The SSH networks and the
 * egress rules were validated (CIDRs, port ranges); they are checked again here because they are
 * rendered into nftables text.
 */
export function renderNftables(s: { sshAllowedCidrs: string[]; egress?: EgressRule[] }): string {
  const cidrs = [...s.sshAllowedCidrs, ...(s.egress ?? []).flatMap((r) => r.to)];
  for (const c of cidrs) {
    if (!/^[0-9a-fA-F:.]+\/\d{1,3}$/.test(c)) throw new Error(`not a CIDR: ${JSON.stringify(c)}`);
  }
  // nftables matches each address family on its own: "ip" for IPv4 networks, "ip6" for IPv6.
  const families = (list: string[]) => [
    { match: "ip", type: "ipv4_addr", set: "ssh_v4", cidrs: list.filter((c) => c.includes(".")) },
    { match: "ip6", type: "ipv6_addr", set: "ssh_v6", cidrs: list.filter((c) => c.includes(":")) },
  ].filter((f) => f.cidrs.length);
  const sets: string[] = [];
  const rules: string[] = [];
  for (const f of families(s.sshAllowedCidrs)) {
    sets.push(`    set ${f.set} {\n        type ${f.type}; flags interval;\n        elements = { ${f.cidrs.join(", ")} }\n    }`);
    rules.push(`        ${f.match} saddr @${f.set} tcp dport 22 accept`);
  }
  const egress: string[] = [];
  for (const r of s.egress ?? []) {
    if (!/^(tcp|udp)$/.test(r.protocol) || !/^\d{1,5}(-\d{1,5})?$/.test(r.ports)) throw new Error(`not an egress rule: ${JSON.stringify(r)}`);
    for (const f of families(r.to)) egress.push(`        ${f.match} daddr { ${f.cidrs.join(", ")} } ${r.protocol} dport ${r.ports} accept`);
  }
  return renderTemplate(readRemoteFile("templates/nftables.conf"), {
    ssh_sets: sets.join("\n"),
    ssh_rules: rules.join("\n"),
    egress_rules: egress.length ? egress.join("\n") : "        # no egress rules configured (dropstack:egress)",
  });
}

/** apt's periodic settings that turn on unattended security upgrades. */
export function renderAutoUpgrades(): string {
  return readRemoteFile("templates/auto-upgrades.conf");
}

/** The server's own drift check (installed as /usr/local/sbin/dropstack-check): compares every file dropstack wrote with the steps' manifests. */
export function renderCheckScript(): string {
  return readRemoteFile("templates/dropstack-check.sh");
}

/** Docker's daemon settings (runtime docker): no firewall rules of its own, no bridge, journald logs, no new privileges. */
export function renderDockerDaemon(): string {
  return readRemoteFile("templates/docker-daemon.json");
}

/** The loader every container command runs through: adds env.json to the environment, then runs the command. */
export function renderEnvExec(): string {
  return readRemoteFile("templates/env-exec.py");
}

/** The deploy hook certbot runs after a renewal. */
export function renderRenewHook(): string {
  return readRemoteFile("templates/renew-hook.sh");
}

/**
 * Host hardening files, fixed text (no settings): kernel sysctls, kernel modules that are never
 * loaded, needrestart's automatic restarts, and no core dumps (login limits, systemd-coredump).
 */
export function renderHardening(): { sysctl: string; modprobe: string; needrestart: string; coredumpLimits: string; coredumpSystemd: string } {
  return {
    sysctl: readRemoteFile("templates/sysctl-dropstack.conf"),
    modprobe: readRemoteFile("templates/modprobe-dropstack.conf"),
    needrestart: readRemoteFile("templates/needrestart-dropstack.conf"),
    coredumpLimits: readRemoteFile("templates/coredump-limits.conf"),
    coredumpSystemd: readRemoteFile("templates/coredump-systemd.conf"),
  };
}

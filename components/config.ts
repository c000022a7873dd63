// The stack's settings: one typed, validated object read from Pulumi config.
//
// Every setting is declared once here (schema, default, example) and mirrored in Pulumi.yaml's
// `config:` block for the CLI (a unit test keeps the two in step). Validation happens before any
// resource is registered, and reports every bad setting at once, each naming its key, the problem
// and an example of a good value.
import * as fs from "fs";
import * as path from "path";
import { z } from "zod";

export const NAMESPACE = "dropstack";

const LETS_ENCRYPT_PRODUCTION = "https://acme-v02.api.letsencrypt.org/directory";
export const LETS_ENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory";

const label = "[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?";
const DOMAIN_RE = new RegExp(`^(?:${label}\\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]$`);
const HOST_RE = new RegExp(`^(?:@|${label}(?:\\.${label})*)$`);
const PYTHON_IDENT = "[A-Za-z_][A-Za-z0-9_]*";
const WSGI_RE = new RegExp(`^(${PYTHON_IDENT}(?:\\.${PYTHON_IDENT})*):(${PYTHON_IDENT})(\\(\\))?$`);
const SSH_KEY_TYPES = [
  "ssh-ed25519",
  "ssh-rsa",
  "ecdsa-sha2-nistp256",
  "ecdsa-sha2-nistp384",
  "ecdsa-sha2-nistp521",
  "sk-ssh-ed25519@openssh.com",
  "sk-ecdsa-sha2-nistp256@openssh.com",
];

/** True when `line` is an OpenSSH public key whose base64 blob names the same key type. */
export function isOpenSshPublicKey(line: string): boolean {
  const m = /^(\S+) ([A-Za-z0-9+/]+={0,3})(?: [^\r\n]*)?$/.exec(line);
  if (!m || !SSH_KEY_TYPES.includes(m[1])) return false;
  const blob = Buffer.from(m[2], "base64");
  if (blob.length < 4) return false;
  const len = blob.readUInt32BE(0);
  return len > 0 && 4 + len <= blob.length && blob.subarray(4, 4 + len).toString("latin1") === m[1];
}

/** True for an IPv4 or IPv6 network in CIDR notation ("203.0.113.0/24", "2001:db8::/32"). */
export function isCidr(value: string): boolean {
  const [addr, bits, ...rest] = value.split("/");
  if (rest.length || bits === undefined || !/^\d{1,3}$/.test(bits)) return false;
  const prefix = Number(bits);
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(addr);
  if (v4) return prefix <= 32 && v4.slice(1).every((o) => Number(o) <= 255 && String(Number(o)) === o);
  if (!/^[0-9a-fA-F:]+$/.test(addr) || prefix > 128) return false;
  const halves = addr.split("::");
  if (halves.length > 2) return false;
  const groups = halves.flatMap((h) => (h === "" ? [] : h.split(":")));
  if (groups.some((g) => !/^[0-9a-fA-F]{1,4}$/.test(g))) return false;
  return halves.length === 2 ? groups.length < 8 : groups.length === 8;
}

const str = (re: RegExp, what: string, example: string) =>
  z.string({ invalid_type_error: `expected a string: ${what}, e.g. ${example}` })
    .regex(re, `expected ${what}, e.g. ${example}`);

/** A required, non-empty list of CIDR networks; `what` names them in the "required" message. */
const cidrList = (example: string, what: string, allowAllHint = "") =>
  z.array(
    z.string().refine(isCidr, `expected CIDR networks, e.g. "${example}"; use "0.0.0.0/0" and "::/0" to allow every address explicitly`),
    { required_error: `required: ${what}, e.g. ["${example}"]${allowAllHint}`, invalid_type_error: `expected a list of CIDR networks, e.g. ["${example}"]` },
  ).min(1, `expected at least one network, e.g. ["${example}"]${allowAllHint}`);

const envMap = (example: string) =>
  z.record(
    z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, `expected environment variable names (letters, digits, _; not starting with a digit), e.g. ${example}`),
    z.string({ invalid_type_error: `expected string values, e.g. ${example}` })
      .refine((v) => !v.includes("\0"), "values cannot contain NUL bytes"),
    { invalid_type_error: `expected a map of NAME: value, e.g. ${example}` },
  ).default({});

/** The schema: key → validation, default and the example quoted in errors. */
export const schema = z.object({
  /** DigitalOcean-managed DNS zone the site lives in. */
  domain: str(DOMAIN_RE, "a DNS zone managed by DigitalOcean (lower case)", "example.com"),
  /** Host name within the zone; "@" for the zone apex. */
  host: str(HOST_RE, 'a host label within the domain, or "@" for the apex', '"api" or "@"').default("@"),
  /** DigitalOcean region slug. */
  region: str(/^[a-z]{3}[0-9]$/, "a DigitalOcean region slug", '"fra1" or "nyc3"').default("fra1"),
  /** DigitalOcean droplet size slug. */
  size: str(/^[a-z0-9]+(?:-[a-z0-9]+)+$/, "a DigitalOcean size slug", '"s-1vcpu-1gb"').default("s-1vcpu-1gb"),
  /** Droplet image slug (Debian; the remote scripts use apt). */
  image: str(/^[a-z0-9]+(?:[-.][a-z0-9]+)*$/, "a DigitalOcean image slug", '"debian-12-x64"').default("debian-12-x64"),
  /** Give the droplet an IPv6 address and publish an AAAA record. */
  ipv6: z.boolean({ invalid_type_error: "expected true or false" }).default(true),
  /** DigitalOcean monitoring agent. */
  monitoring: z.boolean({ invalid_type_error: "expected true or false" }).default(true),
  /** DigitalOcean weekly backups. */
  backups: z.boolean({ invalid_type_error: "expected true or false" }).default(false),
  /** Protect the droplet from `pulumi destroy` and replacement. */
  protect: z.boolean({ invalid_type_error: "expected true or false" }).default(false),
  /** Extra droplet tags. */
  tags: z.array(str(/^[A-Za-z0-9:_.-]{1,255}$/, "tags of letters, digits, ':', '-', '_' or '.'", '["team-web"]'),
    { invalid_type_error: 'expected a list of tags, e.g. ["team-web"]' }).default([]),
  /** Networks allowed to reach SSH (port 22). Required: there is no allow-all default. */
  sshAllowedCidrs: cidrList("203.0.113.0/24", "the networks that may reach SSH", ' (or ["0.0.0.0/0", "::/0"] to allow all, explicitly)'),
  /**
   * Outbound traffic the server may send beyond DNS, HTTP/HTTPS and NTP, in both the cloud and the
   * host firewall: e.g. a managed database. Each rule: `protocol` (tcp, the default, or udp),
   * `ports` (a port or a "from-to" range) and `to` (destination networks, required: there is no
   * allow-all default). Default: none.
   * @example [{"ports": 25060, "to": ["10.114.0.0/20"]}]
   */
  egress: z.array(z.object({
    protocol: z.enum(["tcp", "udp"], { errorMap: () => ({ message: 'expected "tcp" or "udp"' }) }).default("tcp"),
    ports: z.union([z.number(), z.string()], {
      errorMap: (_issue, ctx) => ({ message: `${ctx.data === undefined ? "required: " : "expected "}a port or a range, e.g. 5432 or "8000-8010"` }),
    })
      .transform((p, ctx) => {
        const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(String(p));
        const [from, to] = m ? [Number(m[1]), Number(m[2] ?? m[1])] : [NaN, NaN];
        if (!(from >= 1 && to <= 65535 && from <= to)) {
          ctx.addIssue({ code: z.ZodIssueCode.custom, message: `expected a port from 1 to 65535 or a range "from-to", e.g. 5432 or "8000-8010"; got ${JSON.stringify(p)}` });
          return z.NEVER;
        }
        return from === to ? String(from) : `${from}-${to}`;
      }),
    to: cidrList("10.114.0.0/20", "the networks the server may reach on these ports"),
  }, { invalid_type_error: 'expected a rule {"ports": 5432, "to": ["10.114.0.0/20"]}' }).strict(),
  { invalid_type_error: 'expected a list of rules, e.g. [{"ports": 5432, "to": ["10.114.0.0/20"]}]' }).default([]),
  /** Public keys of the humans who may log in as the deploy user. */
  adminSshKeys: z.array(
    z.string().refine(isOpenSshPublicKey, 'expected OpenSSH public key lines (the content of a .pub file), e.g. "ssh-ed25519 AAAAC3Nza... alice@laptop"; never a private key'),
    { invalid_type_error: 'expected a list of public key lines, e.g. ["ssh-ed25519 AAAAC3Nza... alice@laptop"]' },
  ).default([]),
  /** Unprivileged login user that deploys run as. */
  deployUser: str(/^[a-z_][a-z0-9_-]{0,31}$/, "a Unix user name", '"deploy"')
    .refine((u) => u !== "root", 'must not be "root"; use an unprivileged name such as "deploy"').default("deploy"),
  /** Serve HTTPS with a certificate from the ACME server. */
  tls: z.boolean({ invalid_type_error: "expected true or false" }).default(true),
  /** Send Strict-Transport-Security (browsers then refuse plain HTTP for two years). */
  hsts: z.boolean({ invalid_type_error: "expected true or false" }).default(false),
  /** Contact email for the ACME account; required when tls is on. */
  acmeEmail: str(/^[^\s@]+@[^\s@]+\.[^\s@]+$/, "an email address", '"ops@example.com"').optional(),
  /** ACME directory URL. */
  acmeServer: str(/^https:\/\/[^\s]+$/, "an https ACME directory URL", `"${LETS_ENCRYPT_STAGING}"`).default(LETS_ENCRYPT_PRODUCTION),
  /** PEM CA bundle the server must trust to reach a private ACME server. */
  acmeCaBundle: z.string().regex(/-----BEGIN CERTIFICATE-----[\s\S]+-----END CERTIFICATE-----/, "expected PEM certificates (-----BEGIN CERTIFICATE----- ...)").optional(),
  /** Name of the app: its Unix user, supervisor program and /srv/<appName>. */
  appName: str(/^[a-z][a-z0-9-]{0,30}$/, "a short lower-case name", '"shop"').default("app"),
  /** Folder with the app's source, relative to the project. */
  appSource: z.string({ invalid_type_error: 'expected a folder path, e.g. "app"' }).min(1, 'expected a folder path, e.g. "app"').default("app"),
  /** WSGI target as module:callable (a factory as module:create_app()). */
  wsgi: str(WSGI_RE, "a WSGI target module:callable", '"app:app" or "shop.wsgi:create_app()"').default("app:app"),
  /** gunicorn workers; unset means 2 x CPUs + 1 on the server. */
  workers: z.number({ invalid_type_error: "expected a whole number of workers, e.g. 3" })
    .int("expected a whole number of workers, e.g. 3").min(1, "expected at least 1 worker, e.g. 3").max(64, "expected at most 64 workers, e.g. 3").optional(),
  /** Extra Debian packages installed on the server. */
  aptPackages: z.array(str(/^[a-z0-9][a-z0-9+.-]+$/, "Debian package names", '["libpq5"]'),
    { invalid_type_error: 'expected a list of Debian package names, e.g. ["libpq5"]' }).default([]),
  /** Plain environment variables for the app. */
  env: envMap('{"LOG_LEVEL": "info"}'),
  /** Secret environment variables (pulumi config set --secret --path 'dropstack:secretEnv.NAME'). */
  secretEnv: envMap('{"DATABASE_URL": "postgres://..."}'),
  /** Largest request body nginx accepts (nginx size syntax). */
  maxBodySize: str(/^[0-9]{1,6}[kKmMgG]?$/, "an nginx size", '"10m" or "512k"').default("10m"),
  /** Path that answers 200 when the app is healthy. */
  healthPath: str(/^\/[A-Za-z0-9._~/-]*$/, "a URL path starting with /", '"/healthz"').default("/healthz"),
  /** Status the health check must answer. */
  healthStatus: z.number({ invalid_type_error: "expected an HTTP status code, e.g. 200" })
    .int("expected an HTTP status code, e.g. 200").min(200, "expected a 2xx or 3xx status, e.g. 200").max(399, "expected a 2xx or 3xx status, e.g. 200").default(200),
  /** Seconds one health check may take. */
  healthTimeout: z.number({ invalid_type_error: "expected seconds, e.g. 5" })
    .int("expected whole seconds, e.g. 5").min(1, "expected at least 1 second, e.g. 5").max(120, "expected at most 120 seconds, e.g. 5").default(5),
  /** Health checks (one a second) before a release is refused. */
  healthAttempts: z.number({ invalid_type_error: "expected a number of attempts, e.g. 30" })
    .int("expected a whole number of attempts, e.g. 30").min(1, "expected at least 1 attempt, e.g. 30").max(600, "expected at most 600 attempts, e.g. 30").default(30),
  /** Command run in the new release before it goes live (e.g. migrations); its failure aborts the release. */
  releaseCommand: z.string({ invalid_type_error: 'expected a shell command, e.g. "flask db upgrade"' })
    .min(1, 'expected a shell command, e.g. "flask db upgrade"')
    .refine((c) => !c.includes("\0"), "cannot contain NUL bytes").optional(),
  /** A version label for releases (shown in the release id). */
  releaseVersion: str(/^[A-Za-z0-9._-]{1,40}$/, "a version label of letters, digits, '.', '_' or '-'", '"v1.4.2"').optional(),
  /** Releases kept on the server (the current and previous ones are never removed). */
  keepReleases: z.number({ invalid_type_error: "expected a whole number, e.g. 5" })
    .int("expected a whole number, e.g. 5").min(2, "expected at least 2 (current and previous), e.g. 5").max(50, "expected at most 50, e.g. 5").default(5),
}).strict();

export type Settings = z.infer<typeof schema>;

/** Settings that hold objects (or lists of them): Pulumi.yaml's typed config cannot declare them (no object type). */
export const OBJECT_KEYS = ["env", "secretEnv", "egress"] as const;
/** Settings always handled as secrets. */
export const SECRET_KEYS = ["secretEnv"] as const;

/** A validated config plus what was derived from it. */
export interface StackConfig extends Settings {
  /** Fully qualified host name the site answers on. */
  fqdn: string;
  /** Absolute path of the app folder. */
  appDir: string;
  /** True when the app folder has a static/ folder that nginx serves. */
  hasStatic: boolean;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid dropstack configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    this.name = "ConfigError";
  }
}

const NON_STRING = new Set(["ipv6", "monitoring", "backups", "protect", "tags", "sshAllowedCidrs", "egress", "adminSshKeys",
  "tls", "hsts", "workers", "aptPackages", "env", "secretEnv", "keepReleases", "healthStatus", "healthTimeout", "healthAttempts"]);

/**
 * Turns Pulumi's flat config map ("dropstack:key" → string, JSON for non-strings) into raw values.
 * Unknown keys in the namespace are reported rather than ignored (a typo must not fall back to a default).
 */
export function rawFromPulumiConfig(all: Record<string, string>): { raw: Record<string, unknown>; problems: string[] } {
  const raw: Record<string, unknown> = {};
  const problems: string[] = [];
  const known = Object.keys(schema.shape);
  for (const [fullKey, text] of Object.entries(all)) {
    if (!fullKey.startsWith(`${NAMESPACE}:`)) continue;
    const key = fullKey.slice(NAMESPACE.length + 1);
    if (!known.includes(key)) {
      problems.push(`${fullKey}: not a dropstack setting (known: ${known.join(", ")})`);
      continue;
    }
    if (!NON_STRING.has(key)) {
      raw[key] = text;
      continue;
    }
    try {
      raw[key] = JSON.parse(text);
    } catch {
      raw[key] = text; // not JSON: the schema reports what type it expected
    }
  }
  return { raw, problems };
}

/** Resolves the WSGI module to a file under the app folder, or undefined. */
function wsgiModuleFile(appDir: string, wsgi: string): string | undefined {
  const modulePath = wsgi.split(":")[0].split(".");
  const candidates = [
    path.join(appDir, ...modulePath) + ".py",
    path.join(appDir, ...modulePath, "__init__.py"),
  ];
  return candidates.find((c) => fs.existsSync(c));
}

function crossChecks(s: Settings, projectDir: string): string[] {
  const problems: string[] = [];
  const key = (k: string) => `${NAMESPACE}:${k}`;
  if (s.tls && !s.acmeEmail) {
    problems.push(`${key("acmeEmail")}: required when ${key("tls")} is true (Let's Encrypt sends expiry notices there), e.g. "ops@example.com"`);
  }
  const appDir = path.resolve(projectDir, s.appSource);
  if (!fs.existsSync(appDir) || !fs.statSync(appDir).isDirectory()) {
    problems.push(`${key("appSource")}: folder ${JSON.stringify(s.appSource)} does not exist (resolved to ${appDir}); expected the app's source folder, e.g. "app"`);
  } else if (!wsgiModuleFile(appDir, s.wsgi)) {
    const mod = s.wsgi.split(":")[0];
    problems.push(`${key("wsgi")}: module ${JSON.stringify(mod)} is not in ${s.appSource}/ (looked for ${mod.replace(/\./g, "/")}.py and ${mod.replace(/\./g, "/")}/__init__.py); expected module:callable of a file in the app folder, e.g. "app:app"`);
  }
  const dupe = Object.keys(s.env).filter((k) => k in s.secretEnv);
  if (dupe.length) {
    problems.push(`${key("env")}: ${dupe.join(", ")} also set in ${key("secretEnv")}; set each variable in one of them only`);
  }
  return problems;
}

function formatIssue(issue: z.ZodIssue): string {
  const [top, ...rest] = issue.path;
  const where = `${NAMESPACE}:${String(top ?? "")}${rest.map((p) => (typeof p === "number" ? `[${p}]` : `.${p}`)).join("")}`;
  if (issue.code === "unrecognized_keys" && issue.path.length) {
    return `${where}: unknown field${issue.keys.length > 1 ? "s" : ""} ${issue.keys.join(", ")}`;
  }
  if (issue.code === "unrecognized_keys") {
    return `${issue.keys.map((k) => `${NAMESPACE}:${k}`).join(", ")}: not a dropstack setting`;
  }
  if (issue.code === "invalid_type" && issue.received === "undefined") {
    return `${where}: ${issue.message === "Required" ? "required" : issue.message}`;
  }
  return `${where}: ${issue.message}`;
}

/** Validates raw values; throws one ConfigError naming every problem. */
export function parseSettings(raw: Record<string, unknown>, projectDir: string, earlier: string[] = []): StackConfig {
  const result = schema.safeParse(raw);
  const problems = [...earlier];
  if (!result.success) problems.push(...result.error.issues.map(formatIssue));
  if (problems.length || !result.success) {
    throw new ConfigError(problems);
  }
  const s = result.data;
  const cross = crossChecks(s, projectDir);
  if (cross.length) throw new ConfigError(cross);
  const appDir = path.resolve(projectDir, s.appSource);
  return {
    ...s,
    fqdn: s.host === "@" ? s.domain : `${s.host}.${s.domain}`,
    appDir,
    hasStatic: fs.existsSync(path.join(appDir, "static")),
  };
}

/** Reads and validates the current stack's config ("dropstack:*"). */
export function loadConfig(all: Record<string, string>, projectDir: string): StackConfig {
  const { raw, problems } = rawFromPulumiConfig(all);
  return parseSettings(raw, projectDir, problems);
}

// The stack's settings: one typed, validated object read from Pulumi config.
//
// Every setting is declared once here (schema, default, example) and mirrored in Pulumi.yaml's
// `config:` block for the CLI (a unit test keeps the two in step). Validation happens before any
// resource is registered, and reports every bad setting at once, each naming its key, the problem
// and an example of a good value.
import * as crypto from "crypto";
import * as fs from "fs";
import * as path from "path";
import { z } from "zod";
import { readDumpInfo } from "./dump";
import { REFUSED_IN_APP } from "./shell";
import { ALLOW_ALL, coversFamily, formatCidr, hasHostBits, hasLeadingZeroPrefix, Network, overlaps, parseCidr } from "./cidr";

export const NAMESPACE = "dropstack";

const LETS_ENCRYPT_PRODUCTION = "https://acme-v02.api.letsencrypt.org/directory";
export const LETS_ENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory";

const label = "[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?";
const DOMAIN_RE = new RegExp(`^(?:${label}\\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]$`);
const HOST_RE = new RegExp(`^(?:@|${label}(?:\\.${label})*)$`);
const PYTHON_IDENT = "[A-Za-z_][A-Za-z0-9_]*";
const WSGI_RE = new RegExp(`^(${PYTHON_IDENT}(?:\\.${PYTHON_IDENT})*):(${PYTHON_IDENT})(\\(\\))?$`);
/** Longest DNS name (RFC 1035: 253 characters in text form). */
const MAX_FQDN = 253;

/**
 * Accounts a Debian droplet has, or that dropstack's packages create: the app user and the deploy
 * user must be neither (a collision would run the web app as nginx's user, or hand an existing
 * system account password-less sudo through cloud-init). Debian's base-passwd (passwd.master,
 * group.master), then the accounts found on a provisioned droplet (the packages dropstack installs
 * add none of their own: nginx runs as www-data).
 */
export const RESERVED_ACCOUNTS: readonly string[] = [
  // base-passwd 3.6 passwd.master
  "root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp", "proxy", "www-data",
  "backup", "list", "irc", "_apt", "nobody",
  // base-passwd 3.6 group.master (groups: useradd --user-group and cloud-init fail or join them)
  "adm", "tty", "disk", "kmem", "dialout", "fax", "voice", "cdrom", "floppy", "tape", "sudo", "audio", "dip",
  "operator", "src", "shadow", "utmp", "video", "sasl", "plugdev", "staff", "users", "nogroup",
  // accounts of a provisioned Debian 12 droplet beyond base-passwd (systemd, dbus, OpenSSH, cloud-init, cron)
  "systemd-journal", "systemd-network", "systemd-resolve", "systemd-timesync", "systemd-coredump", "input", "kvm",
  "render", "sgx", "netdev", "crontab", "messagebus", "sshd", "_ssh",
  // what database: droplet adds (Debian's postgresql-common and its ssl-cert dependency)
  "postgres", "ssl-cert",
];

/** Settings whose values may be stored with `--secret`, and the step each one flows into. */
export const SECRET_CAPABLE = {
  acmeEmail: "certificate",
  acmeServer: "certificate",
  acmeCaBundle: "certificate",
  env: "release",
  secretEnv: "release",
  releaseCommand: "release",
} as const;
export type SecretStep = (typeof SECRET_CAPABLE)[keyof typeof SECRET_CAPABLE];

const SSH_KEY_TYPES: Record<string, string[]> = {
  // key type → the fields of its blob after the type name (OpenSSH PROTOCOL / RFC 4253, 5656, 8709)
  "ssh-ed25519": ["key32"],
  "ssh-rsa": ["mpint", "mpint"],
  "ecdsa-sha2-nistp256": ["curve", "point"],
  "ecdsa-sha2-nistp384": ["curve", "point"],
  "ecdsa-sha2-nistp521": ["curve", "point"],
  "sk-ssh-ed25519@openssh.com": ["key32", "string"],
  "sk-ecdsa-sha2-nistp256@openssh.com": ["curve", "point", "string"],
};

/** True when `blob` is exactly a complete public key of `type`: every field present, nothing after. */
function completeKeyBlob(type: string, blob: Buffer): boolean {
  let at = 0;
  const next = (): Buffer | undefined => {
    if (at + 4 > blob.length) return undefined;
    const len = blob.readUInt32BE(at);
    if (at + 4 + len > blob.length) return undefined;
    const field = blob.subarray(at + 4, at + 4 + len);
    at += 4 + len;
    return field;
  };
  if (next()?.toString("latin1") !== type) return false;
  for (const kind of SSH_KEY_TYPES[type]) {
    const field = next();
    if (!field || field.length === 0) return false;
    if (kind === "key32" && field.length !== 32) return false;
    if (kind === "curve" && `ecdsa-sha2-${field.toString("latin1")}` !== type.replace(/^sk-/, "").replace(/@openssh\.com$/, "")) return false;
    if (kind === "point" && field[0] !== 4) return false;
  }
  return at === blob.length;
}

/** True when `line` is one OpenSSH public key line whose base64 blob is a complete key of the named type. */
export function isOpenSshPublicKey(line: string): boolean {
  const m = /^(\S{1,64}) ([A-Za-z0-9+/]{1,16384}={0,2})(?: [^\r\n]*)?$/.exec(line);
  if (!m || !(m[1] in SSH_KEY_TYPES)) return false;
  const blob = Buffer.from(m[2], "base64");
  return blob.toString("base64") === m[2] && completeKeyBlob(m[1], blob);
}

/** An email address without whitespace, one @, a dotted domain, not read as an option; linear time. */
function isEmail(value: string): boolean {
  const at = value.indexOf("@");
  if (at <= 0 || at !== value.lastIndexOf("@") || /\s/.test(value) || value.startsWith("-")) return false;
  return /^[^.\s]+(?:\.[^.\s]+)+$/.test(value.slice(at + 1));
}

/** A string setting: at most `max` characters (checked first: no pattern ever runs on a huge value), then `test`. */
const text = (test: RegExp | ((v: string) => boolean), what: string, example: string, max: number) =>
  z.string({ invalid_type_error: `expected a string: ${what}, e.g. ${example}` }).superRefine((v, ctx) => {
    if (v.length > max) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: `too long (${v.length} characters, at most ${max}): expected ${what}, e.g. ${example}` });
    } else if (!(typeof test === "function" ? test(v) : test.test(v))) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: `expected ${what}, e.g. ${example}` });
    }
  });
const str = (re: RegExp, what: string, example: string, max = 255) => text(re, what, example, max);

/** Problems of one network entry: not CIDR, a prefix with a leading zero, host bits set. */
function networkProblem(value: string, example: string): string | undefined {
  const allowAll = `use "${ALLOW_ALL[4]}" and "${ALLOW_ALL[6]}" to allow every address explicitly`;
  if (hasLeadingZeroPrefix(value)) return `${JSON.stringify(value)}: the prefix length has a leading zero; write it without, e.g. "${example}"`;
  const n = parseCidr(value);
  if (!n) return `expected CIDR networks, e.g. "${example}"; ${allowAll}`;
  if (hasHostBits(n)) {
    const one = `${value.split("/")[0]}/${n.family === 4 ? 32 : 128}`;
    return `${JSON.stringify(value)} has host bits set: write the network "${formatCidr(n)}" or the one address "${one}"`;
  }
  return undefined;
}

/**
 * A required, non-empty list of CIDR networks, returned in canonical form. Refused: entries that
 * are not networks, and lists that cover a whole address family without writing the explicit
 * allow-all (split into halves, /1s, odd spellings). `distinct`: overlapping or duplicate entries
 * are refused too (nftables refuses them in an interval set).
 */
const cidrList = (example: string, what: string, opts: { allowAllHint?: string; distinct?: boolean } = {}) =>
  z.array(
    z.string({ invalid_type_error: `expected CIDR networks, e.g. "${example}"` }).superRefine((v, ctx) => {
      const problem = v.length > 64 ? `too long: expected CIDR networks, e.g. "${example}"` : networkProblem(v, example);
      if (problem) ctx.addIssue({ code: z.ZodIssueCode.custom, message: problem });
    }),
    { required_error: `required: ${what}, e.g. ["${example}"]${opts.allowAllHint ?? ""}`, invalid_type_error: `expected a list of CIDR networks, e.g. ["${example}"]` },
  ).min(1, `expected at least one network, e.g. ["${example}"]${opts.allowAllHint ?? ""}`)
    .max(200, `expected at most 200 networks; use wider networks, e.g. ["${example}"]`)
    .superRefine((list, ctx) => {
      const entries = list.flatMap((v, i) => {
        const n = v.length <= 64 ? parseCidr(v) : undefined;
        return n && !hasHostBits(n) && !hasLeadingZeroPrefix(v) ? [{ v, i, n }] : [];
      });
      const networks: Network[] = entries.map((e) => e.n);
      for (const family of [4, 6] as const) {
        if (coversFamily(networks, family) && !list.includes(ALLOW_ALL[family])) {
          ctx.addIssue({ code: z.ZodIssueCode.custom, message: `together these networks cover every IPv${family} address: that is allow-all; write "${ALLOW_ALL[family]}" to allow it explicitly, or list only your own networks, e.g. ["${example}"]` });
        }
      }
      if (!opts.distinct) return;
      for (const [a, b] of overlaps(networks)) {
        const [x, y] = [entries[a], entries[b]];
        const same = formatCidr(x.n) === formatCidr(y.n);
        ctx.addIssue({
          code: z.ZodIssueCode.custom, path: [y.i],
          message: same
            ? `${JSON.stringify(y.v)} is listed twice (also as entry ${x.i}, ${JSON.stringify(x.v)}); list each network once`
            : `${JSON.stringify(y.v)} overlaps ${JSON.stringify(x.v)} (entry ${x.i}): the host firewall refuses overlapping networks; keep only the wider one`,
        });
      }
    })
    .transform((list) => list.map((v) => formatCidr(parseCidr(v) as Network)));

const PRIVATE_KEY_RE = /-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY-----/;

const envMap = (example: string, privateKeyHint: string) =>
  z.record(
    z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,127}$/, `expected environment variable names (letters, digits, _; not starting with a digit), e.g. ${example}`),
    z.string({ invalid_type_error: `expected string values, e.g. ${example}` })
      .max(65536, "expected values of at most 64 KiB")
      .refine((v) => !v.includes("\0"), "values cannot contain NUL bytes")
      .refine((v) => !privateKeyHint || !PRIVATE_KEY_RE.test(v), privateKeyHint),
    { invalid_type_error: `expected a map of NAME: value, e.g. ${example}` },
  ).refine((m) => Object.keys(m).length <= 200, "expected at most 200 variables").default({});

/**
 * Checks a PEM bundle strictly: only CERTIFICATE blocks (each a certificate Node can parse), only
 * blank lines between them. Returns the problem, or undefined. Never echoes the content.
 */
function caBundleProblem(bundle: string): string | undefined {
  const example = "the CA's PEM file: -----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----";
  if (bundle.length > 1_000_000) return `too long (${bundle.length} characters, at most 1000000): expected ${example}`;
  if (PRIVATE_KEY_RE.test(bundle)) return "holds a private key: a CA bundle holds only certificates (never put a private key in it; rotate that key if it was shared)";
  const lines = bundle.replace(/\r\n/g, "\n").replace(/\s+$/, "").split("\n");
  let block: string[] | undefined;
  let count = 0;
  for (const [i, line] of lines.entries()) {
    const begin = /^-----BEGIN ([A-Z0-9 ]{1,40})-----$/.exec(line);
    if (block === undefined) {
      if (line.trim() === "") continue;
      if (!begin) return `line ${i + 1} is outside any PEM block; expected only ${example}`;
      if (begin[1] !== "CERTIFICATE") return `holds a ${begin[1]} block at line ${i + 1}; expected only certificates (${example})`;
      block = [];
    } else if (line === "-----END CERTIFICATE-----") {
      try {
        new crypto.X509Certificate(`-----BEGIN CERTIFICATE-----\n${block.join("\n")}\n-----END CERTIFICATE-----\n`);
      } catch {
        return `the certificate ending at line ${i + 1} cannot be parsed; expected ${example}`;
      }
      block = undefined;
      count++;
    } else if (/^[A-Za-z0-9+/]{1,76}={0,2}$/.test(line)) {
      block.push(line);
    } else {
      return `line ${i + 1} is not base64 inside a certificate; expected ${example}`;
    }
  }
  if (block !== undefined) return `the last certificate has no -----END CERTIFICATE----- line; expected ${example}`;
  return count ? undefined : `expected at least one certificate: ${example}`;
}

/** Where the database can run. */
export const DATABASE_MODES = ["none", "droplet", "managed"] as const;

/** PostgreSQL major versions DigitalOcean's managed clusters offer. */
export const MANAGED_POSTGRES_VERSIONS = ["13", "14", "15", "16", "17"] as const;

/** The port of every DigitalOcean managed PostgreSQL cluster (public and private). */
export const MANAGED_POSTGRES_PORT = 25060;

/**
 * The PostgreSQL major version Debian ships in each image's release: what `database: droplet`
 * installs, and the newest major a seed dump may come from.
 */
export const POSTGRES_MAJOR_BY_IMAGE: Readonly<Record<string, number>> = { "debian-11-x64": 13, "debian-12-x64": 15, "debian-13-x64": 17 };

/** The schema: key → validation, default and the example quoted in errors. */
export const schema = z.object({
  /** DigitalOcean-managed DNS zone the site lives in. */
  domain: str(DOMAIN_RE, "a DNS zone managed by DigitalOcean (lower case)", "example.com", MAX_FQDN),
  /** Host name within the zone; "@" for the zone apex. */
  host: str(HOST_RE, 'a host label within the domain, or "@" for the apex', '"api" or "@"', MAX_FQDN).default("@"),
  /** DigitalOcean region slug. */
  region: str(/^[a-z]{3}[0-9]$/, "a DigitalOcean region slug", '"fra1" or "nyc3"').default("fra1"),
  /** DigitalOcean droplet size slug. */
  size: str(/^[a-z0-9]+(?:-[a-z0-9]+)+$/, "a DigitalOcean size slug", '"s-1vcpu-1gb"').default("s-1vcpu-1gb"),
  /** Droplet image slug: Debian (the remote steps use apt and Debian's packages). */
  image: str(/^debian-[0-9]{1,3}-x64$/, "a Debian image slug (the remote steps use apt and Debian's packages)", '"debian-12-x64"').default("debian-12-x64"),
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
    { invalid_type_error: 'expected a list of tags, e.g. ["team-web"]' }).max(50, 'expected at most 50 tags, e.g. ["team-web"]').default([]),
  /** Networks allowed to reach SSH (port 22). Required: there is no allow-all default. */
  sshAllowedCidrs: cidrList("203.0.113.0/24", "the networks that may reach SSH", { allowAllHint: ' (or ["0.0.0.0/0", "::/0"] to allow all, explicitly)', distinct: true }),
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
  { invalid_type_error: 'expected a list of rules, e.g. [{"ports": 5432, "to": ["10.114.0.0/20"]}]' })
    .max(50, 'expected at most 50 rules, e.g. [{"ports": 5432, "to": ["10.114.0.0/20"]}]').default([]),
  /** Public keys of the humans who may log in as the deploy user. */
  adminSshKeys: z.array(
    // A trailing newline (what `cat key.pub` gives in a YAML block) is trimmed.
    text((k) => isOpenSshPublicKey(k.replace(/\s+$/, "")), 'an OpenSSH public key line (the content of a .pub file; never a private key)', '"ssh-ed25519 AAAAC3Nza... alice@laptop"', 16384)
      .transform((k) => k.replace(/\s+$/, "")),
    { invalid_type_error: 'expected a list of public key lines, e.g. ["ssh-ed25519 AAAAC3Nza... alice@laptop"]' },
  ).max(100, "expected at most 100 keys").default([]),
  /** Unprivileged login user that deploys run as. */
  deployUser: str(/^[a-z_][a-z0-9_-]{0,31}$/, "a Unix user name", '"deploy"')
    .refine((u) => u !== "root", 'must not be "root"; use an unprivileged name such as "deploy"').default("deploy"),
  /** Serve HTTPS with a certificate from the ACME server. */
  tls: z.boolean({ invalid_type_error: "expected true or false" }).default(true),
  /** Send Strict-Transport-Security (browsers then refuse plain HTTP for two years). */
  hsts: z.boolean({ invalid_type_error: "expected true or false" }).default(false),
  /** Read the server's drift check (dropstack-check, over SSH) at every preview and up: a step whose files were edited by hand runs again and restores them. */
  driftCheck: z.boolean({ invalid_type_error: "expected true or false" }).default(true),
  /** Contact email for the ACME account; required when tls is on. */
  acmeEmail: text(isEmail, "an email address", '"ops@example.com"', 254).optional(),
  /** ACME directory URL. */
  acmeServer: str(/^https:\/\/[^\s]+$/, "an https ACME directory URL", `"${LETS_ENCRYPT_STAGING}"`, 2048).default(LETS_ENCRYPT_PRODUCTION),
  /** PEM CA bundle the server must trust to reach a private ACME server. */
  acmeCaBundle: z.string({ invalid_type_error: "expected PEM certificates as one string (-----BEGIN CERTIFICATE----- ...)" }).superRefine((v, ctx) => {
    const problem = caBundleProblem(v);
    if (problem) ctx.addIssue({ code: z.ZodIssueCode.custom, message: problem });
  }).optional(),
  /** Name of the app: its Unix user, supervisor program and /srv/<appName>. */
  appName: str(/^[a-z][a-z0-9-]{0,30}$/, "a short lower-case name", '"shop"').default("app"),
  /** Folder with the app's source, relative to the project. */
  appSource: text((v) => v.length > 0 && !v.includes("\0"), "a folder path", '"app"', 4096).default("app"),
  /** How the app runs: python (gunicorn under supervisor, a virtualenv per release) or docker (the app folder's Dockerfile, built on the droplet). */
  runtime: z.enum(["python", "docker"], { errorMap: () => ({ message: 'expected "python" or "docker", e.g. "docker" for an app folder with a Dockerfile' }) }).default("python"),
  /** Memory limit of the app's container in MiB (runtime docker). */
  containerMemory: z.number({ invalid_type_error: "expected MiB as a whole number, e.g. 512" })
    .int("expected MiB as a whole number, e.g. 512").min(64, "expected at least 64 MiB, e.g. 512").max(262144, "expected at most 262144 MiB, e.g. 512").default(512),
  /** WSGI target as module:callable (a factory as module:create_app()). */
  wsgi: str(WSGI_RE, "a WSGI target module:callable", '"app:app" or "shop.wsgi:create_app()"', 1024).default("app:app"),
  /** gunicorn workers; unset means 2 x CPUs + 1 on the server. */
  workers: z.number({ invalid_type_error: "expected a whole number of workers, e.g. 3" })
    .int("expected a whole number of workers, e.g. 3").min(1, "expected at least 1 worker, e.g. 3").max(64, "expected at most 64 workers, e.g. 3").optional(),
  /** Extra Debian packages installed on the server. */
  aptPackages: z.array(str(/^[a-z0-9][a-z0-9+.-]+$/, "Debian package names", '["libpq5"]'),
    { invalid_type_error: 'expected a list of Debian package names, e.g. ["libpq5"]' }).max(200, 'expected at most 200 packages, e.g. ["libpq5"]').default([]),
  /** Plain environment variables for the app. */
  env: envMap('{"LOG_LEVEL": "info"}', "holds a private key: put it in dropstack:secretEnv (pulumi config set --secret --path 'dropstack:secretEnv.NAME'), where it stays secret"),
  /** Secret environment variables (pulumi config set --secret --path 'dropstack:secretEnv.NAME'). */
  secretEnv: envMap('{"DATABASE_URL": "postgres://..."}', ""),
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
  releaseCommand: text((c) => c.trim() !== "" && !c.includes("\0"), "a shell command (not blank, no NUL bytes)", '"flask db upgrade"', 65536).optional(),
  /** A version label for releases (shown in the release id). */
  releaseVersion: str(/^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$/, "a version label of letters, digits, '.', '_' or '-', starting with a letter or digit (the server would read '-x' as an option and hide '.x')", '"v1.4.2"').optional(),
  /** Releases kept on the server (the current and previous ones are never removed). */
  keepReleases: z.number({ invalid_type_error: "expected a whole number, e.g. 5" })
    .int("expected a whole number, e.g. 5").min(2, "expected at least 2 (current and previous), e.g. 5").max(50, "expected at most 50, e.g. 5").default(5),
  /**
   * Size in GiB of a DigitalOcean Block Storage volume that holds /srv/<app>/shared and the
   * database's data: it outlives the droplet (a replaced droplet gets the same volume). Growing it
   * resizes the filesystem in place; a volume never shrinks. Unset: no volume.
   */
  volumeSize: z.number({ invalid_type_error: "expected a size in GiB, e.g. 10" })
    .int("expected a whole number of GiB, e.g. 10").min(1, "expected at least 1 GiB, e.g. 10").max(16384, "expected at most 16384 GiB (DigitalOcean's largest volume), e.g. 10").optional(),
  /**
   * Where the app's PostgreSQL runs: "none"; "droplet" (Debian's PostgreSQL on the droplet, its
   * data on the volume); or "managed" (a DigitalOcean Managed PostgreSQL cluster in the droplet's
   * VPC that trusts only the droplet). The app gets DATABASE_URL either way.
   */
  database: z.enum(DATABASE_MODES, { errorMap: () => ({ message: `expected one of ${DATABASE_MODES.map((m) => `"${m}"`).join(", ")}, e.g. "droplet"` }) }).default("none"),
  /** With database "managed": the cluster's PostgreSQL major version. */
  databaseVersion: z.union([z.number(), z.string()], { errorMap: () => ({ message: `expected a PostgreSQL major version DigitalOcean offers (${MANAGED_POSTGRES_VERSIONS.join(", ")}), e.g. "16"` }) })
    // `pulumi config set dropstack:databaseVersion 16` stores text that reads as a number
    .transform(String)
    .refine((v) => (MANAGED_POSTGRES_VERSIONS as readonly string[]).includes(v), { message: `expected a PostgreSQL major version DigitalOcean offers (${MANAGED_POSTGRES_VERSIONS.join(", ")}), e.g. "16"` })
    .optional(),
  /** With database "managed": the cluster's size slug. */
  databaseSize: str(/^db-[a-z0-9]+(?:-[a-z0-9]+)+$/, "a DigitalOcean database size slug", '"db-s-1vcpu-1gb"').optional(),
  /** With database "managed": the cluster's nodes (1 primary, up to 2 standbys). */
  databaseNodes: z.number({ invalid_type_error: "expected 1, 2 or 3 nodes, e.g. 1" })
    .int("expected 1, 2 or 3 nodes, e.g. 1").min(1, "expected 1, 2 or 3 nodes, e.g. 1").max(3, "expected 1, 2 or 3 nodes, e.g. 1").optional(),
  /** A pg_dump file (custom format or plain SQL), relative to the project, restored once into the empty database before the first release. */
  databaseSeed: text((v) => v.length > 0 && !v.includes("\0"), "a pg_dump file's path, relative to the project", '"db/seed.dump"', 4096).optional(),
  /**
   * A folder with a built web client (index.html and its assets, e.g. the output of `npm run
   * build`), relative to the project: nginx serves it at / (unknown paths fall back to index.html
   * for client-side routes), while the app answers under apiPrefix. Released with the app, in the
   * same release folder and the same switch. Unset: the app answers at /.
   */
  clientSource: text((v) => v.length > 0 && !v.includes("\0"), "a folder with a built client (index.html and assets), relative to the project", '"client/dist"', 4096).optional(),
  /** With clientSource: the path under which nginx hands requests to the app (passed on unchanged), e.g. "/api". */
  apiPrefix: str(/^(?:\/[A-Za-z0-9._~-]+)+$/, "a URL path prefix such as /api (letters, digits, '.', '_', '~', '-'; no trailing /)", '"/api"', 256).optional(),
  /**
   * Droplets serving the app. 1: one droplet that serves HTTPS itself. More: that many droplets,
   * each provisioned alike, in the region's VPC behind a DigitalOcean Load Balancer that terminates
   * HTTPS; releases roll one droplet at a time. Needs a database outside the droplets ("managed" or "none").
   */
  droplets: z.number({ invalid_type_error: "expected a whole number of droplets, e.g. 2" })
    .int("expected a whole number of droplets, e.g. 2").min(1, "expected at least 1 droplet, e.g. 2").max(10, "expected at most 10 droplets, e.g. 3").default(1),
  /** With droplets > 1: seconds between the load balancer's health checks of each droplet (DigitalOcean's default: 10). */
  lbCheckInterval: z.number({ invalid_type_error: "expected seconds, e.g. 10" })
    .int("expected whole seconds, e.g. 10").min(3, "expected at least 3 seconds, e.g. 10").max(300, "expected at most 300 seconds, e.g. 10").optional(),
  /** With droplets > 1: seconds the load balancer waits for a health check's answer (DigitalOcean's default: 5). */
  lbResponseTimeout: z.number({ invalid_type_error: "expected seconds, e.g. 5" })
    .int("expected whole seconds, e.g. 5").min(3, "expected at least 3 seconds, e.g. 5").max(300, "expected at most 300 seconds, e.g. 5").optional(),
  /** With droplets > 1: passed checks in a row before a droplet gets traffic (DigitalOcean's default: 5). */
  lbHealthyThreshold: z.number({ invalid_type_error: "expected a number of checks, e.g. 5" })
    .int("expected a whole number of checks, e.g. 5").min(2, "expected at least 2 checks, e.g. 5").max(10, "expected at most 10 checks, e.g. 5").optional(),
  /** With droplets > 1: failed checks in a row before a droplet is taken out of rotation (DigitalOcean's default: 3). */
  lbUnhealthyThreshold: z.number({ invalid_type_error: "expected a number of checks, e.g. 3" })
    .int("expected a whole number of checks, e.g. 3").min(2, "expected at least 2 checks, e.g. 3").max(10, "expected at most 10 checks, e.g. 3").optional(),
  /**
   * Seconds resolvers may keep the site's DNS records (their TTL). Also how long a stack grown from
   * one droplet keeps serving HTTPS on the first droplet after the name moved to the load balancer
   * (plus 30 s for DigitalOcean's name servers): clients that resolved the name before still reach it.
   */
  dnsTtl: z.number({ invalid_type_error: "expected seconds, e.g. 300" })
    .int("expected whole seconds, e.g. 300").min(30, "expected at least 30 seconds (DigitalOcean's lowest TTL), e.g. 300").max(86400, "expected at most 86400 seconds (a day), e.g. 300").default(300),
  /** Days the nightly database backups on the volume are kept (the newest is always kept). */
  backupKeepDays: z.number({ invalid_type_error: "expected a number of days, e.g. 7" })
    .int("expected whole days, e.g. 7").min(1, "expected at least 1 day, e.g. 7").max(3650, "expected at most 3650 days, e.g. 7").default(7),
}).strict();

export type Settings = z.infer<typeof schema>;
/** One extra outbound rule as validated: protocol, a port or "from-to" range, networks in canonical form. */
export type EgressRule = Settings["egress"][number];

/** Settings that hold objects (or lists of them): Pulumi.yaml's typed config cannot declare them (no object type). */
export const OBJECT_KEYS = ["env", "secretEnv", "egress"] as const;
/** A validated config plus what was derived from it. */
export interface StackConfig extends Settings {
  /** Fully qualified host name the site answers on. */
  fqdn: string;
  /** Absolute path of the app folder. */
  appDir: string;
  /** True when the app folder has a static/ folder that nginx serves. */
  hasStatic: boolean;
  /** Steps that carry a value stored with `--secret` (or secretEnv): they log nothing and their stdin and output are secret. */
  secretSteps: SecretStep[];
  /** Things worth a warning that do not stop the update (pulumi up prints them). */
  warnings: string[];
  /** With a database: the server's PostgreSQL major version (droplet: the image's release; managed: databaseVersion). */
  postgresMajor?: number;
  /** With database "managed": the cluster's settings, defaults filled in. */
  managed?: { version: string; size: string; nodes: number };
  /** The seed dump, resolved: its absolute path and format. */
  seed?: { file: string; format: "custom" | "plain" };
  /** With clientSource: the client folder's absolute path and the prefix the app answers under. */
  client?: { dir: string; apiPrefix: string };
  /** With droplets > 1: the load balancer's health check, defaults filled in. */
  fleet?: { droplets: number; health: LbHealth };
}

/** The load balancer's health check of each droplet (DigitalOcean's semantics: a droplet leaves rotation after `unhealthyThreshold` failed checks `intervalSeconds` apart, and comes back after `healthyThreshold` passed ones). */
export interface LbHealth {
  intervalSeconds: number;
  timeoutSeconds: number;
  healthyThreshold: number;
  unhealthyThreshold: number;
}

/** DigitalOcean's defaults for a load balancer's health check. */
export const DEFAULT_LB_HEALTH: LbHealth = { intervalSeconds: 10, timeoutSeconds: 5, healthyThreshold: 5, unhealthyThreshold: 3 };

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid dropstack configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    this.name = "ConfigError";
  }
}

/** Settings whose config text is JSON (everything that is not a plain string in the schema). */
function isStringSetting(key: string): boolean {
  let field = schema.shape[key as keyof typeof schema.shape] as z.ZodTypeAny;
  while (field instanceof z.ZodDefault || field instanceof z.ZodOptional || field instanceof z.ZodEffects) {
    field = field instanceof z.ZodEffects ? field.innerType() : field._def.innerType;
  }
  return field instanceof z.ZodString;
}

/** Edit distance, for namespaces that look like a typo of ours (short strings only). */
function editDistance(a: string, b: string): number {
  let row = [...Array(b.length + 1).keys()];
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) next.push(Math.min(row[j] + 1, next[j - 1] + 1, row[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1)));
    row = next;
  }
  return row[b.length];
}

/**
 * Turns Pulumi's flat config map ("dropstack:key" → string, JSON for non-strings) into raw values.
 * Unknown keys in the namespace are reported rather than ignored (a typo must not fall back to a
 * default); keys in a namespace that looks like a typo of ours are warned about.
 */
export function rawFromPulumiConfig(all: Record<string, string>): { raw: Record<string, unknown>; problems: string[]; warnings: string[] } {
  const raw: Record<string, unknown> = {};
  const problems: string[] = [];
  const warnings: string[] = [];
  const known = Object.keys(schema.shape);
  for (const [fullKey, text] of Object.entries(all)) {
    const ns = fullKey.slice(0, Math.max(0, fullKey.indexOf(":")));
    if (ns !== NAMESPACE) {
      if (ns.length <= 20 && editDistance(ns.toLowerCase(), NAMESPACE) <= 2) {
        warnings.push(`${fullKey}: the namespace "${ns}" looks like a typo of "${NAMESPACE}"; dropstack reads only ${NAMESPACE}:* settings, so this one is ignored`);
      }
      continue;
    }
    const key = fullKey.slice(NAMESPACE.length + 1);
    if (!known.includes(key)) {
      problems.push(`${fullKey}: not a dropstack setting (known: ${known.join(", ")})`);
      continue;
    }
    if (isStringSetting(key)) {
      if (/^\s*[[{]/.test(text)) {
        try {
          const parsed: unknown = JSON.parse(text);
          if (typeof parsed === "object" && parsed !== null) {
            problems.push(`${fullKey}: expected a single string, got ${Array.isArray(parsed) ? "a list" : "a map"} (YAML block or JSON); write one value, e.g. pulumi config set ${fullKey} "<value>"`);
            continue;
          }
        } catch {
          // not JSON: a string that merely starts with a bracket, e.g. a shell test
        }
      }
      raw[key] = text;
      continue;
    }
    try {
      raw[key] = JSON.parse(text);
    } catch {
      raw[key] = text; // not JSON: the schema reports what type it expected
    }
  }
  return { raw, problems, warnings };
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

/** The first folder under `dir` (relative path) whose name is in `names`, or undefined. */
function findFolder(dir: string, names: readonly string[]): string | undefined {
  const queue = [""];
  while (queue.length) {
    const rel = queue.shift() as string;
    for (const entry of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      if (!entry.isDirectory()) continue;
      const r = rel ? `${rel}/${entry.name}` : entry.name;
      if (names.includes(entry.name)) return r;
      queue.push(r);
    }
  }
  return undefined;
}

function appSourceProblems(s: Settings, projectDir: string): string[] {
  const key = `${NAMESPACE}:appSource`;
  const appDir = path.resolve(projectDir, s.appSource);
  if (!fs.existsSync(appDir) || !fs.statSync(appDir).isDirectory()) {
    return [`${key}: folder ${JSON.stringify(s.appSource)} does not exist (resolved to ${appDir}); expected the app's source folder, e.g. "app"`];
  }
  const project = path.resolve(projectDir);
  if (project === appDir || project.startsWith(appDir + path.sep)) {
    return [`${key}: ${JSON.stringify(s.appSource)} is the project folder or contains it: the whole repository (Pulumi files, node_modules, .git) would be uploaded to the server; put the app in a folder of its own, e.g. "app"`];
  }
  const refused = findFolder(appDir, REFUSED_IN_APP);
  if (refused) {
    return [`${key}: ${JSON.stringify(s.appSource)} contains ${refused}/, which must not reach the server (${REFUSED_IN_APP.join(", ")}: repository history, Node or local Python packages; the server builds its own virtualenv); move it out or point ${key} at a folder without it, e.g. "app"`];
  }
  if (s.runtime === "docker") {
    const dockerfile = path.join(appDir, "Dockerfile");
    if (!fs.existsSync(dockerfile) || !fs.statSync(dockerfile).isFile()) {
      return [`${NAMESPACE}:runtime: "docker" needs a Dockerfile in ${s.appSource}/ (looked for ${dockerfile}); add one (see the README's Dockerfile contract) or set ${NAMESPACE}:runtime to "python"`];
    }
    return [];
  }
  if (!wsgiModuleFile(appDir, s.wsgi)) {
    const mod = s.wsgi.split(":")[0];
    return [`${NAMESPACE}:wsgi: module ${JSON.stringify(mod)} is not in ${s.appSource}/ (looked for ${mod.replace(/\./g, "/")}.py and ${mod.replace(/\./g, "/")}/__init__.py); expected module:callable of a file in the app folder, e.g. "app:app"`];
  }
  return [];
}

function crossChecks(s: Settings, projectDir: string): string[] {
  const problems: string[] = [];
  const key = (k: string) => `${NAMESPACE}:${k}`;
  if (s.tls && !s.acmeEmail) {
    problems.push(`${key("acmeEmail")}: required when ${key("tls")} is true (Let's Encrypt sends expiry notices there), e.g. "ops@example.com"`);
  }
  if (s.host === s.domain || s.host.endsWith(`.${s.domain}`)) {
    const label = s.host === s.domain ? "@" : s.host.slice(0, -(s.domain.length + 1));
    problems.push(`${key("host")}: ${JSON.stringify(s.host)} is the full name; give the name within ${s.domain} only, e.g. ${JSON.stringify(label)}`);
  } else if (s.host !== "@" && s.host.length + 1 + s.domain.length > MAX_FQDN) {
    problems.push(`${key("host")}: ${s.host}.${s.domain} is ${s.host.length + 1 + s.domain.length} characters; a DNS name has at most ${MAX_FQDN}, e.g. "api"`);
  }
  for (const k of ["deployUser", "appName"] as const) {
    // deployUser "root" has its own message (schema)
    if (!(k === "deployUser" && s[k] === "root") && RESERVED_ACCOUNTS.includes(s[k])) {
      problems.push(`${key(k)}: ${JSON.stringify(s[k])} is an account or group that exists on a Debian droplet; ${k === "appName" ? "the app would run as it" : "it would get password-less sudo"}. Choose a name of its own, e.g. ${k === "appName" ? '"shop"' : '"deploy"'}`);
    }
  }
  if (s.appName === s.deployUser) {
    problems.push(`${key("appName")}: same as ${key("deployUser")} (${JSON.stringify(s.appName)}): the web app would run with the deploy user's password-less sudo; choose another name, e.g. "shop"`);
  }
  problems.push(...appSourceProblems(s, projectDir));
  const dupe = Object.keys(s.env).filter((k) => k in s.secretEnv);
  if (dupe.length) {
    problems.push(`${key("env")}: ${dupe.join(", ")} also set in ${key("secretEnv")}; set each variable in one of them only`);
  }
  return problems;
}

/** The default of apiPrefix (with a client). */
export const DEFAULT_API_PREFIX = "/api";

/** Paths nginx keeps for itself or the app's static files: an API prefix must not take them. */
const RESERVED_PREFIXES = ["/static", "/.well-known"];

/** A built client folder the server can serve, and an API prefix that cannot swallow nginx's own paths. */
function clientChecks(s: Settings, projectDir: string): { problems: string[]; client?: StackConfig["client"] } {
  const key = (k: string) => `${NAMESPACE}:${k}`;
  const problems: string[] = [];
  if (s.clientSource === undefined) {
    if (s.apiPrefix !== undefined) problems.push(`${key("apiPrefix")}: only used with ${key("clientSource")} (without a client the app answers at /); set ${key("clientSource")}, e.g. "client/dist", or remove ${key("apiPrefix")}`);
    return { problems };
  }
  const apiPrefix = s.apiPrefix ?? DEFAULT_API_PREFIX;
  const taken = RESERVED_PREFIXES.find((r) => apiPrefix === r || apiPrefix.startsWith(`${r}/`) || r.startsWith(`${apiPrefix}/`));
  if (taken) problems.push(`${key("apiPrefix")}: ${JSON.stringify(apiPrefix)} overlaps ${taken}, which nginx serves itself (${RESERVED_PREFIXES.join(", ")}); choose another prefix, e.g. "/api"`);
  const dir = path.resolve(projectDir, s.clientSource);
  const where = `${JSON.stringify(s.clientSource)} (resolved to ${dir})`;
  const example = 'e.g. "client/dist" (the folder `npm run build` writes)';
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) {
    problems.push(`${key("clientSource")}: folder ${where} does not exist; expected a built client with index.html, ${example}`);
    return { problems };
  }
  const project = path.resolve(projectDir);
  const appDir = path.resolve(projectDir, s.appSource);
  const inside = (a: string, b: string) => a === b || a.startsWith(b + path.sep);
  if (inside(project, dir)) {
    problems.push(`${key("clientSource")}: ${where} is the project folder or contains it: the whole repository would be served to the world; ${example}`);
  } else if (inside(dir, appDir) || inside(appDir, dir)) {
    problems.push(`${key("clientSource")}: ${where} and ${key("appSource")} ${JSON.stringify(s.appSource)} overlap: keep the client and the app in folders of their own, ${example}`);
  } else if (!fs.existsSync(path.join(dir, "index.html"))) {
    problems.push(`${key("clientSource")}: ${where} has no index.html; expected a built client (the output of your build, not its source), ${example}`);
  } else {
    const refused = findFolder(dir, REFUSED_IN_APP);
    if (refused) problems.push(`${key("clientSource")}: ${where} contains ${refused}/, which must not be served (${REFUSED_IN_APP.join(", ")}); point it at the build output, ${example}`);
  }
  return problems.length ? { problems } : { problems, client: { dir, apiPrefix } };
}

/** The managed cluster's settings when the stack leaves them unset: DigitalOcean's smallest single-node cluster. */
export const DEFAULT_MANAGED = { version: "16", size: "db-s-1vcpu-1gb", nodes: 1 } as const;

/** The database, its volume and its seed fit together; a seed dump the server could not restore is refused now. */
function dataChecks(s: Settings, projectDir: string): { problems: string[]; seed?: StackConfig["seed"] } {
  const key = (k: string) => `${NAMESPACE}:${k}`;
  const problems: string[] = [];
  if (s.database === "droplet" && s.volumeSize === undefined) {
    problems.push(`${key("volumeSize")}: required when ${key("database")} is "droplet" (PostgreSQL keeps its data on the volume, which outlives the droplet), e.g. 10`);
  }
  if (s.database !== "managed") {
    for (const k of ["databaseVersion", "databaseSize", "databaseNodes"] as const) {
      if (s[k] !== undefined) problems.push(`${key(k)}: only used with ${key("database")} "managed" (it sizes the managed cluster); set ${key("database")} to "managed", or remove ${key(k)}`);
    }
  }
  if (s.database !== "none") {
    // the droplet's own PostgreSQL (droplet) or its client tools (managed: seeds) come from the image's release
    if (!(s.image in POSTGRES_MAJOR_BY_IMAGE)) {
      problems.push(`${key("image")}: ${JSON.stringify(s.image)} has no known PostgreSQL release for ${key("database")} ${JSON.stringify(s.database)} (known: ${Object.keys(POSTGRES_MAJOR_BY_IMAGE).join(", ")}), e.g. "debian-12-x64"`);
    }
    const given = ["env", "secretEnv"].filter((k) => "DATABASE_URL" in s[k as "env" | "secretEnv"]);
    if (given.length) {
      problems.push(`${key(given[0])}: DATABASE_URL is set, but with ${key("database")} ${JSON.stringify(s.database)} dropstack gives the app its own DATABASE_URL (a generated password, kept secret); remove it from ${given.map(key).join(" and ")}`);
    }
  }
  if (s.databaseSeed === undefined) return { problems };
  if (s.database === "none") {
    problems.push(`${key("databaseSeed")}: there is no database to restore it into; set ${key("database")} to "droplet" or "managed", e.g. pulumi config set ${key("database")} droplet`);
    return { problems };
  }
  const file = path.resolve(projectDir, s.databaseSeed);
  if (!fs.existsSync(file) || !fs.statSync(file).isFile()) {
    problems.push(`${key("databaseSeed")}: file ${JSON.stringify(s.databaseSeed)} does not exist (resolved to ${file}); expected a pg_dump file, e.g. "db/seed.dump" (pg_dump -Fc)`);
    return { problems };
  }
  let info;
  try {
    info = readDumpInfo(file);
  } catch (e) {
    problems.push(`${key("databaseSeed")}: ${JSON.stringify(s.databaseSeed)} cannot be restored: ${(e as Error).message}`);
    return { problems };
  }
  // The droplet's own tools restore the seed: they read dumps of their major version and older,
  // and the server takes what its own major version can.
  const tools = POSTGRES_MAJOR_BY_IMAGE[s.image];
  const server = s.database === "managed" ? Number(s.databaseVersion ?? DEFAULT_MANAGED.version) : tools;
  const limit = Math.min(tools ?? Infinity, server ?? Infinity);
  const made = Math.max(info.serverMajor ?? 0, info.format === "plain" ? info.dumpMajor ?? 0 : 0);
  if (Number.isFinite(limit) && made > limit) {
    const which = limit === server ? `the server's PostgreSQL ${server}` : `the droplet's PostgreSQL ${tools} tools (${s.image}), which restore it`;
    problems.push(`${key("databaseSeed")}: ${JSON.stringify(s.databaseSeed)} was made by PostgreSQL ${made}, newer than ${which}; dump it again with pg_dump ${limit} (e.g. pg_dump -Fc from a PostgreSQL ${limit} client), or use an image whose PostgreSQL is ${made} or newer`);
  }
  if (info.namesRoles) {
    problems.push(`${key("databaseSeed")}: ${JSON.stringify(s.databaseSeed)} is plain SQL that sets owners or privileges of roles the server does not have (ALTER ... OWNER TO, GRANT); dump it with pg_dump --no-owner --no-privileges, or in the custom format (pg_dump -Fc), e.g. pg_dump -Fc -f db/seed.dump mydb`);
  }
  return { problems, seed: { file, format: info.format } };
}

/** More than one droplet: what cannot be shared between droplets is refused, and the load balancer's health check filled in. */
function fleetChecks(s: Settings): { problems: string[]; fleet?: StackConfig["fleet"] } {
  const key = (k: string) => `${NAMESPACE}:${k}`;
  const given = (["lbCheckInterval", "lbResponseTimeout", "lbHealthyThreshold", "lbUnhealthyThreshold"] as const).filter((k) => s[k] !== undefined);
  if (s.droplets === 1) {
    return { problems: given.map((k) => `${key(k)}: only used with ${key("droplets")} above 1 (it tunes the load balancer's health check); set ${key("droplets")}, e.g. 2, or remove ${key(k)}`) };
  }
  const problems: string[] = [];
  const n = s.droplets;
  if (s.database === "droplet") {
    problems.push(`${key("droplets")}: ${n} droplets cannot share PostgreSQL on one droplet's volume (${key("database")} "droplet"); move the data to a managed cluster first (${key("database")} "managed": the seed and DATABASE_URL move with it), then grow, e.g. pulumi config set ${key("database")} managed`);
  }
  if (s.volumeSize !== undefined) {
    problems.push(`${key("volumeSize")}: a volume attaches to one droplet, so with ${key("droplets")} ${n} files in shared/ (uploads, sessions on disk) would exist on one droplet only; keep them in the database or in Spaces (object storage) and remove ${key("volumeSize")}, or keep ${key("droplets")} at 1`);
  }
  if (!s.tls) {
    problems.push(`${key("tls")}: the load balancer of ${key("droplets")} ${n} serves HTTPS with a Let's Encrypt certificate DigitalOcean issues for ${key("domain")}; set ${key("tls")} to true, or keep ${key("droplets")} at 1`);
  }
  const health: LbHealth = {
    intervalSeconds: s.lbCheckInterval ?? DEFAULT_LB_HEALTH.intervalSeconds,
    timeoutSeconds: s.lbResponseTimeout ?? DEFAULT_LB_HEALTH.timeoutSeconds,
    healthyThreshold: s.lbHealthyThreshold ?? DEFAULT_LB_HEALTH.healthyThreshold,
    unhealthyThreshold: s.lbUnhealthyThreshold ?? DEFAULT_LB_HEALTH.unhealthyThreshold,
  };
  if (health.timeoutSeconds > health.intervalSeconds) {
    problems.push(`${key("lbResponseTimeout")}: ${health.timeoutSeconds} s is longer than the checks' interval (${key("lbCheckInterval")} ${health.intervalSeconds} s): a check must end before the next starts, e.g. ${Math.min(5, health.intervalSeconds)}`);
  }
  return problems.length ? { problems } : { problems, fleet: { droplets: n, health } };
}

/** Secrecy: which steps carry secrets; settings stored as secrets that cannot stay secret are refused. */
function secrecy(s: Settings, secretKeys: readonly string[]): { steps: SecretStep[]; problems: string[]; warnings: string[] } {
  const problems: string[] = [];
  const steps = new Set<SecretStep>();
  if (Object.keys(s.secretEnv).length) steps.add("release");
  for (const full of secretKeys) {
    if (!full.startsWith(`${NAMESPACE}:`)) continue;
    const k = full.slice(NAMESPACE.length + 1);
    if (k in SECRET_CAPABLE) steps.add(SECRET_CAPABLE[k as keyof typeof SECRET_CAPABLE]);
    else if (k in schema.shape) {
      problems.push(`${full}: stored as a secret, but this setting is public wherever it is used (DNS, firewall rules, resource names, the server's files) and cannot stay secret; set it without --secret. Settings that can be secret: ${Object.keys(SECRET_CAPABLE).join(", ")}`);
    }
  }
  const warnings = Object.keys(s.secretEnv).length && !secretKeys.includes(`${NAMESPACE}:secretEnv`)
    ? [`${NAMESPACE}:secretEnv: stored in plain text in the stack file; set each value with pulumi config set --secret --path '${NAMESPACE}:secretEnv.NAME' (dropstack still treats them as secrets)`]
    : [];
  return { steps: [...steps].sort(), problems, warnings };
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

/** What parseSettings needs besides the raw values. */
export interface ParseContext {
  /** Problems found earlier (reading the config map). */
  earlier?: string[];
  /** Warnings found earlier. */
  warnings?: string[];
  /** Full config keys ("dropstack:key") the user stored with --secret. */
  secretKeys?: readonly string[];
}

/** Validates raw values; throws one ConfigError naming every problem. */
export function parseSettings(raw: Record<string, unknown>, projectDir: string, ctx: ParseContext = {}): StackConfig {
  const result = schema.safeParse(raw);
  const problems = [...(ctx.earlier ?? [])];
  // A setting already reported while reading the config map (e.g. a list for a string) is not reported twice.
  const reported = new Set(problems.map((p) => p.slice(0, p.indexOf(": "))));
  if (!result.success) problems.push(...result.error.issues.filter((i) => !reported.has(`${NAMESPACE}:${String(i.path[0])}`)).map(formatIssue));
  if (problems.length || !result.success) {
    throw new ConfigError(problems);
  }
  const s = result.data;
  const secret = secrecy(s, ctx.secretKeys ?? []);
  const data = dataChecks(s, projectDir);
  const client = clientChecks(s, projectDir);
  const fleet = fleetChecks(s);
  const cross = [...crossChecks(s, projectDir), ...data.problems, ...client.problems, ...fleet.problems, ...secret.problems];
  if (cross.length) throw new ConfigError(cross);
  const appDir = path.resolve(projectDir, s.appSource);
  return {
    ...s,
    fqdn: s.host === "@" ? s.domain : `${s.host}.${s.domain}`,
    appDir,
    hasStatic: fs.existsSync(path.join(appDir, "static")),
    secretSteps: secret.steps,
    warnings: [...(ctx.warnings ?? []), ...secret.warnings],
    postgresMajor: s.database === "droplet" ? POSTGRES_MAJOR_BY_IMAGE[s.image] : s.database === "managed" ? Number(s.databaseVersion ?? DEFAULT_MANAGED.version) : undefined,
    managed: s.database === "managed"
      ? { version: s.databaseVersion ?? DEFAULT_MANAGED.version, size: s.databaseSize ?? DEFAULT_MANAGED.size, nodes: s.databaseNodes ?? DEFAULT_MANAGED.nodes }
      : undefined,
    seed: data.seed,
    client: client.client,
    fleet: fleet.fleet,
  };
}

/** Reads and validates the current stack's config ("dropstack:*"); `secretKeys` are the keys stored with --secret. */
export function loadConfig(all: Record<string, string>, projectDir: string, secretKeys: readonly string[] = []): StackConfig {
  const { raw, problems, warnings } = rawFromPulumiConfig(all);
  return parseSettings(raw, projectDir, { earlier: problems, warnings, secretKeys });
}

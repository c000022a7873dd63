// Remote commands as data: small pure functions that build the exact text a remote command runs.
//
// A remote step is a script from remote/ (prefixed by remote/lib.sh) run as
//   sudo -n bash -c '<lib + script>' dropstack-<name>
// with its settings on stdin, each as a "NAME <byte length>" line followed by the value's raw bytes
// and a newline. Nothing a user configures is ever spliced into shell text: values travel through
// stdin and lib.sh reads exactly that many bytes into a variable, so quotes, `$`, backslashes,
// newlines and unicode arrive byte for byte, and a preview's diff shows a changed line as text.
import * as crypto from "crypto";
import * as fs from "fs";
import * as path from "path";

export const REMOTE_DIR = path.join(__dirname, "..", "remote");

/** Quotes a string for a POSIX shell: the result is one word whatever the input holds. */
export function shellQuote(value: string): string {
  if (value === "") return "''";
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(value)) return value;
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/** Reads a file under remote/ (a script or a template). */
export function readRemoteFile(relative: string): string {
  return fs.readFileSync(path.join(REMOTE_DIR, relative), "utf8");
}

/** A script's text without its shebang line, to be included in another script. */
export function withoutShebang(text: string): string {
  return text.replace(/^#!.*\n/, "");
}

/** Library files a step needs besides lib.sh (each also used elsewhere, e.g. by dropstack-switch). */
const STEP_INCLUDES: Record<string, string[]> = { release: ["deploy-lock.sh"], roll: ["lb-checks.sh"], "lb-member": ["lb-checks.sh"], "lb-leave": ["lb-checks.sh"] };

/** The full text a step runs: remote/lib.sh, its includes, then the step's script (shebangs dropped). */
export function scriptText(name: string): string {
  const part = (file: string) => `# ---- ${file} ----\n${withoutShebang(readRemoteFile(file))}`;
  return [readRemoteFile("lib.sh"), ...(STEP_INCLUDES[name] ?? []).map(part), part(`${name}.sh`)].join("\n");
}

/** The command line for a step: the script runs under sudo in a fresh bash, named for `ps` and logs. */
export function stepCommand(name: string): string {
  return `sudo -n bash -c ${shellQuote(scriptText(name))} ${shellQuote(`dropstack-${name}`)}`;
}

/** Scripts that run where `pulumi` runs (scripts/), each prefixed by scripts/lib-ssh.sh. */
export const LOCAL_DIR = path.join(__dirname, "..", "scripts");

/** The full text of a local script: scripts/lib-ssh.sh, then the script (shebangs dropped). */
export function localScriptText(name: string): string {
  const read = (file: string) => withoutShebang(fs.readFileSync(path.join(LOCAL_DIR, file), "utf8"));
  return `#!/usr/bin/env bash\n${read("lib-ssh.sh")}\n# ---- ${name}.sh ----\n${read(`${name}.sh`)}`;
}

/** The command line of a local command: the script's text in a fresh bash (so it runs the same from any folder), named for `ps`. */
export function localCommand(name: string): string {
  return `bash -c ${shellQuote(localScriptText(name))} ${shellQuote(`dropstack-${name}`)}`;
}

/**
 * Encodes settings for a step's stdin, sorted by name: for each, a line "NAME <length in bytes>",
 * the value's UTF-8 bytes as they are, then a newline. Byte-exact and readable in a diff.
 */
export function encodeValues(values: Record<string, string>): string {
  return Object.keys(values)
    .sort()
    .map((k) => {
      if (!/^[A-Z][A-Z0-9_]*$/.test(k)) throw new Error(`remote value name ${JSON.stringify(k)} must be UPPER_SNAKE_CASE`);
      if (values[k].includes("\0")) throw new Error(`remote value ${k} holds a NUL byte`);
      return `${k} ${Buffer.byteLength(values[k], "utf8")}\n${values[k]}\n`;
    })
    .join("");
}

/** Inverse of encodeValues (used by tests and the local cloud). */
export function decodeValues(stdin: string): Record<string, string> {
  const bytes = Buffer.from(stdin, "utf8");
  const out: Record<string, string> = {};
  let at = 0;
  while (at < bytes.length) {
    const eol = bytes.indexOf(10, at);
    const header = /^([A-Z][A-Z0-9_]*) (\d+)$/.exec(bytes.subarray(at, eol < 0 ? bytes.length : eol).toString("utf8"));
    if (!header) throw new Error(`malformed value header on stdin at byte ${at}`);
    const start = eol + 1;
    const end = start + Number(header[2]);
    if (end >= bytes.length + 1 || bytes[end] !== 10) throw new Error(`value ${header[1]} is not ${header[2]} bytes followed by a newline`);
    out[header[1]] = bytes.subarray(start, end).toString("utf8");
    at = end + 1;
  }
  return out;
}

/** A short, stable content hash (hex) of the given parts. */
export function contentHash(...parts: string[]): string {
  const h = crypto.createHash("sha256");
  for (const p of parts) h.update(`${p.length}:${p}`);
  return h.digest("hex");
}

/**
 * Entries of an app folder that are never part of a release: Python's caches. The release hash
 * skips them and the release step deletes them from the upload, so both see the same files.
 * (find -name patterns: a name, or "*" + an ending.)
 */
export const CACHE_ENTRIES = ["__pycache__", ".pytest_cache", "*.pyc"] as const;
/** Folders an app folder must not contain (refused by the config): history, Node and local Python packages. */
export const REFUSED_IN_APP = [".git", "node_modules", ".venv", "venv"] as const;

const isCacheEntry = (name: string) => CACHE_ENTRIES.some((p) => (p.startsWith("*") ? name.endsWith(p.slice(1)) : name === p));

/** Files of a folder, sorted, relative, without Python's caches (CACHE_ENTRIES). */
export function listFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const entry of fs.readdirSync(path.join(dir, rel), { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      if (isCacheEntry(entry.name)) continue;
      const r = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isDirectory()) walk(r);
      else if (entry.isFile()) out.push(r);
    }
  };
  walk("");
  return out;
}

/** Content hash of a folder: names, executable bits and bytes of every file. */
export function folderHash(dir: string): string {
  const parts: string[] = [];
  for (const rel of listFiles(dir)) {
    const full = path.join(dir, rel);
    const mode = fs.statSync(full).mode & 0o111 ? "x" : "-";
    parts.push(rel, mode, crypto.createHash("sha256").update(fs.readFileSync(full)).digest("hex"));
  }
  return contentHash(...parts);
}

/**
 * Fills a template's {{name}} placeholders. Only placeholders are touched, so nginx's own `$host`
 * or `$remote_addr` survive; every placeholder must be given and every value must pass `check`.
 */
export function renderTemplate(template: string, values: Record<string, string>, check: (name: string, value: string) => void = () => {}): string {
  const used = new Set<string>();
  const out = template.replace(/\{\{([a-zA-Z0-9_]+)\}\}/g, (_m, name: string) => {
    if (!(name in values)) throw new Error(`template placeholder {{${name}}} has no value`);
    check(name, values[name]);
    used.add(name);
    return values[name];
  });
  const unused = Object.keys(values).filter((k) => !used.has(k));
  if (unused.length) throw new Error(`template values not used: ${unused.join(", ")}`);
  return out;
}

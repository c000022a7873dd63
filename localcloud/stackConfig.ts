// Reads a stack's configuration the way the Pulumi CLI hands it to the program: the project's
// declared defaults from Pulumi.yaml, overlaid with Pulumi.<stack>.yaml, flattened to
// "namespace:key" → string (JSON for everything that is not a string).
import * as fs from "fs";
import * as path from "path";
import * as YAML from "yaml";

export const PROJECT_DIR = path.resolve(__dirname, "..");

interface Declared { type?: string; default?: unknown; description?: string; items?: unknown }

export function projectFile(): { name: string; config: Record<string, Declared> } {
  return YAML.parse(fs.readFileSync(path.join(PROJECT_DIR, "Pulumi.yaml"), "utf8"));
}

function toConfigString(value: unknown): string {
  return typeof value === "string" ? value : JSON.stringify(value);
}

/** The flat config map a `pulumi up` on `stack` would give the program. */
export function stackConfig(stack: string, overrides: Record<string, unknown> = {}): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, decl] of Object.entries(projectFile().config ?? {})) {
    if (decl.default !== undefined) out[key] = toConfigString(decl.default);
  }
  const stackFile = path.join(PROJECT_DIR, `Pulumi.${stack}.yaml`);
  if (fs.existsSync(stackFile)) {
    const parsed = YAML.parse(fs.readFileSync(stackFile, "utf8")) ?? {};
    for (const [key, value] of Object.entries(parsed.config ?? {})) out[key] = toConfigString(value);
  }
  for (const [key, value] of Object.entries(overrides)) {
    const full = key.includes(":") ? key : `dropstack:${key}`;
    if (value === undefined) delete out[full];
    else out[full] = toConfigString(value);
  }
  return out;
}

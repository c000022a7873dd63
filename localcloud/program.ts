// Runs the real program (index.ts) under pulumi.runtime.setMocks and records every resource.
// Used by the unit tests (with stand-in outputs) and by the local cloud (with real actions).
import * as path from "path";
import * as pulumi from "@pulumi/pulumi";
import { PROJECT_DIR } from "./stackConfig";

// Internal to the SDK but stable: resolves once every queued registration has been answered.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const settings = require("@pulumi/pulumi/runtime/settings") as { waitForRPCs(): Promise<void> };

export interface RecordedResource {
  type: string;
  name: string;
  inputs: Record<string, unknown>;
  id: string;
  state: Record<string, unknown>;
}

export type NewResource = (args: pulumi.runtime.MockResourceArgs) => Promise<{ id: string; state: Record<string, unknown> }>;
export type Call = (args: pulumi.runtime.MockCallArgs) => Promise<Record<string, unknown>>;

export interface RunOptions {
  stack: string;
  /** Flat config map ("dropstack:key" → string). */
  config: Record<string, string>;
  /** Config keys that are secrets. */
  secretKeys?: string[];
  /** Evaluate as `pulumi preview`: outputs of new resources are unknown. */
  preview?: boolean;
  newResource: NewResource;
  call?: Call;
  /**
   * Called when the run fails, before it rejects (and while a failure of another resource is
   * still taken as part of this run's): the engine waits there for the steps under way.
   */
  onFailure?: () => Promise<void>;
}

export interface RunResult {
  resources: RecordedResource[];
  outputs: Record<string, { value: unknown; secret: boolean; known: boolean }>;
}

const PROGRAM = path.join(PROJECT_DIR, "index.ts");

/** Resolves an Output's value, secrecy and knownness through the SDK's own (internal) promises. */
async function settle(exported: unknown): Promise<{ value: unknown; secret: boolean; known: boolean }> {
  // As the engine does: outputs inside an exported array or object are resolved too.
  const o = pulumi.output(exported);
  const internal = o as unknown as { promise(withUnknowns?: boolean): Promise<unknown>; isKnown: Promise<boolean>; isSecret: Promise<boolean> };
  const [value, known, secret] = await Promise.all([internal.promise(true), internal.isKnown, internal.isSecret]);
  return { value, known, secret };
}

/** Evaluates index.ts once with the given config and mocks. */
export async function runProgram(opts: RunOptions): Promise<RunResult> {
  const resources: RecordedResource[] = [];
  const registrationErrors: unknown[] = [];
  await pulumi.runtime.setMocks({
    newResource: async (args) => {
      try {
        const res = await opts.newResource(args);
        resources.push({ type: args.type, name: args.name, inputs: args.inputs, id: res.id, state: res.state });
        return res;
      } catch (e) {
        // The SDK reports a failed registration only on the resource's own outputs; the engine
        // would fail the whole update, so the run is failed below.
        registrationErrors.push(e);
        throw e;
      }
    },
    call: async (args) => (opts.call ? opts.call(args) : args.inputs),
  }, "dropstack", opts.stack, opts.preview ?? false);
  pulumi.runtime.setAllConfig(opts.config, opts.secretKeys ?? []);

  for (const key of Object.keys(require.cache)) {
    if (key === PROGRAM || key.startsWith(path.join(PROJECT_DIR, "components") + path.sep)) delete require.cache[key];
  }
  // An error thrown inside an apply (or a failed registration) surfaces as an unhandled rejection,
  // which fails `pulumi up`; here it fails the run the same way instead of leaving it hanging.
  let onFailure!: (e: unknown) => void;
  const failed = new Promise<never>((_, reject) => (onFailure = reject));
  const listener = (e: unknown) => onFailure(e);
  process.on("unhandledRejection", listener);
  try {
    const evaluate = async () => {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const program = require(PROGRAM) as Record<string, unknown>;
      const outputs: RunResult["outputs"] = {};
      for (const [name, value] of Object.entries(program)) outputs[name] = await settle(value);
      await settings.waitForRPCs();
      if (registrationErrors.length) throw registrationErrors[0];
      return { resources, outputs };
    };
    try {
      return await Promise.race([evaluate(), failed]);
    } catch (e) {
      await opts.onFailure?.();
      throw e;
    }
  } finally {
    process.off("unhandledRejection", listener);
  }
}

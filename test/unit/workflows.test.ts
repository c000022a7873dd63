// The GitHub Actions workflows users run (.github/workflows): parsed and checked for the
// triggers, stacks, secrets, environments, concurrency and pins the README promises. Every
// check is a plain function that throws; the last block breaks a copy of a workflow in memory
// and makes sure the check notices, so none of them can pass vacuously.
import * as assert from "assert";
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import * as YAML from "yaml";
import { PROJECT_DIR } from "../../localcloud/stackConfig";

type Dict = Record<string, unknown>;

interface Step {
  id?: string;
  name?: string;
  uses?: string;
  run?: string;
  with?: Dict;
  env?: Dict;
  if?: string;
}

interface Concurrency { group?: string; "cancel-in-progress"?: unknown }

interface Job {
  name?: string;
  needs?: string | string[];
  if?: string;
  uses?: string;
  permissions?: unknown;
  environment?: string | { name?: string; url?: string };
  concurrency?: string | Concurrency;
  env?: Dict;
  strategy?: { matrix?: Dict };
  steps?: Step[];
}

interface Workflow {
  name?: string;
  on?: unknown;
  permissions?: unknown;
  concurrency?: string | Concurrency;
  env?: Dict;
  jobs: Record<string, Job>;
}

const WORKFLOW_DIR = path.join(PROJECT_DIR, ".github", "workflows");
const PR = "pull-request.yml";
const STAGING = "deploy-staging.yml";
const PROD = "deploy-prod.yml";
const DRIFT = "drift.yml";
const SECRET_ENV = ["PULUMI_ACCESS_TOKEN", "DIGITALOCEAN_TOKEN"];
const MUTATING = ["up", "update", "destroy", "refresh", "import"];

/** Stacks with a stack file next to Pulumi.yaml. */
const STACK_FILES = fs.readdirSync(PROJECT_DIR)
  .map((f) => /^Pulumi\.(.+)\.ya?ml$/.exec(f)?.[1])
  .filter((s): s is string => s !== undefined)
  .sort();

function readWorkflow(file: string): Workflow {
  const text = fs.readFileSync(path.join(WORKFLOW_DIR, file), "utf8");
  const doc = YAML.parseDocument(text, { uniqueKeys: true });
  assert.deepStrictEqual([...doc.errors, ...doc.warnings].map((e) => e.message), [], `${file}: YAML problems`);
  const wf = doc.toJS() as Workflow;
  assert.ok(wf && typeof wf === "object" && wf.jobs && typeof wf.jobs === "object", `${file}: no jobs`);
  return wf;
}

const clone = <T>(x: T): T => structuredClone(x);
const expr = (s: string) => new RegExp(`^\\$\\{\\{\\s*${s.replace(/\./g, "\\.")}\\s*\\}\\}$`);
const isSecretRef = (v: unknown, name?: string) =>
  typeof v === "string" && (name ? expr(`secrets.${name}`) : /^\$\{\{\s*secrets\.[A-Za-z_][A-Za-z0-9_]*\s*\}\}$/).test(v);

/** The workflow's triggers as event → filter object (null when the event has no filter). */
function triggers(wf: Workflow): Record<string, Dict | null> {
  // YAML 1.1 readers turn a bare `on` into true; accept either spelling of the key.
  const on = wf.on ?? (wf as unknown as Dict)["true"];
  if (typeof on === "string") return { [on]: null };
  if (Array.isArray(on)) return Object.fromEntries(on.map((e) => [String(e), null]));
  assert.ok(on && typeof on === "object", "workflow has no `on:`");
  return Object.fromEntries(Object.entries(on as Dict).map(([k, v]) => [k, (v ?? null) as Dict | null]));
}

const runsOnPullRequest = (wf: Workflow) => Object.keys(triggers(wf)).some((t) => t === "pull_request" || t === "pull_request_target");

interface PulumiStep { jobId: string; job: Job; step: Step; index: number; command: string; stacks: string[] }

/** The stacks a `stack-name` names: `${{ vars.PULUMI_ORG }}/<literal or ${{ matrix.x }}>`. */
function resolveStacks(job: Job, stackName: unknown, where: string): string[] {
  assert.strictEqual(typeof stackName, "string", `${where}: stack-name missing`);
  const m = /^\$\{\{\s*vars\.PULUMI_ORG\s*\}\}\/(.+)$/.exec(stackName as string);
  assert.ok(m, `${where}: stack-name must be \${{ vars.PULUMI_ORG }}/<stack>, got ${stackName}`);
  const rest = m[1];
  if (/^[A-Za-z0-9_.-]+$/.test(rest)) return [rest];
  const mx = /^\$\{\{\s*matrix\.([A-Za-z0-9_-]+)\s*\}\}$/.exec(rest);
  assert.ok(mx, `${where}: cannot resolve the stack in ${stackName}`);
  const matrix = job.strategy?.matrix ?? {};
  const values = matrix[mx[1]];
  assert.ok(Array.isArray(values) && values.length > 0 && values.every((v) => typeof v === "string"),
    `${where}: matrix.${mx[1]} must be a literal list of stack names`);
  assert.strictEqual(matrix.include, undefined, `${where}: matrix include is not resolved by this test`);
  return values as string[];
}

/** Every pulumi/actions step of the workflow, with its command and resolved stacks. */
function pulumiSteps(wf: Workflow): PulumiStep[] {
  const out: PulumiStep[] = [];
  for (const [jobId, job] of Object.entries(wf.jobs)) {
    (job.steps ?? []).forEach((step, index) => {
      if (!step.uses || !/^pulumi\/actions@/.test(step.uses)) return;
      const where = `job ${jobId} step ${index}`;
      // Without a command the action only installs the CLI (the drift check runs it in a step).
      if (step.with?.command === undefined && step.with?.["stack-name"] === undefined) {
        out.push({ jobId, job, step, index, command: "install", stacks: [] });
        return;
      }
      const command = String(step.with?.command ?? "");
      assert.ok(command, `${where}: pulumi/actions without a command`);
      out.push({ jobId, job, step, index, command, stacks: resolveStacks(job, step.with?.["stack-name"], where) });
    });
  }
  return out;
}

/** Calls `fn` on every string leaf of `x` with the key path to it. */
function walk(x: unknown, fn: (keys: string[], value: string) => void, keys: string[] = []): void {
  if (typeof x === "string") fn(keys, x);
  else if (Array.isArray(x)) x.forEach((v, i) => walk(v, fn, [...keys, String(i)]));
  else if (x && typeof x === "object") for (const [k, v] of Object.entries(x)) walk(v, fn, [...keys, k]);
}

// ---- the checks -------------------------------------------------------------------------

/** Every `uses:` names a version tag (v4, v4.1, v4.1.7) or a full commit sha. */
function checkPinned(wf: Workflow): void {
  const all: [string, string][] = [];
  for (const [jobId, job] of Object.entries(wf.jobs)) {
    if (job.uses) all.push([`job ${jobId}`, job.uses]);
    (job.steps ?? []).forEach((s, i) => { if (s.uses !== undefined) all.push([`job ${jobId} step ${i}`, s.uses]); });
  }
  for (const [where, uses] of all) {
    if (uses.startsWith("./")) continue; // an action in this repository: pinned by the commit itself
    if (uses.startsWith("docker://")) {
      assert.match(uses, /^docker:\/\/[^@:]+(:[\w.-]+|@sha256:[0-9a-f]{64})$/, `${where}: unpinned image ${uses}`);
      continue;
    }
    assert.match(uses, /^[A-Za-z0-9_.-]+\/[A-Za-z0-9_./-]+@(v\d+(\.\d+){0,2}|[0-9a-f]{40})$/, `${where}: ${uses} is not pinned to a version`);
  }
}

/** Wherever pulumi runs, its credentials come from secrets; nowhere is a credential written out. */
function checkSecrets(wf: Workflow): void {
  for (const p of pulumiSteps(wf)) {
    const env = { ...wf.env, ...p.job.env, ...p.step.env };
    for (const name of SECRET_ENV) {
      assert.ok(isSecretRef(env[name], name), `job ${p.jobId}: ${name} must be \${{ secrets.${name} }}, got ${JSON.stringify(env[name])}`);
    }
    if (p.step.with?.["github-token"] !== undefined) {
      assert.ok(isSecretRef(p.step.with["github-token"], "GITHUB_TOKEN"), `job ${p.jobId}: github-token must be the workflow's own token`);
    }
  }
  walk(wf, (keys, value) => {
    const key = keys[keys.length - 1];
    if (SECRET_ENV.includes(key) || /TOKEN|PASSWORD|PASSPHRASE|SECRET|KEY$/i.test(key)) {
      assert.ok(isSecretRef(value), `${keys.join(".")}: a credential must come from secrets., got a literal`);
    }
    assert.doesNotMatch(value, /dop_v1_[0-9a-f]{16,}|pul-[0-9a-f]{20,}|gh[pousr]_[A-Za-z0-9]{20,}/, `${keys.join(".")}: looks like a token`);
  });
}

/** A workflow a pull request starts only previews: no `up`, `destroy`, `refresh` through the action or a script. */
function checkNoMutationOnPullRequest(wf: Workflow): void {
  if (!runsOnPullRequest(wf)) return;
  for (const p of pulumiSteps(wf)) {
    assert.ok(!MUTATING.includes(p.command), `job ${p.jobId}: pulumi ${p.command} runs on pull_request`);
    assert.strictEqual(p.command, "preview", `job ${p.jobId}: only preview belongs on pull_request`);
  }
  for (const [jobId, job] of Object.entries(wf.jobs)) {
    for (const s of job.steps ?? []) {
      assert.doesNotMatch(s.run ?? "", new RegExp(`\\bpulumi\\s+(${MUTATING.join("|")})\\b`), `job ${jobId}: a script runs pulumi on pull_request`);
    }
  }
}

/** Every stack a pulumi step names has its Pulumi.<stack>.yaml. */
function checkStacksExist(wf: Workflow): void {
  for (const p of pulumiSteps(wf)) {
    for (const stack of p.stacks) {
      assert.ok(STACK_FILES.includes(stack), `job ${p.jobId}: stack ${stack} has no Pulumi.${stack}.yaml (stacks: ${STACK_FILES.join(", ")})`);
    }
  }
}

/** Minimal permissions: declared at the top, contents read; writes only where listed. */
function checkPermissions(wf: Workflow, allowedWrites: Record<string, string[]> = {}): void {
  const top = wf.permissions;
  assert.ok(top && typeof top === "object" && !Array.isArray(top), "top-level permissions must be an explicit map (not read-all/write-all)");
  assert.strictEqual((top as Dict).contents, "read", "top-level permissions: contents: read");
  for (const [jobId, job] of Object.entries(wf.jobs)) {
    const perms = job.permissions ?? top;
    assert.ok(perms && typeof perms === "object" && !Array.isArray(perms), `job ${jobId}: permissions must be a map`);
    for (const [scope, level] of Object.entries(perms as Dict)) {
      if (level === "read" || level === "none") continue;
      assert.ok(level === "write" && (allowedWrites[jobId] ?? []).includes(scope), `job ${jobId}: ${scope}: ${level} is not needed`);
    }
  }
}

/** Each pulumi job that previews or changes a stack needs the test job, which runs the whole `npm test`. */
function checkNeedsTest(wf: Workflow): void {
  if (pulumiSteps(wf).every((p) => p.command === "install")) return; // only reads (drift)
  const test = wf.jobs.test;
  assert.ok(test, "no job `test`");
  const runs = (test.steps ?? []).map((s) => s.run ?? "");
  const ci = runs.findIndex((r) => /^\s*npm ci\s*$/m.test(r));
  const npmTest = runs.findIndex((r) => /^\s*npm test\s*$/m.test(r));
  assert.ok(ci >= 0 && npmTest > ci, "the test job runs npm ci, then npm test");
  const apt = runs.findIndex((r) => /apt-get install\b.*\bnginx-light\b/.test(r) && ["supervisor", "shellcheck", "openssh-server", "nftables"].every((p) => new RegExp(`\\b${p}\\b`).test(r)));
  assert.ok(apt >= 0 && apt < npmTest, "the test job installs nginx-light, supervisor, shellcheck, openssh-server and nftables before npm test");
  for (const p of pulumiSteps(wf).filter((x) => x.command !== "install")) {
    const needs = p.job.needs === undefined ? [] : ([] as string[]).concat(p.job.needs);
    assert.ok(needs.includes("test"), `job ${p.jobId} (pulumi ${p.command}) must need the test job`);
  }
}

/** Pulumi jobs check out, set up Node 20, and `npm ci` the program's dependencies first. */
function checkProgramSetup(wf: Workflow): void {
  for (const p of pulumiSteps(wf)) {
    const before = (p.job.steps ?? []).slice(0, p.index);
    assert.ok(before.some((s) => /^actions\/checkout@/.test(s.uses ?? "")), `job ${p.jobId}: no checkout before pulumi`);
    const node = before.find((s) => /^actions\/setup-node@/.test(s.uses ?? ""));
    assert.ok(node, `job ${p.jobId}: no setup-node before pulumi`);
    assert.strictEqual(String(node.with?.["node-version"]), "20", `job ${p.jobId}: Node 20`);
    assert.strictEqual(node.with?.cache, "npm", `job ${p.jobId}: npm cache`);
    assert.ok(before.some((s) => /^\s*npm ci\s*$/m.test(s.run ?? "")), `job ${p.jobId}: npm ci before pulumi`);
  }
}

/** The deploy job of `stack`: one at a time per stack, never cancelled halfway. */
function checkConcurrency(wf: Workflow, stack: string): void {
  const ups = pulumiSteps(wf).filter((p) => p.command === "up");
  assert.ok(ups.length > 0, "no pulumi up");
  for (const p of ups) {
    const c = p.job.concurrency ?? wf.concurrency;
    assert.ok(c && typeof c === "object", `job ${p.jobId}: concurrency must name a group and cancel-in-progress`);
    assert.strictEqual(c.group, `pulumi-${stack}`, `job ${p.jobId}: concurrency group`);
    assert.strictEqual(c["cancel-in-progress"], false, `job ${p.jobId}: cancel-in-progress must be false`);
  }
}

function checkEnvironment(wf: Workflow, name: string): void {
  const ups = pulumiSteps(wf).filter((p) => p.command === "up");
  assert.ok(ups.length > 0, "no pulumi up");
  for (const p of ups) {
    const env = p.job.environment;
    assert.strictEqual(typeof env === "string" ? env : env?.name, name, `job ${p.jobId}: environment`);
  }
}

/** Scripts never paste `${{ }}` (values go through env), and pass shellcheck as bash. */
function checkRunScripts(wf: Workflow): void {
  for (const [jobId, job] of Object.entries(wf.jobs)) {
    for (const [i, s] of (job.steps ?? []).entries()) {
      if (s.run === undefined) continue;
      assert.ok(!s.run.includes("${{"), `job ${jobId} step ${i}: pass \${{ }} values through env, not into the script`);
      const r = spawnSync("shellcheck", ["-s", "bash", "-"], { input: s.run, encoding: "utf8" });
      assert.strictEqual(r.status, 0, `job ${jobId} step ${i}: shellcheck\n${r.stdout}${r.stderr}`);
    }
  }
}

/**
 * After `up`, a step writes the stack outputs (exports of index.ts) into the step summary, reading
 * them from the pulumi step (`steps.<id>.outputs.<name>`, or all of them as `toJSON(steps.<id>.outputs)`
 * with the names in a `for k in …` loop or `out <name>` calls); the environment's url is the stack's url.
 */
function checkSummary(wf: Workflow): void {
  const exported = [...fs.readFileSync(path.join(PROJECT_DIR, "index.ts"), "utf8").matchAll(/^export const (\w+)/gm)].map((m) => m[1]);
  for (const p of pulumiSteps(wf).filter((x) => x.command === "up")) {
    assert.ok(p.step.id, `job ${p.jobId}: the pulumi step needs an id to read its outputs`);
    const after = (p.job.steps ?? []).slice(p.index + 1);
    const summary = after.find((s) => /\$GITHUB_STEP_SUMMARY\b|\$\{GITHUB_STEP_SUMMARY\}/.test(s.run ?? ""));
    assert.ok(summary, `job ${p.jobId}: no step writes to $GITHUB_STEP_SUMMARY after up`);
    const names: string[] = [];
    let readsAll = false;
    walk(summary, (_k, v) => {
      for (const m of v.matchAll(/steps\.([\w-]+)\.outputs\b(?:\.([\w-]+))?/g)) {
        assert.strictEqual(m[1], p.step.id, `job ${p.jobId}: the summary reads step ${m[1]}, not the pulumi step`);
        if (m[2]) names.push(m[2]);
        else readsAll = true;
      }
    });
    if (readsAll) {
      const run = summary.run ?? "";
      for (const m of run.matchAll(/\bfor \w+ in ([^;\n]+); do/g)) names.push(...m[1].trim().split(/\s+/));
      for (const m of run.matchAll(/\bout (\w+)\)/g)) names.push(m[1]);
    }
    assert.ok(names.includes("url"), `job ${p.jobId}: the summary shows the url (read: ${names.join(", ")})`);
    for (const n of names) assert.ok(exported.includes(n), `job ${p.jobId}: ${n} is not a stack output (index.ts exports ${exported.join(", ")})`);

    const env = p.job.environment;
    const url = typeof env === "object" ? env.url : undefined;
    if (url !== undefined) {
      const m = /^\$\{\{\s*steps\.([\w-]+)\.outputs\.url\s*\}\}$/.exec(url);
      assert.ok(m, `job ${p.jobId}: environment url must be a step's url output, got ${url}`);
      const from = (p.job.steps ?? []).find((s) => s.id === m[1]);
      assert.ok(from === p.step || (from === summary && /^\s*echo "url=.*>>\s*"?\$GITHUB_OUTPUT"?\s*$/m.test(summary.run ?? "")),
        `job ${p.jobId}: environment url reads step ${m[1]}, which does not provide the stack's url`);
    }
  }
}

/** What every workflow must satisfy, whatever it does. */
function checkCommon(wf: Workflow): void {
  checkPinned(wf);
  checkSecrets(wf);
  checkNoMutationOnPullRequest(wf);
  checkStacksExist(wf);
  checkRunScripts(wf);
}

// ---- the workflows as written -----------------------------------------------------------

describe("GitHub Actions workflows", () => {
  before(() => {
    if (spawnSync("which", ["shellcheck"]).status !== 0) throw new Error("shellcheck is not installed: run .ci/install-host-packages.sh");
  });

  const files = fs.existsSync(WORKFLOW_DIR) ? fs.readdirSync(WORKFLOW_DIR).filter((f) => /\.ya?ml$/.test(f)).sort() : [];

  it("has the pull-request, deploy-staging and deploy-prod workflows", () => {
    for (const f of [PR, STAGING, PROD]) assert.ok(files.includes(f), `missing .github/workflows/${f}`);
  });

  for (const file of files) {
    describe(`${file}, like every workflow`, () => {
      it("parses, pins every action to a version, keeps credentials in secrets, and runs only known stacks", () => {
        checkCommon(readWorkflow(file));
      });
      it("declares minimal permissions", () => {
        checkPermissions(readWorkflow(file), file === PR ? { preview: ["pull-requests"] } : {});
      });
      it("runs pulumi only after the test job, with the program's dependencies installed", () => {
        const wf = readWorkflow(file);
        checkNeedsTest(wf);
        checkProgramSetup(wf);
      });
    });
  }

  describe(DRIFT, () => {
    it("checks every stack for drift nightly and by hand, changing nothing, the diff in the run summary", () => {
      checkDrift(readWorkflow(DRIFT));
    });
  });

  describe(PR, () => {
    it("runs on pull requests to main, and on nothing else", () => {
      const t = triggers(readWorkflow(PR));
      assert.deepStrictEqual(Object.keys(t), ["pull_request"]);
      assert.deepStrictEqual(t.pull_request?.branches, ["main"]);
    });

    it("previews every stack in the repository, commenting on the pull request", () => {
      const steps = pulumiSteps(readWorkflow(PR));
      assert.deepStrictEqual(steps.map((p) => p.command), ["preview"]);
      assert.deepStrictEqual([...steps[0].stacks].sort(), STACK_FILES);
      assert.deepStrictEqual(STACK_FILES, ["prod", "staging"]);
      const w = steps[0].step.with ?? {};
      assert.strictEqual(String(w["comment-on-pr"]), "true");
      assert.ok(isSecretRef(w["github-token"], "GITHUB_TOKEN"));
      assert.strictEqual(steps[0].jobId, "preview");
      assert.deepStrictEqual(steps[0].job.permissions, { contents: "read", "pull-requests": "write" });
    });

    it("previews with the policy pack, its dependencies installed first", () => {
      checkPolicyPack(readWorkflow(PR));
    });

    it("gives the test job no secrets", () => {
      walk(readWorkflow(PR).jobs.test, (keys, v) => assert.ok(!/\bsecrets\./.test(v), `test job: ${keys.join(".")} reads a secret`));
    });
  });

  describe(STAGING, () => {
    it("runs on pushes to main and by hand", () => {
      const t = triggers(readWorkflow(STAGING));
      assert.deepStrictEqual(Object.keys(t).sort(), ["push", "workflow_dispatch"]);
      assert.deepStrictEqual(t.push, { branches: ["main"] });
    });

    it("runs pulumi up on staging alone, in the staging environment, one update at a time", () => {
      const wf = readWorkflow(STAGING);
      const steps = pulumiSteps(wf);
      assert.deepStrictEqual(steps.map((p) => [p.command, p.stacks]), [["up", ["staging"]]]);
      checkEnvironment(wf, "staging");
      checkConcurrency(wf, "staging");
    });

    it("writes the stack outputs into the step summary", () => {
      checkSummary(readWorkflow(STAGING));
    });
  });

  describe(PROD, () => {
    it("runs on v* tags and by hand, never on a branch push", () => {
      const t = triggers(readWorkflow(PROD));
      assert.deepStrictEqual(Object.keys(t).sort(), ["push", "workflow_dispatch"]);
      assert.deepStrictEqual(t.push, { tags: ["v*"] });
    });

    it("runs pulumi up on prod alone, behind the production environment, one update at a time", () => {
      const wf = readWorkflow(PROD);
      const steps = pulumiSteps(wf);
      assert.deepStrictEqual(steps.map((p) => [p.command, p.stacks]), [["up", ["prod"]]]);
      checkEnvironment(wf, "production");
      checkConcurrency(wf, "prod");
    });

    it("writes the stack outputs into the step summary", () => {
      checkSummary(readWorkflow(PROD));
    });
  });

  it("deploys each stack from exactly one workflow, each under its own concurrency group", () => {
    const ups = files.flatMap((f) => pulumiSteps(readWorkflow(f)).filter((p) => p.command === "up")
      .map((p) => ({ f, stacks: p.stacks, group: (p.job.concurrency as Concurrency | undefined)?.group })));
    assert.deepStrictEqual(ups.flatMap((u) => u.stacks).sort(), STACK_FILES);
    assert.strictEqual(new Set(ups.map((u) => u.group)).size, ups.length, "concurrency groups must differ per stack");
  });
});

/** Every preview runs with the policy pack in policy/, whose dependencies a step before it installs. */
function checkPolicyPack(wf: Workflow): void {
  for (const p of pulumiSteps(wf).filter((x) => x.command === "preview")) {
    const where = `job ${p.jobId} step ${p.index}`;
    assert.strictEqual(p.step.with?.policyPacks, "policy", `${where}: previews run with the policy pack (policyPacks: policy)`);
    assert.ok(fs.existsSync(path.join(PROJECT_DIR, "policy", "PulumiPolicy.yaml")), "policy/PulumiPolicy.yaml is missing");
    const before = (p.job.steps ?? []).slice(0, p.index);
    assert.ok(before.some((s) => /^npm ci --prefix policy$/m.test(s.run ?? "")), `${where}: the pack's dependencies are installed first (npm ci --prefix policy)`);
  }
}

/**
 * The drift check: nightly and by hand, never on a push or pull request; for every stack, the CLI
 * (installed by the action, which runs no command itself) runs `refresh --preview-only
 * --expect-no-changes` with the stack's credentials from secrets, then `preview --expect-no-changes` (the
 * program reads the server's own check: a hand edit shows as a step to re-run); a difference goes to the run summary.
 */
function checkDrift(wf: Workflow): void {
  assert.deepStrictEqual(Object.keys(triggers(wf)).sort(), ["schedule", "workflow_dispatch"]);
  const steps = pulumiSteps(wf);
  assert.deepStrictEqual(steps.map((p) => p.command), ["install"], "the action only installs the CLI (its refresh command would write the state)");
  const job = steps[0].job;
  const refresh = (job.steps ?? []).slice(steps[0].index + 1).find((s) => /\bpulumi refresh\b/.test(s.run ?? ""));
  assert.ok(refresh, "a step after the CLI's install runs pulumi refresh");
  const run = refresh.run ?? "";
  for (const flag of ["--preview-only", "--expect-no-changes", "--stack \"$STACK\""]) assert.ok(run.includes(flag), `pulumi refresh runs with ${flag}`);
  assert.match(run, /\$GITHUB_STEP_SUMMARY/, "the diff goes to the run summary");
  assert.deepStrictEqual(resolveStacks(job, refresh.env?.STACK, "the refresh step's STACK").sort(), STACK_FILES, "every stack is checked");
  const env = { ...wf.env, ...job.env, ...refresh.env };
  for (const name of SECRET_ENV) assert.ok(isSecretRef(env[name], name), `${name} must come from secrets for the refresh`);
  const preview = (job.steps ?? []).slice(steps[0].index + 1).find((s) => /\bpulumi preview\b/.test(s.run ?? ""));
  assert.ok(preview, "a step runs pulumi preview: the server's own check (hand edits) shows there");
  for (const flag of ["--expect-no-changes", "--stack \"$STACK\""]) assert.ok((preview.run ?? "").includes(flag), `pulumi preview runs with ${flag}`);
  assert.match(preview.run ?? "", /\$GITHUB_STEP_SUMMARY/, "what would change goes to the run summary");
  assert.deepStrictEqual(resolveStacks(job, preview.env?.STACK, "the preview step's STACK").sort(), STACK_FILES, "every stack's server is checked");
}

// ---- the checks can fail ----------------------------------------------------------------

describe("workflow checks catch broken workflows", () => {
  const upJob = (wf: Workflow) => wf.jobs[pulumiSteps(wf).find((p) => p.command === "up")!.jobId];
  const pulumiStep = (wf: Workflow) => pulumiSteps(wf)[0].step;

  const cases: [string, string, (wf: Workflow) => void, (wf: Workflow) => void][] = [
    ["a missing DIGITALOCEAN_TOKEN", STAGING, (wf) => { delete upJob(wf).env!.DIGITALOCEAN_TOKEN; }, checkSecrets],
    ["a missing PULUMI_ACCESS_TOKEN on the preview", PR, (wf) => { delete wf.jobs.preview.env!.PULUMI_ACCESS_TOKEN; }, checkSecrets],
    ["a literal Pulumi token", PROD, (wf) => { upJob(wf).env!.PULUMI_ACCESS_TOKEN = "pul-0123456789abcdef0123456789abcdef01234567"; }, checkSecrets],
    ["a DigitalOcean token from a variable", PROD, (wf) => { upJob(wf).env!.DIGITALOCEAN_TOKEN = "${{ vars.DIGITALOCEAN_TOKEN }}"; }, checkSecrets],
    ["a token pasted into a step", STAGING, (wf) => { wf.jobs.test.steps!.push({ run: "echo dop_v1_0123456789abcdef0123456789abcdef" }); }, checkSecrets],
    ["an action on a branch", PR, (wf) => { wf.jobs.test.steps![0].uses = "actions/checkout@main"; }, checkPinned],
    ["an action without a version", STAGING, (wf) => { pulumiStep(wf).uses = "pulumi/actions"; }, checkPinned],
    ["a preview without the policy pack", PR, (wf) => { delete pulumiStep(wf).with!.policyPacks; }, checkPolicyPack],
    ["a policy pack without its dependencies", PR, (wf) => { wf.jobs.preview.steps = wf.jobs.preview.steps!.filter((s) => !/--prefix policy/.test(s.run ?? "")); }, checkPolicyPack],
    ["a drift check through the action's refresh (which writes the state)", DRIFT, (wf) => { pulumiStep(wf).with = { command: "refresh", "stack-name": "${{ vars.PULUMI_ORG }}/${{ matrix.stack }}" }; }, checkDrift],
    ["a drift check without --expect-no-changes", DRIFT, (wf) => { const s = wf.jobs.drift.steps!.find((x) => /pulumi refresh/.test(x.run ?? ""))!; s.run = s.run!.replace(" --expect-no-changes", ""); }, checkDrift],
    ["a drift check on one stack only", DRIFT, (wf) => { wf.jobs.drift.strategy!.matrix!.stack = ["prod"]; }, checkDrift],
    ["a drift check without the server's check (no preview)", DRIFT, (wf) => { wf.jobs.drift.steps = wf.jobs.drift.steps!.filter((x) => !/pulumi preview/.test(x.run ?? "")); }, checkDrift],
    ["a server check that accepts changes", DRIFT, (wf) => { const x = wf.jobs.drift.steps!.find((y) => /pulumi preview/.test(y.run ?? ""))!; x.run = x.run!.replace(" --expect-no-changes", ""); }, checkDrift],
    ["pulumi up on pull_request", PR, (wf) => { pulumiStep(wf).with!.command = "up"; }, checkNoMutationOnPullRequest],
    ["a script running pulumi up on pull_request", PR, (wf) => { wf.jobs.preview.steps!.push({ run: "pulumi up --yes" }); }, checkNoMutationOnPullRequest],
    ["a deploy workflow triggered by pull_request", STAGING, (wf) => { (wf.on as Dict).pull_request = null; }, checkNoMutationOnPullRequest],
    ["a stack without a stack file", PROD, (wf) => { pulumiStep(wf).with!["stack-name"] = "${{ vars.PULUMI_ORG }}/production"; }, checkStacksExist],
    ["a matrix stack without a stack file", PR, (wf) => { (wf.jobs.preview.strategy!.matrix!.stack as string[]).push("dev"); }, checkStacksExist],
    ["a stack outside PULUMI_ORG", STAGING, (wf) => { pulumiStep(wf).with!["stack-name"] = "acme/staging"; }, checkStacksExist],
    ["up not needing the test job", STAGING, (wf) => { delete upJob(wf).needs; }, checkNeedsTest],
    ["a test job that skips npm test", PROD, (wf) => { wf.jobs.test.steps = wf.jobs.test.steps!.filter((s) => s.run !== "npm test"); }, checkNeedsTest],
    ["pulumi before npm ci", STAGING, (wf) => { upJob(wf).steps = upJob(wf).steps!.filter((s) => s.run !== "npm ci"); }, checkProgramSetup],
    ["cancel-in-progress true", PROD, (wf) => { (upJob(wf).concurrency as Concurrency)["cancel-in-progress"] = true; }, (wf) => checkConcurrency(wf, "prod")],
    ["no concurrency group", STAGING, (wf) => { delete upJob(wf).concurrency; }, (wf) => checkConcurrency(wf, "staging")],
    ["prod outside the production environment", PROD, (wf) => { upJob(wf).environment = "staging"; }, (wf) => checkEnvironment(wf, "production")],
    ["write-all permissions", STAGING, (wf) => { wf.permissions = "write-all"; }, (wf) => checkPermissions(wf)],
    ["a deploy job that may write contents", PROD, (wf) => { upJob(wf).permissions = { contents: "write" }; }, (wf) => checkPermissions(wf)],
    ["an expression pasted into a script", STAGING, (wf) => { upJob(wf).steps!.push({ run: "echo ${{ steps.stack.outputs.url }}" }); }, checkRunScripts],
    ["a script shellcheck rejects", PR, (wf) => { wf.jobs.test.steps!.push({ run: "if [ -z $x ]; then echo" }); }, checkRunScripts],
    ["a summary naming a missing output", STAGING, (wf) => { const s = upJob(wf).steps!.at(-1)!; s.run = s.run!.replace("for k in url", "for k in url address"); }, checkSummary],
    ["a summary without the url", PROD, (wf) => { const s = upJob(wf).steps!.at(-1)!; s.run = s.run!.replace(/\burl\b/g, "fqdn"); }, checkSummary],
    ["a summary reading another step", STAGING, (wf) => { upJob(wf).steps!.at(-1)!.env!.OUTPUTS = "${{ toJSON(steps.other.outputs) }}"; }, checkSummary],
    ["an environment url from a step without it", PROD, (wf) => { (upJob(wf).environment as Dict).url = "${{ steps.checkout.outputs.url }}"; }, checkSummary],
    ["no summary step", STAGING, (wf) => { upJob(wf).steps!.pop(); }, checkSummary],
  ];

  for (const [what, file, breakIt, check] of cases) {
    it(`catches ${what} (${file})`, () => {
      const good = readWorkflow(file);
      check(good);
      const bad = clone(good);
      breakIt(bad);
      assert.throws(() => check(bad), assert.AssertionError);
    });
  }
});

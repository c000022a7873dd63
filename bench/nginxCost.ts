// nginx's real cost on this machine's own CPU (no VM), loopback only: wrk against gunicorn directly and
// against the site's rendered nginx config (HTTPS; and its server block without TLS), same app, gunicorn
// config and worker count; servers pinned to one core, wrk to the other. Writes bench/results/nginx-cost.json,
// prints a table (bench/README.md, "4. nginx's cost on the host"). As root: flock /tmp/dropstack-vm.lock npm run bench:nginx
import { ChildProcess, execFile, execFileSync, spawn, spawnSync } from "child_process";
import * as fs from "fs";
import * as http from "http";
import * as https from "https";
import * as os from "os";
import * as path from "path";
import { setTimeout as delay } from "timers/promises";
import { promisify } from "util";
import { loadConfig } from "../components/config";
import { renderEnvJson, renderGunicornConf, renderNginxDefault, renderNginxSite, renderSupervisorSlot } from "../components/render";
import { PROJECT_DIR, stackConfig } from "../localcloud/stackConfig";
import { freePort } from "../localcloud/util";
import { plainHttpServerBlock } from "./plainHttp";
import { machine, OtherVms, product, round, table, writeResults } from "./report";
import { parseWrk } from "./wrk";

const execFileP = promisify(execFile);
const RESULTS = path.join(PROJECT_DIR, "bench", "results", "nginx-cost.json");
const STACK = "staging";
const SERVER_CPU = "1";
const CLIENT_CPU = "0";
const WRK = { threads: 1, connections: 8, seconds: Number(process.env.BENCH_WRK_SECONDS ?? 10), warmupSeconds: 3, rounds: Number(process.env.BENCH_ROUNDS ?? 5) } as const;
const PYTHON = "/usr/bin/python3";
const HZ = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }));
let scratch: string | undefined; // the run's temporary folder, removed at exit whatever happened
const log = (m: string) => console.error(`[${new Date().toISOString().slice(11, 19)}] ${m}`);

/** `text` with every `from` replaced; a substitution that matches nothing is an error (a template changed). */
const substituted: string[] = [];
function sub(what: string, text: string, from: string | RegExp, to: string): string {
  const re = typeof from === "string" ? new RegExp(from.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")) : from;
  if (!new RegExp(re.source, re.flags.replace("g", "")).test(text)) throw new Error(`${what}: nothing matches ${re} (did the template change?)`);
  const line = `${what}: ${typeof from === "string" ? from : re.source} -> ${to.trim() || "(removed)"}`;
  if (!substituted.includes(line)) substituted.push(line);
  return text.replace(new RegExp(re.source, re.flags.includes("g") ? re.flags : `${re.flags}g`), to);
}

/** CPU ticks (utime + stime) of each given process with all its descendants. */
function processTicks(roots: number[]): number[] {
  const stats = fs.readdirSync("/proc").filter((d) => /^\d+$/.test(d)).flatMap((pid) => {
    try {
      const f = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
      const rest = f.slice(f.lastIndexOf(")") + 2).split(" ");
      return [{ pid: Number(pid), ppid: Number(rest[1]), ticks: Number(rest[11]) + Number(rest[12]) }];
    } catch {
      return [];
    }
  });
  return roots.map((root) => {
    const tree = new Set([root]);
    let size = 0;
    while (size !== tree.size) {
      size = tree.size;
      for (const s of stats) if (tree.has(s.ppid)) tree.add(s.pid);
    }
    return stats.filter((s) => tree.has(s.pid)).reduce((a, s) => a + s.ticks, 0);
  });
}

/** Busy, softirq and total ticks per core from /proc/stat (busy: user nice system irq softirq steal). */
function coreTicks(): Record<string, { busy: number; softirq: number; all: number }> {
  return Object.fromEntries(fs.readFileSync("/proc/stat", "utf8").split("\n").filter((l) => /^cpu\d+ /.test(l)).map((l) => {
    const [name, ...v] = l.split(/\s+/);
    const n = v.map(Number);
    const busy = n[0] + n[1] + n[2] + n[5] + n[6] + n[7];
    return [name, { busy, softirq: n[6], all: busy + n[3] + n[4] }];
  }));
}

/** One GET / to 127.0.0.1:port with the site's name as Host (and as SNI over TLS, unless `sni` is false). */
function get(port: number, tls: boolean, fqdn: string, headers: Record<string, string> = {}, sni = true): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const opts = { host: "127.0.0.1", port, path: "/", headers: { Host: fqdn, ...headers }, agent: false, timeout: 2000, rejectUnauthorized: false, servername: tls && sni ? fqdn : "" };
    const req = (tls ? https : http).get(opts, (res) => {
      let body = "";
      res.setEncoding("utf8").on("data", (c: string) => (body += c)).on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("timeout", () => req.destroy(new Error("timeout"))).on("error", reject);
  });
}

interface Server { what: string; proc: ChildProcess; log: string }
const exited = (p: ChildProcess) => p.exitCode !== null || p.signalCode !== null;

/** Bounded polling (30 s, 0.1 s apart) until `check` passes; fails at once if a server it needs has exited. */
async function waitFor(what: string, servers: Server[], check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 30_000;
  let last = "no answer yet";
  while (Date.now() < deadline && !servers.some((s) => exited(s.proc))) {
    if (await check().catch((e: Error) => ((last = e.message), false))) return;
    await delay(100);
  }
  const logs = servers.map((s) => `-- ${s.what}${exited(s.proc) ? ` exited (${s.proc.exitCode ?? s.proc.signalCode})` : ""}:\n${fs.readFileSync(s.log, "utf8").slice(-2000)}`);
  throw new Error(`${what} did not answer 200 within 30 s (${last}):\n${logs.join("\n")}`);
}

async function stop(what: string, p: ChildProcess): Promise<void> {
  if (p.pid === undefined || exited(p)) return;
  const gone = new Promise((r) => p.once("exit", r));
  p.kill("SIGTERM");
  if (await Promise.race([gone.then(() => true), delay(30_000).then(() => false)])) return;
  log(`${what} (pid ${p.pid}) still running 30 s after TERM: KILL`);
  p.kill("SIGKILL");
  await gone;
}

async function main(): Promise<void> {
  const cfg = loadConfig(stackConfig(STACK), PROJECT_DIR);
  const workers = cfg.workers ?? 1;
  const { appName: app, fqdn } = cfg;
  if (os.cpus().length < 2) throw new Error("needs 2 cores: one for the servers, one for wrk");
  for (const tool of ["nginx", "wrk", "openssl", "taskset"]) if (spawnSync("which", [tool]).status !== 0) throw new Error(`${tool} is not installed: run .ci/install-host-packages.sh`);
  if (spawnSync(PYTHON, ["-c", "import gunicorn, flask"]).status !== 0) throw new Error(`${PYTHON} lacks gunicorn or Flask: apt-get install gunicorn python3-flask`);

  const dir = (scratch = fs.mkdtempSync(path.join(os.tmpdir(), "dropstack-nginx-cost-")));
  fs.chmodSync(dir, 0o755); // nginx's workers run as www-data (Debian's nginx.conf) and connect to the socket below
  const [srv, release] = [`${dir}/srv/${app}`, `${dir}/srv/${app}/releases/bench`];
  for (const d of [`${srv}/shared/data`, `${dir}/run`, `${dir}/live/${fqdn}`, `${dir}/snippets`, `${dir}/sites`]) fs.mkdirSync(d, { recursive: true, mode: 0o755 });
  fs.cpSync(cfg.appDir, release, { recursive: true });
  // the layout dropstack-switch makes: live -> slots/blue (its socket and its release)
  fs.mkdirSync(`${srv}/slots/blue`, { recursive: true, mode: 0o755 });
  fs.symlinkSync(`${dir}/run/blue.sock`, `${srv}/slots/blue/app.sock`);
  fs.symlinkSync(release, `${srv}/slots/blue/release`);
  fs.symlinkSync(`${srv}/slots/blue`, `${srv}/live`);
  execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", `/CN=${fqdn}`,
    "-addext", `subjectAltName=DNS:${fqdn}`, "-keyout", `${dir}/live/${fqdn}/privkey.pem`, "-out", `${dir}/live/${fqdn}/fullchain.pem`], { stdio: "pipe" });

  // gunicorn: the rendered config and the slot's supervisor command line and environment.
  const toDir = (what: string, text: string) => sub(what, text, `/srv/${app}/`, `${srv}/`);
  fs.writeFileSync(`${srv}/shared/gunicorn.conf.py`, toDir("gunicorn.conf.py", renderGunicornConf({ app, workers })));
  fs.writeFileSync(`${srv}/shared/env.json`, renderEnvJson(cfg.env));
  const slot = renderSupervisorSlot({ app, wsgi: cfg.wsgi }).replace(/@SLOT@/g, "blue").replace(/@RELEASE@/g, "bench");
  let command = /^command=(.*)$/m.exec(slot)?.[1] ?? "";
  command = sub("supervisor command", command, `/srv/${app}/releases/bench/.venv/bin/python`, PYTHON);
  command = sub("supervisor command", toDir("supervisor command", command), `/run/dropstack-${app}/`, `${dir}/run/`).replace(/%%/g, "%");
  const envLine = sub("supervisor environment", /^environment=(.*)$/m.exec(slot)?.[1] ?? "", `"/srv/${app}`, `"${srv}`);
  const env = Object.fromEntries(envLine.split(",").map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1).replace(/"/g, "")]));
  const gunicornArgs = command.split(" ").slice(1);
  const directArgs = gunicornArgs.join(" ").replace(/--bind unix:\S+/, "--bind 127.0.0.1:PORT").split(" ");
  substituted.push("gunicorn directly: the same command line with --bind 127.0.0.1:<port> for --bind unix:<socket>");

  // nginx: Debian's nginx.conf (the droplet's) around the rendered site and default server.
  const ports = { http: await freePort(), https: await freePort(), plain: await freePort(), direct: await freePort() };
  const nginxConf = ([["worker_processes auto;", `worker_processes ${workers};`], ["pid /run/nginx.pid;", `daemon off;\npid ${dir}/nginx.pid;`],
    ["error_log /var/log/nginx/error.log;", `error_log ${dir}/error.log;`], ["include /etc/nginx/modules-enabled/*.conf;", ""],
    ["access_log /var/log/nginx/access.log;", `access_log ${dir}/access.log;`], ["include /etc/nginx/conf.d/*.conf;", ""],
    ["include /etc/nginx/sites-enabled/*;", `include ${dir}/sites/*.conf;`]] as const).reduce((text, [from, to]) => sub("nginx.conf", text, from, to), fs.readFileSync("/etc/nginx/nginx.conf", "utf8"));
  let site = renderNginxSite({ app, fqdn, tls: true, maxBodySize: cfg.maxBodySize, hsts: cfg.hsts });
  site = sub("site", toDir("site", site), "/etc/letsencrypt/live/", `${dir}/live/`);
  const plain = plainHttpServerBlock(site, ports.plain);
  site = sub("site", sub("site", site, /^\s*listen \[::\]:(80|443).*\n/gm, ""), "listen 80;", `listen 127.0.0.1:${ports.http};`);
  site = sub("site", site, "listen 443 ssl", `listen 127.0.0.1:${ports.https} ssl`);
  const { defaultServer, acmeSnippet } = renderNginxDefault();
  const dflt = sub("default server", sub("default server", defaultServer, /^\s*listen \[::\]:80.*\n/gm, ""), "listen 80 ", `listen 127.0.0.1:${ports.http} `);
  substituted.push("test-only: the site's server block without TLS (bench/plainHttp.ts) and a 443 default server that rejects handshakes without the site's SNI");
  for (const [name, text] of Object.entries({ "nginx.conf": nginxConf, "snippets/dropstack-acme.conf": acmeSnippet, "sites/00-dropstack-default.conf": dflt, [`sites/dropstack-${app}.conf`]: site,
    "sites/zz-bench-plain.conf": plain, "sites/zz-bench-sni.conf": `server {\n    listen 127.0.0.1:${ports.https} ssl default_server;\n    ssl_reject_handshake on;\n}\n`,
    "wrk-resolve.lua": 'wrk.resolve = function(host, service) wrk.addrs = wrk.lookup("127.0.0.1", service) end\n' })) fs.writeFileSync(`${dir}/${name}`, text);

  const started: Server[] = [];
  const start = (what: string, cmd: string, args: string[], cwd?: string): Server => {
    const logFile = `${dir}/${what.replace(/\W+/g, "-")}.log`;
    const fd = fs.openSync(logFile, "a");
    const proc = spawn("taskset", ["-c", SERVER_CPU, cmd, ...args], { cwd, stdio: ["ignore", fd, fd], env: { PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", ...env } });
    fs.closeSync(fd);
    started.push({ what, proc, log: logFile });
    return started[started.length - 1];
  };
  const vms = new OtherVms();
  vms.start();
  const t0 = Date.now();
  try {
    const nginxArgs = ["-p", dir, "-c", `${dir}/nginx.conf`, "-e", `${dir}/error.log`];
    execFileSync("nginx", ["-t", ...nginxArgs], { stdio: "pipe" });
    const viaSocket = start("gunicorn (unix socket)", PYTHON, gunicornArgs, release);
    const direct = start("gunicorn (TCP)", PYTHON, directArgs.map((a) => a.replace("PORT", String(ports.direct))), release);
    const nginx = start("nginx", "nginx", nginxArgs);
    const targets = [
      { key: "gunicornDirect", target: "gunicorn directly (TCP)", url: `http://${fqdn}:${ports.direct}/`, port: ports.direct, tls: false, headers: { "X-Forwarded-Proto": "https" }, needs: [direct] },
      { key: "nginxHttps", target: "nginx over HTTPS -> gunicorn (unix socket)", url: `https://${fqdn}:${ports.https}/`, port: ports.https, tls: true, headers: {}, needs: [nginx, viaSocket] },
      { key: "nginxPlainHttp", target: "nginx without TLS -> gunicorn (unix socket)", url: `http://${fqdn}:${ports.plain}/`, port: ports.plain, tls: false, headers: {}, needs: [nginx, viaSocket] },
    ] as const;
    const bodies: Record<string, number> = {};
    for (const t of targets) {
      await waitFor(t.target, [...t.needs], async () => {
        const r = await get(t.port, t.tls, fqdn, t.headers);
        bodies[t.key] = Buffer.byteLength(r.body);
        return r.status === 200 && r.body.includes("version: ");
      });
    }
    const noSni = await get(ports.https, true, fqdn, {}, false).then((r) => `answered ${r.status}`, (e: Error) => `refused (${e.message})`);
    if (noSni.startsWith("answered")) throw new Error(`a TLS client without SNI was ${noSni}: the SNI check cannot prove wrk sends the site's name`);
    const versions = [spawnSync("nginx", ["-v"], { encoding: "utf8" }).stderr.trim(), execFileSync("openssl", ["version"], { encoding: "utf8" }).trim(),
      execFileSync(PYTHON, ["-c", "import importlib.metadata as m, sys; print('python', sys.version.split()[0], 'gunicorn', m.version('gunicorn'), 'flask', m.version('flask'))"], { encoding: "utf8" }).trim()];

    const wrkRun = async (t: (typeof targets)[number], seconds: number) => {
      const args = ["-t", String(WRK.threads), "-c", String(WRK.connections), "-d", `${seconds}s`, "--timeout", "30s", "--latency", "-s", `${dir}/wrk-resolve.lua`, "-H", `Host: ${fqdn}`,
        ...Object.entries(t.headers).flatMap(([k, v]) => ["-H", `${k}: ${v}`]), t.url];
      const servers = started.map((s) => s.proc.pid!);
      const [p0, c0] = [processTicks(servers), coreTicks()];
      const { stdout, stderr } = await execFileP("bash", ["-c", `TIMEFORMAT='%U %S'; time taskset -c ${CLIENT_CPU} wrk "$@"`, "wrk", ...args], { timeout: (seconds + 60) * 1000 });
      const [p1, c1] = [processTicks(servers), coreTicks()];
      const m = /^([\d.]+) ([\d.]+)$/.exec(stderr.trim().split("\n").pop() ?? "");
      if (!m) throw new Error(`no CPU time for wrk:\n${stdout}${stderr}`);
      const busy = (core: string, of: "busy" | "softirq" = "busy") => round((100 * (c1[core][of] - c0[core][of])) / (c1[core].all - c0[core].all));
      const allBusy = Object.keys(c1).reduce((a, c) => a + c1[c].busy - c0[c].busy, 0) / HZ;
      const allTime = Object.keys(c1).reduce((a, c) => a + c1[c].all - c0[c].all, 0);
      // parseWrk's CpuUse: "vm" here is this host (both cores); the servers' time is their own processes' (utime + stime).
      const ticks = p1.map((x, i) => x - p0[i]);
      const cpu = { vmBusySeconds: round(allBusy, 2), vmBusyPercent: round((100 * allBusy * HZ) / allTime), clientCpuSeconds: round(Number(m[1]) + Number(m[2]), 2), serverCpuSeconds: round(ticks.reduce((a, b) => a + b) / HZ, 2) };
      const r = parseWrk(t.target, t.url, stdout, cpu);
      const byServer = Object.fromEntries(started.map((s, i) => [s.what, round((1000 * ticks[i]) / HZ / r.requests, 3)]));
      // The servers' own CPU as a share of their core (well under its busy time: something else ran there), and its softirq share.
      return { ...r, serverCpuMsPerRequestByServer: byServer, serverCoreBusyPercent: busy(`cpu${SERVER_CPU}`), serversShareOfCorePercent: round((100 * cpu.serverCpuSeconds) / r.seconds),
        serverCoreSoftirqPercent: busy(`cpu${SERVER_CPU}`, "softirq"), clientCoreBusyPercent: busy(`cpu${CLIENT_CPU}`) };
    };
    for (const t of targets) {
      log(`warm-up ${WRK.warmupSeconds} s: ${t.target}`);
      await wrkRun(t, WRK.warmupSeconds);
    }
    const runs: (Awaited<ReturnType<typeof wrkRun>> & { round: number })[] = [];
    const problems: string[] = [];
    for (let i = 0; i < WRK.rounds; i++) {
      for (const t of [...targets.slice(i % targets.length), ...targets.slice(0, i % targets.length)]) {
        const r = { ...(await wrkRun(t, WRK.seconds)), round: i + 1 };
        runs.push(r);
        log(`round ${i + 1}: ${t.target}: ${r.requestsPerSecond} req/s, p50 ${r.latencyMs.p50} ms, p99 ${r.latencyMs.p99} ms, servers ${r.serverCpuMsPerRequest} ms CPU/request, cores busy: servers' ${r.serverCoreBusyPercent} % (theirs ${r.serversShareOfCorePercent} %, softirq ${r.serverCoreSoftirqPercent} %), wrk's ${r.clientCoreBusyPercent} %`);
        if (r.non2xx3xx || Object.values(r.socketErrors).some((n) => n > 0)) problems.push(`round ${i + 1} ${t.target}: non-2xx ${r.non2xx3xx}, socket errors ${JSON.stringify(r.socketErrors)}`);
        const others = [r.serverCoreBusyPercent - r.serversShareOfCorePercent, r.clientCoreBusyPercent - (100 * r.cpu.clientCpuSeconds) / r.seconds].map((x) => round(x));
        if (others.some((x) => x > 10)) problems.push(`round ${i + 1} ${t.target}: other work on the cores (servers' core ${others[0]} %, wrk's core ${others[1]} % beyond the benchmark's own processes)`);
      }
    }
    const median = (key: string, of: (r: (typeof runs)[number]) => number) => {
      const v = runs.filter((r) => r.target === targets.find((t) => t.key === key)!.target).map(of).sort((a, b) => a - b);
      return round(v.length % 2 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2, 2);
    };
    const by = (of: (r: (typeof runs)[number]) => number) => Object.fromEntries(targets.map((t) => [t.key, median(t.key, of)])) as Record<(typeof targets)[number]["key"], number>;
    const rps = by((r) => r.requestsPerSecond);
    const cpuMs = by((r) => r.serverCpuMsPerRequest);
    const cost = (a: number, b: number) => round((1 - a / b) * 100);
    const otherVms = vms.during(t0, Date.now(), dir);
    if (otherVms.length) problems.push(`other VMs ran during the measurement: ${otherVms.join("; ")}`);
    const results = {
      date: new Date().toISOString(),
      product: await product(),
      machine: { ...(await machine()), vm: undefined, loadAverageAfter: os.loadavg().map((x) => round(x, 2)) },
      method: {
        where: "this host, loopback only; no VM",
        stack: `${STACK} (Pulumi.${STACK}.yaml): app ${app}, ${fqdn}, wsgi ${cfg.wsgi}, ${workers} gunicorn worker(s), ${workers} nginx worker(s)`,
        pinning: `nginx and both gunicorns (masters and workers) on CPU ${SERVER_CPU} (taskset); wrk on CPU ${CLIENT_CPU} with one thread`,
        wrk: `wrk -t${WRK.threads} -c${WRK.connections} -d${WRK.seconds}s --timeout 30s --latency -H 'Host: ${fqdn}' (URL host ${fqdn}, resolved to 127.0.0.1 by a wrk.resolve override: the SNI is the site's name), ${WRK.rounds} rotated rounds after a ${WRK.warmupSeconds} s warm-up per target; figures are medians`,
        sniCheck: `a TLS client without SNI is ${noSni}; wrk's handshakes succeed, so it sends the site's name`,
        serverCpu: "utime + stime of the nginx and gunicorn processes this bench started, per request served (cpu.serverCpuSeconds); cpu.vm* is this host's two cores, cpu.clientCpuSeconds wrk's own",
        substituted,
        bodyBytes: bodies,
      },
      versions,
      requestsPerSecond: rps,
      latencyMsP50: by((r) => r.latencyMs.p50),
      latencyMsP99: by((r) => r.latencyMs.p99),
      serverCpuMsPerRequest: cpuMs,
      serverCpuMsPerRequestByServer: Object.fromEntries(targets.map((t) => [t.key, Object.fromEntries(started.map((s) => [s.what, median(t.key, (r) => r.serverCpuMsPerRequestByServer[s.what])]))])),
      serverCoreBusyPercent: by((r) => r.serverCoreBusyPercent),
      serversShareOfCorePercent: by((r) => r.serversShareOfCorePercent),
      serverCoreSoftirqPercent: by((r) => r.serverCoreSoftirqPercent),
      clientCpuMsPerRequest: by((r) => r.clientCpuMsPerRequest),
      /** 1 - rps(nginx) / rps(gunicorn directly), over HTTPS and without TLS. */
      nginxCostPercent: cost(rps.nginxHttps, rps.gunicornDirect),
      nginxPlainHttpCostPercent: cost(rps.nginxPlainHttp, rps.gunicornDirect),
      /** nginx's share of the servers' CPU per request: 1 - cpu(gunicorn directly) / cpu(nginx). */
      nginxServerCpuCostPercent: cost(cpuMs.gunicornDirect, cpuMs.nginxHttps),
      nginxPlainHttpServerCpuCostPercent: cost(cpuMs.gunicornDirect, cpuMs.nginxPlainHttp),
      otherVmsSeen: otherVms,
      problems,
      runs,
    };
    writeResults(RESULTS, results);
    console.log(`\n== nginx's cost on this host (${results.method.pinning}; median of ${WRK.rounds} rounds of ${WRK.seconds} s)`);
    console.log(table([
      ["target", "req/s", "p50 ms", "p99 ms", "server CPU ms/req (nginx + gunicorn)", "servers' core: busy / theirs / softirq %", "wrk CPU ms/req"],
      ...targets.map((t) => [t.target, String(rps[t.key]), String(results.latencyMsP50[t.key]), String(results.latencyMsP99[t.key]),
        `${cpuMs[t.key]} (${results.serverCpuMsPerRequestByServer[t.key].nginx} + ${results.serverCpuMsPerRequestByServer[t.key][t.key === "gunicornDirect" ? "gunicorn (TCP)" : "gunicorn (unix socket)"]})`,
        `${results.serverCoreBusyPercent[t.key]} / ${results.serversShareOfCorePercent[t.key]} / ${results.serverCoreSoftirqPercent[t.key]}`, String(results.clientCpuMsPerRequest[t.key])]),
      ...[["HTTPS", results.nginxCostPercent, results.nginxServerCpuCostPercent], ["no TLS", results.nginxPlainHttpCostPercent, results.nginxPlainHttpServerCpuCostPercent]]
        .map(([what, rpsCost, cpuCost]) => [`nginx's cost (${what})`, `${rpsCost} %`, "", "", `${cpuCost} %`, "", ""]),
    ]));
    if (problems.length) console.log(`\nproblems:\n${problems.join("\n")}`);
    console.log(`\nwritten: ${path.relative(PROJECT_DIR, RESULTS)}`);
  } finally {
    vms.stop();
    for (const s of started.reverse()) await stop(s.what, s.proc).catch((e) => log(`stopping ${s.what}: ${e}`));
  }
}

main().catch((e) => {
  console.error(e instanceof Error ? e.stack : e);
  process.exitCode = 1;
}).finally(() => scratch && fs.rmSync(scratch, { recursive: true, force: true }));

// Benchmark 3: throughput inside the VM (wrk against 127.0.0.1): nginx over HTTPS, nginx without
// TLS, gunicorn directly (a second gunicorn of the live release) and Flask's development server,
// interleaved rounds, requests/s and CPU per request (see wrk.ts).
import * as assert from "assert";
import { LOCAL_FQDN } from "../localcloud/localStack";
import { Bench, Results } from "./context";
import { plainHttpServerBlock } from "./plainHttp";
import { round, table } from "./report";
import { parseWrk, wrk, WRK, WrkResult } from "./wrk";

const DIRECT_GUNICORN_PORT = 8001;
const FLASK_DEV_PORT = 5001;
const NGINX_PLAIN_PORT = 8080;
const NGINX_PLAIN_CONF = "/etc/nginx/sites-enabled/zz-dropstack-bench-plain.conf";

const WRK_TARGETS = [
  { key: "nginxHttps", target: "nginx (HTTPS, keep-alive) -> gunicorn", url: "https://127.0.0.1/", headers: [`Host: ${LOCAL_FQDN}`] },
  { key: "nginxPlainHttp", target: "nginx without TLS (same server block) -> gunicorn", url: `http://127.0.0.1:${NGINX_PLAIN_PORT}/`, headers: [`Host: ${LOCAL_FQDN}`] },
  { key: "gunicornDirect", target: "gunicorn directly (TCP, same release and config)", url: `http://127.0.0.1:${DIRECT_GUNICORN_PORT}/`, headers: [`Host: ${LOCAL_FQDN}`, "X-Forwarded-Proto: https"] },
  { key: "flaskDevServer", target: "Flask development server", url: `http://127.0.0.1:${FLASK_DEV_PORT}/`, headers: [`Host: ${LOCAL_FQDN}`, "X-Forwarded-Proto: https"] },
] as const;
type TargetKey = (typeof WRK_TARGETS)[number]["key"];
const targetOf = (key: TargetKey) => WRK_TARGETS.find((t) => t.key === key)!;

/** Polls `url` inside the VM until it answers 200 with the current version. */
async function waitInVm(bench: Bench, what: string, url: string, headers: readonly string[], logFile: string): Promise<void> {
  const h = headers.map((x) => `-H '${x}'`).join(" ");
  await bench.session.asRoot(`
for _ in $(seq 1 300); do
  if curl -sk --max-time 2 ${h} ${url} | grep -q 'version: ${bench.version}<'; then exit 0; fi
  sleep 0.2
done
echo "${what} did not answer with ${bench.version}; its log:" >&2
tail -n 40 ${logFile} >&2 || true
exit 1`, 180_000);
}

async function stopInVm(bench: Bench, what: string, pidFile: string): Promise<void> {
  await bench.session.asRoot(`
[ -s ${pidFile} ] || exit 0
pid=$(cat ${pidFile})
kill -TERM "$pid" 2>/dev/null || exit 0
for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || { rm -f ${pidFile}; exit 0; }; sleep 0.1; done
echo "${what} (pid $pid) still running 30 s after TERM: KILL" >&2
kill -KILL "$pid" 2>/dev/null || true
rm -f ${pidFile}`, 120_000);
}

export async function throughput(bench: Bench): Promise<void> {
  const { session, log } = bench;
  log("installing wrk in the VM");
  await session.asRoot("command -v wrk >/dev/null || apt-get -o DPkg::Lock::Timeout=600 install -y -qq wrk >/dev/null 2>&1 || { apt-get -o DPkg::Lock::Timeout=600 update -qq && apt-get -o DPkg::Lock::Timeout=600 install -y -qq wrk >/dev/null; }", 15 * 60_000);

  // The live slot's own supervisor program: command, directory, user and environment.
  const program = await session.liveProgram();
  const conf = await session.onServer(`sudo cat /etc/supervisor/conf.d/dropstack-${program}.conf`);
  const field = (name: string) => {
    const v = new RegExp(`^${name}=(.*)$`, "m").exec(conf)?.[1];
    if (v === undefined) throw new Error(`no ${name}= in the slot's supervisor config:\n${conf}`);
    return v;
  };
  const command = field("command");
  const directory = field("directory");
  const user = field("user");
  const env = field("environment").split(",").map((kv) => kv.replace(/"/g, ""));
  for (const kv of [...env, directory, user]) assert.match(kv, /^[A-Za-z0-9_=./:@-]+$/, `unexpected characters in the slot config: ${kv}`);
  assert.match(command, /--bind unix:\S+/, `the slot's command has no unix --bind: ${command}`);
  const wsgi = command.trim().split(/\s+/).pop()!;
  const python = command.trim().split(/\s+/)[0];
  const gunicornPid = "/tmp/dropstack-bench-gunicorn.pid";
  const gunicornLog = "/tmp/dropstack-bench-gunicorn.log";
  const flaskPid = "/tmp/dropstack-bench-flask.pid";
  const flaskLog = "/tmp/dropstack-bench-flask.log";
  const direct = command.replace(/--bind unix:\S+/, `--bind 127.0.0.1:${DIRECT_GUNICORN_PORT} --pid ${gunicornPid}`);
  const flaskStarter = [
    "import json, os, sys",
    "os.environ.update(json.load(open('/srv/app/shared/env.json', encoding='utf-8')))",
    `os.environ['FLASK_APP'] = ${JSON.stringify(wsgi)}`,
    `open(${JSON.stringify(flaskPid)}, 'w').write(str(os.getpid()))`,
    `os.execv(sys.executable, [sys.executable, '-m', 'flask', 'run', '--host', '127.0.0.1', '--port', '${FLASK_DEV_PORT}'])`,
  ].join("\n");

  const versions = await session.onServer(`/usr/sbin/nginx -v 2>&1; ${python} -m gunicorn --version; ${python} -c 'import flask, werkzeug, importlib.metadata as m; print("flask", m.version("flask"), "werkzeug", m.version("werkzeug"))'; wrk --version 2>&1 | head -1 || true; nproc`);
  try {
    log(`starting a second gunicorn of the live release on 127.0.0.1:${DIRECT_GUNICORN_PORT} and the Flask dev server on 127.0.0.1:${FLASK_DEV_PORT}`);
    await session.asRoot(`
rm -f ${gunicornPid} ${flaskPid}
cd ${directory}
setsid runuser -u ${user} -- env ${env.join(" ")} ${direct} >${gunicornLog} 2>&1 </dev/null &
echo ${Buffer.from(flaskStarter).toString("base64")} | base64 -d >/tmp/dropstack-bench-flask.py
setsid runuser -u ${user} -- env ${env.join(" ")} ${python} /tmp/dropstack-bench-flask.py >${flaskLog} 2>&1 </dev/null &`);
    log(`adding the site's server block without TLS on 127.0.0.1:${NGINX_PLAIN_PORT}`);
    const site = await session.onServer("sudo cat /etc/nginx/sites-available/dropstack-app.conf");
    await session.asRoot(`base64 -d >${NGINX_PLAIN_CONF} <<'EOF'\n${Buffer.from(plainHttpServerBlock(site, NGINX_PLAIN_PORT)).toString("base64")}\nEOF\nnginx -t 2>&1 || { rm -f ${NGINX_PLAIN_CONF}; exit 1; }\nsystemctl reload nginx`);
    for (const key of ["gunicornDirect", "flaskDevServer", "nginxPlainHttp", "nginxHttps"] as const) {
      const t = targetOf(key);
      await waitInVm(bench, t.target, t.url, t.headers, { gunicornDirect: gunicornLog, flaskDevServer: flaskLog }[key as string] ?? "/var/log/nginx/error.log");
    }
    const workers = (await session.asRoot(`pgrep -P "$(cat ${gunicornPid})" | wc -l; pgrep -P "$(supervisorctl pid ${program})" | wc -l`)).trim().split("\n");

    if (workers[0] !== workers[1]) bench.problem(`the direct gunicorn has ${workers[0]} workers, the live slot ${workers[1]}`);
    const runs: WrkResult[] = [];
    const wrkStart = Date.now();
    for (const t of WRK_TARGETS) {
      log(`wrk warm-up: ${t.target}`);
      await wrk(session, t.url, t.headers, WRK.warmupSeconds);
    }
    for (let i = 1; i <= WRK.rounds; i++) {
      for (const t of WRK_TARGETS) {
        const { out, cpu } = await wrk(session, t.url, t.headers, WRK.seconds);
        const r = parseWrk(t.target, t.url, out, cpu);
        runs.push(r);
        log(`wrk round ${i}: ${t.target}: ${r.requestsPerSecond} req/s, server CPU ${r.serverCpuMsPerRequest} ms/request, client ${r.clientCpuMsPerRequest} ms/request, VM busy ${cpu.vmBusyPercent} % (p99 ${r.latencyMs.p99} ms, non-2xx ${r.non2xx3xx}, socket errors ${JSON.stringify(r.socketErrors)})`);
        if (r.non2xx3xx || Object.values(r.socketErrors).some((n) => n > 0)) bench.problem(`wrk round ${i} ${t.target}: non-2xx ${r.non2xx3xx}, socket errors ${JSON.stringify(r.socketErrors)}`);
      }
    }
    const perRound = (target: string, of: (r: WrkResult) => number) => runs.filter((r) => r.target === target).map(of).sort((a, b) => a - b);
    const median = (target: string, of: (r: WrkResult) => number = (r) => r.requestsPerSecond) => {
      const v = perRound(target, of);
      return round(v.length % 2 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2, 2);
    };
    const rps = (target: string) => perRound(target, (r) => r.requestsPerSecond);
    const serverMs = (target: string) => median(target, (r) => r.serverCpuMsPerRequest);
    const clientMs = (target: string) => median(target, (r) => r.clientCpuMsPerRequest);
    const byKey = <T>(of: (target: string) => T) => Object.fromEntries(WRK_TARGETS.map((t) => [t.key, of(t.target)])) as Record<TargetKey, T>;
    const rpsMedian = byKey((t) => median(t));
    const serverCpu = byKey(serverMs);
    bench.results.throughput = {
      where: "wrk inside the VM (2 vCPUs, qemu TCG), against 127.0.0.1; wrk shares the VM's CPUs with the servers",
      wrk: `wrk -t${WRK.threads} -c${WRK.connections} -d${WRK.seconds}s --timeout ${WRK.timeoutSeconds}s --latency, ${WRK.rounds} interleaved rounds after a ${WRK.warmupSeconds} s warm-up each; figures are medians`,
      gunicornWorkers: { direct: Number(workers[0]), liveSlot: Number(workers[1]) },
      versions: versions.trim().split("\n"),
      requestsPerSecond: rpsMedian,
      perRound: byKey(rps),
      otherVmsSeen: bench.othersDuring(wrkStart, Date.now()),
      /** 1 - nginx / gunicorn directly, in requests/s: over HTTPS (the deployed stack), and without TLS. */
      nginxCostPercent: round((1 - rpsMedian.nginxHttps / rpsMedian.gunicornDirect) * 100),
      nginxPlainHttpCostPercent: round((1 - rpsMedian.nginxPlainHttp / rpsMedian.gunicornDirect) * 100),
      serverCpuMsPerRequest: serverCpu,
      clientCpuMsPerRequest: byKey(clientMs),
      /** nginx's share of the servers' CPU per request (HTTPS, and without TLS), the client's own CPU left out. */
      nginxServerCpuCostPercent: round((1 - serverCpu.gunicornDirect / serverCpu.nginxHttps) * 100),
      nginxPlainHttpServerCpuCostPercent: round((1 - serverCpu.gunicornDirect / serverCpu.nginxPlainHttp) * 100),
      runs,
    };
  } finally {
    await stopInVm(bench, "the direct gunicorn", gunicornPid).catch((e) => log(`stopping the direct gunicorn: ${e}`));
    await stopInVm(bench, "the Flask dev server", flaskPid).catch((e) => log(`stopping the Flask dev server: ${e}`));
    await session.asRoot(`if [ -e ${NGINX_PLAIN_CONF} ]; then rm -f ${NGINX_PLAIN_CONF}; nginx -t 2>&1 && systemctl reload nginx; fi`).catch((e) => log(`removing the plain-HTTP server block: ${e}`));
  }
}

export function printThroughput(results: Results): void {
  const t = results.throughput as {
    requestsPerSecond?: Record<string, number>;
    serverCpuMsPerRequest: Record<string, number>;
    clientCpuMsPerRequest: Record<string, number>;
    nginxCostPercent?: number;
    nginxPlainHttpCostPercent?: number;
    nginxServerCpuCostPercent?: number;
    nginxPlainHttpServerCpuCostPercent?: number;
  };
  if (!t.requestsPerSecond) return;
  console.log(`\n== 3. throughput (wrk -t${WRK.threads} -c${WRK.connections} -d${WRK.seconds}s inside the VM, median of ${WRK.rounds} rounds)`);
  console.log(table([
    ["target", "req/s", "server CPU ms/req", "wrk CPU ms/req"],
    ...WRK_TARGETS.map((x) => [x.target, String(t.requestsPerSecond![x.key]), String(t.serverCpuMsPerRequest[x.key]), String(t.clientCpuMsPerRequest[x.key])]),
    ["nginx's cost vs gunicorn directly (HTTPS)", `${t.nginxCostPercent} %`, `${t.nginxServerCpuCostPercent} %`, ""],
    ["nginx's cost vs gunicorn directly (no TLS)", `${t.nginxPlainHttpCostPercent} %`, `${t.nginxPlainHttpServerCpuCostPercent} %`, ""],
  ]));
}

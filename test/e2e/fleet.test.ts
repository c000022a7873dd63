// End to end with droplets > 1 on the local cloud: one VM grown to two (then three, then two again) behind
// the load balancer stand-in (HAProxy on the host with DigitalOcean's health-check semantics, TLS
// with a certificate Pebble issued over DNS-01), the managed PostgreSQL stand-in, the sample app.
// Not in `npm run test:e2e` by default (it boots three VMs one after the other, about an hour here):
//   DROPSTACK_E2E_FLEET=1 npm run test:e2e -- --grep fleet
import * as assert from "assert";
import { execFile } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { product, writeResults } from "../../bench/report";
import { UpResult } from "../../localcloud/engine";
import { appVersion, closedLoop, describeFailures, dnsResolver, failures, LoadTarget, underLoad as whileLoaded } from "../../localcloud/load";
import { LOCAL_FQDN, localConfig } from "../../localcloud/localStack";
import { LocalSession } from "../../localcloud/session";
import { sshOutput } from "../../localcloud/ssh";
import { PROJECT_DIR } from "../../localcloud/stackConfig";
import { waitUntil } from "../../localcloud/util";

const log = (m: string) => console.log(`      ${m}`);
const SEED_DUMP = path.join(PROJECT_DIR, "test", "fixtures", "seed.dump");
const measured: [string, string][] = [];
/** Fast health checks (the e2e waits on them): DigitalOcean's minimum interval and timeout, 2 checks either way. */
const LB = { lbCheckInterval: 3, lbResponseTimeout: 3, lbHealthyThreshold: 2, lbUnhealthyThreshold: 2 };
/** The records' TTL: DigitalOcean's lowest, so that the handover from one droplet waits 30 + 30 s. */
const TTL = 30;

(process.env.DROPSTACK_E2E_FLEET === "1" ? describe : describe.skip)("fleet: droplets > 1 behind the load balancer on the local cloud", function () {
  let session: LocalSession;
  let last: UpResult;
  let droplets = 1;

  const config = (n: number) => (pebble: LocalSession["pebble"], app: string) => localConfig(pebble, {
    appSource: app,
    droplets: n,
    ...(n > 1 ? LB : {}),
    dnsTtl: TTL,
    // (the local cloud's managed PostgreSQL is Debian's on this host: 15)
    database: "managed",
    databaseVersion: "15",
    databaseSeed: path.relative(PROJECT_DIR, SEED_DUMP),
    aptPackages: ["python3-flask", "python3-psycopg2"],
    releaseCommand: "python migrate.py",
    healthAttempts: 20,
  });
  const bumpVersion = () => session.bumpVersion();
  const target = (): LoadTarget => ({ host: LOCAL_FQDN, address: session.siteIp, ca: fs.readFileSync(session.rootCa, "utf8"), path: "/", marker: appVersion });
  /** Steady load: 20 requests a second, evenly spaced (an open loop leaves the CPU to the VMs). */
  const LOAD = { rate: 20 };
  /** Runs `action` under steady load through the load balancer. */
  const underLoad = <T>(action: () => Promise<T>) => whileLoaded(target(), action, LOAD);
  const dropletIds = (up: UpResult) => [...Array(droplets).keys()].map((i) => session.dropletIdOf(up, i));
  const onDroplet = (i: number, command: string) => sshOutput(session.dropletConnection(last, i), command, { timeoutMs: 5 * 60_000 });
  const liveRelease = async (i: number) => (await onDroplet(i, "readlink /srv/app/current")).trim().split("/").pop();
  /** The load balancer's view: droplet id → "UP", "DOWN", ... */
  const rotation = () => session.cloud.loadBalancerDroplets();
  const waitRotation = (what: string, want: (states: Record<string, string>) => boolean) =>
    waitUntil(what, 3 * 60_000, async () => (want(await rotation()) ? true : undefined), { intervalMs: 500, debug: async () => JSON.stringify(await rotation()) });
  /** Which droplets (host names) answer `count` requests, each on a new connection. */
  const servedBy = async (count: number) => {
    const hosts = new Set<string>();
    for (let i = 0; i < count; i++) {
      const r = await session.curl(`https://${LOCAL_FQDN}/`);
      assert.strictEqual(r.code, 200, r.body.slice(0, 300));
      assert.match(r.body, /behind nginx, over https\./, "the load balancer's X-Forwarded-Proto reached the app");
      hosts.add(/Served by gunicorn on ([a-z0-9-]+) behind/.exec(r.body)?.[1] ?? "?");
    }
    return [...hosts].sort();
  };

  /** One HTTPS request for the site's name to `address` (a droplet's own, say): the status, 0 when none came. */
  const direct = (address: string) => new Promise<number>((resolve) => {
    execFile("curl", ["-sS", "--max-time", "20", "--cacert", session.rootCa, "--resolve", `${LOCAL_FQDN}:443:${address}`, "-o", "/dev/null", "-w", "%{http_code}", `https://${LOCAL_FQDN}/`],
      (_e, stdout) => resolve(Number(stdout) || 0));
  });

  before(async function () {
    this.timeout(90 * 60_000);
    session = await LocalSession.start({ stack: "fleet", log, config: config(1) });
    last = session.first;
    measured.push(["first up with 1 droplet", `${session.firstUpSeconds.toFixed(1)} s`]);
  });

  it("grows from one droplet to two with no failed request for a client that resolves the name and keeps the answer for the TTL; the first droplet serves HTTPS itself until the handover, then only through the load balancer, and its certificate goes", async () => {
    const first = session.ip;
    assert.strictEqual(session.siteIp, first, "one droplet: the name points at it");
    assert.strictEqual(await direct(first), 200);
    droplets = 2;
    session.cloud.configure(config(2)(session.pebble, session.appDir));
    const resolve = dnsResolver(session.pebble.dnsServer, LOCAL_FQDN, TTL);
    const lookup = dnsResolver(session.pebble.dnsServer, LOCAL_FQDN, 0);
    const t = Date.now();
    let handover = 0;
    const grow = await whileLoaded({ ...target(), address: resolve }, async () => {
      const up = session.cloud.up();
      let failed: unknown;
      up.catch((e) => (failed = e));
      // once the name points at the load balancer, the first droplet still answers HTTPS itself
      await waitUntil("the name to move to the load balancer", 60 * 60_000, async () => {
        if (failed) throw failed;
        return (await lookup().catch(() => first)) !== first ? true : undefined;
      }, { intervalMs: 500 });
      handover = await direct(first);
      return up;
    }, LOAD);
    assert.ok(grow.result, `up to 2 failed: ${grow.error}`);
    last = grow.result;
    session.follow(grow.result, "deploy");
    measured.push(["up from 1 to 2 droplets", `${((Date.now() - t) / 1000).toFixed(1)} s, ${grow.outcomes.length} requests`]);
    assert.strictEqual(failures(grow.outcomes).length, 0, describeFailures(grow.outcomes));
    assert.strictEqual(handover, 200, "the first droplet served HTTPS itself after the name had moved");
    const lbIp = session.siteIp;
    assert.notStrictEqual(lbIp, first);
    const from = [...new Set(grow.outcomes.map((o) => o.address))];
    assert.deepStrictEqual(from, [first, lbIp], "the client went from the droplet to the load balancer");
    const order = grow.result.steps.map((x) => x.name);
    for (const [before, after] of [["roll", "dns-a"], ["dns-a", "handover-finish"], ["handover-finish", "firewall-fw"]]) {
      assert.ok(order.indexOf(before) >= 0 && order.indexOf(before) < order.indexOf(after), `${before} before ${after}: ${order.join(", ")}`);
    }
    const finish = grow.result.resources.find((x) => x.name === "handover-finish");
    assert.match(String(finish?.state.stderr), new RegExp(`serving HTTPS here for ${TTL + 30} s more[^]*stopped serving HTTPS here[^]*deleted certbot's certificate`), String(finish?.state.stderr));
    assert.strictEqual(await direct(first), 0, "the first droplet no longer answers HTTPS itself");
    assert.strictEqual((await onDroplet(0, `sudo sh -c 'ls /etc/letsencrypt/live/${LOCAL_FQDN} /etc/letsencrypt/renewal/${LOCAL_FQDN}.conf 2>/dev/null | wc -l'`)).trim(), "0", "certbot's certificate and renewal are gone");
    assert.strictEqual((await onDroplet(0, "sudo dropstack-check >/dev/null && echo clean || echo drift")).trim(), "clean", "what the handover removed is no longer dropstack's");
  });

  after(async function () {
    this.timeout(10 * 60_000);
    if (session) await session.stop(log);
    console.log("\n      Fleet timings (wall time on this machine):");
    for (const [name, v] of measured) console.log(`        ${name.padEnd(52)} ${v}`);
    if (measured.length) {
      const figures = { date: new Date().toISOString(), product: await product(), measured: Object.fromEntries(measured) };
      writeResults(path.join(PROJECT_DIR, "bench", "results", "e2e-fleet.json"), figures);
    }
  });

  it("serves the site over HTTPS through the load balancer, from both droplets, with a certificate for the name chaining to Pebble's root; HTTP redirects", async () => {
    await waitRotation("both droplets in rotation", (s) => Object.values(s).length === 2 && Object.values(s).every((x) => x === "UP"));
    assert.notStrictEqual(session.siteIp, session.ip, "the name points at the load balancer, not a droplet");
    assert.deepStrictEqual(await servedBy(8), ["app-fleet", "app-fleet-2"]);
    const plain = await session.curl(`http://${LOCAL_FQDN}/notes`);
    assert.strictEqual(plain.code, 301);
    assert.match(plain.headers, new RegExp(`location: https://${LOCAL_FQDN.replace(/\./g, "\\.")}/notes`, "i"));
    const notes = JSON.parse((await session.curl(`https://${LOCAL_FQDN}/notes`)).body).notes.map((n: { body: string }) => n.body);
    assert.ok(notes.includes("seeded note one"), `the managed database's seeded notes: ${notes}`);
    for (const i of [0, 1]) {
      const ports = (await onDroplet(i, "sudo ss -Hltn")).trim().split("\n").map((l) => l.trim().split(/\s+/)[3])
        .filter((a) => !/^(127\.|\[::1\]|::1)/.test(a)).map((a) => Number(a.slice(a.lastIndexOf(":") + 1)));
      assert.deepStrictEqual([...new Set(ports)].sort((a, b) => a - b), [22, 80], `droplet ${i + 1}: TLS ends at the load balancer`);
      assert.strictEqual((await onDroplet(i, `sudo test -e /etc/letsencrypt/live/${LOCAL_FQDN} && echo certbot || echo none`)).trim(), "none");
    }
  });

  it("rolls a release one droplet at a time under steady load: no failed request, both droplets on it at the end", async () => {
    const [was, now] = bumpVersion();
    const t = Date.now();
    const { result, error, outcomes } = await underLoad(() => session.cloud.up());
    assert.ok(result, `up failed: ${error}`);
    last = result;
    measured.push(["rolling release, 2 droplets (up)", `${((Date.now() - t) / 1000).toFixed(1)} s, ${outcomes.length} requests`]);
    assert.strictEqual(failures(outcomes).length, 0, describeFailures(outcomes));
    const versions = new Set(outcomes.map((o) => o.marker));
    assert.deepStrictEqual([...versions].sort(), [was, now].sort(), "only the two releases were served");
    assert.strictEqual(outcomes[outcomes.length - 1].marker, now);
    const id = String(result.outputs.releaseId.value);
    assert.deepStrictEqual([await liveRelease(0), await liveRelease(1)], [id, id]);
    const order = result.steps.map((x) => x.name);
    assert.ok(order.indexOf("app-2-release") < order.indexOf("roll"), `every droplet staged before the roll: ${order.join(", ")}`);
    const roll = result.resources.find((x) => x.type === "command:local:Command" && x.name === "roll");
    assert.deepStrictEqual(String(roll?.state.stdout).match(/^turn=\d+(?= seconds=\d+$)/gm), ["turn=1", "turn=2"], `droplet 1's turn, then droplet 2's: ${roll?.state.stdout}`);
    assert.deepStrictEqual(await servedBy(4), ["app-fleet", "app-fleet-2"], "both back in rotation");
  });

  it("a turn that fails after the first droplet switched: the first switches back, both serve the previous release, no failed request; the next up rolls both", async () => {
    const before = [await liveRelease(0), await liveRelease(1)];
    const [was, now] = bumpVersion();
    let injected = false;
    let outcome: Awaited<ReturnType<typeof underLoad<UpResult>>>;
    try {
      outcome = await underLoad(async () => {
        const up = session.cloud.up();
        // once the roll has begun (droplet 1 is being drained), every droplet has staged: the
        // second droplet's switch then cannot take its deploy lock (no file can be made in /srv/app)
        await waitUntil("droplet 1's turn to begin", 20 * 60_000, async () =>
          ((await onDroplet(0, "sudo test -e /run/dropstack-app/drain && echo draining || echo serving")).trim() === "draining" ? true : undefined), { intervalMs: 250 });
        await onDroplet(1, "sudo chattr +i /srv/app");
        injected = true;
        return up;
      });
      assert.ok(injected, `the fault was not injected: ${outcome.error}`);
      assert.ok(outcome.error, "the up must fail");
      const error = String(outcome.error);
      assert.match(error, /release \S+ was refused on this droplet/, "droplet 2's turn was refused");
      assert.match(error, /the roll stopped at droplet 2 of 2 \([^)]+\); droplet\(s\) 1 switched back: every droplet serves its previous release/);
      assert.strictEqual(failures(outcome.outcomes).length, 0, describeFailures(outcome.outcomes));
      assert.deepStrictEqual([...new Set(outcome.outcomes.map((o) => o.marker))].sort(), [was, now].sort(), "droplet 1 served the new release for its turn");
      assert.deepStrictEqual([await liveRelease(0), await liveRelease(1)], before, "both droplets on the previous release");
      assert.match(await onDroplet(0, "sudo tail -n 1 /srv/app/shared/log/releases.log"), new RegExp(`action=rollback release=${before[0]} by=pulumi:fleet result=ok`));
      await waitRotation("both droplets in rotation", (st) => Object.values(st).length === 2 && Object.values(st).every((x) => x === "UP"));
      assert.deepStrictEqual(await servedBy(4), ["app-fleet", "app-fleet-2"]);
    } finally {
      await onDroplet(1, "sudo chattr -i /srv/app");
    }
    const t = Date.now();
    const fixed = await underLoad(() => session.cloud.up());
    assert.ok(fixed.result, `the next up failed: ${fixed.error}`);
    last = fixed.result;
    measured.push(["roll again after a switch-back (up)", `${((Date.now() - t) / 1000).toFixed(1)} s, ${fixed.outcomes.length} requests`]);
    assert.strictEqual(failures(fixed.outcomes).length, 0, describeFailures(fixed.outcomes));
    assert.strictEqual(fixed.outcomes[fixed.outcomes.length - 1].marker, now);
    const id = String(fixed.result.outputs.releaseId.value);
    assert.deepStrictEqual([await liveRelease(0), await liveRelease(1)], [id, id]);
  });

  it("a release refused on the second droplet leaves both droplets on the previous release", async () => {
    const before = [await liveRelease(0), await liveRelease(1)];
    await onDroplet(1, "sudo chattr +i /srv/app/releases");
    let outcome;
    try {
      const [was] = bumpVersion();
      outcome = await underLoad(() => session.cloud.up());
      assert.ok(outcome.error, "the up must fail");
      assert.match(String(outcome.error), /not permitted/i, "the second droplet could not stage the release");
      assert.strictEqual(failures(outcome.outcomes).length, 0, describeFailures(outcome.outcomes));
      assert.deepStrictEqual([...new Set(outcome.outcomes.map((o) => o.marker))], [was], "only the previous release was served");
      assert.deepStrictEqual([await liveRelease(0), await liveRelease(1)], before, "no droplet switched");
    } finally {
      await onDroplet(1, "sudo chattr -i /srv/app/releases");
    }
    const fixed = await underLoad(() => session.cloud.up());
    assert.ok(fixed.result, `the next up failed: ${fixed.error}`);
    last = fixed.result;
    assert.strictEqual(failures(fixed.outcomes).length, 0, describeFailures(fixed.outcomes));
    const id = String(fixed.result.outputs.releaseId.value);
    assert.deepStrictEqual([await liveRelease(0), await liveRelease(1)], [id, id]);
  });

  it("takes a powered-off droplet out of rotation; the site keeps answering, and the droplet rejoins once powered on", async () => {
    const [, second] = dropletIds(last);
    let finish!: () => void;
    const load = closedLoop(target(), new Promise<void>((r) => (finish = r)), { connections: 1 });
    const t = Date.now();
    await session.cloud.powerOff(second);
    await waitRotation("the powered-off droplet out of rotation", (s) => /^DOWN/.test(s[second] ?? ""));
    const out = Date.now();
    measured.push(["powered-off droplet out of rotation", `${((out - t) / 1000).toFixed(1)} s`]);
    await waitUntil("10 s more of load", 30_000, async () => (Date.now() - out > 10_000 ? true : undefined), { intervalMs: 500 });
    finish();
    const outcomes = await load;
    const afterOut = outcomes.filter((o) => o.at > out);
    assert.ok(afterOut.length > 0);
    assert.strictEqual(failures(afterOut).length, 0, `after the droplet left the rotation: ${describeFailures(afterOut)}`);
    measured.push(["requests failed while the load balancer noticed", `${failures(outcomes.filter((o) => o.at <= out)).length} of ${outcomes.length}`]);
    assert.deepStrictEqual(await servedBy(4), ["app-fleet"]);
    await session.cloud.powerOn(second);
    await waitRotation("the droplet back in rotation", (s) => s[second] === "UP");
    assert.deepStrictEqual(await servedBy(6), ["app-fleet", "app-fleet-2"]);
  });

  it("grows to 3 droplets and back to 2 under steady load with no failed request", async () => {
    droplets = 3;
    session.cloud.configure(config(3)(session.pebble, session.appDir));
    let t = Date.now();
    const grow = await underLoad(() => session.cloud.up());
    assert.ok(grow.result, `up to 3 failed: ${grow.error}`);
    last = grow.result;
    measured.push(["up from 2 to 3 droplets", `${((Date.now() - t) / 1000).toFixed(1)} s, ${grow.outcomes.length} requests`]);
    assert.strictEqual(failures(grow.outcomes).length, 0, describeFailures(grow.outcomes));
    await waitRotation("three droplets in rotation", (s) => Object.values(s).length === 3 && Object.values(s).every((x) => x === "UP"));
    assert.deepStrictEqual(await servedBy(9), ["app-fleet", "app-fleet-2", "app-fleet-3"]);
    const id = String(grow.result.outputs.releaseId.value);
    assert.strictEqual(await liveRelease(2), id, "the new droplet runs the release");

    droplets = 2;
    session.cloud.configure(config(2)(session.pebble, session.appDir));
    t = Date.now();
    const shrink = await underLoad(() => session.cloud.up());
    assert.ok(shrink.result, `up to 2 failed: ${shrink.error}`);
    last = shrink.result;
    measured.push(["up from 3 to 2 droplets", `${((Date.now() - t) / 1000).toFixed(1)} s, ${shrink.outcomes.length} requests`]);
    assert.strictEqual(failures(shrink.outcomes).length, 0, describeFailures(shrink.outcomes));
    assert.deepStrictEqual(Object.keys(await rotation()).length, 2);
    assert.ok(shrink.result.steps.some((x) => x.name === "roll-member-3" && x.op === "delete"), "the third droplet was drained before its delete");
    assert.deepStrictEqual(await servedBy(6), ["app-fleet", "app-fleet-2"]);
  });
});

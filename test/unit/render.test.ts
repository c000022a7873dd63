// Rendered files checked by the real tools: nginx -t, supervisor's own parser, shellcheck, bash.
import * as assert from "assert";
import { execFileSync, spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import * as YAML from "yaml";
import {
  renderCloudConfig, renderEnvJson, renderGunicornConf, renderHardening, renderNftables, renderNginxDefault, renderNginxSite, renderDirectSite, renderSshdConfig,
  renderDbScript, renderSupervisorSlot, renderSwitchScript,
} from "../../components/render";
import { encodeValues, LOCAL_DIR, localScriptText, readRemoteFile, renderTemplate, scriptText, shellQuote, stepCommand } from "../../components/shell";

/** Every step in remote/: its scripts but the prelude (lib.sh) and the parts rendered into others. */
const INCLUDED = ["lib.sh", "deploy-lock.sh", "lb-checks.sh"];
const STEPS = fs.readdirSync(path.join(__dirname, "..", "..", "remote")).filter((f) => f.endsWith(".sh") && !INCLUDED.includes(f)).map((f) => f.slice(0, -3)).sort();
const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), "dropstack-render-"));

function requireTool(tool: string): void {
  if (spawnSync("which", [tool]).status !== 0) {
    throw new Error(`${tool} is not installed: run .ci/install-host-packages.sh`);
  }
}

/** Runs `nginx -t` over the given site files in a throwaway prefix with a throwaway certificate. */
function nginxTest(files: Record<string, string>, fqdn: string): { ok: boolean; output: string } {
  requireTool("nginx");
  const dir = tmp();
  const live = path.join(dir, "live", fqdn);
  fs.mkdirSync(live, { recursive: true });
  execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
    "-subj", `/CN=${fqdn}`, "-keyout", path.join(live, "privkey.pem"), "-out", path.join(live, "fullchain.pem")], { stdio: "pipe" });
  fs.mkdirSync(path.join(dir, "snippets"));
  fs.writeFileSync(path.join(dir, "snippets", "dropstack-acme.conf"), renderNginxDefault().acmeSnippet);
  const includes = Object.entries(files).map(([name, text]) => {
    fs.writeFileSync(path.join(dir, name), text.split("/etc/letsencrypt/live/").join(`${dir}/live/`));
    return `    include ${path.join(dir, name)};`;
  });
  fs.writeFileSync(path.join(dir, "nginx.conf"), [
    `pid ${dir}/nginx.pid;`, `error_log ${dir}/error.log;`, "events {}", "http {",
    "    include /etc/nginx/mime.types;", `    access_log off;`, ...includes, "}", "",
  ].join("\n"));
  const r = spawnSync("nginx", ["-t", "-p", dir, "-c", path.join(dir, "nginx.conf"), "-e", path.join(dir, "error.log")], { encoding: "utf8" });
  fs.rmSync(dir, { recursive: true, force: true });
  return { ok: r.status === 0, output: `${r.stdout}${r.stderr}` };
}

describe("nginx configuration", () => {
  const site = { app: "shop", fqdn: "api.example.com", tls: true, maxBodySize: "10m", hsts: true };

  it("the HTTPS site and the default server pass nginx -t", () => {
    const r = nginxTest({ "default.conf": renderNginxDefault().defaultServer, "site.conf": renderNginxSite(site) }, site.fqdn);
    assert.ok(r.ok, r.output);
  });

  it("behind the load balancer, a droplet grown from one: the site, its own HTTPS server beside it and the default server pass nginx -t together", () => {
    const lbSite = renderNginxSite({ ...site, behindLoadBalancer: { healthPath: "/healthz" } });
    const direct = renderDirectSite(site);
    assert.match(direct, /listen 443 ssl/);
    assert.match(direct, /ssl_certificate \/etc\/letsencrypt\/live\/api\.example\.com\/fullchain\.pem;/);
    assert.match(direct, /X-Forwarded-Proto \$scheme;/, "the droplet's own HTTPS says so to the app");
    assert.doesNotMatch(direct, /^upstream /m, "it proxies to the site's upstream");
    const r = nginxTest({ "default.conf": renderNginxDefault(true).defaultServer, "site.conf": lbSite, "direct.conf": direct }, site.fqdn);
    assert.ok(r.ok, r.output);
  });

  it("the plain-HTTP site passes nginx -t", () => {
    const r = nginxTest({ "site.conf": renderNginxSite({ ...site, tls: false }) }, site.fqdn);
    assert.ok(r.ok, r.output);
  });

  it("nginx -t catches a broken site (the check can fail)", () => {
    const r = nginxTest({ "site.conf": renderNginxSite(site).replace("proxy_redirect off;", "proxy_redirect off") }, site.fqdn);
    assert.ok(!r.ok, "a missing semicolon must fail nginx -t");
  });

  it("keeps nginx's own $variables and renders TLS 1.2/1.3 only with a redirect", () => {
    const text = renderNginxSite(site);
    for (const v of ["$host", "$request_uri", "$remote_addr", "$proxy_add_x_forwarded_for", "$scheme", "$uri"]) {
      assert.ok(text.includes(v), `${v} lost in rendering`);
    }
    assert.match(text, /ssl_protocols TLSv1\.2 TLSv1\.3;/);
    assert.match(text, /return 301 https:\/\/\$host\$request_uri;/);
    assert.doesNotMatch(text, /\{\{|\}\}/);
    assert.doesNotMatch(text, /ssl_stapling/);
    assert.match(text, /server unix:\/srv\/shop\/live\/app\.sock/);
  });

  it("sends HSTS only when asked (prod), and common security headers always", () => {
    assert.match(renderNginxSite(site), /add_header Strict-Transport-Security "max-age=63072000; includeSubDomains" always;/);
    assert.doesNotMatch(renderNginxSite({ ...site, hsts: false }), /add_header Strict-Transport-Security/);
    assert.doesNotMatch(renderNginxSite({ ...site, tls: false }), /add_header Strict-Transport-Security/);
    for (const h of ["X-Content-Type-Options nosniff", "X-Frame-Options SAMEORIGIN", "Referrer-Policy"]) {
      assert.ok(renderNginxSite(site).includes(`add_header ${h}`), h);
    }
    assert.match(renderNginxSite(site), /server_tokens off;/);
  });

  it("with a built client: passes nginx -t, and every location with headers of its own repeats the security headers and HSTS", () => {
    const text = renderNginxSite({ ...site, apiPrefix: "/api" });
    for (const t of [text, renderNginxSite({ ...site, tls: false, apiPrefix: "/v1/api" })]) {
      const r = nginxTest({ "site.conf": t }, site.fqdn);
      assert.ok(r.ok, r.output);
    }
    // nginx drops the server's add_header lines in a location that has one of its own
    const locations = text.split(/\n {4}location /).slice(1).map((l) => l.slice(0, l.indexOf("\n    }"))).filter((l) => l.includes("add_header"));
    assert.strictEqual(locations.length, 3, "index.html, client routes, hashed assets");
    for (const l of locations) {
      for (const h of ["X-Content-Type-Options nosniff", "X-Frame-Options SAMEORIGIN", "Referrer-Policy", "Strict-Transport-Security"]) {
        assert.ok(l.includes(`add_header ${h}`), `${h} missing in location ${l.slice(0, 60)}`);
      }
    }
    assert.match(text, /location \^~ \/api\/ \{\n\s+proxy_pass http:\/\/dropstack-shop;/);
    assert.doesNotMatch(renderNginxSite(site), /\.client/, "no client: the app answers at /");
    assert.throws(() => renderNginxSite({ ...site, apiPrefix: "/api; return 200" }), /not an API prefix/);
  });

  it("refuses values that could inject a directive", () => {
    for (const fqdn of ["a.example.com;\n}", "a.example.com { return 200; }", "$host.example.com"]) {
      assert.throws(() => renderNginxSite({ ...site, fqdn }), /could change the file's meaning/);
    }
  });
});

describe("host firewall", () => {
  it("passes nft -c, drops by default both ways and opens only what the server needs", () => {
    const text = renderNftables({
      sshAllowedCidrs: ["203.0.113.0/24", "10.0.2.2/32", "2001:db8::/32"],
      egress: [{ protocol: "tcp", ports: "25060", to: ["10.114.0.0/20", "2001:db8::/32"] }, { protocol: "udp", ports: "5000-5010", to: ["192.0.2.0/24"] }],
    });
    const dir = tmp();
    fs.writeFileSync(path.join(dir, "nftables.conf"), text);
    // nft needs CAP_NET_ADMIN even to check: root here, sudo on a CI runner.
    const nft = ["nft", "-c", "-f", path.join(dir, "nftables.conf")];
    const r = process.getuid?.() === 0 ? spawnSync(nft[0], nft.slice(1), { encoding: "utf8" }) : spawnSync("sudo", ["-n", ...nft], { encoding: "utf8" });
    fs.rmSync(dir, { recursive: true, force: true });
    assert.strictEqual(r.status, 0, r.stderr);
    assert.match(text, /chain input \{\n\s+type filter hook input priority filter; policy drop;/);
    assert.match(text, /chain output \{\n\s+type filter hook output priority filter; policy drop;/);
    assert.match(text, /elements = \{ 203\.0\.113\.0\/24, 10\.0\.2\.2\/32 \}/);
    assert.match(text, /elements = \{ 2001:db8::\/32 \}/);
    assert.match(text, /ip saddr @ssh_v4 tcp dport 22 accept/);
    assert.match(text, /tcp dport \{ 80, 443 \} accept/);
    const sshRules = text.split("\n").filter((l) => /dport 22\b/.test(l));
    assert.ok(sshRules.length === 2 && sshRules.every((l) => /saddr @ssh_v[46]/.test(l)), `SSH only from the sets: ${sshRules}`);
    assert.match(text, /ip daddr 169\.254\.169\.254 meta skuid != 0 drop/);
    assert.match(text.slice(text.indexOf("chain output")), /ip daddr \{ 10\.114\.0\.0\/20 \} tcp dport 25060 accept/);
    assert.match(text, /ip6 daddr \{ 2001:db8::\/32 \} tcp dport 25060 accept/);
    assert.match(text, /ip daddr \{ 192\.0\.2\.0\/24 \} udp dport 5000-5010 accept/);
  });

  it("refuses egress text that is not a validated rule", () => {
    assert.throws(() => renderNftables({ sshAllowedCidrs: ["203.0.113.0/24"], egress: [{ protocol: "tcp", ports: "1; flush ruleset", to: ["10.0.0.0/8"] }] }), /not an egress rule/);
    assert.throws(() => renderNftables({ sshAllowedCidrs: ["203.0.113.0/24"], egress: [{ protocol: "tcp", ports: "1", to: ["10.0.0.0/8 }"] }] }), /not a CIDR/);
  });

  it("has no IPv6 SSH set when no IPv6 network is allowed", () => {
    const text = renderNftables({ sshAllowedCidrs: ["203.0.113.0/24"] });
    assert.doesNotMatch(text, /ssh_v6/);
  });
});

describe("sshd drop-in", () => {
  it("passes sshd -t and turns off passwords, keyboard-interactive and root", () => {
    requireTool("/usr/sbin/sshd");
    fs.mkdirSync("/run/sshd", { recursive: true }); // sshd -T insists on its privilege separation folder
    const dir = tmp();
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", path.join(dir, "host_key")]);
    fs.writeFileSync(path.join(dir, "dropstack.conf"), renderSshdConfig({ deployUser: "deploy" }));
    fs.writeFileSync(path.join(dir, "sshd_config"), `Include ${dir}/dropstack.conf\nHostKey ${dir}/host_key\nPasswordAuthentication yes\nPermitRootLogin yes\n`);
    const r = spawnSync("/usr/sbin/sshd", ["-T", "-f", path.join(dir, "sshd_config"), "-C", "user=deploy,host=h,addr=203.0.113.1"], { encoding: "utf8" });
    fs.rmSync(dir, { recursive: true, force: true });
    assert.strictEqual(r.status, 0, r.stderr);
    for (const line of ["passwordauthentication no", "kbdinteractiveauthentication no", "permitrootlogin no", "allowusers deploy", "authenticationmethods publickey"]) {
      assert.match(r.stdout, new RegExp(`^${line}$`, "m"), line);
    }
    // Lynis' SSH-7408 values: no forwarding or tunnels, few tries and sessions, keepalives over the
    // encrypted channel, verbose logging (key fingerprints).
    for (const line of ["allowtcpforwarding no", "allowagentforwarding no", "allowstreamlocalforwarding no", "x11forwarding no", "permittunnel no",
      "gatewayports no", "permituserenvironment no", "maxauthtries 3", "maxsessions 2", "clientaliveinterval 300", "clientalivecountmax 2",
      "tcpkeepalive no", "compression no", "usedns no", "loglevel VERBOSE"]) {
      assert.match(r.stdout, new RegExp(`^${line}$`, "m"), line);
    }
  });
});

describe("host hardening files", () => {
  const h = renderHardening();
  /** Keys of sysctl.d lines ("key = value"); comments and blank lines skipped. */
  const sysctlLines = () => h.sysctl.split("\n").filter((l) => l.trim() && !l.startsWith("#"));

  it("the sysctl drop-in is sysctl.d syntax, each key once, and names keys this kernel has", () => {
    // Keys a Debian kernel has but a build host's kernel may lack (checked by the e2e run on the VM).
    const notEverywhere = new Set(["kernel.yama.ptrace_scope", "kernel.sysrq"]);
    const keys = sysctlLines().map((l) => {
      const m = /^([a-z0-9_]+(?:\.[a-z0-9_-]+)+) = (-?\d+)$/.exec(l);
      assert.ok(m, `not a "key = number" line: ${l}`);
      return m[1];
    });
    assert.strictEqual(new Set(keys).size, keys.length, "a key is set twice");
    for (const key of keys) {
      if (notEverywhere.has(key)) continue;
      assert.ok(fs.existsSync(`/proc/sys/${key.replace(/\./g, "/")}`), `no such sysctl: ${key}`);
    }
  });

  it("sysctl: network and kernel hardening, but forwarding, router advertisements and DHCP untouched", () => {
    const set = Object.fromEntries(sysctlLines().map((l) => l.split(" = ")));
    for (const [k, v] of Object.entries({ "kernel.kptr_restrict": "2", "kernel.dmesg_restrict": "1", "fs.suid_dumpable": "0", "kernel.yama.ptrace_scope": "2",
      "net.ipv4.conf.all.accept_redirects": "0", "net.ipv4.conf.all.send_redirects": "0", "net.ipv4.conf.all.rp_filter": "1", "net.ipv4.tcp_syncookies": "1",
      "net.ipv6.conf.all.accept_redirects": "0", "fs.protected_symlinks": "1", "fs.protected_regular": "2" })) {
      assert.strictEqual(set[k], v, k);
    }
    // IPv6 SLAAC on a droplet, and loading nftables' modules on demand, must keep working.
    for (const k of Object.keys(set)) assert.doesNotMatch(k, /accept_ra|disable_ipv6|autoconf|modules_disabled|ip_forward\b.*1/, k);
    assert.strictEqual(set["net.ipv4.ip_forward"], "0");
  });

  it("the modprobe file parses with modprobe -C and refuses the listed modules", function () {
    for (const l of h.modprobe.split("\n").filter((x) => x.trim() && !x.startsWith("#"))) assert.match(l, /^(install [a-z0-9_-]+ \/bin\/true|blacklist [a-z0-9_-]+)$/, l);
    // kmod is not among .ci/install-host-packages.sh's packages yet: the line syntax above still runs.
    if (!fs.existsSync("/usr/sbin/modprobe") && !fs.existsSync("/sbin/modprobe")) this.skip();
    const dir = tmp();
    fs.writeFileSync(path.join(dir, "dropstack.conf"), h.modprobe);
    const r = spawnSync(fs.existsSync("/usr/sbin/modprobe") ? "/usr/sbin/modprobe" : "/sbin/modprobe", ["-C", dir, "--showconfig"], { encoding: "utf8" });
    fs.rmSync(dir, { recursive: true, force: true });
    assert.strictEqual(r.status, 0, r.stderr);
    assert.strictEqual(r.stderr, "", "modprobe warned about the file");
    for (const mod of ["usb_storage", "firewire_core", "cramfs", "squashfs", "udf", "dccp", "sctp", "rds", "tipc"]) assert.match(r.stdout, new RegExp(`^install ${mod} /bin/true$`, "m"), mod);
    assert.match(r.stdout, /^blacklist usb_storage$/m);
  });

  it("needrestart's setting is valid Perl and restarts automatically", () => {
    const r = spawnSync("perl", ["-c", "-e", `my %nrconf;\n${h.needrestart}`], { encoding: "utf8" });
    assert.strictEqual(r.status, 0, r.stderr);
    assert.match(h.needrestart, /^\$nrconf\{restart\} = 'a';$/m);
  });

  it("core dumps are off for logins and for systemd-coredump", () => {
    assert.match(h.coredumpLimits, /^\* hard core 0$/m);
    assert.match(h.coredumpLimits, /^\* soft core 0$/m);
    assert.match(h.coredumpSystemd, /^\[Coredump\]\nStorage=none\nProcessSizeMax=0$/m);
  });
});

describe("supervisor program", () => {
  // Debian's python3 (the one supervisor is installed for), not whatever python3 is first on PATH.
  const debianPython = "/usr/bin/python3";

  it("parses with supervisor's own loader: a slot's gunicorn on its release and socket, as the app user", () => {
    requireTool("supervisord");
    // Filled the way dropstack-switch fills it on the server (sed).
    const template = renderSupervisorSlot({ app: "shop", wsgi: "shop.wsgi:create_app()" });
    const text = execFileSync("sed", ["-e", "s#@SLOT@#green#g", "-e", "s#@RELEASE@#r0123456789ab#g"], { input: template, encoding: "utf8" });
    assert.match(text, /^user=shop$/m);
    assert.match(text, /^\[program:shop-green\]$/m);
    const dir = tmp();
    const conf = path.join(dir, "supervisord.conf");
    // The user "shop" exists only on the server; supervisor checks users while parsing, so use root here.
    fs.writeFileSync(conf, `[supervisord]\nlogfile=${dir}/s.log\npidfile=${dir}/s.pid\n\n${text.replace("user=shop", "user=root").split("/srv/shop/shared/log/").join(`${dir}/`)}`);
    const py = [
      "import json, sys",
      "from supervisor.options import ServerOptions",
      "o = ServerOptions()",
      "o.realize(['-c', sys.argv[1]])",
      "p = o.process_group_configs[0].process_configs[0]",
      "print(json.dumps({'name': p.name, 'command': p.command, 'directory': p.directory, 'umask': p.umask}))",
    ].join("\n");
    const r = spawnSync(debianPython, ["-c", py, conf], { encoding: "utf8" });
    fs.rmSync(dir, { recursive: true, force: true });
    assert.strictEqual(r.status, 0, r.stderr);
    const p = JSON.parse(r.stdout);
    assert.strictEqual(p.name, "shop-green");
    assert.strictEqual(p.command, "/srv/shop/releases/r0123456789ab/.venv/bin/python -m gunicorn --config /srv/shop/shared/gunicorn.conf.py --bind unix:/run/dropstack-shop/green.sock --chdir /srv/shop/releases/r0123456789ab shop.wsgi:create_app()");
    assert.strictEqual(p.directory, "/srv/shop/releases/r0123456789ab");
    assert.strictEqual(p.umask, 0o007);
  });

  it("supervisor's loader rejects a broken section (the check can fail)", () => {
    const dir = tmp();
    const conf = path.join(dir, "supervisord.conf");
    fs.writeFileSync(conf, `[supervisord]\nlogfile=${dir}/s.log\n\n[program:x]\ncommand=/bin/true\nautorestart=maybe\n`);
    const r = spawnSync(debianPython, ["-c", "import sys\nfrom supervisor.options import ServerOptions\nServerOptions().realize(['-c', sys.argv[1]])", conf], { encoding: "utf8" });
    fs.rmSync(dir, { recursive: true, force: true });
    assert.notStrictEqual(r.status, 0);
  });
});

describe("gunicorn config", () => {
  it("is valid Python loading env.json, with fixed or CPU-derived workers and no TCP bind", () => {
    for (const workers of [1, undefined]) {
      const text = renderGunicornConf({ app: "shop", workers });
      const dir = tmp();
      fs.writeFileSync(path.join(dir, "gunicorn.conf.py"), text);
      execFileSync("python3", ["-m", "py_compile", path.join(dir, "gunicorn.conf.py")]);
      fs.rmSync(dir, { recursive: true, force: true });
      assert.match(text, /json\.load\(env_file\)/);
      assert.match(text, workers ? /workers = 1\n/ : /workers = multiprocessing\.cpu_count\(\) \* 2 \+ 1/);
      assert.doesNotMatch(text, /0\.0\.0\.0|127\.0\.0\.1/);
    }
  });

  it("loads the environment from env.json exactly", () => {
    const env = { MULTI: "line1\nline2\n", QUOTES: `'"\`$HOME\\`, UNI: "ünïcødé ✓", EQ: "a=b=c" };
    const text = renderEnvJson(env);
    const r = spawnSync("python3", ["-c", "import json,sys; d=json.load(sys.stdin); sys.stdout.write(json.dumps(d, sort_keys=True))"], { input: text, encoding: "utf8" });
    assert.deepStrictEqual(JSON.parse(r.stdout), env);
  });
});

describe("cloud-init user data", () => {
  const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq0ZmVgtq7V5H7lJ0sN7H1n2mE6w3xZ1YlB2m8jF0aQ";
  const hostPrivateKey = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\nline2: not yaml\n-----END OPENSSH PRIVATE KEY-----\n";
  const hostPublicKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyHostKeyHostKeyHostKeyHostKeyHostKey";

  it("is #cloud-config YAML: only the deploy user with the deploy key, and the pinned host key", () => {
    const text = renderCloudConfig({ deployUser: "deploy", deployPublicKey: `${key}\n`, hostPrivateKey, hostPublicKey });
    assert.ok(text.startsWith("#cloud-config\n"));
    const doc = YAML.parse(text);
    assert.deepStrictEqual(doc.users.map((u: { name: string }) => u.name), ["deploy"]);
    assert.deepStrictEqual(doc.users[0].ssh_authorized_keys, [key]);
    assert.strictEqual(doc.ssh_pwauth, false);
    assert.strictEqual(doc.disable_root, true);
    assert.deepStrictEqual(doc.ssh_keys, { ed25519_private: hostPrivateKey, ed25519_public: hostPublicKey });
    assert.deepStrictEqual(doc.ssh_genkeytypes, []);
  });

  it("refuses a multi-line public key", () => {
    assert.throws(() => renderCloudConfig({ deployUser: "deploy", deployPublicKey: "ssh-ed25519 AAAA\nruncmd: [x]", hostPrivateKey, hostPublicKey }), /single safe line/);
  });
});

describe("remote scripts", () => {
  it("every step, as it runs (lib.sh + script), passes shellcheck", () => {
    requireTool("shellcheck");
    for (const step of STEPS) {
      const r = spawnSync("shellcheck", ["-s", "bash", "-"], { input: scriptText(step), encoding: "utf8" });
      assert.strictEqual(r.status, 0, `${step}.sh:\n${r.stdout}${r.stderr}`);
    }
    const r = spawnSync("shellcheck", [path.join(__dirname, "..", "..", "remote", "templates", "renew-hook.sh")], { encoding: "utf8" });
    assert.strictEqual(r.status, 0, `renew-hook.sh:\n${r.stdout}`);
    // dropstack-switch and dropstack-db as installed: the templates with the shared deploy lock rendered in
    for (const [name, text] of [["dropstack-switch", renderSwitchScript()], ["dropstack-db", renderDbScript()]]) {
      const sw = spawnSync("shellcheck", ["-s", "bash", "-"], { input: text, encoding: "utf8" });
      assert.strictEqual(sw.status, 0, `${name}:\n${sw.stdout}`);
      assert.match(text, /^take_deploy_lock\(\) \{$/m, name);
    }
    assert.match(scriptText("release"), /^take_deploy_lock\(\) \{$/m);
    // and where `pulumi` runs: the drift check (sourcing lib-ssh.sh) and the roll as its command runs it
    const check = spawnSync("shellcheck", ["-x", path.join("scripts", "read-server-check.sh")], { cwd: path.dirname(LOCAL_DIR), encoding: "utf8" });
    assert.strictEqual(check.status, 0, `read-server-check.sh:\n${check.stdout}${check.stderr}`);
    const rollText = spawnSync("shellcheck", ["-s", "bash", "-"], { input: localScriptText("roll-fleet"), encoding: "utf8" });
    assert.strictEqual(rollText.status, 0, `roll-fleet.sh:\n${rollText.stdout}${rollText.stderr}`);
  });

  it("every step sets -euo pipefail", () => {
    for (const step of STEPS) assert.match(readRemoteFile(`${step}.sh`), /^set -euo pipefail$/m, step);
    assert.match(readRemoteFile("lib.sh"), /^set -euo pipefail$/m);
  });

  it("values with quotes, $, backslashes, newlines and unicode arrive byte for byte through stdin", () => {
    const values = {
      PEM: "-----BEGIN KEY-----\nabc\ndef\n-----END KEY-----\n",
      HOSTILE: `x'; rm -rf / #"\`id\`$(id)$HOME\\n\\\\ ;}\n}\nreturn 200;`,
      TRAILING: "ends with newlines\n\n\n",
      EMPTY: "",
      UNI: "ünïcødé ✓ 🚀 =a=b",
    };
    // lib.sh decodes stdin into V_* variables; print them back as JSON through python.
    const probe = `${readRemoteFile("lib.sh")}\nfor n in PEM HOSTILE TRAILING EMPTY UNI; do v="V_$n"; printf '%s' "\${!v}" | base64 -w0; echo; done\n`;
    const r = spawnSync("bash", ["-c", probe, "dropstack-probe"], { input: encodeValues(values), encoding: "utf8" });
    assert.strictEqual(r.status, 0, r.stderr);
    const lines = r.stdout.trim().split("\n");
    const got = ["PEM", "HOSTILE", "TRAILING", "EMPTY", "UNI"].map((_, i) => Buffer.from(lines[i] ?? "", "base64").toString("utf8"));
    assert.deepStrictEqual(got, [values.PEM, values.HOSTILE, values.TRAILING, values.EMPTY, values.UNI]);
  });

  it("lib.sh refuses malformed value names", () => {
    const r = spawnSync("bash", ["-c", readRemoteFile("lib.sh"), "dropstack-probe"], { input: "bad-name 1\nx\n", encoding: "utf8" });
    assert.notStrictEqual(r.status, 0);
    assert.match(r.stderr, /malformed value name/);
  });

  it("lib.sh refuses a value shorter than its length, or not ended by a newline", () => {
    for (const input of ["NAME 5\nabc\n", "NAME 3\nabcd\n", "NAME x\nabc\n"]) {
      const r = spawnSync("bash", ["-c", readRemoteFile("lib.sh"), "dropstack-probe"], { input, encoding: "utf8" });
      assert.notStrictEqual(r.status, 0, input);
      assert.match(r.stderr, /not \d+ bytes followed by a newline|malformed length/, input);
    }
  });

  it("the command line holds only the script: no setting is spliced into it", () => {
    const cmd = stepCommand("base");
    assert.ok(cmd.startsWith("sudo -n bash -c '"));
    assert.ok(cmd.endsWith(" dropstack-base"));
    const r = spawnSync("bash", ["-c", `printf '%s' ${cmd.slice("sudo -n bash -c ".length, cmd.lastIndexOf(" "))}`], { encoding: "utf8" });
    assert.strictEqual(r.stdout, scriptText("base"), "the quoted script must reach bash unchanged");
  });
});

describe("shell quoting and templates", () => {
  it("quotes any string into one word that bash reads back unchanged", () => {
    for (const s of ["", "plain", "it's", `"$HOME"`, "a b\tc\nd", "`id`", "$(id)", "\\", "'''", "ünï"]) {
      const r = spawnSync("bash", ["-c", `printf '%s' ${shellQuote(s)}`], { encoding: "utf8" });
      assert.strictEqual(r.stdout, s);
    }
  });

  it("fills placeholders only, and fails on a missing or unused one", () => {
    assert.strictEqual(renderTemplate("a {{x}} $host", { x: "1" }), "a 1 $host");
    assert.throws(() => renderTemplate("{{x}} {{y}}", { x: "1" }), /\{\{y\}\} has no value/);
    assert.throws(() => renderTemplate("{{x}}", { x: "1", z: "2" }), /not used: z/);
  });
});

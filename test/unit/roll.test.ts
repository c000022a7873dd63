// The rolling release's local part (scripts/roll-fleet.sh, as the program's local command runs it:
// `sh -c` with its environment and the deploy key on stdin), with `ssh` stood in for by a script
// that records each call (which droplet, forward or back, the pinned host keys, the key file) and
// fails the turns a test names. The turns themselves (remote/roll.sh) run on real droplets in the
// fleet e2e.
import * as assert from "assert";
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { encodeValues, localCommand } from "../../components/shell";

const FAKE_SSH = `#!/usr/bin/env bash
set -euo pipefail
opts=()
while [ $# -gt 0 ]; do
  case "$1" in
    -o) opts+=("$2"); shift 2 ;;
    -i) key=$2; shift 2 ;;
    -p) port=$2; shift 2 ;;
    -F) shift 2 ;;
    --) shift; break ;;
    *) shift ;;
  esac
done
host=\${1#*@}
values=$(cat)
mode=forward
if grep -qx 'MODE 4' <<<"$values"; then mode=back; fi
printf '%s %s %s %s\\n' "$host" "$port" "\${1%@*}" "$mode" >>"$FAKE_DIR/calls"
printf '%s\\n' "\${opts[@]}" >"$FAKE_DIR/opts"
cp "$key" "$FAKE_DIR/key.seen"
stat -c %a "$key" >"$FAKE_DIR/key.mode"
for o in "\${opts[@]}"; do case "$o" in UserKnownHostsFile=*) cp "\${o#*=}" "$FAKE_DIR/known_hosts" ;; esac; done
printf '%s' "$2" >"$FAKE_DIR/command"
case " $FAKE_FAIL " in *" $host:$mode "*) echo "turn on $host ($mode) failed here" >&2; exit 1 ;; esac
echo "turn on $host ($mode)" >&2
`;
const KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nroll-test-key\n-----END OPENSSH PRIVATE KEY-----";
const HOST_KEY = (i: number) => `ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIRollTestHostKey${i}`;
const VALUES = { APP: "app", RELEASE_ID: "r2", HEALTH_PATH: "/healthz", CHECK_INTERVAL: "3", CHECK_TIMEOUT: "3", HEALTHY_THRESHOLD: "2", UNHEALTHY_THRESHOLD: "2", TRIGGERED_BY: "pulumi:test" };

const made: string[] = [];
after(() => made.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

interface Roll { code: number | null; stdout: string; stderr: string; calls: string[]; dir: string }

/** Runs the roll over `n` droplets (10.0.0.1, 10.0.0.2, ...), failing the turns named in `fail` ("10.0.0.2:forward"). */
function roll(n: number, fail: string[] = []): Roll {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dropstack-roll-"));
  made.push(dir);
  const bin = path.join(dir, "bin");
  fs.mkdirSync(bin);
  fs.writeFileSync(path.join(bin, "ssh"), FAKE_SSH, { mode: 0o755 });
  const droplets = [...Array(n).keys()].map((i) => `10.0.0.${i + 1} ${i === 1 ? 2222 : 22} ${HOST_KEY(i + 1)}`).join("\n");
  const r = spawnSync("/bin/sh", ["-c", localCommand("roll-fleet")], {
    input: KEY,
    encoding: "utf8",
    env: {
      PATH: `${bin}:${process.env.PATH}`, FAKE_DIR: dir, FAKE_FAIL: fail.join(" "),
      ROLL_USER: "deploy", ROLL_DROPLETS: droplets, ROLL_STEP: "sudo -n bash -c 'the turn' dropstack-roll",
      ROLL_VALUES: encodeValues(VALUES), ROLL_BACK_VALUES: encodeValues({ ...VALUES, MODE: "back" }),
    },
  });
  const calls = fs.existsSync(path.join(dir, "calls")) ? fs.readFileSync(path.join(dir, "calls"), "utf8").trim().split("\n") : [];
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, calls, dir };
}

describe("rolling release (scripts/roll-fleet.sh)", () => {
  it("gives each droplet its turn in order, as the deploy user, with only its pinned host key and a private copy of the key", () => {
    const r = roll(3);
    assert.strictEqual(r.code, 0, r.stderr);
    assert.deepStrictEqual(r.calls, ["10.0.0.1 22 deploy forward", "10.0.0.2 2222 deploy forward", "10.0.0.3 22 deploy forward"]);
    assert.deepStrictEqual(r.stdout.trim().split("\n").map((l) => l.replace(/seconds=\d+$/, "seconds=N")), ["turn=1 seconds=N", "turn=2 seconds=N", "turn=3 seconds=N"]);
    assert.strictEqual(fs.readFileSync(path.join(r.dir, "known_hosts"), "utf8"),
      `10.0.0.1 ${HOST_KEY(1)}\n[10.0.0.2]:2222 ${HOST_KEY(2)}\n10.0.0.3 ${HOST_KEY(3)}\n`);
    const opts = fs.readFileSync(path.join(r.dir, "opts"), "utf8").split("\n");
    for (const o of ["StrictHostKeyChecking=yes", "GlobalKnownHostsFile=/dev/null", "IdentitiesOnly=yes", "BatchMode=yes"]) assert.ok(opts.includes(o), `ssh -o ${o}: ${opts.join(" ")}`);
    assert.strictEqual(fs.readFileSync(path.join(r.dir, "key.seen"), "utf8"), `${KEY}\n`);
    assert.strictEqual(fs.readFileSync(path.join(r.dir, "key.mode"), "utf8").trim(), "600");
    assert.strictEqual(fs.readFileSync(path.join(r.dir, "command"), "utf8"), "sudo -n bash -c 'the turn' dropstack-roll", "the turn's command as one word for the server's shell");
    assert.ok(!r.stderr.includes("roll-test-key") && !r.stdout.includes("roll-test-key"), "the key is never printed");
  });

  it("a failed turn stops the roll: the failed droplet goes back first, then the ones that switched, the last first; the droplets after it are not touched", () => {
    const r = roll(3, ["10.0.0.2:forward"]);
    assert.strictEqual(r.code, 1);
    assert.deepStrictEqual(r.calls, ["10.0.0.1 22 deploy forward", "10.0.0.2 2222 deploy forward", "10.0.0.2 2222 deploy back", "10.0.0.1 22 deploy back"]);
    assert.match(r.stderr, /the roll stopped at droplet 2 of 3 \(10\.0\.0\.2\); droplet\(s\) 1 switched back: every droplet serves its previous release/);
    assert.match(r.stderr, /turn on 10\.0\.0\.2 \(forward\) failed here/, "the turn's own reason is in the output");
  });

  it("never switches back the last droplet in rotation: with the failed droplet out, the other keeps the new release and the up says so", () => {
    const r = roll(2, ["10.0.0.2:forward", "10.0.0.2:back"]);
    assert.strictEqual(r.code, 1);
    assert.deepStrictEqual(r.calls, ["10.0.0.1 22 deploy forward", "10.0.0.2 2222 deploy forward", "10.0.0.2 2222 deploy back"]);
    assert.match(r.stderr, /droplet 1 of 2 \(10\.0\.0\.1\) keeps the new release: switching it back would take the last droplet in rotation out/);
    assert.match(r.stderr, /droplet\(s\) 1 still serve the new release/);
    // with three, one droplet stays in rotation while each of the others switches back
    const three = roll(3, ["10.0.0.3:forward", "10.0.0.3:back"]);
    assert.deepStrictEqual(three.calls.slice(3), ["10.0.0.3 22 deploy back", "10.0.0.2 2222 deploy back", "10.0.0.1 22 deploy back"]);
  });

  it("the first droplet failing switches nothing back; a bad droplet list or no key is refused before any turn", () => {
    const r = roll(2, ["10.0.0.1:forward"]);
    assert.strictEqual(r.code, 1);
    assert.deepStrictEqual(r.calls, ["10.0.0.1 22 deploy forward", "10.0.0.1 22 deploy back"]);
    assert.match(r.stderr, /the roll stopped at droplet 1 of 2 \(10\.0\.0\.1\): every droplet serves its previous release/);
    const bad = spawnSync("/bin/sh", ["-c", localCommand("roll-fleet")], { input: "", encoding: "utf8", env: { PATH: process.env.PATH, ROLL_USER: "deploy", ROLL_DROPLETS: "10.0.0.1 22 k", ROLL_STEP: "x", ROLL_VALUES: "x", ROLL_BACK_VALUES: "x" } });
    assert.strictEqual(bad.status, 2);
    assert.match(bad.stderr, /the deploy key was not on stdin/);
    const list = spawnSync("/bin/sh", ["-c", localCommand("roll-fleet")], { input: KEY, encoding: "utf8", env: { PATH: process.env.PATH, ROLL_USER: "deploy", ROLL_DROPLETS: "10.0.0.1 ssh-ed25519", ROLL_STEP: "x", ROLL_VALUES: "x", ROLL_BACK_VALUES: "x" } });
    assert.strictEqual(list.status, 2);
    assert.match(list.stderr, /ROLL_DROPLETS: want lines of 'address port host-key'/);
  });
});

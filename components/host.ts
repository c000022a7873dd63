import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import type { EgressRule } from "./firewall";
import { renderAutoUpgrades, renderCheckScript, renderHardening, renderNftables, renderNginxDefault, renderSshdConfig, renderSwitchScript } from "./render";
import { serverRepairs } from "./drift";
import { OnServerArgs, remoteStep } from "./steps";

export interface HostSetupArgs extends OnServerArgs {
  /** App name: its user, folders and supervisor program. @example "shop" */
  app: string;
  /** Deploy user created by cloud-init. @example "deploy" */
  deployUser: string;
  /** The generated deploy key's public line (always authorized). */
  deployPublicKey: pulumi.Input<string>;
  /** Admins' public keys, authorized for the deploy user. @example ["ssh-ed25519 AAAAC3Nza... alice@laptop"] */
  adminSshKeys: string[];
  /** Networks that may reach SSH (host firewall; the cloud firewall has the same). */
  sshAllowedCidrs: string[];
  /** Extra outbound rules for the host firewall (the cloud firewall has the same); unset: none. @example [{ protocol: "tcp", ports: "25060", to: ["10.114.0.0/20"] }] */
  egress?: pulumi.Input<EgressRule[]>;
  /** Extra Debian packages. @example ["python3-flask", "libpq5"] */
  aptPackages: string[];
  /** How long to wait for cloud-init on a new droplet, in seconds. @default 900 */
  cloudInitTimeoutSeconds?: number;
  /** Read the server's drift check at every preview and up, so steps whose files were edited by hand run again and restore them. @default true */
  driftCheck?: boolean;
  /** One droplet of several behind the stack's load balancer: the app's site, not a catch-all, is nginx's default server on port 80. @default false */
  behindLoadBalancer?: boolean;
}

/**
 * Prepares a droplet over SSH: waits for cloud-init, then installs nginx, supervisor, gunicorn,
 * python3-venv and certbot, applies pending security updates, hardens sshd, the kernel and logins,
 * creates the app's user and folders, installs the deploy user's keys and the release switch
 * (`dropstack-switch`, `dropstack-rollback`) and the drift check (`dropstack-check`); then reboots
 * a new droplet whose updates need it (a new kernel) and waits until it is up again, so the first
 * release runs on the updated system. Its steps re-run only when their scripts or these settings
 * change, or when the drift check finds one of their files edited by hand; never for an app change.
 */
export class HostSetup extends pulumi.ComponentResource {
  /** The last provisioning step: later steps depend on it. */
  readonly ready: command.remote.Command;
  /** Each step's REPAIR token from the server's drift check (components/drift.ts): every component working on the server takes it. */
  readonly repairs: pulumi.Output<Record<string, string>>;

  constructor(name: string, args: HostSetupArgs, opts?: pulumi.ComponentResourceOptions) {
    super("dropstack:index:HostSetup", name, {}, opts);
    const cloudInit = this.waitUntilBooted(`${name}-cloud-init`, args);
    this.repairs = args.driftCheck === false ? pulumi.output<Record<string, string>>({}) : serverRepairs({ connection: args.connection, after: cloudInit.id });
    const base = this.provision(name, { ...args, repairs: this.repairs }, cloudInit);
    const reboot = this.rebootIfRequired(name, args, base);
    this.ready = this.waitUntilBooted(`${name}-booted`, args, reboot);
    this.registerOutputs({ ready: this.ready.stdout });
  }

  private waitUntilBooted(name: string, args: HostSetupArgs, after?: pulumi.Resource): command.remote.Command {
    return remoteStep(name, {
      connection: args.connection,
      script: "wait-ready",
      values: { TIMEOUT_SECONDS: String(args.cloudInitTimeoutSeconds ?? 900) },
      triggers: [args.dropletId],
    }, { parent: this, dependsOn: after ? [after] : undefined });
  }

  /** Reboots when the updates ask for it (/run/reboot-required), only while no release is live. */
  private rebootIfRequired(name: string, args: HostSetupArgs, after: pulumi.Resource): command.remote.Command {
    return remoteStep(`${name}-reboot`, {
      connection: args.connection,
      script: "reboot",
      values: { APP: args.app },
      triggers: [args.dropletId],
    }, { parent: this, dependsOn: [after] });
  }

  private provision(name: string, args: HostSetupArgs, after: pulumi.Resource): command.remote.Command {
    const nginx = renderNginxDefault(args.behindLoadBalancer ?? false);
    const hardening = renderHardening();
    const authorizedKeys = pulumi.output(args.deployPublicKey).apply((deployKey) =>
      [deployKey.trim(), ...args.adminSshKeys.map((k) => k.trim())].map((k) => `${k}\n`).join(""));
    return remoteStep(`${name}-base`, {
      connection: args.connection,
      repairs: args.repairs,
      script: "base",
      values: {
        APP: args.app,
        DEPLOY_USER: args.deployUser,
        AUTHORIZED_KEYS: authorizedKeys,
        APT_PACKAGES: args.aptPackages.join(" "),
        NGINX_DEFAULT: nginx.defaultServer,
        NGINX_ACME_SNIPPET: nginx.acmeSnippet,
        SWITCH_SCRIPT: renderSwitchScript(),
        CHECK_SCRIPT: renderCheckScript(),
        SSHD_CONFIG: renderSshdConfig({ deployUser: args.deployUser }),
        AUTO_UPGRADES: renderAutoUpgrades(),
        NFTABLES: pulumi.output(args.egress ?? []).apply((egress) => renderNftables({ sshAllowedCidrs: args.sshAllowedCidrs, egress })),
        SYSCTL: hardening.sysctl,
        MODPROBE: hardening.modprobe,
        NEEDRESTART: hardening.needrestart,
        COREDUMP_LIMITS: hardening.coredumpLimits,
        COREDUMP_SYSTEMD: hardening.coredumpSystemd,
      },
      triggers: [args.dropletId],
    }, { parent: this, dependsOn: [after] });
  }
}

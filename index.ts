// dropstack: a Python WSGI app on a hardened DigitalOcean droplet over HTTPS, one `pulumi up` per stack.
// This file only reads the stack's config and composes the components; see components/.
import * as digitalocean from "@pulumi/digitalocean";
import * as pulumi from "@pulumi/pulumi";
import { AppRelease } from "./components/release";
import { Certificate } from "./components/certificate";
import { ContainerImage } from "./components/container";
import { EgressRule, loadConfig, MANAGED_POSTGRES_PORT } from "./components/config";
import { DropletDatabase } from "./components/database";
import { Dns, DnsArgs } from "./components/dns";
import { Firewall, FirewallArgs } from "./components/firewall";
import { Handover } from "./components/handover";
import { ManagedDatabase } from "./components/managedDatabase";
import { HostSetup } from "./components/host";
import { LoadBalancer } from "./components/loadBalancer";
import { RollingRelease } from "./components/roll";
import { DeployKey, HostKey } from "./components/keys";
import { perDroplet, Server } from "./components/server";
import { NginxSite } from "./components/site";
import { DataVolume } from "./components/volume";

// The SDK's own record of which config keys were stored with --secret (internal, but what
// Config.getSecret relies on too); absent in an SDK without it, which then means none.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { isConfigSecret } = require("@pulumi/pulumi/runtime/config") as { isConfigSecret?: (key: string) => boolean };
const allConfig = pulumi.runtime.allConfig();
const cfg = loadConfig(allConfig, __dirname, Object.keys(allConfig).filter((k) => isConfigSecret?.(k) ?? false));
for (const warning of cfg.warnings) pulumi.log.warn(warning);
const stack = pulumi.getStack();
const base = `${cfg.appName}-${stack}`;

const deployKey = new DeployKey("deploy-key", { keyName: `dropstack-${base}-deploy` });
// One droplet, or (droplets > 1) several alike behind a load balancer. The first keeps the single
// droplet's resource names, so growing a stack keeps its droplet.
const fleet = cfg.fleet;
const count = fleet?.droplets ?? 1;
const hostKeys = [...Array(count).keys()].map((i) => new HostKey(perDroplet("host-key", i)));
const servers = hostKeys.map((hostKey, i) => new Server(perDroplet("server", i), {
  dropletName: perDroplet(base, i),
  region: cfg.region,
  size: cfg.size,
  image: cfg.image,
  ipv6: cfg.ipv6,
  monitoring: cfg.monitoring,
  backups: cfg.backups,
  tags: ["dropstack", `dropstack-${stack}`, ...cfg.tags],
  deployUser: cfg.deployUser,
  deployPublicKey: deployKey.publicKeyOpenssh,
  deployKeyFingerprint: deployKey.fingerprint,
  hostPrivateKey: hostKey.privateKeyOpenssh,
  hostPublicKey: hostKey.publicKeyOpenssh,
  protect: cfg.protect,
}));
const server = servers[0];
// A managed database is reached on its port within the droplets' VPC: both firewalls open that, and only that.
const egress: pulumi.Input<EgressRule[]> = cfg.managed
  ? digitalocean.getVpcOutput({ id: server.vpcUuid }).ipRange
    .apply((range): EgressRule[] => [...cfg.egress, { protocol: "tcp", ports: String(MANAGED_POSTGRES_PORT), to: [range] }])
  : cfg.egress;
// droplets > 1: the load balancer in the droplets' VPC (the region's default) serves the site.
const lb = fleet
  ? new LoadBalancer("lb", {
    lbName: base,
    region: cfg.region,
    vpcUuid: server.vpcUuid,
    dropletIds: servers.map((x) => x.dropletId),
    fqdn: cfg.fqdn,
    healthPath: cfg.healthPath,
    health: fleet.health,
    protect: cfg.protect,
  })
  : undefined;
const firewallArgs: FirewallArgs = {
  firewallName: base,
  dropletIds: servers.map((x) => x.dropletId),
  sshAllowedCidrs: cfg.sshAllowedCidrs,
  egress,
  webFromLoadBalancer: lb?.lbId,
};
const dnsArgs: DnsArgs = {
  domain: cfg.domain,
  host: cfg.host,
  ipv4Address: lb ? lb.ip : server.ipv4Address,
  ipv6Address: cfg.ipv6 && !lb ? server.ipv6Address : undefined,
  ttl: cfg.dnsTtl,
};
// One droplet: the record and the firewall first (the certificate's challenge needs the record).
// Several: both come after the roll (below), so that a stack grown from one droplet hands over
// without a failed request.
const dns = lb ? undefined : new Dns("dns", dnsArgs);
if (!lb) new Firewall("firewall", firewallArgs);

/** Everything on one droplet: provisioning, the site, (one droplet) its certificate and data, the app's image. */
function onDroplet(i: number) {
  const x = servers[i];
  const connection = {
    host: x.ipv4Address,
    user: cfg.deployUser,
    privateKey: deployKey.privateKeyOpenssh,
    hostKey: hostKeys[i].publicKeyOpenssh,
    dialErrorLimit: 40,
    perDialTimeout: 15,
  };
  const host = new HostSetup(perDroplet("host", i), {
    connection,
    dropletId: x.dropletId,
    app: cfg.appName,
    deployUser: cfg.deployUser,
    deployPublicKey: deployKey.publicKeyOpenssh,
    adminSshKeys: cfg.adminSshKeys,
    sshAllowedCidrs: cfg.sshAllowedCidrs,
    egress,
    aptPackages: cfg.aptPackages,
    driftCheck: cfg.driftCheck,
    ...(lb ? { behindLoadBalancer: true } : {}),
  });
  // Every later step on the server: its connection, the droplet, and the drift check's repair tokens.
  const onServer = { connection, dropletId: x.dropletId, repairs: host.repairs };
  // (behind the load balancer TLS ends there: no certificate on the droplets)
  const certificate = cfg.tls && !lb
    ? new Certificate(perDroplet("certificate", i), {
      ...onServer,
      fqdn: cfg.fqdn,
      email: cfg.acmeEmail ?? "",
      acmeServer: cfg.acmeServer,
      acmeCaBundle: cfg.acmeCaBundle,
      secret: cfg.secretSteps.includes("certificate"),
    }, { dependsOn: [host, ...(dns ? [dns] : [])] })
    : undefined;
  const site = new NginxSite(perDroplet("site", i), {
    ...onServer,
    app: cfg.appName,
    fqdn: cfg.fqdn,
    tls: cfg.tls,
    maxBodySize: cfg.maxBodySize,
    hsts: cfg.hsts,
    apiPrefix: cfg.client?.apiPrefix,
    ...(lb ? { behindLoadBalancer: { healthPath: cfg.healthPath } } : {}),
  }, { dependsOn: [host, ...(certificate ? [certificate] : [])] });
  // Runtime docker: Docker Engine on the droplet and the app's image built there.
  const container = cfg.runtime === "docker"
    ? new ContainerImage(perDroplet("container", i), { ...onServer, app: cfg.appName, sourceDir: cfg.appDir, deployUser: cfg.deployUser }, { dependsOn: [host] })
    : undefined;
  return { x, host, onServer, site, container };
}
const droplets = servers.map((_, i) => onDroplet(i));
const { host, onServer } = droplets[0];

// Data that outlives the droplet: the volume (shared/ and the database's files), then the database.
// (one droplet only: config refuses a volume or the droplet's own PostgreSQL with more)
const volume = cfg.volumeSize === undefined ? undefined : new DataVolume("data", {
  ...onServer,
  app: cfg.appName,
  volumeName: `${base}-data`.toLowerCase().replace(/[^a-z0-9-]/g, "-").slice(0, 64),
  region: cfg.region,
  sizeGib: cfg.volumeSize,
  protect: cfg.protect,
}, { dependsOn: [host] });
const dropletDatabase = cfg.database === "droplet" && volume && cfg.postgresMajor !== undefined
  ? new DropletDatabase("database", {
    ...onServer,
    name: cfg.appName,
    mount: volume.mount,
    postgresMajor: cfg.postgresMajor,
    seed: cfg.seed,
    deployUser: cfg.deployUser,
    backupKeepDays: cfg.backupKeepDays,
  }, { dependsOn: [volume] })
  : undefined;
const managedDatabase = cfg.managed
  ? new ManagedDatabase("managed-db", {
    ...onServer,
    name: cfg.appName,
    clusterName: `${base}-db`.toLowerCase().replace(/[^a-z0-9-]/g, "-").slice(0, 63),
    region: cfg.region,
    vpcUuid: server.vpcUuid,
    ...cfg.managed,
    protect: cfg.protect,
    seed: cfg.seed,
    deployUser: cfg.deployUser,
    ...(lb ? { otherDropletIds: servers.slice(1).map((x) => x.dropletId) } : {}),
  }, { dependsOn: [host] })
  : undefined;
const database = dropletDatabase ?? managedDatabase;

// The release on every droplet. One droplet: it switches itself. Several: each stages it (the
// first also runs the release command, before the others), then the roll switches them in turn.
const releases: AppRelease[] = [];
for (const [i, d] of droplets.entries()) {
  releases.push(new AppRelease(perDroplet("app", i), {
    ...d.onServer,
    app: cfg.appName,
    sourceDir: cfg.appDir,
    clientDir: cfg.client?.dir,
    wsgi: cfg.wsgi,
    workers: cfg.workers,
    env: cfg.env,
    secretEnv: cfg.secretEnv,
    secretSettings: cfg.secretSteps.includes("release"),
    databaseUrl: database?.url,
    healthPath: cfg.healthPath,
    healthStatus: cfg.healthStatus,
    healthTimeout: cfg.healthTimeout,
    healthAttempts: cfg.healthAttempts,
    releaseCommand: cfg.releaseCommand,
    releaseVersion: cfg.releaseVersion,
    fqdn: cfg.fqdn,
    keepReleases: cfg.keepReleases,
    deployUser: cfg.deployUser,
    triggeredBy: `pulumi:${stack}`,
    container: d.container ? { image: d.container.imageName, memoryMib: cfg.containerMemory } : undefined,
    ...(lb ? { stage: { runReleaseCommand: i === 0 } } : {}),
  }, { dependsOn: [d.host, d.site, ...(volume ? [volume] : []), ...(database ? [database] : []), ...(d.container ? [d.container] : []), ...(i > 0 ? [releases[0]] : [])] }));
}
const release = releases[0];
if (fleet && lb) {
  const roll = new RollingRelease("roll", {
    app: cfg.appName,
    releaseId: release.releaseId,
    droplets: droplets.map((d, i) => ({ ...d.onServer, staged: releases[i].stdout })),
    healthPath: cfg.healthPath,
    health: fleet.health,
    triggeredBy: `pulumi:${stack}`,
  }, { dependsOn: [...releases, lb] });
  // The name moves to the load balancer once the roll has put droplets in rotation. A first
  // droplet that served the site itself keeps serving HTTPS for the record's TTL after that (the
  // handover), and only then does the firewall admit web traffic from the load balancer alone.
  const fleetDns = new Dns("dns", dnsArgs, { dependsOn: [roll] });
  const handover = new Handover("handover", {
    ...droplets[0].onServer,
    app: cfg.appName,
    fqdn: cfg.fqdn,
    ttl: cfg.dnsTtl,
  }, { dependsOn: [fleetDns] });
  new Firewall("firewall", firewallArgs, { dependsOn: [handover] });
}

/** The (first) droplet's address. */
export const ipv4Address = server.ipv4Address;
/** With droplets > 1: the load balancer's address, which the site's name points at ("" with one droplet). */
export const loadBalancerIp = lb ? lb.ip : "";
/** Every droplet's address (SSH), in order. */
export const dropletAddresses = servers.map((x) => x.ipv4Address);
export const ipv6Address = server.ipv6Address;
export const fqdn = cfg.fqdn;
export const url = `${cfg.tls ? "https" : "http"}://${cfg.fqdn}/`;
export const dropletId = server.dropletId;
export const releaseId = release.releaseId;
/** The data volume's id ("" without one): the volume a replaced droplet gets back. */
export const volumeId = volume ? volume.volumeId : "";
export const sshCommand = pulumi.interpolate`ssh ${cfg.deployUser}@${server.ipv4Address}`;
export const deployPublicKey = deployKey.publicKeyOpenssh;
/** A line for ~/.ssh/known_hosts: ssh then verifies the droplet's pinned host key. */
export const knownHostsLine = pulumi.interpolate`${cfg.fqdn},${server.ipv4Address} ${hostKeys[0].publicKeyOpenssh}`;
/** known_hosts lines of every droplet (by address: with droplets > 1 the name is the load balancer's). */
export const knownHostsLines = pulumi.all(servers.map((x, i) => pulumi.interpolate`${x.ipv4Address} ${hostKeys[i].publicKeyOpenssh}`));

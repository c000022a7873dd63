// dropstack: a Python WSGI app on a hardened DigitalOcean droplet over HTTPS, one `pulumi up` per stack.
// This file only reads the stack's config and composes the components; see components/.
import * as digitalocean from "@pulumi/digitalocean";
import * as pulumi from "@pulumi/pulumi";
import { AppRelease } from "./components/release";
import { Certificate } from "./components/certificate";
import { ContainerImage } from "./components/container";
import { EgressRule, loadConfig, MANAGED_POSTGRES_PORT } from "./components/config";
import { DropletDatabase } from "./components/database";
import { Dns } from "./components/dns";
import { Firewall } from "./components/firewall";
import { ManagedDatabase } from "./components/managedDatabase";
import { HostSetup } from "./components/host";
import { DeployKey, HostKey } from "./components/keys";
import { Server } from "./components/server";
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
const hostKey = new HostKey("host-key");
const server = new Server("server", {
  dropletName: base,
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
});
// A managed database is reached on its port within the droplet's VPC: both firewalls open that, and only that.
const egress: pulumi.Input<EgressRule[]> = cfg.managed
  ? digitalocean.getVpcOutput({ id: server.vpcUuid }).ipRange
    .apply((range): EgressRule[] => [...cfg.egress, { protocol: "tcp", ports: String(MANAGED_POSTGRES_PORT), to: [range] }])
  : cfg.egress;
new Firewall("firewall", { firewallName: base, dropletId: server.dropletId, sshAllowedCidrs: cfg.sshAllowedCidrs, egress });
const dns = new Dns("dns", {
  domain: cfg.domain,
  host: cfg.host,
  ipv4Address: server.ipv4Address,
  ipv6Address: cfg.ipv6 ? server.ipv6Address : undefined,
});

const connection = {
  host: server.ipv4Address,
  user: cfg.deployUser,
  privateKey: deployKey.privateKeyOpenssh,
  hostKey: hostKey.publicKeyOpenssh,
  dialErrorLimit: 40,
  perDialTimeout: 15,
};
const host = new HostSetup("host", {
  connection,
  dropletId: server.dropletId,
  app: cfg.appName,
  deployUser: cfg.deployUser,
  deployPublicKey: deployKey.publicKeyOpenssh,
  adminSshKeys: cfg.adminSshKeys,
  sshAllowedCidrs: cfg.sshAllowedCidrs,
  egress,
  aptPackages: cfg.aptPackages,
  driftCheck: cfg.driftCheck,
});
// Every later step on the server: its connection, the droplet, and the drift check's repair tokens.
const onServer = { connection, dropletId: server.dropletId, repairs: host.repairs };
const certificate = cfg.tls
  ? new Certificate("certificate", {
    ...onServer,
    fqdn: cfg.fqdn,
    email: cfg.acmeEmail ?? "",
    acmeServer: cfg.acmeServer,
    acmeCaBundle: cfg.acmeCaBundle,
    secret: cfg.secretSteps.includes("certificate"),
  }, { dependsOn: [host, dns] })
  : undefined;
const site = new NginxSite("site", {
  ...onServer,
  app: cfg.appName,
  fqdn: cfg.fqdn,
  tls: cfg.tls,
  maxBodySize: cfg.maxBodySize,
  hsts: cfg.hsts,
  apiPrefix: cfg.client?.apiPrefix,
}, { dependsOn: [host, ...(certificate ? [certificate] : [])] });
// Data that outlives the droplet: the volume (shared/ and the database's files), then the database.
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
  }, { dependsOn: [host] })
  : undefined;
const database = dropletDatabase ?? managedDatabase;
// Runtime docker: Docker Engine on the droplet and the app's image built there.
const container = cfg.runtime === "docker"
  ? new ContainerImage("container", { ...onServer, app: cfg.appName, sourceDir: cfg.appDir, deployUser: cfg.deployUser }, { dependsOn: [host] })
  : undefined;
const release = new AppRelease("app", {
  ...onServer,
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
  container: container ? { image: container.imageName, memoryMib: cfg.containerMemory } : undefined,
}, { dependsOn: [host, site, ...(volume ? [volume] : []), ...(database ? [database] : []), ...(container ? [container] : [])] });

export const ipv4Address = server.ipv4Address;
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
export const knownHostsLine = pulumi.interpolate`${cfg.fqdn},${server.ipv4Address} ${hostKey.publicKeyOpenssh}`;

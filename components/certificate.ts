import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { renderRenewHook } from "./render";
import { OnServerArgs, remoteStep } from "./steps";

export interface CertificateArgs extends OnServerArgs {
  /** Host name on the certificate. @example "api.example.com" */
  fqdn: string;
  /** ACME account email. @example "ops@example.com" */
  email: string;
  /** ACME directory URL certbot registers with and requests from. @example "https://acme-v02.api.letsencrypt.org/directory" */
  acmeServer: string;
  /** PEM bundle certbot trusts to reach a private ACME server; unset: the system's CAs. @example "-----BEGIN CERTIFICATE-----\n..." */
  acmeCaBundle?: string;
  /** True when one of these values was stored as a secret (e.g. a credential in the ACME URL): the step logs nothing and its stdin and outputs are secret. @default false */
  secret?: boolean;
}

/**
 * A certificate for the site from the ACME server (certbot, webroot challenge answered by nginx),
 * renewed by the packaged systemd timer with a deploy hook that reloads nginx.
 */
export class Certificate extends pulumi.ComponentResource {
  /** The certbot step. */
  readonly issued: command.remote.Command;
  /** Path of the certificate chain on the server. */
  readonly certificatePath: string;

  constructor(name: string, args: CertificateArgs, opts?: pulumi.ComponentResourceOptions) {
    super("dropstack:index:Certificate", name, {}, opts);
    this.certificatePath = `/etc/letsencrypt/live/${args.fqdn}/fullchain.pem`;
    this.issued = remoteStep(`${name}-certbot`, {
      connection: args.connection,
      repairs: args.repairs,
      script: "certificate",
      values: {
        FQDN: args.fqdn,
        EMAIL: args.email,
        ACME_SERVER: args.acmeServer,
        ACME_CA_BUNDLE: args.acmeCaBundle ?? "",
        RENEW_HOOK: renderRenewHook(),
      },
      secret: args.secret,
      triggers: [args.dropletId],
    }, { parent: this, dependsOn: opts?.dependsOn });
    this.registerOutputs({ certificatePath: this.certificatePath });
  }
}

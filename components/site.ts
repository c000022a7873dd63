import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { renderDirectSite, renderNginxSite } from "./render";
import { OnServerArgs, remoteStep } from "./steps";

export interface NginxSiteArgs extends OnServerArgs {
  /** App name (upstream, socket path). @example "shop" */
  app: string;
  /** Host name the site answers on. @example "api.example.com" */
  fqdn: string;
  /** Serve HTTPS (needs the certificate) and redirect HTTP to it. @example true */
  tls: boolean;
  /** Largest request body (nginx size). @example "10m" */
  maxBodySize: string;
  /** Send the Strict-Transport-Security header. @example true */
  hsts: boolean;
  /** With a built client (served at /): the path prefix nginx hands to the app; unset: the app answers at /. @example "/api" */
  apiPrefix?: string;
  /** One droplet of several behind the stack's load balancer: plain HTTP from it; its health path answers 503 while the droplet drains. A droplet that still has certbot's certificate (it served the site itself before the stack grew) also keeps serving HTTPS with it until the handover step. Unset: the droplet serves the site itself. @example { healthPath: "/healthz" } */
  behindLoadBalancer?: { healthPath: string };
}

/** nginx in front of gunicorn's unix socket: proxy headers, static files, a built client, HTTPS and the redirect. */
export class NginxSite extends pulumi.ComponentResource {
  /** The rendered site configuration (as installed in /etc/nginx/sites-available). */
  readonly config: string;
  /** The step that installs it. */
  readonly installed: command.remote.Command;

  constructor(name: string, args: NginxSiteArgs, opts?: pulumi.ComponentResourceOptions) {
    super("dropstack:index:NginxSite", name, {}, opts);
    const site = { app: args.app, fqdn: args.fqdn, maxBodySize: args.maxBodySize, hsts: args.hsts, apiPrefix: args.apiPrefix };
    this.config = renderNginxSite({ ...site, tls: args.tls, behindLoadBalancer: args.behindLoadBalancer });
    // (behind the load balancer: the server for clients that still reach this droplet itself, installed only while it has certbot's certificate)
    const direct: Record<string, string> = args.behindLoadBalancer ? { FQDN: args.fqdn, DIRECT_SITE: renderDirectSite(site) } : {};
    this.installed = remoteStep(`${name}-nginx`, {
      connection: args.connection,
      repairs: args.repairs,
      script: "site",
      values: { APP: args.app, NGINX_SITE: this.config, ...direct },
      triggers: [args.dropletId],
    }, { parent: this, dependsOn: opts?.dependsOn });
    this.registerOutputs({ config: this.config });
  }
}

// The throughput benchmark's extra nginx target (see throughput.ts).

/**
 * The site's HTTPS server block, listening on 127.0.0.1 without TLS: the same proxy settings,
 * headers and upstream, so that nginx's cost splits into TLS and proxying.
 */
export function plainHttpServerBlock(site: string, port: number): string {
  const listen = site.indexOf("listen 443 ssl");
  const start = site.lastIndexOf("server {", listen);
  if (listen < 0 || start < 0) throw new Error(`no HTTPS server block in the site's nginx config:\n${site}`);
  let depth = 0;
  let end = start;
  for (let i = site.indexOf("{", start); i < site.length; i++) {
    if (site[i] === "{") depth++;
    if (site[i] === "}" && --depth === 0) {
      end = i + 1;
      break;
    }
  }
  const lines = site.slice(start, end).split("\n").filter((l) => !/^\s*(listen|ssl_)/.test(l));
  return [lines[0], `    listen 127.0.0.1:${port};`, ...lines.slice(1)].join("\n") + "\n";
}

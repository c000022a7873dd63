// CIDR networks as numbers: parse strictly, write in one canonical form, and reason about lists of
// them (what a list covers, which entries overlap). Used to validate the firewall settings.

/** A parsed network: address family, first address and prefix length. */
export interface Network {
  family: 4 | 6;
  /** The address as written (host bits included). */
  address: bigint;
  prefix: number;
}

const BITS = { 4: 32, 6: 128 } as const;
/** The explicit allow-all of each family, as the documentation writes it. */
export const ALLOW_ALL = { 4: "0.0.0.0/0", 6: "::/0" } as const;

function parseIpv4(text: string): bigint | undefined {
  const parts = text.split(".");
  if (parts.length !== 4 || parts.some((p) => !/^(0|[1-9][0-9]{0,2})$/.test(p) || Number(p) > 255)) return undefined;
  return parts.reduce((acc, p) => (acc << 8n) | BigInt(p), 0n);
}

function parseIpv6(text: string): bigint | undefined {
  if (!/^[0-9a-fA-F:]{2,39}$/.test(text)) return undefined;
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const groups = halves.map((h) => (h === "" ? [] : h.split(":")));
  if (groups.flat().some((g) => !/^[0-9a-fA-F]{1,4}$/.test(g))) return undefined;
  const count = groups.flat().length;
  if (halves.length === 2 ? count > 7 : count !== 8) return undefined;
  const full = halves.length === 2 ? [...groups[0], ...Array(8 - count).fill("0"), ...groups[1]] : groups[0];
  return full.reduce((acc, g) => (acc << 16n) | BigInt(`0x${g}`), 0n);
}

/** Parses "203.0.113.0/24" or "2001:db8::/32"; undefined when it is not a network in CIDR notation. */
export function parseCidr(value: string): Network | undefined {
  const m = /^([^/]{1,39})\/(0|[1-9][0-9]{0,2})$/.exec(value);
  if (!m) return undefined;
  const prefix = Number(m[2]);
  const v4 = parseIpv4(m[1]);
  if (v4 !== undefined) return prefix <= 32 ? { family: 4, address: v4, prefix } : undefined;
  const v6 = parseIpv6(m[1]);
  if (v6 !== undefined) return prefix <= 128 ? { family: 6, address: v6, prefix } : undefined;
  return undefined;
}

/** The prefix written with a leading zero ("10.0.0.0/08"): refused, as tools read it differently. */
export function hasLeadingZeroPrefix(value: string): boolean {
  return /\/0[0-9]/.test(value);
}

const hostMask = (n: Network) => (1n << BigInt(BITS[n.family] - n.prefix)) - 1n;

/** The first and last address of the network. */
export function range(n: Network): [bigint, bigint] {
  const first = n.address & ~hostMask(n);
  return [first, first | hostMask(n)];
}

/** True when the address has bits set below the prefix ("203.0.113.7/24"). */
export function hasHostBits(n: Network): boolean {
  return (n.address & hostMask(n)) !== 0n;
}

function formatAddress(family: 4 | 6, address: bigint): string {
  if (family === 4) return [24n, 16n, 8n, 0n].map((s) => String((address >> s) & 255n)).join(".");
  const groups = [...Array(8).keys()].map((i) => Number((address >> BigInt(112 - 16 * i)) & 0xffffn));
  // RFC 5952: the longest run (of at least two) of zero groups becomes "::", the first one on a tie.
  let best = { at: -1, len: 1 };
  for (let i = 0; i < 8;) {
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > best.len) best = { at: i, len: j - i };
    i = j > i ? j : i + 1;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best.at < 0) return hex.join(":");
  return `${hex.slice(0, best.at).join(":")}::${hex.slice(best.at + best.len).join(":")}`;
}

/** The network in canonical form: lower case, shortest IPv6, host bits cleared. */
export function formatCidr(n: Network): string {
  return `${formatAddress(n.family, range(n)[0])}/${n.prefix}`;
}

/** True when the networks of `family` in the list together cover every address of that family. */
export function coversFamily(networks: Network[], family: 4 | 6): boolean {
  const ranges = networks.filter((n) => n.family === family).map(range).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  let next = 0n;
  for (const [first, last] of ranges) {
    if (first > next) return false;
    if (last + 1n > next) next = last + 1n;
  }
  return next === 1n << BigInt(BITS[family]);
}

/** Pairs [i, j] (i < j) of list entries whose networks share addresses (duplicates included). */
export function overlaps(networks: Network[]): [number, number][] {
  const out: [number, number][] = [];
  const ranges = networks.map(range);
  for (let i = 0; i < networks.length; i++) {
    for (let j = i + 1; j < networks.length; j++) {
      if (networks[i].family !== networks[j].family) continue;
      if (ranges[i][0] <= ranges[j][1] && ranges[j][0] <= ranges[i][1]) out.push([i, j]);
    }
  }
  return out;
}

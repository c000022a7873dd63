// What a pg_dump file says about itself, read before anything is created: its format and the
// PostgreSQL major versions that made it. A dump from a newer major than the server's cannot be
// restored there (pg_restore refuses a newer archive; a newer pg_dump's plain SQL uses syntax the
// older server lacks), so the config check refuses it up front.
//
// The custom format's header (pg_dump's pg_backup_archiver.c, WriteHead/ReadHead): "PGDMP", the
// archive version (major, minor, revision bytes), int size, offset size, format byte, compression
// (a byte from archive 1.15, an int before), the creation time (7 ints), then the database name,
// the server's version string and pg_dump's version string. An int is a sign byte followed by
// `int size` bytes, least significant first; a string is its length as an int, then its bytes.
import * as fs from "fs";

export interface DumpInfo {
  /** "custom" (pg_dump -Fc) or "plain" (SQL text). */
  format: "custom" | "plain";
  /** Major version of the server the dump was taken from, when the file says. @example 15 */
  serverMajor?: number;
  /** Major version of the pg_dump that wrote it, when the file says. @example 15 */
  dumpMajor?: number;
  /** Plain SQL only: true when it names roles (ALTER ... OWNER TO, GRANT, REVOKE), which fail for roles the server lacks. */
  namesRoles: boolean;
}

/** Major version of a PostgreSQL version string: "15.8 (Debian 15.8-0+deb12u1)" → 15, "9.6.24" → 9.6 as 9. */
function majorOf(version: string | undefined): number | undefined {
  const m = /^(\d+)(?:\.(\d+))?/.exec(version?.trim() ?? "");
  return m ? Number(m[1]) : undefined;
}

/** Reads the custom format's header fields after the magic. Throws on a truncated header. */
function customHeader(buf: Buffer): { serverVersion?: string; dumpVersion?: string } {
  let at = 5;
  const byte = (): number => {
    if (at >= buf.length) throw new Error("the custom-format header is truncated");
    return buf[at++];
  };
  const vmaj = byte();
  const vmin = byte();
  const vrev = vmaj > 1 || vmin > 0 ? byte() : 0;
  const version = (vmaj << 16) | (vmin << 8) | vrev;
  const v = (a: number, b: number) => (a << 16) | (b << 8);
  const intSize = byte();
  if (intSize < 1 || intSize > 8) throw new Error(`the custom-format header gives an int size of ${intSize}`);
  if (version >= v(1, 7)) byte(); // offset size
  byte(); // format
  const readInt = (): number => {
    const sign = version > v(1, 0) ? byte() : 0;
    let value = 0;
    for (let i = 0; i < intSize; i++) value += byte() * 2 ** (8 * i);
    return sign ? -value : value;
  };
  const readStr = (): string | undefined => {
    const len = readInt();
    if (len < 0) return undefined;
    if (at + len > buf.length) throw new Error("the custom-format header is truncated");
    const s = buf.subarray(at, at + len).toString("utf8");
    at += len;
    return s;
  };
  if (version >= v(1, 15)) byte(); // compression algorithm
  else if (version >= v(1, 4)) readInt(); // compression level
  else if (version >= v(1, 2)) byte();
  if (version < v(1, 10)) return {};
  for (let i = 0; i < 7; i++) readInt(); // creation time
  readStr(); // database name
  return { serverVersion: readStr(), dumpVersion: readStr() };
}

/** Reads what a dump file says about itself; throws with a plain reason when it is not a pg_dump file. */
export function readDumpInfo(file: string): DumpInfo {
  const fd = fs.openSync(file, "r");
  const head = Buffer.alloc(64 * 1024);
  let n: number;
  try {
    n = fs.readSync(fd, head, 0, head.length, 0);
  } finally {
    fs.closeSync(fd);
  }
  const buf = head.subarray(0, n);
  if (buf.subarray(0, 5).toString("latin1") === "PGDMP") {
    const h = customHeader(buf);
    return { format: "custom", serverMajor: majorOf(h.serverVersion), dumpMajor: majorOf(h.dumpVersion), namesRoles: false };
  }
  if (buf.subarray(0, 2).toString("hex") === "1f8b") throw new Error("it is gzip-compressed: decompress it (gunzip) or dump in the custom format (pg_dump -Fc)");
  const text = buf.toString("utf8");
  if (!/^--\s*\n--\s*PostgreSQL database dump\s*\n/.test(text)) {
    throw new Error("it is neither a custom-format dump (pg_dump -Fc) nor a plain SQL dump (its first lines are not \"-- PostgreSQL database dump\")");
  }
  const server = /^-- Dumped from database version (\S+)/m.exec(text)?.[1];
  const dumper = /^-- Dumped by pg_dump version (\S+)/m.exec(text)?.[1];
  const whole = fs.readFileSync(file, "utf8");
  return { format: "plain", serverMajor: majorOf(server), dumpMajor: majorOf(dumper), namesRoles: /^(?:ALTER .* OWNER TO |GRANT |REVOKE )/m.test(whole) };
}

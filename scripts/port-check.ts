/**
 * What `pnpm start` checks before it starts anything: every port it is about to use is free, and
 * for a taken one, who holds it (an earlier Tollgate, and the `pnpm start` that runs it, or any
 * other program) and how to free it. Linux's /proc names the holder; elsewhere the message says
 * how to look.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { createServer } from 'node:net';

export interface PortUse {
  host: string;
  port: number;
  /** What would listen there, e.g. "the gateway". */
  what: string;
  /** The variable that moves it, e.g. GATEWAY_PORT. */
  variable: string;
}

/** Whether a listener could bind host:port now (false when something else holds it). */
export function portFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EADDRINUSE' || err.code === 'EACCES') resolve(false);
      else reject(err);
    });
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/** A free port on host, picked by the kernel. */
export function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen({ host, port: 0 }, () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export interface Healthz {
  service?: string;
  pid?: number;
}

/** What answers GET /healthz on host:port, if it looks like a Tollgate service (or its stub). */
export async function healthzAt(host: string, port: number, timeoutMs = 1_000): Promise<Healthz | undefined> {
  try {
    const res = await fetch(`http://${host}:${port}/healthz`, { signal: AbortSignal.timeout(timeoutMs) });
    const body = (await res.json()) as Record<string, unknown>;
    if (!res.ok || (body.status !== 'ok' && body.ok !== true)) return undefined;
    return {
      ...(typeof body.service === 'string' && { service: body.service }),
      ...(typeof body.pid === 'number' && { pid: body.pid }),
    };
  } catch {
    return undefined;
  }
}

interface ProcessInfo {
  pid: number;
  command: string;
  cwd?: string;
}

function processInfo(pid: number): ProcessInfo | undefined {
  try {
    const command = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
    let cwd: string | undefined;
    try {
      cwd = readlinkSync(`/proc/${pid}/cwd`);
    } catch {
      // another user's process
    }
    return { pid, command, ...(cwd && { cwd }) };
  } catch {
    return undefined;
  }
}

function parentOf(pid: number): number | undefined {
  try {
    // Field 4 of /proc/<pid>/stat, after the command in parentheses (which may hold spaces).
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    return ppid > 1 ? ppid : undefined;
  } catch {
    return undefined;
  }
}

/** The process listening on the port (any address), from /proc: Linux only, own or readable processes. */
export function listenerPid(port: number): number | undefined {
  const inodes = new Set<string>();
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = readFileSync(table, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      // local_address is ADDR:PORT in hex; state 0A is LISTEN; field 9 is the socket's inode.
      if (f.length > 9 && f[3] === '0A' && parseInt(f[1]!.split(':')[1]!, 16) === port) inodes.add(`socket:[${f[9]}]`);
    }
  }
  if (inodes.size === 0) return undefined;
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((p) => /^\d+$/.test(p));
  } catch {
    return undefined;
  }
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        if (inodes.has(readlinkSync(`/proc/${pid}/fd/${fd}`))) return Number(pid);
      } catch {
        // closed meanwhile
      }
    }
  }
  return undefined;
}

const isStart = (p: ProcessInfo) => /(^|[\s/])scripts\/start\.ts(\s|$)/.test(p.command);

/** The `pnpm start` a process runs under, if any (its nearest ancestor running scripts/start.ts). */
function startAbove(pid: number): ProcessInfo | undefined {
  for (let p = parentOf(pid), hops = 0; p !== undefined && hops < 10; p = parentOf(p), hops++) {
    const info = processInfo(p);
    if (info && isStart(info)) return info;
  }
  return undefined;
}

/** One paragraph: which port, held by what, and how to free it or move. */
export async function describeTaken(use: PortUse): Promise<string> {
  const where = `port ${use.port} (${use.what}, ${use.variable})`;
  const health = await healthzAt(use.host, use.port);
  const pid = listenerPid(use.port) ?? health?.pid;
  const holder = pid !== undefined ? processInfo(pid) : undefined;
  const move = `or set ${use.variable} to a free port`;
  if (health) {
    const name = `an earlier Tollgate ${health.service ?? 'service'}${pid !== undefined ? ` (pid ${pid})` : ''}`;
    const start = pid !== undefined ? startAbove(pid) : undefined;
    if (start) {
      return `${where} is taken by ${name}, run by \`pnpm start\` (pid ${start.pid}${start.cwd ? ` in ${start.cwd}` : ''}): stop that with Ctrl-C in its terminal or \`kill ${start.pid}\`, ${move}.`;
    }
    return `${where} is taken by ${name}: stop it${pid !== undefined ? ` with \`kill ${pid}\`` : ''}, ${move}.`;
  }
  if (holder) {
    return `${where} is taken by pid ${holder.pid} (${holder.command.slice(0, 120)}): stop it, ${move}.`;
  }
  return `${where} is taken by another program (\`lsof -nP -iTCP:${use.port} -sTCP:LISTEN\` shows which): stop it, ${move}.`;
}

/** Every use whose port is taken, described; empty when all are free. Ports named twice count as taken. */
export async function checkPorts(uses: readonly PortUse[]): Promise<string[]> {
  const problems: string[] = [];
  const seen = new Map<number, PortUse>();
  for (const use of uses) {
    const first = seen.get(use.port);
    if (first) problems.push(`port ${use.port} is set for both ${first.what} (${first.variable}) and ${use.what} (${use.variable}): give each its own.`);
    else seen.set(use.port, use);
  }
  const taken = await Promise.all([...seen.values()].map(async (use) => ((await portFree(use.host, use.port)) ? undefined : use)));
  for (const use of taken) if (use) problems.push(await describeTaken(use));
  return problems;
}

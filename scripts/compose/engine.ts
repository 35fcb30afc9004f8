/**
 * A Docker engine and Compose v2 that answer, or the reason this machine cannot run containers.
 *
 * When no engine answers, Debian's packages are installed and dockerd is started, as .ci/run
 * installs Debian's chromium for the dashboard test. Compose v2 is in Debian from trixie on
 * (docker-compose 2.26 with docker.io 26); bookworm's docker-compose is 1.29, which cannot read
 * the Compose Specification. On bookworm the trixie suite is added at pin priority 100 (nothing
 * else moves to trixie) and only these packages are taken from it, as `pkg/trixie`: `-t trixie`
 * would make trixie the target release of every dependency and upgrade libc6 and half the system.
 */
import { existsSync, mkdirSync, openSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { CommandError, must, onPath, run, sleep } from './exec';

/** The machine cannot build or run containers: `pnpm test:compose` fails with this message. */
export class NoContainersError extends Error {
  readonly code = 'no_containers';
  constructor(reason: string) {
    super(`this machine cannot run containers: ${reason}`);
  }
}

export interface Engine {
  server: string;
  compose: string;
  /** `host` when the engine has no default bridge (dockerd --bridge=none): builds need the host's network. */
  buildNetwork: 'host' | 'default';
  /** What this run had to do to get there. */
  actions: string[];
}

const DOCKERD_ARGS = ['--iptables=false', '--bridge=none'];
export const DOCKERD_LOG = '/var/log/tollgate-dockerd.log';
const PACKAGES = ['docker.io', 'docker-cli', 'docker-buildx', 'docker-compose'];
const TRIXIE_SOURCES = '/etc/apt/sources.list.d/tollgate-trixie.sources';
const TRIXIE_PIN = '/etc/apt/preferences.d/tollgate-trixie';

type Log = (line: string) => void;

async function serverVersion(): Promise<string | null> {
  const r = await run('docker', ['version', '--format', '{{.Server.Version}}'], { timeoutMs: 15_000 });
  return r.code === 0 && r.stdout.trim() ? r.stdout.trim() : null;
}

async function composeVersion(): Promise<string | null> {
  const r = await run('docker', ['compose', 'version', '--short'], { timeoutMs: 15_000 });
  const v = r.stdout.trim().replace(/^v/, '');
  return r.code === 0 && /^\d+\./.test(v) ? v : null;
}

/** The command prefix that makes us root: nothing, or `sudo -n`; null when neither works. */
async function asRoot(): Promise<string[] | null> {
  if (process.getuid?.() === 0) return [];
  if ((await onPath('sudo')) && (await run('sudo', ['-n', 'true'], { timeoutMs: 5_000 })).code === 0) return ['sudo', '-n'];
  return null;
}

async function rootRun(root: string[], cmd: string, args: string[], timeoutMs: number) {
  const [head, ...rest] = [...root, cmd, ...args];
  return must(head!, rest, { timeoutMs, env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
}

/** The machine's Debian mirror, from its apt sources (deb822 `.sources` or one-line `sources.list`). */
export function debianMirror(): string {
  const texts: string[] = [];
  if (existsSync('/etc/apt/sources.list')) texts.push(readFileSync('/etc/apt/sources.list', 'utf8'));
  if (existsSync('/etc/apt/sources.list.d')) {
    for (const f of readdirSync('/etc/apt/sources.list.d').sort()) {
      if (/\.(sources|list)$/.test(f) && join('/etc/apt/sources.list.d', f) !== TRIXIE_SOURCES) texts.push(readFileSync(join('/etc/apt/sources.list.d', f), 'utf8'));
    }
  }
  for (const text of texts) {
    for (const line of text.split('\n')) {
      const deb822 = /^URIs:\s*(\S+)/i.exec(line.trim());
      const oneLine = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+\S+/.exec(line.trim());
      const uri = deb822?.[1] ?? oneLine?.[1];
      // The main archive, not -security or a third-party repository.
      if (uri && /\/debian\/?$/.test(uri)) return uri.replace(/\/$/, '');
    }
  }
  return 'http://deb.debian.org/debian';
}

/** apt's candidate version of a package (with the sources as they are), or null. */
async function candidate(pkg: string): Promise<string | null> {
  const r = await run('apt-cache', ['policy', pkg], { timeoutMs: 30_000 });
  const m = /Candidate:\s*(\S+)/.exec(r.stdout);
  return m && m[1] !== '(none)' ? m[1]! : null;
}

const major = (v: string | null) => (v ? Number(/^(?:\d+:)?(\d+)/.exec(v)?.[1] ?? 0) : 0);

async function installPackages(root: string[], log: Log): Promise<string> {
  if (!(await onPath('apt-get'))) throw new NoContainersError('no Docker engine answers and apt-get is not here to install Debian\'s docker.io');
  await rootRun(root, 'apt-get', ['update', '-qq'], 180_000);
  let names = PACKAGES;
  let from = 'the configured suites';
  if (major(await candidate('docker-compose')) < 2 || major(await candidate('docker.io')) < 24) {
    const mirror = debianMirror();
    log(`  apt: adding Debian trixie (${mirror}) at pin priority 100 for Compose v2 (this suite's docker-compose is 1.x)`);
    const write = async (path: string, text: string) => {
      if (root.length === 0) writeFileSync(path, text);
      else await must(root[0]!, [...root.slice(1), 'tee', path], { input: text, timeoutMs: 10_000 });
    };
    await write(TRIXIE_SOURCES, `# Added by pnpm test:compose (scripts/compose/engine.ts) for docker-compose v2.\nTypes: deb\nURIs: ${mirror}\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n`);
    await write(TRIXIE_PIN, `# Added by pnpm test:compose: nothing moves to trixie unless asked for by name.\nPackage: *\nPin: release n=trixie\nPin-Priority: 100\n`);
    await rootRun(root, 'apt-get', ['update', '-qq'], 180_000);
    names = PACKAGES.map((p) => `${p}/trixie`);
    from = 'Debian trixie';
  }
  log(`  apt: installing ${names.join(' ')}`);
  await rootRun(root, 'apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...names], 600_000);
  return `installed ${PACKAGES.join(', ')} from ${from}`;
}

async function startDockerd(root: string[], log: Log): Promise<string> {
  log(`  dockerd ${DOCKERD_ARGS.join(' ')} (log: ${DOCKERD_LOG})`);
  mkdirSync('/var/log', { recursive: true });
  const out = openSync(DOCKERD_LOG, 'a');
  const [head, ...rest] = [...root, 'dockerd', ...DOCKERD_ARGS];
  // Detached: the engine outlives this run, as a service would.
  const child = spawn(head!, rest, { detached: true, stdio: ['ignore', out, out] });
  child.unref();
  for (let i = 0; i < 60; i++) {
    if (await serverVersion()) return `started dockerd ${DOCKERD_ARGS.join(' ')}`;
    if (child.exitCode !== null) break;
    await sleep(500);
  }
  const tail = existsSync(DOCKERD_LOG) ? readFileSync(DOCKERD_LOG, 'utf8').trim().split('\n').slice(-15).join('\n') : '';
  throw new NoContainersError(`dockerd did not come up within 30 s${tail ? `; the end of ${DOCKERD_LOG}:\n${tail}` : ''}`);
}

export async function ensureEngine(log: Log): Promise<Engine> {
  const actions: string[] = [];
  let server = await serverVersion();
  // `docker compose version` needs no engine.
  let compose = await composeVersion();
  if (!server || major(compose) < 2) {
    const root = await asRoot();
    if (!root) {
      throw new NoContainersError(
        `${server ? 'Compose v2 (`docker compose`) is missing' : "no Docker engine answers on this user's socket"} and this user is neither root nor allowed \`sudo -n\` to install Debian's docker.io and docker-compose and start dockerd`,
      );
    }
    try {
      if (major(compose) < 2 || (!server && !(await onPath('dockerd')))) actions.push(await installPackages(root, log));
      if (!(await serverVersion())) actions.push(await startDockerd(root, log));
    } catch (err) {
      if (err instanceof NoContainersError) throw err;
      throw new NoContainersError(err instanceof CommandError ? err.message : String(err));
    }
    server = await serverVersion();
    compose = await composeVersion();
    if (!server) throw new NoContainersError('the Docker engine still does not answer');
    if (major(compose) < 2) throw new NoContainersError(`\`docker compose\` is not Compose v2 (${compose ?? 'missing'})`);
  }
  const bridge = await run('docker', ['network', 'inspect', 'bridge'], { timeoutMs: 15_000 });
  const envNet = process.env.BUILD_NETWORK;
  const buildNetwork = envNet === 'host' || envNet === 'default' ? envNet : bridge.code === 0 ? 'default' : 'host';
  return { server, compose: compose!, buildNetwork, actions };
}

/**
 * The base images the compose file names: a Node 20 image (NODE_IMAGE, the Dockerfile's base)
 * and a Redis 7 image (REDIS_IMAGE). Each is used when present, pulled when a registry answers,
 * and otherwise built here from Debian's packages: `debootstrap --variant=minbase` with the
 * machine's Debian mirror gives a root file system, `docker import` makes it an image, and
 * infra/docker/base/{node,redis}.Dockerfile install nodejs (trixie: 20.19) or redis-server
 * (bookworm: 7.0) on it. Nothing but Debian's mirror and the npm registry is needed.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { debianMirror, NoContainersError } from './engine';
import { must, onPath, run, seconds } from './exec';

type Log = (line: string) => void;

export interface BaseImage {
  role: 'node' | 'redis';
  image: string;
  /** present, pulled, or built (and how long that took). */
  how: string;
}

interface Spec {
  role: 'node' | 'redis';
  variable: 'NODE_IMAGE' | 'REDIS_IMAGE';
  official: string;
  local: string;
  suite: 'trixie' | 'bookworm';
  dockerfile: string;
}

const SPECS: Spec[] = [
  { role: 'node', variable: 'NODE_IMAGE', official: 'node:20-bookworm-slim', local: 'tollgate-base/node:20', suite: 'trixie', dockerfile: 'node.Dockerfile' },
  { role: 'redis', variable: 'REDIS_IMAGE', official: 'redis:7', local: 'tollgate-base/redis:7', suite: 'bookworm', dockerfile: 'redis.Dockerfile' },
];

/** The host's CA bundle: handed to the Node image build, so HTTPS through an inspecting proxy works in it. */
function caBundle(): string | undefined {
  return [process.env.NODE_EXTRA_CA_CERTS, process.env.SSL_CERT_FILE, '/etc/ssl/certs/ca-certificates.crt'].find((f) => f && existsSync(f));
}

const exists = async (image: string) => (await run('docker', ['image', 'inspect', image], { timeoutMs: 15_000 })).code === 0;

async function pull(image: string, log: Log): Promise<boolean> {
  const r = await run('docker', ['pull', '-q', image], { timeoutMs: 180_000 });
  if (r.code !== 0) log(`  ${image}: no registry answers (${(r.stderr.trim().split('\n').at(-1) ?? '').slice(0, 160)})`);
  return r.code === 0;
}

// Both root file systems are made at once; apt installs debootstrap for them once.
let debootstrapReady: Promise<void> | undefined;

async function installDebootstrap(log: Log): Promise<void> {
  if (await onPath('debootstrap')) return;
  log('  apt: installing debootstrap');
  await must('apt-get', ['install', '-y', '-qq', '--no-install-recommends', 'debootstrap'], { timeoutMs: 300_000, env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
}

/** A minimal Debian root file system of `suite` as an image (tollgate-base/debian:<suite>). */
async function rootfs(suite: string, log: Log): Promise<string> {
  const image = `tollgate-base/debian:${suite}`;
  if (await exists(image)) return image;
  await (debootstrapReady ??= installDebootstrap(log));
  const mirror = debianMirror();
  const dir = mkdtempSync(join(tmpdir(), `tollgate-${suite}-`));
  try {
    const started = Date.now();
    log(`  debootstrap --variant=minbase ${suite} (${mirror})`);
    await must('debootstrap', ['--variant=minbase', suite, dir, mirror], { timeoutMs: 600_000 });
    // What an image does not need: downloaded packages, package lists, docs, translations.
    await must('sh', ['-c', 'rm -rf var/cache/apt/* var/lib/apt/lists/* usr/share/doc/* usr/share/man/* usr/share/locale/* usr/share/info/*'], { cwd: dir });
    await must('sh', ['-c', `tar --numeric-owner -C "${dir}" -c . | docker import -c 'CMD ["bash"]' - ${image}`], { timeoutMs: 300_000 });
    log(`  ${image}: imported (${seconds(Date.now() - started)})`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return image;
}

async function buildLocal(spec: Spec, root: string, network: string, log: Log): Promise<void> {
  const base = await rootfs(spec.suite, log);
  const ca = spec.role === 'node' ? caBundle() : undefined;
  const context = join(root, 'infra/docker/base');
  log(`  building ${spec.local} on ${base} (infra/docker/base/${spec.dockerfile})`);
  await must(
    'docker',
    ['build', '-q', '--network', network, '-f', join(context, spec.dockerfile), '--build-arg', `BASE=${base}`, ...(ca ? ['--secret', `id=ca_bundle,src=${ca}`] : []), '-t', spec.local, context],
    { timeoutMs: 600_000, env: { ...process.env, DOCKER_BUILDKIT: '1' } },
  );
}

async function ensureOne(spec: Spec, root: string, network: string, log: Log): Promise<BaseImage> {
  const started = Date.now();
  const asked = process.env[spec.variable];
  if (asked) {
    if (await exists(asked)) return { role: spec.role, image: asked, how: `present (${spec.variable})` };
    if (await pull(asked, log)) return { role: spec.role, image: asked, how: `pulled (${spec.variable}) in ${seconds(Date.now() - started)}` };
    throw new NoContainersError(`${spec.variable}=${asked} is neither present nor pullable`);
  }
  if (await exists(spec.official)) return { role: spec.role, image: spec.official, how: 'present' };
  if (await exists(spec.local)) return { role: spec.role, image: spec.local, how: 'present (built here before)' };
  if (await pull(spec.official, log)) return { role: spec.role, image: spec.official, how: `pulled in ${seconds(Date.now() - started)}` };
  await buildLocal(spec, root, network, log);
  return { role: spec.role, image: spec.local, how: `built from Debian packages in ${seconds(Date.now() - started)}` };
}

/** Both base images, made side by side (each debootstrap is mostly waiting on the mirror). */
export async function ensureBaseImages(root: string, network: string, log: Log): Promise<{ node: BaseImage; redis: BaseImage }> {
  const [node, redis] = await Promise.all(SPECS.map((s) => ensureOne(s, root, network, log)));
  return { node: node!, redis: redis! };
}

/** Every image this suite may have made or pulled, for `--cold`. */
export const BASE_IMAGES = [...SPECS.map((s) => s.local), 'tollgate-base/debian:trixie', 'tollgate-base/debian:bookworm'];

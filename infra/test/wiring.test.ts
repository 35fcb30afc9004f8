/**
 * The deployment files agree with the code: every service has an image, a compose service and a
 * Deployment; every variable they set is one the services read (and is valid); ports, probes and
 * scrape targets point where the services listen; Redis keeps an append-only file. Values are
 * taken from the code (zod schemas, metrics registry, package.json), so drift fails here.
 */
import { existsSync, readdirSync } from 'node:fs';
import { createWorkerRegistry, ErrorRateTracker, loadConfig } from '../../packages/shared/src';
import { loadAlertingSettings } from '../../services/alerting/src/settings';
import { loadJourneySettings } from '../../services/journeys/src/settings';
import { createMetrics } from '../../services/gateway/src/metrics';
import {
  ALERTING_VARS,
  ALL_READ_VARS,
  JOURNEY_VARS,
  assignments,
  compose,
  composeEnv,
  composeNameOf,
  composeServices,
  CONFIG_VARS,
  DEPLOYABLES,
  dockerfile,
  dockerRuntimeEnv,
  envExample,
  imageOf,
  isDir,
  LOGGER_VARS,
  packageDir,
  readText,
  readYaml,
  readYamlDocs,
  rootPath,
  SERVICES,
  STUB,
  STUB_VARS,
  varsReadBy,
  WORKERS,
} from './infra-files';

type Obj = Record<string, any>;

/** A compose value with each `${VAR:-default}` replaced by its default, as compose reads it with VAR unset. */
const withDefaults = (value: string) => value.replace(/\$\{[A-Z_]+:-([^}]*)\}/g, '$1');

const SECRET_VARS = ['ADMIN_TOKEN', 'OPENAI_API_KEY', 'GEMINI_API_KEY', 'DEEPSEEK_API_KEY'];
const DOCKERFILE = 'infra/docker/Dockerfile';

// ---------------------------------------------------------------------------------------------
// Dockerfile
// ---------------------------------------------------------------------------------------------
const docker = dockerfile(DOCKERFILE);
const runtime = docker.stages[docker.stages.length - 1]!;
const allInstructions = docker.stages.flatMap((s) => s.instructions);
const runtimeOps = (op: string) => runtime.instructions.filter((i) => i.op === op);
const runtimeEnv = dockerRuntimeEnv();
/** `node:20-...` from the NODE_IMAGE default, or the literal image. */
const nodeImage = assignments(docker.globalArgs.find((a) => a.op === 'ARG' && a.args.startsWith('NODE_IMAGE'))?.args ?? '').NODE_IMAGE;
const imageOfStage = (s: { from: string }) => (s.from === '${NODE_IMAGE}' ? nodeImage : s.from);
const userLine = runtimeOps('USER').at(-1)?.args ?? '';
const DOCKER_UID = Number(userLine.split(':')[0]);

describe('infra/docker/Dockerfile', () => {
  it('needs no image registry but for its base image (no `# syntax=` frontend to pull)', () => {
    for (const file of [DOCKERFILE, ...readdirSync(rootPath('infra/docker/base')).filter((f) => f.endsWith('.Dockerfile')).map((f) => `infra/docker/base/${f}`)]) {
      expect([file, /^#\s*syntax\s*=/im.test(readText(file))]).toEqual([file, false]);
    }
  });

  it('builds on Node 20 from the workspace with the pinned pnpm and the frozen lockfile', () => {
    expect(nodeImage).toMatch(/^node:20(\b|-)/);
    for (const stage of docker.stages) expect(imageOfStage(stage)).toMatch(/^(node:20(\b|-)|pnpm|build|deploy)/);
    const rootPkg = JSON.parse(readText('package.json')) as { packageManager: string };
    expect(rootPkg.packageManager).toMatch(/^pnpm@\d+\.\d+\.\d+$/);
    // The version is read from package.json's packageManager at build time, so it cannot drift.
    const pnpmInstall = allInstructions.find((i) => i.op === 'RUN' && /npm install -g "?pnpm@/.test(i.args));
    expect(pnpmInstall?.args).toContain("require('./package.json').packageManager");
    const runs = allInstructions.filter((i) => i.op === 'RUN').map((i) => i.args);
    expect(runs.some((r) => /pnpm install --frozen-lockfile/.test(r))).toBe(true);
    expect(runs.some((r) => /pnpm typecheck/.test(r))).toBe(true);
    expect(runs.some((r) => /pnpm --filter "@tollgate\/\$\{SERVICE\}" deploy --prod \/out/.test(r))).toBe(true);
    for (const file of ['package.json', 'pnpm-lock.yaml', 'pnpm-workspace.yaml']) expect(existsSync(rootPath(file))).toBe(true);
  });

  it('takes SERVICE as a build argument in the stages that use it', () => {
    for (const stage of docker.stages.filter((s) => s.instructions.some((i) => i.args.includes('${SERVICE}')))) {
      expect(stage.instructions.some((i) => i.op === 'ARG' && /^SERVICE\b/.test(i.args))).toBe(true);
    }
    expect(runtimeEnv.TOLLGATE_SERVICE).toBe('${SERVICE}');
  });

  it('runs as a fixed non-root user', () => {
    expect(userLine).toMatch(/^\d+:\d+$/);
    expect(DOCKER_UID).toBeGreaterThan(0);
    expect(runtime.instructions.some((i) => i.op === 'RUN' && i.args.includes(`--uid ${DOCKER_UID}`))).toBe(true);
    // USER comes after every COPY/RUN of the runtime stage: the code stays root-owned and read-only to it.
    const userAt = runtime.instructions.findIndex((i) => i.op === 'USER');
    expect(runtime.instructions.slice(userAt).some((i) => i.op === 'RUN' || i.op === 'COPY')).toBe(false);
  });

  it('checks health with the script it copies in, and runs the built bundle with plain node', () => {
    const healthcheck = runtimeOps('HEALTHCHECK');
    expect(healthcheck).toHaveLength(1);
    expect(healthcheck[0]!.args).toMatch(/CMD \["node", "\/opt\/tollgate\/healthcheck\.js"\]$/);
    expect(runtimeOps('COPY').map((c) => c.args)).toContain('infra/docker/healthcheck.js /opt/tollgate/healthcheck.js');
    expect(existsSync(rootPath('infra/docker/healthcheck.js'))).toBe(true);

    const cmd = JSON.parse(runtimeOps('CMD').at(-1)!.args) as string[];
    expect(cmd).toEqual(['node', 'dist/index.js']);
    // The build stage bundles (pnpm build writes <package>/dist/index.js), the deploy stage copies it.
    const build = dockerfile('infra/docker/Dockerfile').stages.find((st) => st.name === 'build');
    expect(build?.instructions.some((i) => i.op === 'RUN' && i.args.trim() === 'pnpm build')).toBe(true);
    const rootPkg = require(rootPath('package.json')) as { scripts: Record<string, string> };
    expect(rootPkg.scripts.build).toBe('node scripts/build.js');
    const { targets } = require(rootPath('scripts/build.js')) as { targets(): Array<{ name: string; dir: string }> };
    expect(targets().map((t) => t.name).sort()).toEqual([...DEPLOYABLES].sort());
    for (const t of targets()) expect(t.dir).toBe(packageDir(t.name));
  });

  it('sets only variables the services read, and the container defaults the manifests rely on', () => {
    for (const name of Object.keys(runtimeEnv)) {
      if (name === 'TOLLGATE_SERVICE') continue; // read by healthcheck.js
      expect([name, CONFIG_VARS.includes(name)]).toEqual([name, true]);
    }
    expect(runtimeEnv).toMatchObject({ GATEWAY_HOST: '0.0.0.0', HEALTH_HOST: '0.0.0.0', NODE_ENV: 'production' });
    expect(loadConfig(runtimeEnv).health).toEqual({ host: '0.0.0.0', port: Number(runtimeEnv.HEALTH_PORT) });
    expect(runtimeEnv.STUB_HOST).toBeUndefined(); // it differs per container: the stub binds, the rest connect
  });

  it('has a .dockerignore that keeps installs and secrets out but what the build copies in', () => {
    const patterns = readText('.dockerignore').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
    expect(patterns).toEqual(expect.arrayContaining(['**/node_modules', '.env', '.git']));
    expect(patterns).toContain('!.env.example');
    for (const p of patterns.filter((x) => !x.startsWith('!'))) {
      for (const needed of ['package.json', 'pnpm-lock.yaml', 'pnpm-workspace.yaml', 'infra', 'infra/docker/healthcheck.js', 'services', 'packages']) {
        expect([p, needed.startsWith(p.replace(/\/$/, ''))]).toEqual([p, false]);
      }
    }
  });
});

// ---------------------------------------------------------------------------------------------
// docker-compose.yml and .env.example
// ---------------------------------------------------------------------------------------------
const example = envExample();
const buildArg = (svc: Obj): string | undefined => svc.build?.args?.SERVICE;
const STUB_COMPOSE = composeNameOf(STUB);

describe('docker-compose.yml', () => {
  it('runs Redis 7 with the append-only file on a volume and a redis-cli ping healthcheck', () => {
    const redis = composeServices.redis!;
    // REDIS_IMAGE swaps in a locally built Redis 7 (pnpm test:compose where no registry answers).
    expect(redis.image).toMatch(/^\$\{REDIS_IMAGE:-redis:7(\b|[-.])[^}]*\}$/);
    expect(withDefaults(redis.image)).toMatch(/^redis:7(\b|[-.])/);
    expect((redis.command as string[]).join(' ')).toMatch(/--appendonly yes\b/);
    expect(redis.healthcheck.test).toEqual(['CMD', 'redis-cli', 'ping']);
    expect(redis.volumes).toEqual(expect.arrayContaining([expect.stringMatching(/^redis-data:\/data$/)]));
    expect(compose.volumes).toHaveProperty('redis-data');
  });

  it('publishes Redis on the host loopback only, on REDIS_PORT (6379 by default), as the user Kubernetes runs it as', () => {
    const redis = composeServices.redis!;
    expect(redis.ports).toEqual(['127.0.0.1:${REDIS_PORT:-6379}:6379']);
    expect(withDefaults(redis.ports[0])).toBe(`127.0.0.1:${new URL(loadConfig({}).redisUrl).port || 6379}:6379`);
    const k8sRedis = kinds('StatefulSet').find((s) => s.metadata.name === 'tollgate-redis')!.spec.template.spec.securityContext;
    expect(redis.user).toBe(`${k8sRedis.runAsUser}:${k8sRedis.runAsGroup}`);
    // The locally built Redis image (infra/docker/base) runs as that user too, and owns /data.
    const local = readText('infra/docker/base/redis.Dockerfile');
    expect(local).toContain(`USER ${redis.user}`);
    expect(local).toMatch(new RegExp(`--uid ${k8sRedis.runAsUser}\\b`));
  });

  it('hardens every container as the Kubernetes manifests do: read-only root, writable /tmp, no capabilities', () => {
    const k8sContainers = [...kinds('Deployment'), ...kinds('StatefulSet')].flatMap((w) => w.spec.template.spec.containers as Obj[]);
    // Kubernetes makes every container's root file system read-only, so compose does too.
    for (const c of k8sContainers) expect([c.name, c.securityContext?.readOnlyRootFilesystem, c.securityContext?.capabilities?.drop]).toEqual([c.name, true, ['ALL']]);
    for (const [name, svc] of Object.entries(composeServices)) {
      if (!svc.build && name !== 'redis') continue;
      expect([name, svc.read_only, svc.tmpfs, svc.cap_drop, svc.security_opt]).toEqual([name, true, ['/tmp'], ['ALL'], ['no-new-privileges:true']]);
    }
  });

  it('has one service per services/ folder, built from the Dockerfile with its SERVICE, depending on a healthy Redis', () => {
    expect(SERVICES.length).toBeGreaterThanOrEqual(5);
    for (const name of SERVICES) {
      const svc = composeServices[name];
      expect([name, svc !== undefined]).toEqual([name, true]);
      // NODE_IMAGE and BUILD_NETWORK: machines without a registry or a bridge (pnpm test:compose).
      expect(svc!.build).toEqual({
        context: '.',
        dockerfile: DOCKERFILE,
        network: '${BUILD_NETWORK:-default}',
        args: { SERVICE: name, NODE_IMAGE: `\${NODE_IMAGE:-${nodeImage}}` },
      });
      expect(svc!.image).toBe(imageOf(name));
      expect(svc!.depends_on).toEqual({ redis: { condition: 'service_healthy' } });
      expect(svc!.profiles).toBeUndefined(); // always on
      expect(svc!.init).toBe(true);
    }
  });

  it('builds only real workspace packages, and every depends_on waits for service_healthy', () => {
    for (const [name, svc] of Object.entries(composeServices)) {
      if (svc.build) {
        expect([name, svc.build.dockerfile, svc.build.context]).toEqual([name, DOCKERFILE, '.']);
        expect([name, DEPLOYABLES.includes(buildArg(svc)!)]).toEqual([name, true]);
        expect(svc.image).toBe(imageOf(buildArg(svc)!));
      }
      for (const [dep, how] of Object.entries((svc.depends_on ?? {}) as Record<string, Obj>)) {
        expect([name, dep, how.condition]).toEqual([name, dep, 'service_healthy']);
        // service_healthy needs a healthcheck: compose's own, or the image's (every Dockerfile-built one has it).
        const target = composeServices[dep]!;
        expect([dep, Boolean(target.healthcheck || target.build)]).toEqual([dep, true]);
      }
    }
  });

  it('puts the stub provider under the stub profile, bound to every interface, where the services look for it', () => {
    const stub = composeServices[STUB_COMPOSE]!;
    expect(stub.profiles).toEqual(['stub']);
    expect(stub.depends_on).toBeUndefined(); // it needs no Redis
    const env = composeEnv(STUB_COMPOSE);
    expect(env.STUB_HOST).toBe('0.0.0.0');
    for (const name of SERVICES) {
      expect([name, composeEnv(name).STUB_HOST, composeEnv(name).STUB_PORT]).toEqual([name, STUB_COMPOSE, env.STUB_PORT]);
    }
  });

  it('points every service at the compose Redis and sets only variables that service reads', () => {
    for (const [name, svc] of Object.entries(composeServices)) {
      if (!svc.build) continue;
      const deployable = buildArg(svc)!;
      const read = varsReadBy(deployable);
      for (const variable of Object.keys(svc.environment ?? {})) expect([name, variable, read.has(variable)]).toEqual([name, variable, true]);
      if (deployable === STUB) continue;
      const env = composeEnv(name);
      expect(env.REDIS_URL).toBe('redis://redis:6379');
      const config = loadConfig(env); // throws, listing every bad variable, if compose + .env.example are invalid
      expect(config.redisUrl).toBe('redis://redis:6379');
      expect(config.stubServer).toEqual({ host: STUB_COMPOSE, port: Number(composeEnv(STUB_COMPOSE).STUB_PORT) });
      if (deployable === 'alerting') expect(() => loadAlertingSettings(env)).not.toThrow();
    }
  });

  it('publishes the gateway on the port it listens on, on every interface of its container', () => {
    const config = loadConfig(composeEnv('gateway'));
    expect(config.gateway.host).toBe('0.0.0.0');
    const ports = composeServices.gateway!.ports as string[];
    expect(ports).toHaveLength(1);
    expect(ports[0]!.split(':').at(-1)).toBe(String(config.gateway.port));
    // Published on the host's loopback only: a local stack is not a server for the network.
    expect(ports[0]).toMatch(/^127\.0\.0\.1:\d+:\d+$/);
  });

  it('gives every worker the probe server the image health check uses', () => {
    for (const name of WORKERS) {
      const config = loadConfig(composeEnv(name));
      expect([name, config.health]).toEqual([name, { host: '0.0.0.0', port: Number(runtimeEnv.HEALTH_PORT) }]);
      expect(composeServices[name]!.ports).toBeUndefined(); // no host ports, so `--scale` works
    }
  });

  it('passes .env to the services, and mounts existing Prometheus and Grafana files', () => {
    for (const name of SERVICES) expect(composeServices[name]!.env_file).toEqual([{ path: '.env', required: false }]);
    const mounts = (name: string) =>
      (composeServices[name]!.volumes as string[]).map((v) => {
        const [source, target] = v.split(':');
        return { source: source!, target: target! };
      });
    for (const name of ['prometheus', 'grafana']) {
      expect(composeServices[name]!.profiles).toEqual(['monitoring']);
      for (const { source } of mounts(name)) expect([source, existsSync(rootPath(source))]).toEqual([source, true]);
    }
    expect(mounts('prometheus')).toContainEqual({ source: './infra/prometheus/prometheus.yml', target: '/etc/prometheus/prometheus.yml' });
    expect(mounts('grafana')).toContainEqual({ source: './infra/grafana/provisioning', target: '/etc/grafana/provisioning' });
    const provider = readYaml('infra/grafana/provisioning/dashboards/tollgate.yml').providers[0];
    expect(mounts('grafana')).toContainEqual({ source: './infra/grafana/dashboards', target: provider.options.path });
  });
});

describe('.env.example', () => {
  it('documents every variable the services read, and nothing else', () => {
    const documented = Object.keys(example.documented).sort();
    expect(documented).toEqual([...ALL_READ_VARS].sort());
    expect(LOGGER_VARS).toContain('LOG_FORMAT');
    expect(STUB_VARS).toEqual(expect.arrayContaining(['STUB_HOST', 'STUB_PORT', 'STUB_FAULTS']));
  });

  it('holds no secrets', () => {
    for (const name of Object.keys(example.documented).filter((n) => SECRET_VARS.includes(n) || /KEY|TOKEN|SECRET|PASSWORD/.test(n))) {
      expect([name, example.documented[name]]).toEqual([name, '']);
    }
  });

  it('shows each variable with its real default', () => {
    const base = { HEALTH_PORT: '9100' }; // so the health block, and HEALTH_HOST's default, show
    for (const [name, value] of Object.entries(example.documented)) {
      if (CONFIG_VARS.includes(name)) {
        const env = name === 'HEALTH_PORT' ? {} : base;
        const expected = loadConfig(env);
        expect([name, loadConfig({ ...env, [name]: value })]).toEqual([name, expected]);
      } else if (ALERTING_VARS.includes(name)) {
        expect([name, loadAlertingSettings({ [name]: value })]).toEqual([name, loadAlertingSettings({})]);
      } else if (JOURNEY_VARS.includes(name)) {
        expect([name, loadJourneySettings({ [name]: value })]).toEqual([name, loadJourneySettings({})]);
      } else if (name === 'LOG_FORMAT') {
        expect(value).toBe('json'); // the logger writes JSON unless LOG_FORMAT=pretty
      } else {
        expect([name, value]).toEqual([name, '']); // STUB_FAULTS: none
      }
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Kubernetes
// ---------------------------------------------------------------------------------------------
const K8S = 'infra/k8s';
const k8sFiles = readdirSync(rootPath(K8S)).filter((f) => /\.ya?ml$/.test(f)).sort();
const k8sDocs = k8sFiles.flatMap((file) => readYamlDocs(K8S, file).map((doc) => ({ file, doc })));
const kinds = (kind: string) => k8sDocs.filter((d) => d.doc.kind === kind).map((d) => d.doc);
const byName = (kind: string, name: string) => kinds(kind).find((d) => d.metadata.name === name);
const kustomization = k8sDocs.find((d) => d.file === 'kustomization.yaml')!.doc;
const configMap = kinds('ConfigMap')[0]!;
const secret = kinds('Secret')[0]!;
const deploymentOf = (name: string) => byName('Deployment', `tollgate-${name}`)!;
const containerOf = (name: string) => deploymentOf(name).spec.template.spec.containers[0] as Obj;

/** A container's environment as Kubernetes builds it: envFrom sources in order, then `env` wins. */
function k8sEnv(container: Obj): Record<string, string> {
  const env: Record<string, string> = {};
  for (const from of (container.envFrom ?? []) as Obj[]) {
    if (from.configMapRef) Object.assign(env, byName('ConfigMap', from.configMapRef.name)!.data);
    if (from.secretRef) Object.assign(env, byName('Secret', from.secretRef.name)!.stringData);
  }
  for (const e of (container.env ?? []) as Obj[]) env[e.name] = e.value;
  return env;
}

/** A probe's or Service's port, by number or by the container's port name. */
function containerPort(container: Obj, port: number | string): number {
  if (typeof port === 'number') return port;
  const found = (container.ports as Obj[]).find((p) => p.name === port);
  if (!found) throw new Error(`${container.name}: no port named ${port}`);
  return found.containerPort;
}

function serviceFor(name: string): Obj | undefined {
  const labels = deploymentOf(name).spec.template.metadata.labels as Record<string, string>;
  return kinds('Service').find((s) => Object.entries(s.spec.selector as Record<string, string>).every(([k, v]) => labels[k] === v));
}

describe('infra/k8s', () => {
  it('parses, and the kustomization lists every manifest but the Secret template', () => {
    for (const { file, doc } of k8sDocs) {
      expect([file, typeof doc.apiVersion, typeof doc.kind]).toEqual([file, 'string', 'string']);
      if (doc.kind !== 'Kustomization') expect([file, typeof doc.metadata?.name]).toEqual([file, 'string']);
    }
    expect([...(kustomization.resources as string[])].sort()).toEqual(k8sFiles.filter((f) => f !== 'kustomization.yaml' && f !== 'secret.yaml'));
    expect(kustomization.namespace).toBe(byName('Namespace', kustomization.namespace)?.metadata.name);
    expect(secret.metadata.namespace).toBe(kustomization.namespace);
  });

  it('has a Deployment per service and for the stub, running the images compose builds', () => {
    expect(kinds('Deployment').map((d) => d.metadata.name).sort()).toEqual(DEPLOYABLES.map((n) => `tollgate-${n}`).sort());
    for (const name of DEPLOYABLES) {
      const dep = deploymentOf(name);
      const labels = dep.spec.template.metadata.labels as Record<string, string>;
      for (const [k, v] of Object.entries(dep.spec.selector.matchLabels as Record<string, string>)) expect([name, k, labels[k]]).toEqual([name, k, v]);
      expect(dep.spec.template.spec.containers).toHaveLength(1);
      expect(containerOf(name).image).toBe(imageOf(name));
      expect(containerOf(name).image).toBe(composeServices[composeNameOf(name)]!.image);
    }
  });

  it('runs every container as the image user, with requests and limits', () => {
    for (const name of DEPLOYABLES) {
      const pod = deploymentOf(name).spec.template.spec;
      expect([name, pod.securityContext.runAsNonRoot, pod.securityContext.runAsUser]).toEqual([name, true, DOCKER_UID]);
    }
    for (const workload of [...kinds('Deployment'), ...kinds('StatefulSet')]) {
      for (const c of workload.spec.template.spec.containers as Obj[]) {
        for (const kind of ['requests', 'limits']) {
          expect([c.name, kind, Object.keys(c.resources?.[kind] ?? {}).sort()]).toEqual([c.name, kind, ['cpu', 'memory']]);
        }
      }
    }
  });

  it('wires liveness to /healthz and readiness to /readyz on the port each service listens on', () => {
    for (const name of DEPLOYABLES) {
      const c = containerOf(name);
      const config = name === STUB ? undefined : loadConfig(k8sEnv(c));
      const listens =
        name === 'gateway' ? config!.gateway.port
        : name === STUB ? Number(k8sEnv(c).STUB_PORT)
        : config!.health?.port;
      expect([name, listens]).toEqual([name, expect.any(Number)]);
      expect((c.ports as Obj[]).map((p) => p.containerPort)).toEqual([listens]);
      const readyPath = name === STUB ? '/healthz' : '/readyz'; // the stub has no Redis to be ready for
      for (const [probe, path] of [['livenessProbe', '/healthz'], ['readinessProbe', readyPath], ['startupProbe', '/healthz']] as const) {
        expect([name, probe, c[probe]?.httpGet?.path]).toEqual([name, probe, path]);
        expect([name, probe, containerPort(c, c[probe].httpGet.port)]).toEqual([name, probe, listens]);
      }
      const annotations = (deploymentOf(name).spec.template.metadata.annotations ?? {}) as Record<string, string>;
      if (name !== STUB) expect([name, annotations['prometheus.io/port'], annotations['prometheus.io/path']]).toEqual([name, String(listens), '/metrics']);
    }
  });

  it('sets only variables the services read, valid, and pointing at the cluster Services', () => {
    for (const name of DEPLOYABLES) {
      const c = containerOf(name);
      const env = k8sEnv(c);
      const read = varsReadBy(name);
      for (const variable of Object.keys(env)) expect([name, variable, read.has(variable)]).toEqual([name, variable, true]);
      if (name === STUB) {
        expect(env.STUB_HOST).toBe('0.0.0.0');
        continue;
      }
      expect(c.envFrom).toEqual([{ configMapRef: { name: configMap.metadata.name } }, { secretRef: { name: secret.metadata.name } }]);
      const config = loadConfig(env);
      if (name === 'gateway') expect(config.gateway.host).toBe('0.0.0.0');
      else expect(config.health?.host).toBe('0.0.0.0');
      if (name === 'alerting') expect(() => loadAlertingSettings(env)).not.toThrow();

      const redisUrl = new URL(config.redisUrl);
      const redisService = byName('Service', redisUrl.hostname);
      expect(redisService?.spec.ports.map((p: Obj) => p.port)).toEqual([Number(redisUrl.port)]);
      const stubService = byName('Service', config.stubServer.host)!;
      expect(stubService.spec.ports.map((p: Obj) => p.port)).toEqual([config.stubServer.port]);
      expect(serviceFor(STUB)?.metadata.name).toBe(stubService.metadata.name);
    }
    for (const name of Object.keys(configMap.data)) expect([name, ALL_READ_VARS.has(name), SECRET_VARS.includes(name)]).toEqual([name, true, false]);
  });

  it('exposes the gateway and the stub through Services that reach their ports', () => {
    for (const name of ['gateway', STUB]) {
      const svc = serviceFor(name);
      expect([name, svc !== undefined]).toEqual([name, true]);
      for (const p of svc!.spec.ports as Obj[]) {
        expect(containerPort(containerOf(name), p.targetPort)).toBe(containerOf(name).ports[0].containerPort);
      }
    }
    for (const name of WORKERS) expect([name, serviceFor(name)]).toEqual([name, undefined]); // workers take no traffic
  });

  it('autoscales the chat and vision workers, and leaves their replica count to the autoscaler', () => {
    const hpas = kinds('HorizontalPodAutoscaler');
    expect(hpas.map((h) => h.spec.scaleTargetRef.name).sort()).toEqual(['tollgate-chat-workflow', 'tollgate-vision']);
    for (const hpa of hpas) {
      expect(hpa.apiVersion).toBe('autoscaling/v2');
      expect(hpa.spec.scaleTargetRef).toMatchObject({ apiVersion: 'apps/v1', kind: 'Deployment' });
      const dep = byName('Deployment', hpa.spec.scaleTargetRef.name)!;
      expect(dep.spec.replicas).toBeUndefined();
      expect(hpa.spec.minReplicas).toBeGreaterThanOrEqual(1);
      expect(hpa.spec.maxReplicas).toBeGreaterThan(hpa.spec.minReplicas);
      for (const m of hpa.spec.metrics as Obj[]) {
        expect(m.type).toBe('Resource');
        expect(dep.spec.template.spec.containers[0].resources.requests[m.resource.name]).toBeDefined(); // utilisation needs a request
      }
    }
  });

  it('keeps the Secret a template: the provider keys and ADMIN_TOKEN, all empty', () => {
    expect(secret.stringData).toEqual(Object.fromEntries(SECRET_VARS.map((k) => [k, ''])));
    expect(secret.data).toBeUndefined();
    for (const k of SECRET_VARS) expect(CONFIG_VARS).toContain(k);
  });

  it('runs Redis with the append-only file on a persistent volume', () => {
    const redis = kinds('StatefulSet').find((s) => s.metadata.name === 'tollgate-redis')!;
    const c = redis.spec.template.spec.containers[0] as Obj;
    expect(c.image).toMatch(/^redis:7(\b|[-.])/);
    expect((c.args as string[]).join(' ')).toMatch(/--appendonly yes\b/);
    expect(c.readinessProbe.exec.command).toEqual(['redis-cli', 'ping']);
    expect(c.volumeMounts).toContainEqual({ name: 'data', mountPath: '/data' });
    expect(redis.spec.volumeClaimTemplates[0].metadata.name).toBe('data');
  });
});

// ---------------------------------------------------------------------------------------------
// Prometheus and Grafana
// ---------------------------------------------------------------------------------------------
describe('infra/prometheus and infra/grafana', () => {
  const prometheus = readYaml('infra/prometheus/prometheus.yml');
  const job = (name: string) => (prometheus.scrape_configs as Obj[]).find((j) => j.job_name === name)!;

  it('scrapes the gateway and every worker on the ports compose gives them', () => {
    const gateway = job('tollgate-gateway');
    expect(gateway.metrics_path).toBe('/metrics');
    expect(gateway.dns_sd_configs).toEqual([{ names: ['gateway'], type: 'A', port: loadConfig(composeEnv('gateway')).gateway.port }]);
    const workers = job('tollgate-workers');
    expect(workers.metrics_path).toBe('/metrics');
    expect(workers.dns_sd_configs).toHaveLength(1);
    expect([...workers.dns_sd_configs[0].names].sort()).toEqual([...WORKERS].sort());
    for (const name of WORKERS) expect(workers.dns_sd_configs[0].port).toBe(loadConfig(composeEnv(name)).health?.port);
    const k8s = readYaml('infra/prometheus/prometheus-kubernetes.yml');
    expect(k8s.scrape_configs[0].kubernetes_sd_configs[0].namespaces.names).toEqual([kustomization.namespace]);
  });

  const dashboard = JSON.parse(readText('infra/grafana/dashboards/tollgate.json')) as Obj;
  const panels = (dashboard.panels as Obj[]).filter((p) => p.type !== 'row');
  const exprs = panels.flatMap((p) => (p.targets as Obj[]).map((t) => String(t.expr)));
  const used = new Set(exprs.flatMap((e) => [...e.matchAll(/\btollgate_[a-z0-9_]+/g)].map((m) => m[0])));

  it('charts every metric the gateway defines, and only series that exist', async () => {
    const gateway = createMetrics([], new ErrorRateTracker());
    const gatewayMetrics = (await gateway.registry.getMetricsAsJSON()).map((m) => ({ name: m.name, type: String(m.type) }));
    // The workers' process metrics, from the registry their health server serves.
    const workerRegistry = createWorkerRegistry('wiring-test');
    const workerMetrics = (await workerRegistry.getMetricsAsJSON()).map((m) => ({ name: m.name, type: String(m.type) }));

    const series = new Set<string>();
    for (const m of [...gatewayMetrics, ...workerMetrics]) {
      series.add(m.name);
      if (m.type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) series.add(m.name + s);
    }
    for (const name of used) expect([name, series.has(name)]).toEqual([name, true]);
    const own = gatewayMetrics.map((m) => m.name).filter((n) => !n.startsWith('tollgate_gateway_'));
    expect(own.sort()).toEqual(
      ['tollgate_budget_holds_expired_total', 'tollgate_circuit_state', 'tollgate_error_ratio', 'tollgate_errors_in_window', 'tollgate_http_request_duration_seconds', 'tollgate_http_requests_total', 'tollgate_queue_jobs'].sort(),
    );
    for (const name of own) expect([name, [...used].some((u) => u === name || u.startsWith(`${name}_`))]).toEqual([name, true]);
  });

  it('reads from the provisioned data source and is loaded by the provisioned provider', () => {
    const datasource = readYaml('infra/grafana/provisioning/datasources/prometheus.yml').datasources[0];
    expect(datasource.type).toBe('prometheus');
    expect(new URL(datasource.url).hostname).toBe('prometheus');
    expect(Number(new URL(datasource.url).port)).toBe(Number(String(composeServices.prometheus!.ports[0]).split(':').at(-1)));
    for (const p of panels) {
      expect([p.title, p.datasource]).toEqual([p.title, { type: 'prometheus', uid: datasource.uid }]);
      for (const t of p.targets as Obj[]) expect([p.title, t.datasource?.uid ?? datasource.uid]).toEqual([p.title, datasource.uid]);
    }
    expect(typeof dashboard.uid).toBe('string');
    const ids = (dashboard.panels as Obj[]).map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(isDir('infra/grafana/dashboards')).toBe(true);
  });
});

#!/usr/bin/env node
// Starts (or finds running) a local 3-master Redis Cluster from the redis-server on PATH: cluster
// mode on three ports from REDIS_CLUSTER_PORT (7100), no persistence, slots assigned with
// `redis-cli --cluster create`. Prints `REDIS_CLUSTER_NODES=host:port,...` on its last line, so
// `export $(node scripts/redis-cluster.js | tail -1)` points the suite at it. `--stop` shuts it down.
// Plain JS with no dependencies, like ensure-redis.js, so .ci/run can call it before any build.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const base = Number(process.env.REDIS_CLUSTER_PORT || 7100);
const MASTERS = 3;
const ports = Array.from({ length: MASTERS }, (_, i) => base + i);
const host = '127.0.0.1';
const dir = path.join(os.tmpdir(), `tollgate-redis-cluster-${base}`);
const nodes = ports.map((p) => `${host}:${p}`).join(',');

const cli = (port, ...args) => spawnSync('redis-cli', ['-h', host, '-p', String(port), ...args], { encoding: 'utf8' });
const answers = (port) => (cli(port, 'PING').stdout || '').trim() === 'PONG';
// Serving, and agreeing with the others: state ok and every master known.
const healthy = (port) => {
  const info = cli(port, 'CLUSTER', 'INFO').stdout || '';
  return /cluster_state:ok\b/.test(info) && Number(/cluster_known_nodes:(\d+)/.exec(info)?.[1]) === MASTERS;
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what, test, tries = 100) {
  for (let i = 0; i < tries; i++) {
    if (test()) return;
    await sleep(100);
  }
  throw new Error(`redis-cluster: ${what} did not happen within ${tries / 10} s`);
}

function stop() {
  for (const p of ports) if (answers(p)) cli(p, 'SHUTDOWN', 'NOSAVE');
  fs.rmSync(dir, { recursive: true, force: true });
  console.log(`redis-cluster: stopped ${nodes}`);
}

async function start() {
  if (ports.every((p) => answers(p) && healthy(p))) {
    console.log(`redis-cluster: already running on ${nodes}`);
    return;
  }
  if (spawnSync('sh', ['-c', 'command -v redis-server && command -v redis-cli'], { encoding: 'utf8' }).status !== 0) {
    throw new Error('redis-cluster: redis-server and redis-cli must be on PATH (Redis 7)');
  }
  // A half-made cluster from an earlier run (killed mid-create) is thrown away, never reused.
  for (const p of ports) if (answers(p)) cli(p, 'SHUTDOWN', 'NOSAVE');
  await waitFor('the old nodes stopping', () => ports.every((p) => !answers(p)));
  fs.rmSync(dir, { recursive: true, force: true });
  for (const p of ports) {
    const nodeDir = path.join(dir, String(p));
    fs.mkdirSync(nodeDir, { recursive: true });
    const r = spawnSync('redis-server', [
      '--port', String(p), '--bind', host, '--daemonize', 'yes', '--dir', nodeDir,
      '--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '5000',
      '--save', '', '--appendonly', 'no', '--logfile', path.join(nodeDir, 'redis.log'),
    ], { stdio: 'inherit' });
    if (r.status !== 0) throw new Error(`redis-cluster: redis-server on ${p} failed to start`);
  }
  await waitFor('every node answering', () => ports.every(answers));
  const create = spawnSync('redis-cli', ['--cluster', 'create', ...ports.map((p) => `${host}:${p}`), '--cluster-replicas', '0', '--cluster-yes'], { encoding: 'utf8' });
  if (create.status !== 0) throw new Error(`redis-cluster: --cluster create failed:\n${create.stdout}\n${create.stderr}`);
  await waitFor('the cluster agreeing (cluster_state:ok)', () => ports.every(healthy), 300);
  console.log(`redis-cluster: started ${MASTERS} masters on ${nodes} (data in ${dir})`);
}

module.exports = { nodes, ports, start, stop };
if (require.main === module) {
  (process.argv.includes('--stop') ? Promise.resolve(stop()) : start().then(() => console.log(`REDIS_CLUSTER_NODES=${nodes}`))).catch((err) => {
    console.error(err.message);
    process.exit(1);
  });
}

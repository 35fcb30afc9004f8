#!/usr/bin/env node
// `pnpm test:cluster`: the whole jest suite again, on a local 3-master Redis Cluster that this
// starts (scripts/redis-cluster.js, ports from REDIS_CLUSTER_PORT) and stops afterwards. Extra
// arguments go to jest. Plain JS, like redis-cluster.js.
'use strict';
const { spawnSync } = require('node:child_process');
const path = require('node:path');
const cluster = require('./redis-cluster.js');

async function main() {
  await cluster.start();
  try {
    const jest = require.resolve('jest/bin/jest', { paths: [path.join(__dirname, '..')] });
    const r = spawnSync(process.execPath, [jest, ...process.argv.slice(2)], {
      stdio: 'inherit',
      env: { ...process.env, REDIS_CLUSTER_NODES: cluster.nodes },
    });
    return r.status ?? 1;
  } finally {
    cluster.stop();
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err.message);
    process.exit(1);
  },
);

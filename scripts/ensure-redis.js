#!/usr/bin/env node
// Makes sure Redis answers on REDIS_URL; starts a local redis-server (no persistence) when nothing
// answers and one is on PATH. Plain JS with no dependencies so .ci/run can call it before anything
// is built. Exit 0 when Redis answers, 1 with one clear message otherwise.
'use strict';
const net = require('node:net');
const { spawnSync } = require('node:child_process');

const url = new URL(process.env.REDIS_URL || 'redis://127.0.0.1:6379');
const host = url.hostname || '127.0.0.1';
const port = Number(url.port || 6379);
const isLocal = ['127.0.0.1', 'localhost', '::1', '[::1]'].includes(host);
const hasRedisServer = () => spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' }).status === 0;

function ping(timeoutMs = 1000) {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (ok) => { socket.destroy(); resolve(ok); };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.on('error', () => done(false));
    socket.on('connect', () => {
      if (url.password) socket.write(`AUTH ${decodeURIComponent(url.username || 'default')} ${decodeURIComponent(url.password)}\r\n`);
      socket.write('PING\r\n');
    });
    let buf = '';
    socket.on('data', (d) => {
      buf += d.toString();
      if (buf.includes('+PONG')) done(true);
      else if (buf.includes('-NOAUTH') || buf.includes('-WRONGPASS')) done(false);
    });
  });
}

/** The one message for "no Redis and none to start", shared with `pnpm start`. */
function unreachableMessage() {
  return `redis: nothing answers on ${host}:${port} and ${isLocal ? 'no redis-server is on PATH' : 'it is not a local address'}; ` +
    'start Redis 7 or set REDIS_URL to a reachable server';
}

async function main() {
  if (await ping()) return console.log(`redis: answering on ${host}:${port}`);
  if (!isLocal || !hasRedisServer()) {
    console.error(unreachableMessage());
    process.exit(1);
  }
  console.log(`redis: nothing on ${host}:${port}, starting redis-server (no persistence)`);
  const r = spawnSync('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'yes'], { stdio: 'inherit' });
  if (r.status !== 0) { console.error('redis: redis-server failed to start'); process.exit(1); }
  for (let i = 0; i < 50; i++) {
    if (await ping()) return console.log(`redis: started on ${host}:${port}`);
    await new Promise((res) => setTimeout(res, 100));
  }
  console.error(`redis: started redis-server but ${host}:${port} does not answer`);
  process.exit(1);
}
module.exports = { ping, host, port, isLocal, hasRedisServer, unreachableMessage };
if (require.main === module) main();

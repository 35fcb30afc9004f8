import { once } from 'node:events';
import { createServer as createHttpServer } from 'node:http';
import { createServer, type Server, type Socket } from 'node:net';
import { checkPorts, describeTaken, freePort, listenerPid, portFree } from '../port-check';

const servers: Server[] = [];
const sockets: Socket[] = [];
afterAll(async () => {
  for (const s of sockets) s.destroy();
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
});

async function hold(server: Server = createServer()): Promise<number> {
  server.on('connection', (s: Socket) => sockets.push(s));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  servers.push(server);
  return (server.address() as { port: number }).port;
}

test('a port a plain TCP listener holds is taken, by this very process, and the message names it and the way out', async () => {
  const port = await hold();
  expect(await portFree('127.0.0.1', port)).toBe(false);
  expect(listenerPid(port)).toBe(process.pid);
  const message = await describeTaken({ host: '127.0.0.1', port, what: 'the gateway', variable: 'GATEWAY_PORT' });
  expect(message).toMatch(new RegExp(`^port ${port} \\(the gateway, GATEWAY_PORT\\) is taken by pid ${process.pid} \\(.*node.*\\): stop it, or set GATEWAY_PORT to a free port\\.$`));
});

test('a port an earlier Tollgate holds is described as that service, with the pid to stop', async () => {
  const earlier = createHttpServer((req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(req.url === '/healthz' ? { status: 'ok', service: 'gateway', pid: process.pid } : {}));
  });
  const port = await hold(earlier as unknown as Server);
  const message = await describeTaken({ host: '127.0.0.1', port, what: 'the gateway', variable: 'GATEWAY_PORT' });
  expect(message).toBe(`port ${port} (the gateway, GATEWAY_PORT) is taken by an earlier Tollgate gateway (pid ${process.pid}): stop it with \`kill ${process.pid}\`, or set GATEWAY_PORT to a free port.`);
});

test('checkPorts: free ports pass; a taken one and a port given twice are each reported once', async () => {
  const free = await freePort('127.0.0.1');
  const other = await freePort('127.0.0.1');
  const taken = await hold();
  expect(await checkPorts([{ host: '127.0.0.1', port: free, what: 'the gateway', variable: 'GATEWAY_PORT' }])).toEqual([]);
  const problems = await checkPorts([
    { host: '127.0.0.1', port: taken, what: 'the gateway', variable: 'GATEWAY_PORT' },
    { host: '127.0.0.1', port: other, what: 'the stub provider', variable: 'STUB_PORT' },
    { host: '127.0.0.1', port: other, what: 'the vision health server', variable: 'HEALTH_PORT' },
  ]);
  expect(problems).toEqual([
    `port ${other} is set for both the stub provider (STUB_PORT) and the vision health server (HEALTH_PORT): give each its own.`,
    expect.stringMatching(new RegExp(`^port ${taken} \\(the gateway, GATEWAY_PORT\\) is taken by pid ${process.pid} `)),
  ]);
  // Checking bound nothing that stays.
  expect(await portFree('127.0.0.1', free)).toBe(true);
  expect(await portFree('127.0.0.1', other)).toBe(true);
});

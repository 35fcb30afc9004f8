import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import path from 'node:path';
import { createInterface } from 'node:readline';

const root = path.resolve(__dirname, '../../..');
const tsx = path.join(root, 'node_modules/.bin/tsx');

function run(env: Record<string, string>): ChildProcessWithoutNullStreams {
  return spawn(tsx, [path.join(root, 'packages/stub-llm/src/cli.ts')], { env: { ...process.env, ...env }, cwd: root });
}

function exitOf(child: ChildProcessWithoutNullStreams): Promise<number | null> {
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

describe('cli', () => {
  it('prints the URLs, applies STUB_FAULTS and exits cleanly on SIGTERM', async () => {
    const child = run({ STUB_PORT: '0', STUB_FAULTS: JSON.stringify({ script: [{ fault: '503', times: 1 }] }) });
    const exited = exitOf(child);
    try {
      const line = await new Promise<string>((resolve, reject) => {
        createInterface({ input: child.stdout }).once('line', resolve);
        child.once('exit', () => reject(new Error('cli exited before printing')));
      });
      const url = /^stub-llm listening on (http:\/\/127\.0\.0\.1:\d+) /.exec(line)?.[1];
      expect(url).toBeDefined();
      expect(line).toContain(`openai: ${url}/openai/v1, deepseek: ${url}/deepseek/v1, gemini: ${url}/gemini`);

      const call = (): Promise<number> => fetch(`${url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: 'Bearer t', 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] }),
      }).then((r) => r.status);
      expect(await call()).toBe(503);
      expect(await call()).toBe(200);

      const t0 = Date.now();
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(Date.now() - t0).toBeLessThan(2000);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('refuses a bad STUB_FAULTS with a message and exit code 1', async () => {
    const child = run({ STUB_PORT: '0', STUB_FAULTS: '{"rate500": 3}' });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    expect(await exitOf(child)).toBe(1);
    expect(stderr).toContain('stub-llm: rate500 must be a probability in 0..1');
  });
});

import { FaultPlanner, parseFaultHeader } from '../src/faults';
import { countReplyTokens } from '../src/chat';
import { base64DecodedBytes, composeReply, composeReplyParts, splitForStream } from '../src/reply';
import { countTokens, parseFaultConfig } from '../src';

describe('reply text', () => {
  const inputs = ['', 'hi', 'Summarise this long document about budgets, ledgers, alerts and retries in two lines, please.', 'x'.repeat(5000)];

  it('is deterministic, echoes the input and stays 20-60 tokens', () => {
    for (const text of inputs) {
      const a = composeReply('openai', 'gpt-4o-mini', text, []);
      expect(composeReply('openai', 'gpt-4o-mini', text, [])).toBe(a);
      const tokens = countTokens(a);
      expect(tokens).toBeGreaterThanOrEqual(20);
      expect(tokens).toBeLessThanOrEqual(60);
    }
    expect(composeReply('gemini', 'g', 'hi', [])).toContain('You said: "hi".');
    expect(composeReply('gemini', 'g', '', [])).toContain('You sent no text.');
    expect(composeReply('gemini', 'g', 'a', [])).not.toBe(composeReply('gemini', 'g', 'b', []));
  });

  it('counts reply tokens per sentence exactly as the joined text', () => {
    const alphabet = ['a', 'Z', ' ', '  ', '7', '42', '.', '"', "'", '…', 'é', '中文', '🙂', '\n', '\t', '-', '/', ':', '?!', 'ß', 'ｱ'];
    let seed = 1;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const models = ['gpt-4o-mini', 'deepseek-chat', 'models/gemini-2.0-flash', 'weird model: v2 ', '中文-模型'];
    for (let i = 0; i < 400; i++) {
      const text = Array.from({ length: rand(60) }, () => alphabet[rand(alphabet.length)] ?? '').join('');
      const images = Array.from({ length: rand(3) }, () => ({ mediaType: rand(2) ? 'image/png' : null, bytes: rand(2) ? rand(100000) : null }));
      const parts = composeReplyParts('openai', models[rand(models.length)] ?? 'm', text, images);
      expect(countReplyTokens(parts)).toBe(countTokens(parts.join(' ')));
    }
  });

  it('mentions images with type and size', () => {
    const r = composeReply('openai', 'm', 'look', [{ mediaType: 'image/jpeg', bytes: 1234 }, { mediaType: null, bytes: null }]);
    expect(r).toContain('I received 2 images (image/jpeg, 1234 bytes; unknown type, remote).');
  });

  it('splits into pieces of up to three words that join back exactly', () => {
    const text = composeReply('deepseek', 'deepseek-chat', '  spaced   out  text ', []);
    const pieces = splitForStream(text);
    expect(pieces.join('')).toBe(text);
    expect(pieces.length).toBeGreaterThan(3);
    for (const p of pieces) expect(p.trim().split(/\s+/).length).toBeLessThanOrEqual(3);
    expect(splitForStream('')).toEqual([]);
  });

  it('computes base64 decoded sizes without decoding', () => {
    for (const n of [0, 1, 2, 3, 4, 100, 1001]) {
      expect(base64DecodedBytes(Buffer.alloc(n, 7).toString('base64'))).toBe(n);
    }
  });
});

describe('FaultPlanner', () => {
  it('consumes script steps in order, per provider, before rates', () => {
    const p = new FaultPlanner(parseFaultConfig({
      rate500: 1,
      script: [{ provider: 'gemini', fault: 'hang', times: 1 }, { fault: '429', times: 2 }],
    }));
    expect(p.decide('openai', null).fault).toBe('429');
    expect(p.decide('gemini', null).fault).toBe('hang');
    expect(p.decide('gemini', null).fault).toBe('429');
    expect(p.decide('openai', null).fault).toBe('500');
  });

  it('lets a forced header win without consuming the script', () => {
    const p = new FaultPlanner({ script: [{ fault: '503', times: 1 }], latencyMs: 50 });
    expect(p.decide('openai', { fault: 'malformed' })).toEqual({ fault: 'malformed', latencyMs: 50, retryAfterSeconds: 1 });
    expect(p.decide('openai', { latencyMs: 5 })).toEqual({ fault: '503', latencyMs: 5, retryAfterSeconds: 1 });
    expect(p.decide('openai', null).fault).toBeNull();
  });

  it('merges per-provider overrides over the top level', () => {
    const p = new FaultPlanner({ latencyMs: 10, retryAfterSeconds: 3, providers: { deepseek: { latencyMs: 99, rate429: 1 } } });
    expect(p.decide('openai', null)).toEqual({ fault: null, latencyMs: 10, retryAfterSeconds: 3 });
    expect(p.decide('deepseek', null)).toEqual({ fault: '429', latencyMs: 99, retryAfterSeconds: 3 });
  });

  it('draws the same sequence for the same seed, with jitter inside its range and rates near their value', () => {
    const run = (): Array<[string | null, number]> => {
      const p = new FaultPlanner({ seed: 7, rate429: 0.2, rate503: 0.1, latencyMs: 100, latencyJitterMs: 50 });
      return Array.from({ length: 2000 }, () => {
        const d = p.decide('openai', null);
        return [d.fault, d.latencyMs];
      });
    };
    const a = run();
    expect(run()).toEqual(a);
    for (const [, ms] of a) {
      expect(ms).toBeGreaterThanOrEqual(100);
      expect(ms).toBeLessThan(150);
    }
    const share = (kind: string): number => a.filter(([f]) => f === kind).length / a.length;
    expect(share('429')).toBeGreaterThan(0.15);
    expect(share('429')).toBeLessThan(0.25);
    expect(share('503')).toBeGreaterThan(0.06);
    expect(share('503')).toBeLessThan(0.14);
  });
});

describe('fault parsing', () => {
  it('reads the x-stub-fault header', () => {
    expect(parseFaultHeader('429')).toEqual({ fault: '429' });
    expect(parseFaultHeader('latency=250')).toEqual({ latencyMs: 250 });
    expect(parseFaultHeader('latency=250, 503')).toEqual({ latencyMs: 250, fault: '503' });
    expect(() => parseFaultHeader('418')).toThrow('x-stub-fault: unknown value "418"');
  });

  it('validates fault configs with readable messages', () => {
    const ok = { rate429: 0.5, seed: 3, providers: { gemini: { latencyMs: 5 } }, script: [{ provider: 'openai', fault: 'hang', times: 2 }] };
    expect(parseFaultConfig(ok)).toEqual(ok);
    expect(() => parseFaultConfig([])).toThrow('fault config must be a JSON object');
    expect(() => parseFaultConfig({ rate42: 1 })).toThrow('unknown fault config field "rate42"');
    expect(() => parseFaultConfig({ latencyMs: -1 })).toThrow('latencyMs must be a number >= 0');
    expect(() => parseFaultConfig({ providers: { anthropic: {} } })).toThrow('providers: unknown provider "anthropic"');
    expect(() => parseFaultConfig({ script: [{ fault: 'boom', times: 1 }] })).toThrow('script[0].fault must be one of');
    expect(() => parseFaultConfig({ script: [{ fault: '429', times: 1.5 }] })).toThrow('script[0].times must be an integer >= 0');
  });
});

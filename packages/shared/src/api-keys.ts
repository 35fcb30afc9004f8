import { createHash, randomBytes, randomUUID } from 'node:crypto';
import type Redis from 'ioredis';
import { z } from 'zod';

/** What an API key may do; `admin` is every scope. */
export const KEY_SCOPES = ['chat', 'vision', 'costs', 'usage', 'admin'] as const;
export type KeyScope = (typeof KEY_SCOPES)[number];

export interface ApiKeyRecord {
  key_id: string;
  name: string;
  user_id: string;
  project_id: string;
  scopes: KeyScope[];
  created_at: string;
}

export const newKeySchema = z.strictObject({
  name: z.string().min(1).max(100).default('unnamed'),
  user_id: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'letters, digits, dot, dash or underscore (1-64)'),
  project_id: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'letters, digits, dot, dash or underscore (1-64)'),
  scopes: z.array(z.enum(KEY_SCOPES)).min(1).default(['chat', 'vision', 'costs']),
});
export type NewKey = z.input<typeof newKeySchema>;

const hash = (key: string) => createHash('sha256').update(key).digest('hex');

/**
 * API keys, stored only as SHA-256 hashes (the gateway authenticates with them; the CLI and
 * `pnpm start` create them): Redis never holds a usable key. Lookups hit Redis on
 * every request, so a revoked key stops working at once, on every gateway instance.
 */
export class ApiKeyStore {
  constructor(
    private readonly redis: Redis,
    private readonly namespace: string,
  ) {}

  private byHash(h: string) {
    return `${this.namespace}:apikey:${h}`;
  }
  private byId(id: string) {
    return `${this.namespace}:apikey-id:${id}`;
  }
  private get index() {
    return `${this.namespace}:apikeys`;
  }

  /** Returns the key itself once; only its hash is kept. */
  async create(input: NewKey): Promise<{ key: string; record: ApiKeyRecord }> {
    const spec = newKeySchema.parse(input);
    const key = `tg_${randomBytes(32).toString('base64url')}`;
    const record: ApiKeyRecord = { key_id: `key_${randomUUID().replace(/-/g, '').slice(0, 16)}`, ...spec, created_at: new Date().toISOString() };
    const h = hash(key);
    await this.redis
      .multi()
      .set(this.byHash(h), JSON.stringify(record))
      .set(this.byId(record.key_id), h)
      .sadd(this.index, record.key_id)
      .exec();
    return { key, record };
  }

  /** Whether a presented string can be a key at all: others are refused without a lookup. */
  plausible(key: string): boolean {
    return key.startsWith('tg_') && key.length <= 200;
  }

  /** Where the record of a presented key would be (by its hash), for lookups done in a script. */
  recordKey(key: string): string {
    return this.byHash(hash(key));
  }

  async verify(key: string): Promise<ApiKeyRecord | null> {
    if (!this.plausible(key)) return null;
    const raw = await this.redis.get(this.recordKey(key));
    return raw ? (JSON.parse(raw) as ApiKeyRecord) : null;
  }

  async list(): Promise<ApiKeyRecord[]> {
    const ids = await this.redis.smembers(this.index);
    if (ids.length === 0) return [];
    const hashes = await this.redis.mget(ids.map((id) => this.byId(id)));
    const live = hashes.filter((h): h is string => h !== null);
    const records = live.length ? await this.redis.mget(live.map((h) => this.byHash(h))) : [];
    return records.filter((r): r is string => r !== null).map((r) => JSON.parse(r) as ApiKeyRecord);
  }

  /** True when the key existed; it is gone from every lookup when this returns. */
  async revoke(keyId: string): Promise<boolean> {
    const h = await this.redis.get(this.byId(keyId));
    if (!h) return false;
    await this.redis.multi().del(this.byHash(h)).del(this.byId(keyId)).srem(this.index, keyId).exec();
    return true;
  }
}

import { createHash } from 'node:crypto';
import type Redis from 'ioredis';
import { readLuaSource } from './source';

// Redis scripts live in .lua files beside their callers (`import SCRIPT from './admit-1.lua'`). The
// bundles inline them (scripts/build.js) and jest transforms them (scripts/jest-lua-transform.js);
// under tsx or plain node this hook loads them, so a file imports @tollgate/shared (or this module)
// before its .lua files.
const hooks = require.extensions as Record<string, (module: NodeJS.Module, file: string) => void> | undefined;
if (hooks && !hooks['.lua']) {
  hooks['.lua'] = (module, file) => {
    module.exports = readLuaSource(file).source;
  };
}

/** A Lua script run by SHA (EVALSHA), loading itself on the first NOSCRIPT (new server, SCRIPT FLUSH). */
export class LuaScript {
  readonly sha: string;
  constructor(readonly source: string) {
    if (typeof source !== 'string' || source.trim() === '') {
      throw new TypeError('LuaScript needs the text of a script: import @tollgate/shared before the .lua file, so require() can load it');
    }
    this.sha = createHash('sha1').update(source).digest('hex');
  }

  async run(redis: Redis, keys: readonly string[], args: ReadonlyArray<string | number>): Promise<unknown> {
    try {
      return await redis.evalsha(this.sha, keys.length, ...keys, ...args);
    } catch (err) {
      if (!String((err as Error).message).includes('NOSCRIPT')) throw err;
      return redis.eval(this.source, keys.length, ...keys, ...args);
    }
  }
}

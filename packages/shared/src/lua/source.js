'use strict';
// The text of a Redis script from its .lua file, each `-- @include "<file>"` line replaced by that
// file (a path relative to the including one). Plain CommonJS because three loaders share it: the
// esbuild bundles (scripts/build.js), jest (scripts/jest-lua-transform.js) and the require hook
// for tsx and plain node (./index.ts).
const { readFileSync } = require('node:fs');
const { dirname, resolve } = require('node:path');

const INCLUDE = /^--[ \t]*@include[ \t]+"([^"]+)"[ \t]*$/gm;

/** @param {string} file @returns {{ source: string, files: string[] }} files: every file read, for cache keys and watchers */
function readLuaSource(file) {
  const files = [];
  const expand = (path, stack) => {
    if (stack.includes(path)) throw new Error(`Lua include cycle: ${[...stack, path].join(' -> ')}`);
    files.push(path);
    return readFileSync(path, 'utf8').replace(INCLUDE, (_, name) => expand(resolve(dirname(path), name), [...stack, path]));
  };
  return { source: expand(resolve(file), []), files };
}

module.exports = { readLuaSource };

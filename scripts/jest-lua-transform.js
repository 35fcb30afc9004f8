'use strict';
// jest: a .lua module is its script's text, includes expanded, as the bundles and tsx see it.
const { createHash } = require('node:crypto');
const { readFileSync } = require('node:fs');
const { readLuaSource } = require('../packages/shared/src/lua/source.js');

module.exports = {
  // Keyed on every file the script includes too: editing an included file reloads its includers.
  getCacheKey(_text, file) {
    const hash = createHash('sha1');
    for (const f of readLuaSource(file).files) hash.update(f).update('\0').update(readFileSync(f)).update('\0');
    return hash.digest('hex');
  },
  process(_text, file) {
    return { code: `module.exports = ${JSON.stringify(readLuaSource(file).source)};\n` };
  },
};

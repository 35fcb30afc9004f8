#!/usr/bin/env node
'use strict';
// The `tollgate` CLI runs its TypeScript source through tsx's require hook, as the services do:
// no build step, and the code that runs is the code the typecheck and tests cover.
try {
  require('tsx/cjs');
} catch (err) {
  process.stderr.write(`error: tollgate needs the workspace's dev dependencies (tsx): run pnpm install (${err.code || err.message})\n`);
  process.exit(1);
}
require('../src/index.ts')
  .main(process.argv)
  .then((code) => {
    process.exitCode = code;
  });

// Jest's node environment runs each test file in its own realm, which lacks the undici global
// dispatcher that Node's fetch keeps on the real global. @google/genai dispatches through it, so
// without this every Gemini call in a test fails with "Undici globalDispatcher is not available".
const { TestEnvironment } = require('jest-environment-node');

const DISPATCHER = Symbol.for('undici.globalDispatcher.1');

class TollgateEnvironment extends TestEnvironment {
  async setup() {
    await super.setup();
    if (!globalThis[DISPATCHER]) new Headers(); // Node initialises undici lazily
    this.global[DISPATCHER] = globalThis[DISPATCHER];
  }
}

module.exports = TollgateEnvironment;

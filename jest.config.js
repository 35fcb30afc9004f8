/** Every package's tests in one run; each test file isolates itself in Redis with its own key prefix. */
module.exports = {
  testEnvironment: '<rootDir>/scripts/jest-environment.js',
  roots: ['<rootDir>/packages', '<rootDir>/services', '<rootDir>/infra', '<rootDir>/scripts'],
  testMatch: ['**/test/**/*.test.ts'],
  transform: {
    '^.+\\.ts$': ['@swc/jest', { jsc: { target: 'es2022' } }],
    // Redis scripts imported from their .lua files.
    '^.+\\.lua$': '<rootDir>/scripts/jest-lua-transform.js',
  },
  moduleFileExtensions: ['js', 'mjs', 'cjs', 'jsx', 'ts', 'mts', 'cts', 'tsx', 'json', 'node', 'lua'],
  testTimeout: 30000,
  // Three workers on CI's two cores: test files spend much of their time waiting on Redis and
  // child processes (2 workers kept the cores ~70% busy; 3 took the suite from 239 s to 181 s).
  maxWorkers: 3,
  reporters: ['default', '<rootDir>/scripts/jest-summary-reporter.js'],
};

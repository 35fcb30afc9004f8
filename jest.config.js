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
  maxWorkers: 2,
  reporters: ['default', '<rootDir>/scripts/jest-summary-reporter.js'],
};

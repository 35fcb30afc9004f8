'use strict';
// The images' HEALTHCHECK: exits 0 when this container's service answers GET /healthz with 200,
// 1 otherwise. Plain Node (global fetch), no dependencies. The service comes from
// TOLLGATE_SERVICE (set by the Dockerfile from its SERVICE build argument); the port from the
// variable that service listens on, read like loadConfig reads it (empty counts as unset).

const env = process.env;
const setting = (name, fallback) => {
  const value = (env[name] || '').trim();
  return value === '' ? fallback : value;
};

const service = setting('TOLLGATE_SERVICE', '');
const port =
  service === 'gateway' ? setting('GATEWAY_PORT', '8080')
  : service === 'stub-llm' ? setting('STUB_PORT', '4010')
  : setting('HEALTH_PORT', '');

if (port === '') {
  console.error(`healthcheck: ${service || 'this service'} serves /healthz only when HEALTH_PORT is set`);
  process.exit(1);
}

const url = `http://127.0.0.1:${port}/healthz`;
fetch(url, { signal: AbortSignal.timeout(4000) }).then(
  (res) => {
    if (res.ok) process.exit(0);
    console.error(`healthcheck: ${url} answered ${res.status}`);
    process.exit(1);
  },
  (err) => {
    console.error(`healthcheck: ${url}: ${err.cause ? err.cause.message || err.cause.code : err.message}`);
    process.exit(1);
  },
);

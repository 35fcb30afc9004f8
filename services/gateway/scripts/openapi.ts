/**
 * `pnpm openapi`: writes the gateway's OpenAPI document to docs/openapi.json and the types
 * openapi-typescript makes of it beside the test client (both committed, so API changes show in
 * review; the tests fail when either is stale).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { renderOpenApi } from '../src/openapi/document';
import { generateTypes, TYPES_FILE } from './openapi-types';

const out = join(__dirname, '..', '..', '..', 'docs', 'openapi.json');
mkdirSync(join(out, '..'), { recursive: true });
const text = renderOpenApi();
writeFileSync(out, text);
const doc = JSON.parse(text) as { paths: Record<string, Record<string, unknown>> };
const operations = Object.values(doc.paths).reduce((n, p) => n + Object.keys(p).length, 0);
console.log(`wrote docs/openapi.json: ${operations} operations on ${Object.keys(doc.paths).length} paths, ${text.length} bytes`);
writeFileSync(TYPES_FILE, generateTypes(text));
console.log('wrote services/gateway/test/openapi-client/api.d.ts');

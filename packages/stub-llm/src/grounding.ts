import { createHash } from 'node:crypto';

/**
 * Google Search grounding as Gemini answers it: `candidates[0].groundingMetadata` with the
 * queries the model ran (`webSearchQueries`), the pages it used (`groundingChunks[].web`), which
 * parts of the answer each page supports (`groundingSupports`) and the search chips Google
 * requires beside a grounded answer (`searchEntryPoint.renderedContent`). Deterministic in the
 * prompt, like the rest of the stub.
 */

/** A prompt containing this runs no search, as a real model may decide for small talk: no fee. */
export const NO_SEARCH_MARKER = '[no-search]';
const SOURCES = 3;

export interface Grounding {
  queries: string[];
  metadata: Record<string, unknown>;
}

/** Google's shape for the HTML chips (style + one chip per query). */
function entryPoint(queries: readonly string[]): string {
  const chips = queries
    .map((q) => `<a class="chip" href="https://www.google.com/search?q=${encodeURIComponent(q)}&amp;client=app-vertex-grounding&amp;safesearch=active">${escapeHtml(q)}</a>`)
    .join('');
  return `<style>.container{align-items:center;border-radius:8px;display:flex;font-family:Google Sans,Roboto,sans-serif;font-size:14px;line-height:20px;padding:8px 12px}.chip{display:inline-block;border:solid 1px;border-radius:16px;min-width:14px;padding:5px 16px;text-align:center;user-select:none;margin:0 8px;border-color:#d2d2d2;background-color:#fff;color:#5e5e5e;text-decoration:none}</style><div class="container"><div class="headline">Search suggestions</div><div class="carousel">${chips}</div></div>`;
}

function escapeHtml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** What the model would search for: the prompt flattened, and a second, narrower query. */
export function searchQueries(prompt: string): string[] {
  if (prompt.includes(NO_SEARCH_MARKER)) return [];
  const q = prompt.replace(/\s+/g, ' ').trim().slice(0, 80);
  if (!q) return [];
  return [q, `${q} explained`];
}

/**
 * The metadata for an answer `text` to `prompt`. With no search, Gemini still sends the metadata
 * object but without queries, chunks or an entry point.
 */
export function groundingFor(prompt: string, text: string): Grounding {
  const queries = searchQueries(prompt);
  if (queries.length === 0) return { queries, metadata: {} };
  const digest = createHash('sha256').update(prompt).digest('hex');
  const chunks = Array.from({ length: SOURCES }, (_, i) => ({
    web: {
      uri: `https://vertexaisearch.cloud.google.com/grounding-api-redirect/${digest.slice(i * 8, i * 8 + 24)}`,
      title: `source-${digest.slice(i * 4, i * 4 + 6)}.example.com`,
    },
  }));
  // One support per sentence, each citing one or two of the pages, with byte offsets like Gemini's.
  const supports: unknown[] = [];
  let at = 0;
  for (const sentence of text.match(/[^.!?]+[.!?]*\s*/g) ?? []) {
    const trimmed = sentence.trimEnd();
    const start = Buffer.byteLength(text.slice(0, at));
    const end = start + Buffer.byteLength(trimmed);
    const i = supports.length % SOURCES;
    supports.push({
      segment: { startIndex: start, endIndex: end, text: trimmed },
      groundingChunkIndices: i === 0 ? [0, 1] : [i],
      confidenceScores: i === 0 ? [0.93, 0.71] : [0.82],
    });
    at += sentence.length;
  }
  return {
    queries,
    metadata: {
      searchEntryPoint: { renderedContent: entryPoint(queries) },
      groundingChunks: chunks,
      groundingSupports: supports,
      webSearchQueries: queries,
    },
  };
}

/** Whether a generateContent body asks for Google Search (`googleSearch`, REST's `google_search`, or 1.5's retrieval tool). */
export function wantsSearch(tools: unknown): boolean {
  if (!Array.isArray(tools)) return false;
  return tools.some((t) => typeof t === 'object' && t !== null && ('googleSearch' in t || 'google_search' in t || 'googleSearchRetrieval' in t));
}

// The repo's moduleResolution (node10) ignores package `exports`, where js-tiktoken keeps its rank typings.
declare module 'js-tiktoken/ranks/o200k_base' {
  import type { TiktokenBPE } from 'js-tiktoken/lite';
  const ranks: TiktokenBPE;
  export default ranks;
}

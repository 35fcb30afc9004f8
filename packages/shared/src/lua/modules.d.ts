// A Redis script imported from its .lua file is its text (see ./index.ts for who loads it how).
declare module '*.lua' {
  const source: string;
  export default source;
}

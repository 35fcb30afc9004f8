export declare function readLuaSource(file: string): { source: string; files: string[] };

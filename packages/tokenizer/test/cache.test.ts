// The parsed-tokenizer cache: a warm load gives the same tokenizer, faster; a damaged or stale
// cache is never used.
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { coreFromJson, defaultCacheDir, Gemma3Tokenizer } from "../src/index.js";
import { deserializeCore, serializeCore } from "../src/cache.js";
import { STRINGS, TOKENIZER_DIR, tinyTokenizerJson } from "./helpers.js";

async function timed<T>(f: () => Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const r = await f();
  return [r, performance.now() - t0];
}

describe("tokenizer cache", () => {
  const dirs: string[] = [];
  afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

  it("cold load writes it; a warm load reads it and tokenizes identically, faster; damage is ignored", async () => {
    const dir = mkdtempSync(join(tmpdir(), "gemma3-cache-"));
    dirs.push(dir);
    const [cold, coldMs] = await timed(() =>
      Gemma3Tokenizer.fromDir(TOKENIZER_DIR, { cacheDir: dir }),
    );
    const files = readdirSync(dir);
    expect(files).toHaveLength(1);
    expect(files[0]).toMatch(/^tokenizer-[0-9a-f]{32}\.bin$/);
    const [warm, warmMs] = await timed(() =>
      Gemma3Tokenizer.fromDir(TOKENIZER_DIR, { cacheDir: dir }),
    );
    expect(warmMs).toBeLessThan(coldMs);
    expect(warm.vocabSize).toBe(cold.vocabSize);
    expect(warm.specialTokenIds).toEqual(cold.specialTokenIds);
    expect(warm.chatTemplate).toBe(cold.chatTemplate);
    for (const id of [0, 2, 105, 238, 493, 9259, 138, 255968, 255999, 262143, 262144])
      expect(warm.idToToken(id)).toBe(cold.idToToken(id));
    for (const { text } of STRINGS.strings) {
      const ids = cold.encode(text);
      expect(warm.encode(text)).toEqual(ids);
      expect(warm.decode(ids)).toBe(cold.decode(ids));
    }
    // One flipped byte inside the vocabulary blob: the digest catches it, the load is cold and
    // the file is rewritten.
    const file = join(dir, files[0]!);
    const good = readFileSync(file);
    const bad = Buffer.from(good);
    bad[bad.length - 1000]! ^= 0xff;
    writeFileSync(file, bad);
    const again = await Gemma3Tokenizer.fromDir(TOKENIZER_DIR, { cacheDir: dir });
    expect(again.encode("Hello world!")).toEqual([2, 9259, 1902, 236888]);
    expect(readFileSync(file).equals(good)).toBe(true);
  });

  it("serialize / deserialize: round trip, and null for a foreign key or any damage", () => {
    const core = coreFromJson(tinyTokenizerJson());
    const buf = serializeCore(core, "key-a");
    const back = deserializeCore(buf, "key-a")!;
    expect(back.modelVocab).toEqual(core.modelVocab);
    expect(Array.from(back.merges)).toEqual(Array.from(core.merges));
    expect(back.added).toEqual(core.added);
    expect(back.template).toEqual(core.template);
    expect(back.decodeSteps).toEqual(core.decodeSteps);
    expect(deserializeCore(buf, "key-b")).toBeNull();
    expect(deserializeCore(buf.subarray(0, buf.length - 2), "key-a")).toBeNull();
    expect(deserializeCore(Buffer.from("junk"), "key-a")).toBeNull();
    for (const at of [buf.length - 1, buf.length - 30]) {
      const b = Buffer.from(buf);
      b[at]! ^= 1;
      expect(deserializeCore(b, "key-a"), `byte ${at}`).toBeNull();
    }
    // An unaligned Buffer (from a pool) still reads.
    const shifted = Buffer.alloc(buf.length + 1);
    buf.copy(shifted, 1);
    expect(deserializeCore(shifted.subarray(1), "key-a")!.modelVocab).toEqual(core.modelVocab);
  });

  it("defaultCacheDir follows GEMMA3_CACHE_DIR ('' or 'off' disables), then XDG_CACHE_HOME", () => {
    const keys = ["GEMMA3_CACHE_DIR", "XDG_CACHE_HOME"] as const;
    const saved = keys.map((k) => process.env[k]);
    try {
      process.env.GEMMA3_CACHE_DIR = "/x/cache";
      expect(defaultCacheDir()).toBe("/x/cache");
      for (const off of ["", "off"]) {
        process.env.GEMMA3_CACHE_DIR = off;
        expect(defaultCacheDir()).toBeNull();
      }
      delete process.env.GEMMA3_CACHE_DIR;
      process.env.XDG_CACHE_HOME = "/xdg";
      expect(defaultCacheDir()).toBe("/xdg/gemma3");
    } finally {
      keys.forEach((k, i) => {
        if (saved[i] === undefined) delete process.env[k];
        else process.env[k] = saved[i];
      });
    }
  });
});

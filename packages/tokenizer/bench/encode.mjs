// Tokenizer load time (first load from tokenizer.json, then from the parsed-form cache) and encode
// throughput on the corpus (median of 5 after a warm-up).
//   node packages/tokenizer/bench/encode.mjs MODEL_DIR CORPUS.txt
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Gemma3Tokenizer } from "@gemma3/tokenizer";

const [dir, corpus] = process.argv.slice(2);
const text = readFileSync(corpus, "utf8");
const cacheDir = mkdtempSync(join(tmpdir(), "g3tok-"));
let t = performance.now();
await Gemma3Tokenizer.fromDir(dir, { cacheDir });
const cold = performance.now() - t;
t = performance.now();
const tok = await Gemma3Tokenizer.fromDir(dir, { cacheDir });
const cached = performance.now() - t;
tok.encode(text);
const runs = [];
let ids;
for (let i = 0; i < 5; i++) {
  t = performance.now();
  ids = tok.encode(text);
  runs.push(performance.now() - t);
}
runs.sort((x, y) => x - y);
const mb = Buffer.byteLength(text) / 2 ** 20;
console.log(
  JSON.stringify({
    impl: "@gemma3/tokenizer",
    load_ms: cold,
    load_cached_ms: cached,
    encode_ms: runs[2],
    mb_per_s: mb / (runs[2] / 1000),
    tokens: ids.length,
  }),
);

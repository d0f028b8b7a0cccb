// A deterministic ~1 MB mixed-language text (the test strings of test/fixtures/strings.json,
// shuffled and joined with spaces and newlines), written to a file so that our tokenizer and HF
// `tokenizers` time exactly the same input.
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const strings = JSON.parse(
  readFileSync(join(here, "..", "test", "fixtures", "strings.json"), "utf8"),
);
const texts = (Array.isArray(strings) ? strings : strings.strings).map((s) =>
  typeof s === "string" ? s : s.text,
);
let a = 12345;
const rand = () => (a = (Math.imul(a, 1103515245) + 12345) >>> 0) / 4294967296;
let out = "";
while (Buffer.byteLength(out) < 1 << 20)
  out += texts[Math.floor(rand() * texts.length)] + (rand() < 0.3 ? "\n" : " ");
const path = process.argv[2] ?? join(here, "corpus.txt");
writeFileSync(path, out);
console.log(`${path}: ${Buffer.byteLength(out)} bytes`);

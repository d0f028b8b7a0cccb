// Token masks over the real Gemma 3 vocabulary (262144 ids; the demo checkpoint's tokenizer):
// the trie walk (and the plain-token fast path inside strings) against running the automaton on
// every token one by one; random token sequences drawn from the masks, decoded by the tokenizer,
// against JSON.parse and ajv; and the per-step mask time. Skips when the demo tokenizer is absent.
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Gemma3Tokenizer } from "@gemma3/tokenizer";
import { Ajv2020 } from "ajv/dist/2020.js";
import { beforeAll, describe, expect, it } from "vitest";
import {
  JsonConstraint,
  Rng,
  TokenVocab,
  advance,
  compileResponseFormat,
  isComplete,
  maskCount,
  maskHas,
  type JsonSchema,
  type PState,
  type ResponseFormat,
} from "../src/index.js";

const demo = join(dirname(fileURLToPath(import.meta.url)), "../../../apps/cli/demo-model");
const present = existsSync(join(demo, "tokenizer.json"));
const V = 262144;
const STOP = [1, 106]; // <eos>, <end_of_turn>
const ajv = new Ajv2020({ strict: false });

const schemaFormat = (schema: JsonSchema): ResponseFormat => ({
  type: "json_schema",
  json_schema: { name: "t", schema, strict: true },
});

const PERSON = {
  type: "object",
  properties: {
    name: { type: "string", maxLength: 12 },
    age: { type: "integer", minimum: 0, maximum: 120 },
    city: { enum: ["Paris", "London", "New York", "Zürich"] },
    tags: { type: "array", items: { type: "string", maxLength: 6 }, maxItems: 3 },
    score: { type: "number", minimum: 0, maximum: 1 },
    admin: { type: "boolean" },
  },
  required: ["name", "age", "city", "tags"],
  additionalProperties: false,
};

describe.skipIf(!present)("token masks over the Gemma 3 vocabulary", () => {
  let tok: Gemma3Tokenizer;
  let vocab: TokenVocab;
  beforeAll(async () => {
    tok = await Gemma3Tokenizer.fromDir(demo);
    vocab = TokenVocab.of(tok, V);
  });

  /** A token's text bytes from the tokenizer directly (latin1), or null: never text. */
  function tokenBytes(id: number): string | null {
    const t = tok.idToToken(id);
    if (t === undefined || tok.isSpecial(id)) return null;
    const b = tok.byteOf(id);
    if (b >= 0) return String.fromCharCode(b);
    const s = Buffer.from(tok.pieceText(t), "utf8").toString("latin1");
    return s.length > 0 ? s : null;
  }

  /** The mask by brute force: every token run through the automaton from `state`. */
  function bruteForce(state: PState): Set<number> {
    const out = new Set<number>();
    for (let id = 0; id < V; id++) {
      const s = tokenBytes(id);
      if (s === null) continue;
      let st: PState | null = state;
      for (let i = 0; st && i < s.length; i++) st = advance(st, s.charCodeAt(i));
      if (st) out.add(id);
    }
    if (isComplete(state)) for (const t of STOP) out.add(t);
    else for (const t of STOP) out.delete(t);
    return out;
  }

  function expectMaskEquals(c: JsonConstraint, what: string) {
    const state = (c as unknown as { state: PState }).state;
    const want = bruteForce(state);
    const got = c.allowed();
    const diff: number[] = [];
    for (let id = 0; id < V && diff.length < 5; id++)
      if (maskHas(got, id) !== want.has(id)) diff.push(id);
    expect(
      diff.map((id) => `${id} ${JSON.stringify(tok.idToToken(id))} want ${want.has(id)}`),
      what,
    ).toEqual([]);
    expect(maskCount(got)).toBe(want.size);
  }

  it("the trie walk gives the brute-force mask (structure, keys, strings, numbers, mid-UTF-8)", () => {
    // json_object: free keys and strings (fast path), numbers, nesting.
    const c1 = new JsonConstraint(compileResponseFormat({ type: "json_object" })!, vocab, STOP);
    const doc1 = '{"title": "Hé \\"q\\"", "n": -12.5, "list": [true, {"k": null}]}';
    const ids1 = tok.encode(doc1, { addSpecialTokens: false });
    const checkAt = new Set([0, 2, 3, 6, ids1.length - 2]);
    ids1.forEach((id, i) => {
      if (checkAt.has(i)) expectMaskEquals(c1, `json_object after ${i} tokens`);
      c1.accept(id);
    });
    expect(c1.isTerminated()).toBe(true);
    expectMaskEquals(c1, "json_object complete");
    expect([...Array(V).keys()].filter((t) => maskHas(c1.allowed(), t))).toEqual(STOP);

    // A schema: listed keys, bounded strings (fast path with a length budget), enum, integers.
    const c2 = new JsonConstraint(compileResponseFormat(schemaFormat(PERSON))!, vocab, STOP);
    const doc2 = '{"name": "Ann Lee", "age": 34, "city": "Zürich", "tags": ["ab"]}';
    const ids2 = tok.encode(doc2, { addSpecialTokens: false });
    ids2.forEach((id, i) => {
      if (i % 3 === 1) expectMaskEquals(c2, `schema after ${i} tokens`);
      c2.accept(id);
    });
    expect(c2.isComplete()).toBe(true);

    // Inside a string after a byte token that starts a 3-byte character: only continuations.
    const c3 = new JsonConstraint(compileResponseFormat({ type: "json_object" })!, vocab, STOP);
    for (const id of tok.encode('{"a": "x', { addSpecialTokens: false })) c3.accept(id);
    c3.accept(tok.tokenToId("<0xE2>")!);
    expectMaskEquals(c3, "after <0xE2>");
    expect(maskCount(c3.allowed())).toBe(64); // <0x80> … <0xBF>
    expect(maskHas(c3.allowed(), tok.tokenToId("<0x82>")!)).toBe(true);
    expect(maskHas(c3.allowed(), tok.tokenToId("<0x41>")!)).toBe(false);
    c3.accept(tok.tokenToId("<0x82>")!);
    c3.accept(tok.tokenToId("<0xAC>")!);
    expect(maskCount(c3.allowed())).toBeGreaterThan(260000); // a free string again
  });

  /** Samples from the masks, leaning towards closing the document as it grows. */
  function randomDocument(rf: ResponseFormat, seed: number) {
    const c = new JsonConstraint(compileResponseFormat(rf)!, vocab, STOP);
    const rng = new Rng(BigInt(seed));
    const prefer = ['"', "}", "]", '"}', "0", "1", "true", ",", ":", " "].map(
      (s) => tok.encode(s, { addSpecialTokens: false })[0]!,
    );
    const ids: number[] = [];
    for (let step = 0; step < 400; step++) {
      const m = c.allowed();
      const n = maskCount(m);
      expect(n).toBeGreaterThan(0);
      let id = nthAllowed(m, Math.floor(rng.next() * n));
      if (rng.next() < Math.min(0.8, step / 30)) id = prefer.find((p) => maskHas(m, p)) ?? id;
      if (STOP.includes(id)) return { ids, complete: true };
      c.accept(id);
      ids.push(id);
    }
    return { ids, complete: false };
  }

  /** The k-th allowed token of a mask (ascending ids). */
  function nthAllowed(m: Uint32Array, k: number): number {
    for (let w = 0; ; w++) {
      const c = maskCount(m.subarray(w, w + 1));
      if (k < c) {
        for (let b = 0; b < 32; b++) if ((m[w]! >>> b) & 1 && k-- === 0) return w * 32 + b;
      }
      k -= c;
    }
  }

  it("random tokens drawn from the masks decode to JSON that validates", () => {
    const formats: [ResponseFormat, JsonSchema][] = [
      [{ type: "json_object" }, { type: "object" }],
      [schemaFormat(PERSON), PERSON],
      [
        schemaFormat({
          type: "array",
          items: {
            anyOf: [
              { type: "integer", maximum: 99 },
              { type: "string", maxLength: 4 },
            ],
          },
          minItems: 1,
          maxItems: 4,
        }),
        {
          type: "array",
          items: {
            anyOf: [
              { type: "integer", maximum: 99 },
              { type: "string", maxLength: 4 },
            ],
          },
          minItems: 1,
          maxItems: 4,
        },
      ],
    ];
    for (const [rf, schema] of formats) {
      const validate = ajv.compile(schema as object);
      for (let seed = 1; seed <= 5; seed++) {
        const { ids, complete } = randomDocument(rf, seed);
        expect(complete, `seed ${seed}`).toBe(true);
        const text = tok.decode(ids);
        const v = JSON.parse(text);
        expect(validate(v), text).toBe(true);
      }
    }
  });

  it("per-step mask time at the real vocabulary", () => {
    const docs: [ResponseFormat, string][] = [
      [
        { type: "json_object" },
        '{"name": "Alice Smith", "age": 31, "address": {"street": "12 Rue de la Paix", "city": "Paris"}, "tags": ["admin", "dev"], "active": true, "score": 0.875}',
      ],
      [
        schemaFormat(PERSON),
        '{"name": "Bob Jones", "age": 42, "city": "New York", "tags": ["x", "yz"], "score": 0.5, "admin": false}',
      ],
    ];
    const times: number[] = [];
    for (let pass = 0; pass < 2; pass++)
      for (const [rf, doc] of docs) {
        const c = new JsonConstraint(compileResponseFormat(rf)!, vocab, STOP);
        for (const id of tok.encode(doc, { addSpecialTokens: false })) {
          const t0 = performance.now();
          c.allowed();
          if (pass === 1) times.push(performance.now() - t0);
          c.accept(id);
        }
      }
    times.sort((a, b) => a - b);
    const q = (p: number) => times[Math.min(times.length - 1, Math.floor(p * times.length))]!;
    console.log(
      `mask per step over ${times.length} steps: median ${q(0.5).toFixed(3)} ms, p90 ${q(0.9).toFixed(3)} ms, max ${q(1).toFixed(3)} ms`,
    );
    expect(q(0.5)).toBeLessThan(10);
  });
});

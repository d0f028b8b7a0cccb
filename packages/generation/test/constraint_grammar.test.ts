// The JSON automaton byte by byte (no tokenizer): documents it accepts against JSON.parse, schema
// instances against ajv (an independent validator), random walks over the bytes it allows, and
// the E_INVALID errors of unsupported schemas.
import { Ajv2020 } from "ajv/dist/2020.js";
import { describe, expect, it } from "vitest";
import {
  GenerationError,
  Rng,
  accepts,
  advance,
  compileResponseFormat,
  compileSchema,
  initialState,
  isComplete,
  type JsonSchema,
  type PState,
} from "../src/index.js";

const latin1 = (s: string) => Buffer.from(s, "utf8").toString("latin1");
const ANY_OBJECT = compileResponseFormat({ type: "json_object" })!.root;
const ANY = compileSchema({});
const ajv = new Ajv2020({ strict: false, allErrors: true });

/** Whether the automaton of `schema` accepts `text` (whitespace bound `ws`). */
function ok(schema: JsonSchema, text: string, ws = 2): boolean {
  return accepts(compileSchema(schema), latin1(text), ws);
}

describe("JSON syntax (json_object and any value) against JSON.parse", () => {
  const valid = [
    "{}",
    '{"a":1}',
    '{"a": 1, "b": [true, false, null]}',
    '{"":""}',
    '{"a":{"b":{"c":[[],[{}]]}}}',
    '{"s":"esc \\" \\\\ \\/ \\b \\f \\n \\r \\t \\u00e9 \\uABCD"}',
    '{"u":"héllo wörld €𝄞"}',
    '{"n":[0,-0,1.5,-12.25e+3,1E5,3e-7,0.0,10]}',
    '{"a" : 1 ,"b":2}',
    ' {"a":\n1}',
  ];
  const invalid = [
    "",
    "{",
    '{"a":1,}',
    '{"a" 1}',
    "{'a':1}",
    '{"a":01}',
    '{"a":1.}',
    '{"a":.5}',
    '{"a":-}',
    '{"a":1e}',
    '{"a":tru}',
    '{"a":True}',
    '{"a":"x\ny"}', // raw newline in a string
    '{"a":"\\x"}',
    '{"a":"\\u12G4"}',
    '{"a":[1,]}',
    '{"a":1}}',
    '{"a":1} ', // nothing after the root value
    "[1]", // json_object: an object
    '"x"',
  ];
  it("accepts valid objects and refuses invalid text, as JSON.parse does", () => {
    for (const t of valid) {
      expect(() => JSON.parse(t), t).not.toThrow();
      expect(accepts(ANY_OBJECT, latin1(t), 2), t).toBe(true);
    }
    for (const t of invalid) {
      const parses = (() => {
        try {
          const v = JSON.parse(t);
          return typeof v === "object" && v !== null && !Array.isArray(v) && !/\s$/.test(t);
        } catch {
          return false;
        }
      })();
      expect(parses, t).toBe(false);
      expect(accepts(ANY_OBJECT, latin1(t), 2), t).toBe(false);
    }
  });

  it("any value at the root with an empty schema; numbers end at the end of input", () => {
    for (const t of ["1", "-0.5e3", '"s"', "[1,2]", "null", "true", "{}", "123"])
      expect(accepts(ANY, latin1(t), 2), t).toBe(true);
    for (const t of ["01", "1 1", "nul", "[1", "-"])
      expect(accepts(ANY, latin1(t), 2), t).toBe(false);
  });

  it("bounds whitespace runs; refuses surrogate escapes and malformed UTF-8", () => {
    expect(accepts(ANY_OBJECT, latin1('{"a":  1}'), 2)).toBe(true);
    expect(accepts(ANY_OBJECT, latin1('{"a":   1}'), 2)).toBe(false);
    expect(accepts(ANY_OBJECT, latin1('{"a": 1}'), 0)).toBe(false);
    expect(accepts(ANY_OBJECT, latin1('{"a":1}'), 0)).toBe(true);
    expect(accepts(ANY_OBJECT, latin1('{"a":"\\ud83d\\ude00"}'), 2)).toBe(false);
    // Bytes: an overlong "/" (C0 AF), a lone continuation byte, a truncated 3-byte character.
    for (const bytes of ["\xc0\xaf", "\x80", "\xe2\x82"])
      expect(accepts(ANY_OBJECT, `{"a":"${bytes}"}`, 2), JSON.stringify(bytes)).toBe(false);
    expect(accepts(ANY_OBJECT, `{"a":"\xe2\x82\xac"}`, 2)).toBe(true); // €
  });
});

describe("JSON Schema subset against ajv", () => {
  const person = {
    type: "object",
    properties: {
      name: { type: "string", minLength: 1, maxLength: 8 },
      age: { type: "integer", minimum: 0, maximum: 150 },
      email: { type: ["string", "null"] },
      tags: { type: "array", items: { enum: ["a", "b", 3] }, minItems: 1, maxItems: 2 },
    },
    required: ["name", "age", "tags"],
    additionalProperties: false,
  };
  const cases: { schema: JsonSchema; texts: string[] }[] = [
    {
      schema: person,
      texts: [
        '{"name":"Al","age":30,"tags":["a"]}',
        '{"name":"Al","age":30,"email":null,"tags":["a",3]}',
        '{"name":"Al","age":30,"email":"x@y","tags":["b"]}',
        '{"name":"","age":30,"tags":["a"]}',
        '{"name":"Alexander the Great","age":30,"tags":["a"]}',
        '{"name":"Al","age":151,"tags":["a"]}',
        '{"name":"Al","age":-1,"tags":["a"]}',
        '{"name":"Al","age":30.5,"tags":["a"]}',
        '{"name":"Al","age":30,"tags":[]}',
        '{"name":"Al","age":30,"tags":["a","b","a"]}',
        '{"name":"Al","age":30,"tags":["c"]}',
        '{"name":"Al","tags":["a"]}',
        '{"name":"Al","age":30,"tags":["a"],"x":1}',
      ],
    },
    {
      schema: { type: "number", minimum: -2.5, exclusiveMaximum: 10 },
      texts: ["-2.5", "-2.6", "0", "9.99", "10", "10.0", "-0", "1e1", "3.25", "-3"],
    },
    {
      schema: { type: "integer", minimum: -50, maximum: -10 },
      texts: ["-10", "-50", "-51", "-9", "0", "-25", "10", "-100"],
    },
    {
      schema: { type: "number", minimum: -1.5, maximum: -0.25 },
      texts: ["-1.5", "-0.25", "-0.2", "-1.51", "-1", "0", "-0.3", "-0.25000", "-2"],
    },
    {
      schema: { type: "integer", exclusiveMinimum: 5, maximum: 120 },
      texts: ["5", "6", "99", "120", "121", "1200", "-6", "0"],
    },
    {
      schema: {
        $defs: {
          node: {
            type: "object",
            properties: {
              v: { type: "integer" },
              kids: { type: "array", items: { $ref: "#/$defs/node" } },
            },
            required: ["v"],
          },
        },
        $ref: "#/$defs/node",
      },
      texts: [
        '{"v":1}',
        '{"v":1,"kids":[{"v":2,"kids":[]},{"v":3}]}',
        '{"v":1,"kids":[{"w":2}]}',
        '{"kids":[]}',
      ],
    },
    {
      schema: {
        anyOf: [
          {
            type: "object",
            properties: { kind: { const: "a" }, x: { type: "integer" } },
            required: ["kind", "x"],
          },
          {
            type: "object",
            properties: { kind: { const: "b" }, y: { type: "string" } },
            required: ["kind", "y"],
          },
        ],
      },
      texts: [
        '{"kind":"a","x":1}',
        '{"kind":"b","y":"s"}',
        '{"kind":"a","y":"s"}',
        '{"kind":"c","x":1}',
      ],
    },
    {
      schema: {
        type: "array",
        prefixItems: [{ type: "boolean" }, { type: "string", maxLength: 2 }],
        items: false,
      },
      texts: ["[]", "[true]", '[false,"ab"]', '[true,"abc"]', '[true,"a",1]', "[1]"],
    },
    {
      schema: {
        type: "object",
        properties: { a: { type: "integer" } },
        additionalProperties: { type: "boolean" },
      },
      texts: [
        '{"a":1,"b":true}',
        '{"b":false}',
        '{"b":1}',
        '{"a":1,"b":true,"c":false}',
        '{"b":true,"a":1}',
      ],
    },
    {
      schema: { enum: [1, 12, "x", null, { k: [1] }] },
      texts: ["1", "12", "123", '"x"', "null", '{"k":[1]}', '{"k":[2]}'],
    },
  ];
  it("accepts exactly the instances ajv validates (in the schema's key order)", () => {
    for (const { schema, texts } of cases) {
      const validate = ajv.compile(schema as object);
      for (const t of texts) {
        const valid = validate(JSON.parse(t));
        expect(ok(schema, t), `${JSON.stringify(schema)}: ${t}`).toBe(valid);
      }
    }
  });

  it("writes keys in the schema's order and never twice", () => {
    const s = {
      type: "object",
      properties: { a: { type: "integer" }, b: { type: "integer" }, c: { type: "integer" } },
      required: ["b"],
    };
    expect(ok(s, '{"a":1,"b":2,"c":3}')).toBe(true);
    expect(ok(s, '{"b":2}')).toBe(true);
    expect(ok(s, '{"b":2,"a":1}')).toBe(false); // valid for ajv, but out of order
    expect(ok(s, '{"a":1,"a":1,"b":2}')).toBe(false);
  });
});

describe("random walks over the allowed bytes", () => {
  // Bytes that lead towards the end of a document, tried first most of the time.
  const PREFER = [0x22, 0x7d, 0x5d, 0x30, 0x31, 0x74, 0x6e, 0x3a, 0x2c, 0x61, 0x7b, 0x5b];
  function walk(schema: JsonSchema, seed: number, steps = 4000): string {
    const node = compileSchema(schema);
    const rng = new Rng(BigInt(seed));
    let s: PState = initialState(node, 2);
    const out: number[] = [];
    for (let i = 0; i < steps; i++) {
      const allowed: number[] = [];
      for (let b = 0; b < 256; b++) if (advance(s, b)) allowed.push(b);
      if (allowed.length === 0) {
        expect(isComplete(s)).toBe(true); // never stuck before the end
        break;
      }
      if (isComplete(s) && rng.next() < 0.5) break;
      let b = allowed[Math.floor(rng.next() * allowed.length)]!;
      if (rng.next() < Math.min(0.9, i / 50)) b = PREFER.find((p) => allowed.includes(p)) ?? b;
      s = advance(s, b)!;
      out.push(b);
    }
    expect(isComplete(s)).toBe(true);
    return Buffer.from(out).toString("utf8");
  }
  const schemas: JsonSchema[] = [
    { type: "object" },
    {
      type: "object",
      properties: {
        id: { type: "integer", minimum: 10, maximum: 20 },
        score: { type: "number", minimum: 0, maximum: 1 },
        label: { type: "string", minLength: 2, maxLength: 5 },
        mode: { enum: ["fast", "slow", 7] },
        list: { type: "array", items: { type: ["integer", "null"] }, minItems: 2, maxItems: 4 },
        opt: { type: "boolean" },
      },
      required: ["id", "score", "label", "mode", "list"],
      additionalProperties: false,
    },
    {
      anyOf: [
        { type: "string", maxLength: 3 },
        { type: "array", items: { type: "number" } },
      ],
    },
  ];
  it("always ends in a document that parses and validates", () => {
    for (const schema of schemas) {
      const validate = ajv.compile(schema as object);
      for (let seed = 1; seed <= 25; seed++) {
        const text = walk(schema, seed);
        const v = JSON.parse(text);
        expect(validate(v), `${text}: ${ajv.errorsText(validate.errors)}`).toBe(true);
      }
    }
  });
});

describe("unsupported schemas: E_INVALID naming the keyword", () => {
  const bad: [unknown, RegExp][] = [
    [{ type: "string", pattern: "^a" }, /"pattern"/],
    [{ type: "object", patternProperties: {} }, /"patternProperties"/],
    [{ type: "number", multipleOf: 2 }, /"multipleOf"/],
    [{ not: { type: "string" } }, /"not"/],
    [{ type: "array", uniqueItems: true }, /"uniqueItems"/],
    [{ type: "object", minProperties: 1 }, /"minProperties"/],
    [{ if: {}, then: {} }, /"if"/],
    [{ $ref: "http://x/y.json" }, /local JSON pointers/],
    [{ $ref: "#/$defs/missing" }, /does not resolve/],
    [{ allOf: [{ type: "string" }, { maxLength: 3 }] }, /single subschema/],
    [{ type: "strin" }, /unknown type "strin"/],
    [{ type: "string", maxLength: -1 }, /"maxLength".*non-negative integer/],
    [{ enum: ["a"], type: "integer" }, /no value satisfies/],
    [false, /false/],
    [{ $ref: "#" }, /refers to itself/],
  ];
  it("throws GenerationError E_INVALID with field response_format", () => {
    for (const [schema, msg] of bad) {
      let err: unknown;
      try {
        compileResponseFormat({ type: "json_schema", json_schema: { name: "x", schema } });
      } catch (e) {
        err = e;
      }
      expect(err, JSON.stringify(schema)).toBeInstanceOf(GenerationError);
      expect((err as GenerationError).code).toBe("E_INVALID");
      expect((err as GenerationError).field).toBe("response_format");
      expect((err as Error).message, JSON.stringify(schema)).toMatch(msg);
    }
    expect(() => compileResponseFormat({ type: "xml" })).toThrow(/type must be/);
    expect(() => compileResponseFormat({ type: "json_schema", json_schema: 3 })).toThrow(
      /json_schema must be an object/,
    );
    // The flattened shape compiles the same automaton; no schema: any JSON value.
    const flat = compileResponseFormat({ type: "json_schema", name: "n", schema: { enum: [1] } })!;
    expect(accepts(flat.root, "1")).toBe(true);
    expect(accepts(flat.root, "2")).toBe(false);
    expect(accepts(compileResponseFormat({ type: "json_schema" })!.root, "[null]")).toBe(true);
    expect(compileResponseFormat({ type: "text" })).toBeNull();
  });
  it("ignores annotations (title, description, format, default)", () => {
    const s = { type: "string", title: "T", description: "d", format: "date-time", default: "x" };
    expect(ok(s, '"abc"')).toBe(true);
  });
});

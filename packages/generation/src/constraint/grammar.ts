// OpenAI's response_format compiled to the automaton's nodes: json_object (any JSON object) and
// json_schema (a JSON Schema subset). What is supported, and how, is listed in SUPPORTED below and
// in mask.ts's header; any other keyword is refused with E_INVALID naming it (a 400 for the
// server), since silently ignoring a constraint would return JSON the caller did not ask for.
import { GenerationError } from "../params.js";
import {
  advance,
  initialState,
  isComplete,
  type ArrayNode,
  type LiteralNode,
  type Node,
  type NumberNode,
  type ObjectNode,
  type ObjectProp,
  type PState,
  type RefNode,
  type StringNode,
  type UnionNode,
} from "./automaton.js";

/** A JSON Schema (an object or a boolean), as parsed JSON. */
export type JsonSchema = boolean | { readonly [keyword: string]: unknown };

/**
 * OpenAI's `response_format`: the wire shape ({type: "json_schema", json_schema: {name, schema,
 * strict}}) or the same fields flattened ({type: "json_schema", name, schema, strict}).
 * `strict` is accepted and ignored: every schema is enforced (as vLLM does).
 */
export type ResponseFormat =
  | { type: "text" }
  | { type: "json_object" }
  | {
      type: "json_schema";
      json_schema: {
        name?: string;
        description?: string;
        schema?: JsonSchema;
        strict?: boolean | null;
      };
    }
  | { type: "json_schema"; name?: string; schema?: JsonSchema; strict?: boolean | null };

export interface GrammarOptions {
  /**
   * Longest run of whitespace (space, \n, \r, \t) allowed between JSON tokens, and before the
   * root value. Default 2: enough for compact or one-line JSON (`{"a": 1, "b": [1, 2]}`) and
   * a newline, while a model cannot loop on blanks. 0 forbids whitespace.
   */
  maxWhitespace?: number;
}

/** A compiled response format: the root node and the whitespace bound. */
export interface JsonGrammar {
  readonly root: Node;
  readonly maxWhitespace: number;
}

/** Keywords that only annotate (ignored). `format` is an annotation by default in 2020-12. */
const ANNOTATIONS = new Set([
  "title",
  "description",
  "default",
  "examples",
  "$schema",
  "$id",
  "$anchor",
  "$comment",
  "$defs",
  "definitions",
  "deprecated",
  "readOnly",
  "writeOnly",
  "format",
  "contentEncoding",
  "contentMediaType",
  "discriminator",
]);
/** Keywords compiled into the automaton. */
const SUPPORTED = new Set([
  "type",
  "enum",
  "const",
  "properties",
  "required",
  "additionalProperties",
  "items",
  "prefixItems",
  "additionalItems",
  "minItems",
  "maxItems",
  "uniqueItems", // false only
  "minLength",
  "maxLength",
  "minimum",
  "maximum",
  "exclusiveMinimum",
  "exclusiveMaximum",
  "anyOf",
  "oneOf", // as anyOf: exact when the alternatives exclude each other (discriminated unions)
  "allOf", // a single subschema only
  "$ref", // local JSON pointers: "#", "#/$defs/X", "#/definitions/X", …
  "nullable", // OpenAPI 3.0: adds null
]);
const TYPES = ["object", "array", "string", "number", "integer", "boolean", "null"] as const;
type TypeName = (typeof TYPES)[number];
const OBJECT_KW = ["properties", "required", "additionalProperties"];
const ARRAY_KW = ["items", "prefixItems", "additionalItems", "minItems", "maxItems"];
const STRING_KW = ["minLength", "maxLength"];
const NUMBER_KW = ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"];

function invalid(msg: string): never {
  throw new GenerationError(`response_format: ${msg}`, "E_INVALID", "response_format");
}

/** Compiles a response_format; null for `text` (no constraint). Throws E_INVALID. */
export function compileResponseFormat(
  rf: ResponseFormat | unknown,
  opts: GrammarOptions = {},
): JsonGrammar | null {
  if (typeof rf !== "object" || rf === null || Array.isArray(rf))
    invalid("must be an object with a type");
  const type = (rf as { type?: unknown }).type;
  const maxWhitespace = opts.maxWhitespace ?? 2;
  if (!Number.isInteger(maxWhitespace) || maxWhitespace < 0)
    throw new RangeError(`maxWhitespace must be a non-negative integer, got ${maxWhitespace}`);
  if (type === "text") return null;
  if (type === "json_object") return { root: compileSchema({ type: "object" }), maxWhitespace };
  if (type === "json_schema") {
    // The wire shape, or its fields flattened into the format.
    const js = "json_schema" in rf ? (rf as { json_schema?: unknown }).json_schema : rf;
    if (typeof js !== "object" || js === null || Array.isArray(js))
      invalid("json_schema must be an object with a schema");
    const schema = (js as { schema?: unknown }).schema;
    // OpenAI's schema is optional; without one any JSON value is accepted (as vLLM's default).
    return {
      root: compileSchema(schema === undefined ? {} : (schema as JsonSchema)),
      maxWhitespace,
    };
  }
  invalid(`type must be "text", "json_object" or "json_schema", got ${JSON.stringify(type)}`);
}

/** Compiles a JSON Schema to the automaton's root node. Throws E_INVALID. */
export function compileSchema(schema: JsonSchema): Node {
  return new Compiler(schema).root();
}

class Compiler {
  private nextId = 0;
  private readonly refs = new Map<object, RefNode>();
  private anyNode: UnionNode | undefined;

  constructor(private readonly doc: JsonSchema) {}

  root(): Node {
    if (this.doc === false) invalid("the schema is false: no value matches it");
    const n = this.compile(this.doc, "#");
    if (n === null) invalid("no value matches the schema");
    return n;
  }

  private id(): number {
    return this.nextId++;
  }

  /** Any JSON value: objects and arrays of any values, strings, numbers, literals. */
  private any(): Node {
    if (this.anyNode) return this.anyNode;
    const alts: Node[] = [];
    const u: UnionNode = { k: "union", id: this.id(), alts };
    this.anyNode = u;
    const obj: ObjectNode = { k: "object", id: this.id(), props: [], extra: u };
    const arr: ArrayNode = {
      k: "array",
      id: this.id(),
      prefix: [],
      items: u,
      minItems: 0,
      maxItems: Infinity,
    };
    const str: StringNode = { k: "string", id: this.id(), minLength: 0, maxLength: Infinity };
    alts.push(obj, arr, str, this.number(false), this.literal(["true", "false", "null"]));
    return u;
  }

  private number(integer: boolean, b?: Partial<NumberNode>): NumberNode {
    return {
      k: "number",
      id: this.id(),
      integer,
      min: b?.min ?? -Infinity,
      max: b?.max ?? Infinity,
      exclusiveMin: b?.exclusiveMin ?? false,
      exclusiveMax: b?.exclusiveMax ?? false,
    };
  }

  private literal(texts: string[]): LiteralNode {
    return { k: "literal", id: this.id(), texts: [...new Set(texts)].sort() };
  }

  private union(alts: Node[]): Node | null {
    if (alts.length === 0) return null;
    if (alts.length === 1) return alts[0]!;
    return { k: "union", id: this.id(), alts };
  }

  /** The node of a (sub)schema; null when no value matches it (false, empty enum, …). */
  private compile(s: unknown, path: string): Node | null {
    if (s === true) return this.any();
    if (s === false) return null;
    if (typeof s !== "object" || s === null || Array.isArray(s))
      invalid(`schema at ${path} must be an object or a boolean`);
    const o = s as Record<string, unknown>;
    const keys = Object.keys(o);
    for (const k of keys)
      if (!SUPPORTED.has(k) && !ANNOTATIONS.has(k) && !k.startsWith("x-"))
        invalid(`unsupported JSON Schema keyword "${k}" at ${path}`);
    const validation = keys.filter((k) => SUPPORTED.has(k));

    if ("$ref" in o) {
      const others = validation.filter((k) => k !== "$ref");
      if (others.length > 0)
        invalid(`"$ref" with sibling keywords (${others.join(", ")}) at ${path} is not supported`);
      return this.ref(o["$ref"], path);
    }
    if ("allOf" in o) {
      const all = o["allOf"];
      if (!Array.isArray(all) || all.length !== 1)
        invalid(`"allOf" at ${path}: only a single subschema is supported`);
      const others = validation.filter((k) => k !== "allOf");
      if (others.length > 0)
        invalid(`"allOf" with sibling keywords (${others.join(", ")}) at ${path} is not supported`);
      return this.compile(all[0], `${path}/allOf/0`);
    }
    for (const kw of ["anyOf", "oneOf"] as const)
      if (kw in o) {
        const alts = o[kw];
        if (!Array.isArray(alts) || alts.length === 0)
          invalid(`"${kw}" at ${path} must be a non-empty array`);
        const others = validation.filter((k) => k !== kw && k !== "nullable");
        if (others.length > 0)
          invalid(
            `"${kw}" with sibling keywords (${others.join(", ")}) at ${path} is not supported`,
          );
        const nodes = alts
          .map((a, i) => this.compile(a, `${path}/${kw}/${i}`))
          .filter((n): n is Node => n !== null);
        if (o["nullable"] === true) nodes.push(this.literal(["null"]));
        return this.union(nodes);
      }

    if ("enum" in o || "const" in o) return this.enumNode(o, path);

    // The types this schema admits.
    let types: TypeName[];
    if ("type" in o) {
      const t = o["type"];
      const list = Array.isArray(t) ? t : [t];
      if (list.length === 0) invalid(`"type" at ${path} is an empty list`);
      for (const x of list)
        if (!TYPES.includes(x as TypeName))
          invalid(`"type" at ${path}: unknown type ${JSON.stringify(x)}`);
      types = [...new Set(list as TypeName[])];
      if (types.includes("number")) types = types.filter((x) => x !== "integer");
    } else {
      // No type: the types whose keywords appear (a keyword of another type does not restrict
      // them, but a value has to be generated), or any value.
      const has = (kws: string[]) => kws.some((k) => k in o);
      types = [];
      if (has(OBJECT_KW)) types.push("object");
      if (has(ARRAY_KW)) types.push("array");
      if (has(STRING_KW)) types.push("string");
      if (has(NUMBER_KW)) types.push("number");
      if (types.length === 0) return this.any(); // null included
    }
    if (o["nullable"] === true && !types.includes("null")) types.push("null");
    const nodes = types.map((t) => this.typed(t, o, path)).filter((n): n is Node => n !== null);
    return this.union(nodes);
  }

  private ref(ref: unknown, path: string): Node {
    if (typeof ref !== "string" || !(ref === "#" || ref.startsWith("#/")))
      invalid(`"$ref" at ${path}: only local JSON pointers ("#/$defs/Name") are supported`);
    let target: unknown = this.doc;
    if (ref !== "#")
      for (const raw of ref.slice(2).split("/")) {
        const part = decodeURIComponent(raw).replaceAll("~1", "/").replaceAll("~0", "~");
        if (typeof target !== "object" || target === null || !(part in target))
          invalid(`"$ref" at ${path}: ${ref} does not resolve`);
        target = (target as Record<string, unknown>)[part];
      }
    if (typeof target === "boolean") {
      if (!target) invalid(`"$ref" at ${path}: ${ref} is the false schema`);
      return this.any();
    }
    if (typeof target !== "object" || target === null)
      invalid(`"$ref" at ${path}: ${ref} is not a schema`);
    let r = this.refs.get(target);
    if (r) return r;
    r = { k: "ref", id: this.id(), target: undefined };
    this.refs.set(target, r);
    const n = this.compile(target, ref);
    if (n === null) invalid(`"$ref" at ${path}: no value matches ${ref}`);
    // A reference that only leads back to itself ({"$ref": "#"} at the root) matches nothing.
    let x: Node = n;
    for (let i = 0; x.k === "ref"; i++) {
      if (x === r || i > 64) invalid(`"$ref" at ${path}: ${ref} refers to itself`);
      if (!x.target) break;
      x = x.target;
    }
    r.target = n;
    return r;
  }

  private enumNode(o: Record<string, unknown>, path: string): Node | null {
    let values: unknown[];
    if ("const" in o) {
      values = [o["const"]];
      if ("enum" in o) {
        if (!Array.isArray(o["enum"])) invalid(`"enum" at ${path} must be an array`);
        values = values.filter((v) =>
          (o["enum"] as unknown[]).some((e) => JSON.stringify(e) === JSON.stringify(v)),
        );
      }
    } else {
      if (!Array.isArray(o["enum"]) || o["enum"].length === 0)
        invalid(`"enum" at ${path} must be a non-empty array`);
      values = o["enum"];
    }
    // The other keywords still apply: keep the values their automaton accepts.
    const rest: Record<string, unknown> = { ...o };
    delete rest["enum"];
    delete rest["const"];
    const check = this.compile(rest, path);
    const texts: string[] = [];
    for (const v of values) {
      const text = JSON.stringify(v);
      if (text === undefined) invalid(`"enum"/"const" at ${path}: ${String(v)} is not JSON`);
      const bytes = Buffer.from(text, "utf8").toString("latin1");
      if (check === null || !accepts(check, bytes)) continue;
      if (!texts.includes(bytes)) texts.push(bytes);
    }
    if (texts.length === 0) invalid(`"enum"/"const" at ${path}: no value satisfies the schema`);
    return this.literal(texts);
  }

  private typed(t: TypeName, o: Record<string, unknown>, path: string): Node | null {
    switch (t) {
      case "null":
        return this.literal(["null"]);
      case "boolean":
        return this.literal(["true", "false"]);
      case "string": {
        const min = count(o, "minLength", path, 0);
        const max = count(o, "maxLength", path, Infinity);
        if (min > max) return null;
        return { k: "string", id: this.id(), minLength: min, maxLength: max };
      }
      case "number":
      case "integer":
        return this.numberNode(t === "integer", o, path);
      case "object":
        return this.objectNode(o, path);
      case "array":
        return this.arrayNode(o, path);
    }
  }

  private numberNode(integer: boolean, o: Record<string, unknown>, path: string): Node | null {
    const num = (k: string): number | undefined => {
      const v = o[k];
      if (v === undefined || typeof v === "boolean") return undefined;
      if (typeof v !== "number" || !Number.isFinite(v))
        invalid(`"${k}" at ${path} must be a finite number`);
      return v;
    };
    let min = num("minimum") ?? -Infinity;
    let max = num("maximum") ?? Infinity;
    let exclusiveMin = false;
    let exclusiveMax = false;
    // Draft 4: exclusiveMinimum: true makes minimum exclusive; later drafts: a number.
    if (o["exclusiveMinimum"] === true) exclusiveMin = min !== -Infinity;
    const xmin = num("exclusiveMinimum");
    if (xmin !== undefined && xmin >= min) [min, exclusiveMin] = [xmin, true];
    if (o["exclusiveMaximum"] === true) exclusiveMax = max !== Infinity;
    const xmax = num("exclusiveMaximum");
    if (xmax !== undefined && xmax <= max) [max, exclusiveMax] = [xmax, true];
    if (min > max || (min === max && (exclusiveMin || exclusiveMax))) return null;
    if (integer) {
      const ilo = exclusiveMin ? Math.floor(min) + 1 : Math.ceil(min);
      const ihi = exclusiveMax ? Math.ceil(max) - 1 : Math.floor(max);
      if (ilo > ihi) return null;
    }
    return this.number(integer, { min, max, exclusiveMin, exclusiveMax });
  }

  private objectNode(o: Record<string, unknown>, path: string): Node | null {
    const propsIn = o["properties"] ?? {};
    if (typeof propsIn !== "object" || propsIn === null || Array.isArray(propsIn))
      invalid(`"properties" at ${path} must be an object`);
    const reqIn = o["required"] ?? [];
    if (!Array.isArray(reqIn) || reqIn.some((r) => typeof r !== "string"))
      invalid(`"required" at ${path} must be an array of strings`);
    const required = new Set(reqIn as string[]);
    const names = Object.keys(propsIn);
    // Extra keys: additionalProperties as given; when absent, none if properties are listed
    // (xgrammar's strict mode; OpenAI's strict schemas say false anyway), else any.
    let extra: Node | null;
    const ap = o["additionalProperties"];
    if (ap === undefined) extra = names.length > 0 ? null : this.any();
    else extra = this.compile(ap, `${path}/additionalProperties`);
    const props: ObjectProp[] = [];
    for (const name of names) {
      const node = this.compile(
        (propsIn as Record<string, unknown>)[name],
        `${path}/properties/${name}`,
      );
      if (node === null) {
        if (required.has(name)) return null; // a required property no value satisfies
        continue;
      }
      props.push({ name, key: keyBytes(name), node, required: required.has(name) });
    }
    // Required names without a schema of their own take the extra-key schema (any, if absent).
    for (const name of required)
      if (!names.includes(name)) {
        if (ap === false)
          invalid(
            `"required" at ${path}: "${name}" is not in properties and additionalProperties is false`,
          );
        const node = ap === undefined ? this.any() : extra;
        if (node === null) return null;
        props.push({ name, key: keyBytes(name), node, required: true });
      }
    return { k: "object", id: this.id(), props, extra };
  }

  private arrayNode(o: Record<string, unknown>, path: string): Node | null {
    if (o["uniqueItems"] === true)
      invalid(`unsupported JSON Schema keyword "uniqueItems" (true) at ${path}`);
    const minItems = count(o, "minItems", path, 0);
    const maxItems = count(o, "maxItems", path, Infinity);
    if (minItems > maxItems) return null;
    const prefix: Node[] = [];
    let items: Node | null = this.any();
    const tuple = (list: unknown, kw: string): boolean => {
      if (!Array.isArray(list)) invalid(`"${kw}" at ${path} must be an array`);
      for (let i = 0; i < list.length; i++) {
        const n = this.compile(list[i], `${path}/${kw}/${i}`);
        if (n === null) {
          // No value fits item i: the array must stop before it.
          if (minItems > i) return false;
          items = null;
          return true;
        }
        prefix.push(n);
      }
      return true;
    };
    let stopped = false;
    if ("prefixItems" in o) {
      if (!tuple(o["prefixItems"], "prefixItems")) return null;
      stopped = items === null;
      if (!stopped && "items" in o) items = this.compile(o["items"], `${path}/items`);
    } else if (Array.isArray(o["items"])) {
      if (!tuple(o["items"], "items")) return null;
      stopped = items === null;
      if (!stopped && "additionalItems" in o)
        items = this.compile(o["additionalItems"], `${path}/additionalItems`);
    } else if ("items" in o) items = this.compile(o["items"], `${path}/items`);
    const most = items === null ? prefix.length : Infinity;
    if (minItems > most) return null;
    return {
      k: "array",
      id: this.id(),
      prefix,
      items,
      minItems,
      maxItems: Math.min(maxItems, most),
    };
  }
}

function count(o: Record<string, unknown>, k: string, path: string, def: number): number {
  const v = o[k];
  if (v === undefined) return def;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0)
    invalid(`"${k}" at ${path} must be a non-negative integer`);
  return v;
}

/** A property name as its key is written: JSON.stringify's escaping, UTF-8 bytes as latin1. */
function keyBytes(name: string): string {
  return Buffer.from(JSON.stringify(name).slice(1, -1), "utf8").toString("latin1");
}

/** Whether the automaton of `node` accepts the whole text (bytes as latin1). */
export function accepts(node: Node, bytes: string, maxWhitespace = 0): boolean {
  let s: PState | null = initialState(node, maxWhitespace);
  for (let i = 0; i < bytes.length && s; i++) s = advance(s, bytes.charCodeAt(i));
  return s !== null && isComplete(s);
}

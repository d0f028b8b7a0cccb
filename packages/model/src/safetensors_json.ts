// What the reference reader (serde_json under huggingface/safetensors) refuses in a header that
// JSON.parse accepts. Without these checks a file could mean one thing here and be rejected (or
// mean another thing) there: the parser differential of Trail of Bits' safetensors audit
// (TOB-SFTN-7, duplicate keys). Found by fuzz/safetensors.ts against fuzz/safetensors_spec.ts.

const U64_MAX_DIGITS = "18446744073709551615";
/** serde_json's recursion limit is 128: the 128th nested container fails. */
const MAX_DEPTH = 127;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;

interface Frame {
  object: boolean;
  keys: Set<string>;
  /** The key whose value is being read (objects). */
  key: string | undefined;
  expectKey: boolean;
}

/** A plain unsigned integer literal ≤ 2^64 − 1: what serde reads as usize. */
function isUsizeLiteral(tok: string): boolean {
  if (!/^(?:0|[1-9][0-9]*)$/.test(tok)) return false;
  return tok.length < 20 || (tok.length === 20 && tok <= U64_MAX_DIGITS);
}

/**
 * For a header text that JSON.parse accepted: the first thing serde_json or the format refuses
 * (and the tensor it concerns), or null. Refused: a duplicate key in any object (the format
 * forbids them; JSON.parse keeps the last), nesting deeper than 127, a \u escape leaving a lone
 * surrogate, a number beyond f64, and a shape or data_offsets entry that is not an unsigned
 * integer literal ≤ 2^64 − 1 (serde reads 2.0, 1e0 and -0 as floats, which usize refuses;
 * JSON.parse makes them integers).
 */
export function headerJsonProblem(text: string): { message: string; tensor?: string } | null {
  const stack: Frame[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    if (c === "{" || c === "[") {
      if (stack.length >= MAX_DEPTH)
        return { message: `header nesting is deeper than ${MAX_DEPTH}` };
      stack.push({ object: c === "{", keys: new Set(), key: undefined, expectKey: c === "{" });
      i++;
    } else if (c === "}" || c === "]") {
      stack.pop();
      i++;
    } else if (c === ",") {
      const top = stack[stack.length - 1];
      if (top?.object) top.expectKey = true;
      i++;
    } else if (c === '"') {
      let j = i + 1;
      let escaped = false;
      while (text[j] !== '"') j += text[j] === "\\" ? ((escaped = true), 2) : 1;
      const raw = text.slice(i, j + 1);
      const s = escaped ? (JSON.parse(raw) as string) : raw.slice(1, -1);
      if (escaped && LONE_SURROGATE.test(s))
        return { message: `header string ${raw.slice(0, 40)} has a lone surrogate` };
      const top = stack[stack.length - 1];
      if (top?.object && top.expectKey) {
        if (top.keys.has(s)) return { message: `header has a duplicate key ${JSON.stringify(s)}` };
        top.keys.add(s);
        top.key = s;
        top.expectKey = false;
      }
      i = j + 1;
    } else if (c === "-" || (c >= "0" && c <= "9")) {
      NUMBER.lastIndex = i;
      const tok = NUMBER.exec(text)![0];
      if (!Number.isFinite(Number(tok))) return { message: `header number ${tok} is out of range` };
      // [root {name: {shape|data_offsets: [ n ]}}]: a tensor's dimension or offset.
      const [root, entry, list] = stack;
      if (
        stack.length === 3 &&
        !list!.object &&
        root!.key !== "__metadata__" &&
        (entry!.key === "shape" || entry!.key === "data_offsets") &&
        !isUsizeLiteral(tok)
      )
        return {
          message: `${entry!.key} entry ${tok} is not an unsigned integer literal of at most 2^64 - 1`,
          tensor: root!.key!,
        };
      i += tok.length;
    } else i++; // whitespace, ':', and the letters of true/false/null
  }
  return null;
}

// Mutated OpenAI requests for the server fuzz run (issue #10): start from valid chat / completion
// bodies and replace, drop or add fields with hostile values — negative, huge, NaN-like, infinite,
// string-typed numbers, wrong containers, out-of-vocabulary ids and logit_bias keys, deep nesting,
// long strings, unknown roles and part types. Deterministic for a seed. Every mutation is either
// still valid (the server must answer 200) or invalid (it must answer 4xx); a 5xx is a bug.

/** mulberry32 */
export function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const FIELDS = [
  "model",
  "messages",
  "prompt",
  "max_tokens",
  "max_completion_tokens",
  "temperature",
  "top_p",
  "top_k",
  "min_p",
  "n",
  "seed",
  "stop",
  "stream",
  "stream_options",
  "logprobs",
  "top_logprobs",
  "logit_bias",
  "frequency_penalty",
  "presence_penalty",
  "repetition_penalty",
  "response_format",
  "ignore_eos",
  "min_tokens",
  "stop_token_ids",
  "echo",
  "best_of",
  "suffix",
  "pan_and_scan",
];

function deep(depth, leaf) {
  let v = leaf;
  for (let i = 0; i < depth; i++) v = i % 2 ? { a: v } : [v];
  return v;
}

/** A hostile value for any field. */
function hostile(r, vocab) {
  const pick = (xs) => xs[Math.floor(r() * xs.length)];
  return pick([
    () => -1,
    () => 0,
    () => -1e9,
    () => 1e308,
    () => 2 ** 53 + 1,
    () => 1.5,
    () => "NaN",
    () => "Infinity",
    () => "12",
    () => "",
    () => null,
    () => true,
    () => [],
    () => {},
    () => [1, "2", null],
    () => ({ "-1": 5 }),
    () => ({ [String(vocab)]: 1 }),
    () => ({ [String(vocab + 1000)]: -100 }),
    () => ({ 5: "x" }),
    () => [vocab, -1],
    () => [[vocab]],
    () => "x".repeat(1 + Math.floor(r() * 5000)),
    () => deep(1 + Math.floor(r() * 2000), 1),
    () => "\u0000\ud800\uffff",
    () => ({ type: "json_schema" }),
    () => ({ type: "json_schema", json_schema: { schema: { type: "bogus" } } }),
    () => ({ include_usage: "yes" }),
    () => [{ role: "tool", content: "x" }],
    () => [{ role: "user", content: [{ type: "video", video: 1 }] }],
    () => [
      {
        role: "user",
        content: [{ type: "image_url", image_url: { url: "data:image/png;base64,@@@" } }],
      },
    ],
    () => [{ role: "user" }],
    () => [
      { role: "assistant", content: "x" },
      { role: "assistant", content: "y" },
    ],
    () => [
      { role: "system", content: "a" },
      { role: "system", content: "b" },
    ],
  ])();
}

/** A valid body to start from. */
function base(r, kind) {
  const text = ["Hi", "Tell me a story.", "2+2=", "Ünïcödé ✓ 🌍", "<start_of_turn>"][
    Math.floor(r() * 5)
  ];
  const common = {
    max_tokens: 1 + Math.floor(r() * 4),
    temperature: r() < 0.5 ? 0 : r() * 2,
    seed: Math.floor(r() * 1000),
  };
  return kind === "chat"
    ? { ...common, messages: [{ role: "user", content: text }] }
    : { ...common, prompt: r() < 0.5 ? text : [2, 9259, 1902] };
}

/**
 * One mutated request: { path, body } where body is a JSON string (or a deliberately broken one).
 * @param {() => number} r
 * @param {number} vocab
 */
export function mutate(r, vocab) {
  const kind = r() < 0.6 ? "chat" : "completions";
  const path = kind === "chat" ? "/v1/chat/completions" : "/v1/completions";
  const body = base(r, kind);
  const edits = 1 + Math.floor(r() * 3);
  for (let i = 0; i < edits; i++) {
    const f = FIELDS[Math.floor(r() * FIELDS.length)];
    const op = r();
    if (op < 0.15) delete body[f];
    else body[f] = hostile(r, vocab);
  }
  // Keep generations short whatever else changed: the fuzz run is about input handling.
  if (typeof body.max_tokens === "number" && body.max_tokens > 8) body.max_tokens = 8;
  if (typeof body.max_completion_tokens === "number" && body.max_completion_tokens > 8)
    body.max_completion_tokens = 8;
  let text = JSON.stringify(body);
  const raw = r();
  if (raw < 0.03)
    text = text.slice(0, Math.floor(r() * text.length)); // truncated JSON
  else if (raw < 0.05)
    text = text.replace(/:/, "::"); // syntax error
  else if (raw < 0.06) text = "[]";
  else if (raw < 0.07) text = '"just a string"';
  return { path, body: text };
}

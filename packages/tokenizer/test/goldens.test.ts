// Parity with HF tokenizers (Rust) and transformers' chat template / processor, from
// fixtures/goldens.json written by tools/reference/tokenizer_goldens.py on the GPU machine.
// Skips cleanly while that file is absent.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { panAndScanCrops, type ChatMessage } from "../src/index.js";
import { FIXTURES, STRINGS, realTokenizer } from "./helpers.js";

const GOLDENS = join(FIXTURES, "goldens.json");
const have = existsSync(GOLDENS);

interface Goldens {
  strings: {
    name: string;
    text: string;
    ids_with_special: number[];
    ids: number[];
    tokens: string[];
    decoded: string;
    decoded_skip_special: string;
  }[];
  decode_cases: { name: string; ids: number[]; decoded: string; decoded_skip_special: string }[];
  conversations: {
    name: string;
    text: string;
    ids: number[];
    hf_apply_chat_template_ids?: number[];
  }[];
  bad_conversations: { name: string; error: string | null }[];
  processor_cases: {
    conversation: string;
    images: [number, number][];
    pan_and_scan: boolean;
    input_ids: number[];
  }[];
  errors: { where: string; error: string }[];
}

describe.skipIf(!have)("goldens from HF (tools/reference/tokenizer_goldens.py)", async () => {
  const g: Goldens = have ? JSON.parse(readFileSync(GOLDENS, "utf8")) : ({} as Goldens);
  const tok = await realTokenizer();

  it("covers the whole string table, with no errors on the HF side", () => {
    expect(g.errors).toEqual([]);
    expect(g.strings.map((s) => s.name)).toEqual(STRINGS.strings.map((s) => s.name));
    expect(g.conversations.map((s) => s.name)).toEqual(STRINGS.conversations.map((s) => s.name));
  });

  for (const s of have ? g.strings : [])
    it(`string ${s.name}: ids, pieces and decode match tokenizers`, () => {
      expect(tok.encode(s.text)).toEqual(s.ids_with_special);
      expect(tok.encode(s.text, { addSpecialTokens: false })).toEqual(s.ids);
      expect(tok.tokenize(s.text, { addSpecialTokens: false })).toEqual(s.tokens);
      expect(tok.decode(s.ids_with_special)).toBe(s.decoded);
      expect(tok.decode(s.ids_with_special, { skipSpecialTokens: true })).toBe(
        s.decoded_skip_special,
      );
    });

  for (const c of have ? g.decode_cases : [])
    it(`decode ${c.name} matches tokenizers`, () => {
      expect(tok.decode(c.ids)).toBe(c.decoded);
      expect(tok.decode(c.ids, { skipSpecialTokens: true })).toBe(c.decoded_skip_special);
    });

  for (const c of have ? g.conversations : [])
    it(`conversation ${c.name}: rendered text and ids match apply_chat_template`, () => {
      const src = STRINGS.conversations.find((x) => x.name === c.name)!;
      const text = tok.applyChatTemplate(src.messages as ChatMessage[], {
        addGenerationPrompt: src.add_generation_prompt,
      });
      expect(text).toBe(c.text);
      const enc = tok.encodeChat(src.messages as ChatMessage[], {
        addGenerationPrompt: src.add_generation_prompt,
        expandImages: false,
      });
      expect(enc.ids).toEqual(c.ids);
      // apply_chat_template(tokenize=True) itself, if it ran: the same ids, give or take HF's
      // second <bos>.
      const hf = c.hf_apply_chat_template_ids;
      if (hf) expect(hf[0] === 2 && hf[1] === 2 ? hf.slice(1) : hf).toEqual(c.ids);
    });

  for (const c of have ? g.bad_conversations : [])
    it(`bad conversation ${c.name}: HF raises the same message`, () => {
      expect(c.error).toContain("Conversation roles must alternate");
      const src = STRINGS.bad_conversations.find((x) => x.name === c.name)!;
      expect(() => tok.applyChatTemplate(src.messages as ChatMessage[])).toThrow(
        "Conversation roles must alternate user/assistant/user/assistant/...",
      );
    });

  for (const [i, c] of (have ? g.processor_cases : []).entries())
    it(`processor case ${i} (${c.conversation}, ${JSON.stringify(c.images)}, P&S ${c.pan_and_scan}): same ids as Gemma3Processor`, () => {
      const src = STRINGS.conversations.find((x) => x.name === c.conversation)!;
      const numCrops = c.images.map(([w, h]) =>
        c.pan_and_scan ? panAndScanCrops(w, h).length : 0,
      );
      const ours = tok.encodeChat(src.messages as ChatMessage[], {
        addGenerationPrompt: src.add_generation_prompt,
        numCrops,
      }).ids;
      // HF's processor encodes the rendered "<bos>…" with add_special_tokens: a double <bos> we do not copy.
      const hf = c.input_ids[0] === 2 && c.input_ids[1] === 2 ? c.input_ids.slice(1) : c.input_ids;
      expect(ours).toEqual(hf);
    });
});

describe.skipIf(have)("goldens", () => {
  it.skip("fixtures/goldens.json is absent: run tools/reference/tokenizer_goldens.py on the GPU machine", () => {});
});

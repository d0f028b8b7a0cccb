// The chat template (the model's own, from tokenizer_config.json, via @huggingface/jinja), the
// image prompt expansion and Pan & Scan wording from processing_gemma3.py, and stop tokens.
import { describe, expect, it } from "vitest";
import {
  ChatTemplateError,
  expandImageTokens,
  fullImageSequence,
  imageTokenConfig,
  panAndScanCrops,
  panAndScanText,
  stopTokenIds,
  type ChatMessage,
} from "../src/index.js";
import { STRINGS, realTokenizer } from "./helpers.js";

const tok = await realTokenizer();
const conv = (name: string) =>
  STRINGS.conversations.find((c) => c.name === name)!.messages as ChatMessage[];

describe("chat template", () => {
  it("renders <bos> once, user/model turns and the generation prompt", () => {
    const text = tok.applyChatTemplate([{ role: "user", content: "Hello!" }]);
    expect(text).toBe("<bos><start_of_turn>user\nHello!<end_of_turn>\n<start_of_turn>model\n");
    const { ids } = tok.encodeChat([{ role: "user", content: "Hello!" }]);
    expect(ids.filter((id) => id === 2)).toHaveLength(1);
    expect(ids.slice(0, 4)).toEqual([2, 105, 2364, 107]); // <bos> <start_of_turn> user \n
    expect(ids.slice(-3)).toEqual([105, 4368, 107]); // <start_of_turn> model \n
    expect(
      tok.applyChatTemplate([{ role: "user", content: "Hi" }], { addGenerationPrompt: false }),
    ).toBe("<bos><start_of_turn>user\nHi<end_of_turn>\n");
  });

  it("folds the system prompt into the first user turn (string or parts)", () => {
    expect(tok.applyChatTemplate(conv("system_folded"))).toBe(
      "<bos><start_of_turn>user\nYou are a helpful assistant.\n\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
    );
    expect(tok.applyChatTemplate(conv("content_parts_with_image"))).toBe(
      "<bos><start_of_turn>user\nDescribe images briefly.\n\n<start_of_image>What is in this picture?<end_of_turn>\n<start_of_turn>model\n",
    );
  });

  it("renders multi-turn conversations, assistant as 'model', content trimmed", () => {
    expect(tok.applyChatTemplate(conv("multi_turn"))).toBe(
      "<bos><start_of_turn>user\nHi, who are you?<end_of_turn>\n<start_of_turn>model\nI am Gemma.<end_of_turn>\n" +
        "<start_of_turn>user\nTell me a joke in 한국어.<end_of_turn>\n<start_of_turn>model\n",
    );
  });

  it("surfaces the template's own error when roles do not alternate", () => {
    for (const bad of STRINGS.bad_conversations) {
      expect(() => tok.applyChatTemplate(bad.messages as ChatMessage[])).toThrow(ChatTemplateError);
      expect(() => tok.applyChatTemplate(bad.messages as ChatMessage[])).toThrow(
        "Conversation roles must alternate user/assistant/user/assistant/...",
      );
    }
  });

  it("rejects malformed messages before rendering, naming the message", () => {
    expect(() => tok.applyChatTemplate([])).toThrow(/non-empty array/);
    expect(() => tok.applyChatTemplate([{ role: "user" } as unknown as ChatMessage])).toThrow(
      /messages\[0\]\.content/,
    );
    expect(() =>
      tok.applyChatTemplate([
        { role: "user", content: [{ type: "text" }] } as unknown as ChatMessage,
      ]),
    ).toThrow(/messages\[0\]\.content\[0\]/);
  });
});

describe("image tokens (processing_gemma3.py)", () => {
  const full = fullImageSequence();

  it("full image sequence: \\n\\n<start_of_image> + 256 soft tokens + <end_of_image>\\n\\n", () => {
    expect(full).toBe(`\n\n<start_of_image>${"<image_soft_token>".repeat(256)}<end_of_image>\n\n`);
    const ids = tok.encode(full, { addSpecialTokens: false });
    expect(ids).toEqual([108, 255999, ...Array(256).fill(262144), 256000, 108]);
    expect(imageTokenConfig({ mm_tokens_per_image: 64 }, tok.config).mmTokensPerImage).toBe(64);
    expect(imageTokenConfig(undefined, tok.config)).toEqual({
      boiToken: "<start_of_image>",
      eoiToken: "<end_of_image>",
      imageToken: "<image_soft_token>",
      mmTokensPerImage: 256,
    });
  });

  it("Pan & Scan wording is HF's, character for character", () => {
    // Gemma3Processor: f"Here is the original image {boi} and here are some crops to help you see better " + " ".join([boi] * n)
    expect(panAndScanText(0)).toBe("<start_of_image>");
    expect(panAndScanText(2)).toBe(
      "Here is the original image <start_of_image> and here are some crops to help you see better <start_of_image> <start_of_image>",
    );
    expect(expandImageTokens("A<start_of_image>B", [3])).toBe(
      `AHere is the original image ${full} and here are some crops to help you see better ${full} ${full} ${full}B`,
    );
    expect(expandImageTokens("x<start_of_image>y<start_of_image>z", [0, 1])).toBe(
      `x${full}yHere is the original image ${full} and here are some crops to help you see better ${full}z`,
    );
    expect(() => expandImageTokens("<start_of_image>", [0, 0])).toThrow(
      "Prompt contained 1 image tokens but received 2 images.",
    );
    expect(expandImageTokens("no image", 0)).toBe("no image");
  });

  it("encodeChat expands images: 256 soft tokens per image and per crop", () => {
    const m = conv("two_images_no_generation_prompt");
    const plain = tok.encodeChat(m);
    const count = (ids: number[], id: number) => ids.filter((x) => x === id).length;
    expect(count(plain.ids, 262144)).toBe(2 * 256);
    expect(count(plain.ids, 255999)).toBe(2);
    expect(count(plain.ids, 256000)).toBe(2);
    const pas = tok.encodeChat(m, { numCrops: [3, 0] });
    expect(count(pas.ids, 262144)).toBe((1 + 3 + 1) * 256);
    expect(pas.text).toContain("Here is the original image \n\n<start_of_image>");
    expect(count(pas.ids, 2)).toBe(1);
    const raw = tok.encodeChat(m, { expandImages: false });
    expect(count(raw.ids, 262144)).toBe(0);
    expect(count(raw.ids, 255999)).toBe(2);
    expect(() => tok.encodeChat(m, { numCrops: [1] })).toThrow(
      /2 image tokens but received 1 images/,
    );
  });

  it("Pan & Scan crop counts match HF's pan_and_scan (FACTS.md cases)", () => {
    const cases: [number, number, number][] = [
      [1920, 600, 3],
      [3000, 700, 4],
      [500, 1400, 3],
      [800, 300, 3],
      [1200, 700, 2],
      [1000, 900, 0],
      [640, 640, 0],
      [400, 300, 0], // crops would be under 256 px
    ];
    for (const [w, h, n] of cases) expect(panAndScanCrops(w, h).length, `${w}x${h}`).toBe(n);
    // Boxes tile the image, row-major, clipped at the edge.
    expect(panAndScanCrops(800, 300)).toEqual([
      { x: 0, y: 0, width: 267, height: 300 },
      { x: 267, y: 0, width: 267, height: 300 },
      { x: 534, y: 0, width: 266, height: 300 },
    ]);
    expect(panAndScanCrops(500, 1400).map((c) => c.y)).toEqual([0, 467, 934]);
  });
});

describe("stop tokens", () => {
  it("unions config.json and generation_config.json eos ids: [1, 106]", () => {
    expect(stopTokenIds({ eos_token_id: [1, 106] }, { eos_token_id: [1, 106] })).toEqual([1, 106]);
    expect(stopTokenIds({ eos_token_id: 1 }, { eos_token_id: [1, 106] })).toEqual([1, 106]);
    expect(stopTokenIds({ text_config: { eos_token_id: 106 } })).toEqual([106]);
    expect(stopTokenIds({})).toEqual([]);
    expect(() => stopTokenIds({ eos_token_id: "1" })).toThrow(/eos_token_id/);
  });
});

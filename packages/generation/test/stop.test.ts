// Stop rules on the text stream: stop strings across token boundaries (held back while they may
// still match, cut from the output), stop tokens, max tokens, min tokens. A fake detokenizer makes
// the boundaries explicit; the demo checkpoint's tokenizer (if built) checks real UTF-8 pieces.
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Gemma3Tokenizer } from "@gemma3/tokenizer";
import { describe, expect, it } from "vitest";
import { StopChecker, type Detokenizer, type StopOptions, type StopStep } from "../src/index.js";

/** Token i decodes to pieces[i]. */
class FakeDetokenizer implements Detokenizer {
  constructor(private readonly pieces: readonly string[]) {}
  push(id: number): string {
    return this.pieces[id]!;
  }
  flush(): string {
    return "";
  }
}

/** Feeds the pieces one token each; returns the deltas and the final step. */
function run(
  pieces: string[],
  o: Partial<StopOptions> & { stop?: string[] },
  count = pieces.length,
) {
  const checker = new StopChecker(new FakeDetokenizer(pieces), { maxTokens: 1000, ...o });
  const deltas: string[] = [];
  let last: StopStep | undefined;
  for (let i = 0; i < count && !checker.finished; i++) {
    last = checker.push(i);
    deltas.push(last.text);
  }
  if (!checker.finished) deltas.push(checker.finish());
  expect(deltas.join("")).toBe(checker.text); // the deltas always add up to the text
  return { deltas, text: checker.text, finish: last?.finish };
}

describe("stop strings across token boundaries", () => {
  it("a stop string split over two tokens is held back, then cut", () => {
    const r = run(["Hello", " wor", "ld", " ST", "OP", " more"], { stop: ["STOP"] });
    expect(r.deltas).toEqual(["Hello", " wor", "ld", " ", ""]);
    expect(r.text).toBe("Hello world ");
    expect(r.finish).toEqual({ reason: "stop", stopReason: "STOP" });
  });

  it("held text is released once it cannot be a stop string", () => {
    const r = run(["a S", "T", "AR", "!"], { stop: ["STOP"] });
    expect(r.deltas).toEqual(["a ", "", "STAR", "!", ""]);
    expect(r.finish).toBeUndefined();
  });

  it("a stop string over three tokens, with text after it in the last", () => {
    const r = run(["x<", "|e", "nd|>tail", "y"], { stop: ["<|end|>"] });
    expect(r.text).toBe("x");
    expect(r.deltas).toEqual(["x", "", ""]);
  });

  it("includeStopStrInOutput keeps the stop string, drops what follows it", () => {
    const r = run(["Hello", " ST", "OP and more"], {
      stop: ["STOP"],
      includeStopStrInOutput: true,
    });
    expect(r.text).toBe("Hello STOP");
  });

  it("the earliest of several stop strings wins", () => {
    const r = run(["a b xyz c"], { stop: ["xyz", "b"] });
    expect(r.text).toBe("a ");
    expect(r.finish?.stopReason).toBe("b");
  });

  it("overlapping prefixes: holds the longest suffix that may start a stop string", () => {
    const r = run(["a\n", "\n", "b"], { stop: ["\n\n\n", "\nb"] });
    // "a\n\n": both "\n\n" (of "\n\n\n") and "\n" (of "\nb") could start a stop: hold "\n\n".
    expect(r.deltas.slice(0, 2)).toEqual(["a", ""]);
    expect(r.text).toBe("a\n"); // "\nb" matched at index 2
  });

  it("a stop string right at the start", () => {
    expect(run(["STOP", "x"], { stop: ["STOP"] }).text).toBe("");
  });

  it("max tokens ends with 'length' and releases held text", () => {
    const r = run(["Hello", " ST", "OP"], { stop: ["STOP"], maxTokens: 2 });
    expect(r.finish).toEqual({ reason: "length", stopReason: null });
    expect(r.deltas).toEqual(["Hello", " ST"]);
  });

  it("a stop token ends with 'stop'; its text is not output (unless included)", () => {
    const pieces = ["Hi", " there", "<eos>"];
    const r = run(pieces, { stopTokenIds: [2] });
    expect(r.finish).toEqual({ reason: "stop", stopReason: 2 });
    expect(r.text).toBe("Hi there");
    expect(run(pieces, { stopTokenIds: [2], includeStopStrInOutput: true }).text).toBe(
      "Hi there<eos>",
    );
    // A stop token at the last allowed position is still a stop, not "length".
    expect(run(pieces, { stopTokenIds: [2], maxTokens: 3 }).finish?.reason).toBe("stop");
  });

  it("min tokens: stop tokens and stop strings count only after it", () => {
    const r = run(["STOP", "<eos>", "a", "STOP"], {
      stop: ["STOP"],
      stopTokenIds: [1],
      minTokens: 2,
    });
    expect(r.text).toBe("STOP<eos>a");
    expect(r.finish?.stopReason).toBe("STOP");
  });

  it("abort (finish) releases the held text", () => {
    const c = new StopChecker(new FakeDetokenizer(["ab", "ST"]), { stop: ["STOP"], maxTokens: 9 });
    expect(c.push(0).text).toBe("ab");
    expect(c.push(1).text).toBe("");
    expect(c.finish()).toBe("ST");
    expect(c.text).toBe("abST");
  });

  it("stop strings without a detokenizer are refused", () => {
    expect(() => new StopChecker(null, { stop: ["x"], maxTokens: 1 })).toThrow(/tokenizer/);
  });
});

const demo = join(dirname(fileURLToPath(import.meta.url)), "../../../apps/cli/demo-model");
describe.skipIf(!existsSync(join(demo, "tokenizer.json")))("with the Gemma 3 tokenizer", () => {
  it("UTF-8-safe deltas and stop strings over real token pieces", async () => {
    const tok = await Gemma3Tokenizer.fromDir(demo);
    const text = "Grüße aus Köln! 🎉🎉 Ünïcödé ends here. 東京タワー STOP not this";
    const ids = tok.encode(text, { addSpecialTokens: false });
    // Every token alone: deltas are whole characters (no U+FFFD) and add up to the text.
    const c = new StopChecker(tok.detokenizer(), { maxTokens: 1000, stop: [" STOP"] });
    const deltas: string[] = [];
    for (const id of ids) {
      if (c.finished) break;
      deltas.push(c.push(id).text);
    }
    expect(deltas.join("")).toBe("Grüße aus Köln! 🎉🎉 Ünïcödé ends here. 東京タワー");
    for (const d of deltas) expect(d).not.toContain("\ufffd");
    // A stop string that spans several tokens, starting mid-token.
    for (const stop of ["ße aus K", "🎉 Ü", "ワー ST", "ends here."]) {
      const c2 = new StopChecker(tok.detokenizer(), { maxTokens: 1000, stop: [stop] });
      let out = "";
      for (const id of ids) {
        if (c2.finished) break;
        out += c2.push(id).text;
      }
      expect(out, stop).toBe(text.slice(0, text.indexOf(stop)));
    }
  });
});

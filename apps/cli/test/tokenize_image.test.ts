// `gemma3 tokenize --chat FILE --image PATH … [--pan-and-scan] --json` prints the ids HF's
// Gemma3Processor gives for the same chat and image files (vision_goldens.json, written by
// tools/reference/vision_goldens.py; HF's double <bos> dropped), and refuses bad images clearly.
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const cli = join(root, "dist", "cli.js");
const fixtures = join(root, "../../packages/vision/test/fixtures");
const goldensFile = join(fixtures, "vision_goldens.json");
const tmp = mkdtempSync(join(tmpdir(), "gemma3-tokenize-image-"));
const env = { ...process.env, GEMMA3_CACHE_DIR: join(tmp, "cache") };
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function gemma3(...args: string[]) {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: "utf8", env });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

interface ChatGolden {
  name: string;
  images: string[];
  messages: unknown[];
  pan_and_scan: boolean;
  input_ids: number[];
}
const chats: ChatGolden[] = existsSync(goldensFile)
  ? (JSON.parse(readFileSync(goldensFile, "utf8")).chats as ChatGolden[])
  : [];
const dropDoubleBos = (ids: number[]) => (ids[0] === 2 && ids[1] === 2 ? ids.slice(1) : ids);

describe.skipIf(chats.length === 0)("gemma3 tokenize --image = Gemma3Processor", () => {
  const picked = chats.filter(
    (c) => c.name === "multi_turn_three_images" || c.name === "one_image/exif6_1200x700.jpg",
  );

  it("the goldens hold the chats this test runs", () => expect(picked.length).toBe(3));

  for (const c of picked)
    it(`${c.name}, P&S ${c.pan_and_scan ? "on" : "off"}`, () => {
      const chat = join(tmp, `${c.name.replace(/\W/g, "_")}.json`);
      writeFileSync(chat, JSON.stringify(c.messages));
      const args = ["tokenize", "--chat", chat, "--json"];
      for (const n of c.images) args.push("--image", join(fixtures, "images", n));
      if (c.pan_and_scan) args.push("--pan-and-scan");
      const r = gemma3(...args);
      expect(r.err).toBe("");
      expect(r.code).toBe(0);
      expect(JSON.parse(r.out).ids).toEqual(dropDoubleBos(c.input_ids));
    });
});

describe("gemma3 tokenize --image: bad images", () => {
  const chat = join(tmp, "one.json");
  writeFileSync(chat, JSON.stringify([{ role: "user", content: [{ type: "image" }] }]));

  it("not an image, truncated, missing: exit 1 with the image's number, path and reason", () => {
    const txt = join(tmp, "not-an-image.png");
    writeFileSync(txt, "hello, this is text");
    const cut = join(tmp, "cut.jpg");
    writeFileSync(
      cut,
      readFileSync(join(fixtures, "images", "tall_300x1200.jpg")).subarray(0, 100),
    );
    const cases: [string, RegExp][] = [
      [txt, /image 1 \(.*not-an-image\.png\): image: not a PNG, JPEG, WebP or GIF file/],
      [cut, /image 1 \(.*cut\.jpg\): jpeg: unreadable header/],
      [join(tmp, "missing.png"), /image 1 \(.*missing\.png\): .*ENOENT/],
    ];
    for (const [path, msg] of cases) {
      for (const pas of [[], ["--pan-and-scan"]]) {
        const r = gemma3("tokenize", "--chat", chat, "--image", path, ...pas);
        expect(r.code, path).toBe(1);
        expect(r.err).toMatch(msg);
        expect(r.err.split("\n").filter(Boolean)).toHaveLength(1);
      }
    }
  });
});

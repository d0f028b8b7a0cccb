// The web chat page in a real headless browser (Debian's chromium driven by playwright-core):
// send a message and see the streamed reply (the same text the API gives), stop a long reply,
// attach an image. CI installs chromium and sets GEMMA3_REQUIRE_BROWSER=1, so a missing browser
// fails there instead of skipping.
import { existsSync } from "node:fs";
import { chromium, type Browser, type Page } from "playwright-core";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Engine, RunningServer } from "../src/index.js";
import { demoEngine, serve } from "./helpers.js";

const executablePath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const haveBrowser = existsSync(executablePath);
if (!haveBrowser && process.env.GEMMA3_REQUIRE_BROWSER)
  throw new Error(
    `GEMMA3_REQUIRE_BROWSER is set but ${executablePath} does not exist (apt-get install chromium)`,
  );

let engine: Engine;
let srv: RunningServer;
let browser: Browser;
let page: Page;

describe.skipIf(!haveBrowser)("web chat page (headless chromium)", () => {
  beforeAll(async () => {
    engine = await demoEngine({ maxSeqLen: 512 });
    srv = await serve({ engine });
    browser = await chromium.launch({ executablePath, headless: true, args: ["--no-sandbox"] });
    page = await browser.newPage();
    await page.goto(srv.url);
    await page.waitForFunction(
      (id) => document.getElementById("model")!.textContent!.includes(id),
      engine.info.id,
    );
  });
  afterAll(async () => {
    await browser?.close();
    await srv?.close();
  });

  it("streams the reply the API gives for the same request", async () => {
    await page.fill("#temp", "0");
    await page.fill("#max", "12");
    await page.fill("#input", "Why is the sky blue?");
    await page.click("#send");
    const stats = page.locator(".assistant .stats").first();
    await stats.waitFor({ timeout: 30_000 });
    const shown = await page.locator(".assistant .text").first().textContent();
    const api = (await (
      await fetch(`${srv.url}/v1/chat/completions`, {
        method: "POST",
        body: JSON.stringify({
          messages: [{ role: "user", content: "Why is the sky blue?" }],
          max_tokens: 12,
          temperature: 0,
        }),
      })
    ).json()) as { choices: { message: { content: string } }[] };
    expect(shown).toBe(api.choices[0]!.message.content);
    expect(shown!.length).toBeGreaterThan(0);
    expect(await stats.textContent()).toMatch(/tok\/s/);
  });

  it("stops a long reply, and the server frees its sequence", async () => {
    const base = engine.stats().kv.freePages;
    await page.fill("#temp", "1");
    await page.fill("#max", "400");
    await page.fill("#input", "Write a very long story.");
    await page.click("#send");
    const text = page.locator(".assistant .text").nth(1);
    await page.waitForFunction(
      () => (document.querySelectorAll(".assistant .text")[1]?.textContent ?? "").length > 0,
    );
    await page.click("#stop");
    await page.locator(".assistant .stats").nth(1).waitFor();
    expect(await page.locator(".assistant .stats").nth(1).textContent()).toMatch(/^stopped/);
    const partial = (await text.textContent())!;
    expect(partial.length).toBeGreaterThan(0);
    const t0 = Date.now();
    while (engine.stats().running > 0 && Date.now() - t0 < 5000)
      await new Promise((r) => setTimeout(r, 20));
    expect(engine.stats().running).toBe(0);
    expect(engine.stats().kv.freePages).toBe(base);
    expect(await page.isEnabled("#send")).toBe(true);
  });

  it("attaches an image and sends it as an image_url part", async () => {
    const png = await sharp({
      create: { width: 40, height: 30, channels: 3, background: { r: 200, g: 30, b: 30 } },
    })
      .png()
      .toBuffer();
    const sent = page.waitForRequest(
      (r) => r.url().endsWith("/v1/chat/completions") && r.method() === "POST",
    );
    await page.setInputFiles("#file", { name: "red.png", mimeType: "image/png", buffer: png });
    await page.locator("#attachments img").waitFor();
    await page.check("#pas");
    await page.fill("#max", "8");
    await page.fill("#input", "What color is this?");
    await page.click("#send");
    const body = (await sent).postDataJSON() as {
      messages: { role: string; content: unknown }[];
      pan_and_scan: boolean;
    };
    const last = body.messages[body.messages.length - 1]!;
    const parts = last.content as { type: string; image_url?: { url: string } }[];
    expect(parts[0]!.type).toBe("image_url");
    expect(Buffer.from(parts[0]!.image_url!.url.split(",")[1]!, "base64").equals(png)).toBe(true);
    expect(body.pan_and_scan).toBe(true);
    const reply = page.locator(".assistant").nth(2);
    await reply.locator(".stats").waitFor({ timeout: 60_000 });
    if (engine.info.modalities.includes("image")) {
      expect((await reply.locator(".text").textContent())!.length).toBeGreaterThan(0);
      expect(await reply.getAttribute("class")).not.toContain("error");
    } else {
      // A text-only checkpoint refuses images with a clear message, shown in the page.
      expect(await reply.locator(".text").textContent()).toMatch(/does not accept images/);
    }
  });
});

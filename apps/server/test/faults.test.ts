// Device faults (issue #10), forced with the native fault-injection hook (GEMMA3_FAULT_INJECTION=1,
// set for every test process by vitest.config.ts; inert until a test arms a fault): an allocation failure while loading or while
// serving is a clear error and the process keeps serving; a sticky device fault turns /health to
// 503 and reports itself once through onFatal, so `gemma3 serve` can exit for a restart.
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { Device, OutOfMemoryError, deviceCount, testing } from "@gemma3/native";
import type { RunningServer } from "../src/index.js";
import { DEMO, demoEngine, serve } from "./helpers.js";

const cpu = Device.of("cpu");
const open: RunningServer[] = [];
afterEach(async () => {
  testing.injectFault("clear", cpu);
  for (const s of open.splice(0)) await s.close().catch(() => undefined);
});

const chat = (url: string) =>
  fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    body: JSON.stringify({ messages: [{ role: "user", content: "Hi" }], max_tokens: 4 }),
  });

describe("device faults", () => {
  beforeAll(() => testing.injectFault("clear", cpu));

  it("an allocation failure while loading: /health says why, the next load works", async () => {
    testing.injectFault("alloc", cpu, 3);
    const loading = demoEngine();
    const srv = await serve({ engine: loading });
    open.push(srv);
    await expect(srv.ready()).rejects.toBeInstanceOf(OutOfMemoryError);
    const h = await fetch(`${srv.url}/health`);
    expect(h.status).toBe(503);
    expect(((await h.json()) as { error: string }).error).toMatch(/out of memory.*injected/);
    expect((await chat(srv.url)).status).toBe(503);
    const again = await serve({ engine: demoEngine() });
    open.push(again);
    await again.ready();
    expect((await chat(again.url)).status).toBe(200);
  });

  it("an allocation failure while serving fails that request (503) and the next one succeeds", async () => {
    const srv = await serve({ engine: demoEngine() });
    open.push(srv);
    await srv.ready();
    expect((await chat(srv.url)).status).toBe(200);
    testing.injectFault("alloc", cpu, 0);
    const r = await chat(srv.url);
    expect(r.status).toBe(503);
    expect(((await r.json()) as { error: { code: string } }).error.code).toBe("out_of_memory");
    expect((await chat(srv.url)).status).toBe(200);
    expect((await fetch(`${srv.url}/health`)).status).toBe(200);
  });

  it("a sticky device fault: 503 for the request, /health 503 for good, onFatal once", async () => {
    const fatal: Error[] = [];
    const srv = await serve({ engine: demoEngine(), onFatal: (e) => fatal.push(e) });
    open.push(srv);
    await srv.ready();
    testing.injectFault("sticky", cpu, 5);
    const [a, b] = await Promise.all([chat(srv.url), chat(srv.url)]);
    expect([a.status, b.status]).toEqual([503, 503]);
    expect(((await a.json()) as { error: { code: string } }).error.code).toBe("device_fault");
    const h = await fetch(`${srv.url}/health`);
    expect(h.status).toBe(503);
    expect(((await h.json()) as { error: string }).error).toMatch(/device fault/);
    expect(fatal).toHaveLength(1);
    testing.injectFault("clear", cpu);
  });
});

// The same on the real process: once with the injected stand-in on the CPU, and, where a GPU is
// there, with a genuine CUDA fault (a kernel storing to address 0: cudaErrorIllegalAddress).
const withCuda = deviceCount() > 0 || process.env.GEMMA3_TEST_CUDA === "1";
const faults = [
  { name: "injected sticky fault (cpu)", spec: "sticky,-1,400", device: "cpu", skip: false },
  {
    name: "real illegal-address fault (cuda:0)",
    spec: "trap,0,400",
    device: "cuda",
    skip: !withCuda,
  },
];

describe("gemma3 serve exits on a sticky device fault", () => {
  const cli = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "cli", "dist", "cli.js");
  for (const f of faults) {
    it.skipIf(f.skip)(
      `${f.name}: answers 503, then exits with code 1 (a supervisor restarts it)`,
      async () => {
        // Armed at startup: the fault fires after 400 more launches (past loading, during serving).
        const env = { ...process.env, GEMMA3_FAULT_INJECTION: "1", GEMMA3_INJECT_FAULT: f.spec };
        const child = spawn(
          process.execPath,
          [cli, "serve", "--model", DEMO, "--device", f.device, "--port", "0", "--quiet"],
          { env },
        );
        let err = "";
        child.stderr.on("data", (d: Buffer) => (err += d.toString()));
        const url = await new Promise<string>((resolve, reject) => {
          const t = setTimeout(() => reject(new Error(`no ready line: ${err}`)), 60_000);
          child.stderr.on("data", () => {
            const m = /ready: .* chat page at (http:\/\/[^ ]+)\//.exec(err);
            if (m) {
              clearTimeout(t);
              resolve(m[1]!);
            }
          });
        });
        const statuses: number[] = [];
        while (statuses.at(-1) !== 503 && statuses.length < 50)
          statuses.push((await chat(url)).status);
        expect(statuses.at(-1)).toBe(503);
        expect(statuses.slice(0, -1).every((s) => s === 200)).toBe(true);
        const code = await new Promise<number | null>((resolve) => child.on("exit", resolve));
        expect(code).toBe(1);
        expect(err).toMatch(/fatal device error, exiting/);
        if (f.device === "cuda") expect(err).toMatch(/cudaErrorIllegalAddress/);
      },
    );
  }
});

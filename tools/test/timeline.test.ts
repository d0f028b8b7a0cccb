// tools/trace/timeline.mjs: the critical-path arithmetic behind step-timeline.mjs (docs/kernels.md,
// session 13), on hand-made traces whose answer is worked out below, and parsing at the GPU
// clock's real magnitude (~1.8e18 ns, past a double's exact integers).
import { describe, expect, it } from "vitest";
// @ts-expect-error -- a plain .mjs tool without type declarations
import { criticalPath, parseTrace, shortName } from "../trace/timeline.mjs";

const header = "corr,node,start,end,grid,block,regs,name";
const row = (corr: number, start: bigint, end: bigint, grid: number, name: string) =>
  `${corr},0,${start},${end},${grid},256,40,${name}`;

describe("step timeline", () => {
  it("parses exact nanoseconds at the GPU clock's magnitude and groups by launch", () => {
    const base = 1795792458489810973n; // a real start from a device trace
    const text = [
      header,
      row(7, base, base + 2303n, 16, "void a()"),
      row(7, base + 2305n, base + 4001n, 16, "void b()"),
      row(8, base + 5000n, base + 5001n, 1, "void c()"),
    ].join("\n");
    const g = parseTrace(text);
    expect([...g.keys()]).toEqual(["7", "8"]);
    // As doubles these would be 256 ns apart at best; as BigInt they are exact.
    expect(g.get("7").map((k: { start: number; end: number }) => [k.start, k.end])).toEqual([
      [0, 2303],
      [2305, 4001],
    ]);
    expect(g.get("8")[0].end - g.get("8")[0].start).toBe(1);
  });

  it("counts overlapped work once: crits sum to the span", () => {
    // A: 0-10. B (launched early, PDL): 2-15, so only its last 5 are critical. C: inside B
    // (3-12): 0. D: a gap then 20-30: 15 (the gap is charged to the kernel that ends after it).
    const ks = [
      { start: 2, end: 15, grid: "8", name: "void B()" },
      { start: 0, end: 10, grid: "4", name: "void A()" },
      { start: 3, end: 12, grid: "4", name: "void C()" },
      { start: 20, end: 30, grid: "4", name: "void A()" },
    ];
    const { kernels, span, byKey } = criticalPath(ks);
    expect(kernels.map((k: { crit: number }) => k.crit)).toEqual([10, 5, 0, 15]);
    expect(span).toBe(30);
    expect(byKey.get("A (grid 4)")).toEqual({ n: 2, dur: 20, crit: 25 });
    expect(byKey.get("B (grid 8)")).toEqual({ n: 1, dur: 13, crit: 5 });
    expect(byKey.get("C (grid 4)")).toEqual({ n: 1, dur: 9, crit: 0 });
  });

  it("names kernels without namespaces, templates or parameters", () => {
    expect(
      shortName(
        "void gemma3::cuda::(anonymous namespace)::norm_kernel<gemma3::bf16; 8; false>(gemma3::bf16 const*; int)",
      ),
    ).toBe("norm_kernel");
    expect(
      shortName("void gemma3::cuda::detail::(anonymous namespace)::gemv_kernel<float>(float)"),
    ).toBe("gemv_kernel");
  });
});

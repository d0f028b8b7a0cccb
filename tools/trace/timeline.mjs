// The analysis behind step-timeline.mjs (tested in tools/test/timeline.test.ts).

/**
 * Kernels of a tools/trace/cupti_trace.cc CSV, grouped by launch (the correlation id: one graph
 * launch's kernels share it), in file order. Times are ns relative to the file's first start:
 * the GPU clock's values (~1e18 ns) exceed a double's exact integers, so they are subtracted as
 * BigInt first.
 * @returns Map<correlation id, {node, start, end, grid, block, regs, name}[]>
 */
export function parseTrace(text) {
  const lines = text.trim().split("\n").slice(1);
  const rows = lines.map((l) => {
    const [corr, node, start, end, grid, block, regs, ...rest] = l.split(",");
    return {
      corr,
      node,
      start: BigInt(start),
      end: BigInt(end),
      grid,
      block,
      regs,
      name: rest.join(","),
    };
  });
  const t0 = rows.reduce((m, r) => (r.start < m ? r.start : m), rows[0]?.start ?? 0n);
  const groups = new Map();
  for (const { corr, start, end, ...k } of rows) {
    if (!groups.has(corr)) groups.set(corr, []);
    groups.get(corr).push({ ...k, start: Number(start - t0), end: Number(end - t0) });
  }
  return groups;
}

/** "void gemma3::cuda::(anonymous namespace)::foo<...>(...)" -> "foo" */
export function shortName(n) {
  return n
    .replace(/^void /, "")
    .replace(/\(anonymous namespace\)::/g, "")
    .replace(/\(.*$/, "")
    .replace(/<.*$/, "")
    .replace(/^.*::/, "");
}

/**
 * The critical path of one launch's kernels: sorted by start, each kernel's `crit` is how far its
 * end moves the latest end so far (0 when it ends inside work already counted), so the crits sum
 * to the span (first start to last end) and overlapped work counts once. Per key (short name and
 * grid): count, summed duration and summed crit.
 * @returns {kernels (sorted, with crit), span, byKey: Map<key, {n, dur, crit}>}
 */
export function criticalPath(kernels) {
  const ks = [...kernels].sort((a, b) => a.start - b.start);
  const t0 = ks[0].start;
  let latest = t0;
  const byKey = new Map();
  for (const k of ks) {
    k.crit = Math.max(0, k.end - latest);
    latest = Math.max(latest, k.end);
    const key = `${shortName(k.name)} (grid ${k.grid})`;
    const e = byKey.get(key) ?? { n: 0, dur: 0, crit: 0 };
    e.n++;
    e.dur += k.end - k.start;
    e.crit += k.crit;
    byKey.set(key, e);
  }
  return { kernels: ks, span: latest - t0, byKey };
}

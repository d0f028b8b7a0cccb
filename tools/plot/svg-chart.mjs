// A dependency-free SVG line chart for docs/benchmarks.md: series of (x, y) points on linear or
// log2 x axes, labelled axes, a legend. Reads a JSON spec, writes an SVG file.
//   node tools/plot/svg-chart.mjs SPEC.json OUT.svg
// SPEC: { title, xLabel, yLabel, xLog2?: boolean, series: [{ name, points: [[x, y], ...] }] }
import { readFileSync, writeFileSync } from "node:fs";

const [specFile, outFile] = process.argv.slice(2);
const spec = JSON.parse(readFileSync(specFile, "utf8"));
const W = 640,
  H = 380,
  L = 70,
  R = 160,
  T = 40,
  B = 50;
const colors = ["#1a73e8", "#d93025", "#188038", "#f9ab00", "#9334e6", "#5f6368"];
const fx = spec.xLog2 ? Math.log2 : (v) => v;
const xs = spec.series.flatMap((s) => s.points.map((p) => fx(p[0])));
const ys = spec.series.flatMap((s) => s.points.map((p) => p[1]));
const x0 = Math.min(...xs),
  x1 = Math.max(...xs);
const y1 = niceMax(Math.max(...ys));
const px = (x) => L + ((fx(x) - x0) / (x1 - x0 || 1)) * (W - L - R);
const py = (y) => H - B - (y / y1) * (H - T - B);

function niceMax(v) {
  const e = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * e >= v) return m * e;
  return v;
}
const esc = (s) => String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;");
const out = [
  `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
  `<rect width="${W}" height="${H}" fill="white"/>`,
  // Centred on the whole width: a long title over the plot area alone would run off the left edge.
  `<text x="${W / 2}" y="22" text-anchor="middle" font-size="14">${esc(spec.title)}</text>`,
];
for (let i = 0; i <= 5; i++) {
  const y = (y1 * i) / 5;
  out.push(`<line x1="${L}" x2="${W - R}" y1="${py(y)}" y2="${py(y)}" stroke="#ddd"/>`);
  out.push(`<text x="${L - 6}" y="${py(y) + 4}" text-anchor="end">${Math.round(y)}</text>`);
}
const ticks = [...new Set(spec.series.flatMap((s) => s.points.map((p) => p[0])))].sort(
  (a, b) => a - b,
);
for (const t of ticks)
  out.push(`<text x="${px(t)}" y="${H - B + 16}" text-anchor="middle">${t}</text>`);
out.push(`<line x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}" stroke="#333"/>`);
out.push(`<line x1="${L}" x2="${L}" y1="${T}" y2="${H - B}" stroke="#333"/>`);
out.push(
  `<text x="${(L + W - R) / 2}" y="${H - 12}" text-anchor="middle">${esc(spec.xLabel)}</text>`,
);
out.push(
  `<text transform="translate(16 ${(T + H - B) / 2}) rotate(-90)" text-anchor="middle">${esc(spec.yLabel)}</text>`,
);
spec.series.forEach((s, i) => {
  const c = colors[i % colors.length];
  const d = s.points
    .map((p, j) => `${j ? "L" : "M"}${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`)
    .join(" ");
  out.push(`<path d="${d}" fill="none" stroke="${c}" stroke-width="2"/>`);
  for (const p of s.points)
    out.push(`<circle cx="${px(p[0])}" cy="${py(p[1])}" r="3" fill="${c}"/>`);
  out.push(`<rect x="${W - R + 12}" y="${T + i * 20}" width="12" height="12" fill="${c}"/>`);
  out.push(`<text x="${W - R + 30}" y="${T + i * 20 + 10}">${esc(s.name)}</text>`);
});
out.push("</svg>");
writeFileSync(outFile, out.join("\n") + "\n");

// Types of fp8-accuracy.mjs for the test that runs it (test/fp8-accuracy.test.ts).
export interface Fp8AccuracySummary {
  positions: number;
  meanKL: number;
  maxKL: number;
  /** top-1 agreement over all positions */
  top1: number;
  /** positions whose reference top-2 margin exceeds MARGIN, and how many of them agree */
  sure: number;
  sureAgree: number;
  maxDiff: number;
}
export interface Fp8AccuracyRow {
  position: number;
  phase: "first-chunk" | "prefill" | "decode";
  kl: number;
  agree: boolean;
  margin: number;
  maxDiff: number;
}
export interface Fp8AccuracyResult {
  rows: Fp8AccuracyRow[];
  /** every position that reads the cache (prefill after the first chunk, and decode) */
  summary: Fp8AccuracySummary;
  prefill: Fp8AccuracySummary;
  decode: Fp8AccuracySummary;
  firstChunk: Fp8AccuracySummary;
  refAmax: { k: number; v: number };
}
export const FIXTURES: string;
export const MARGIN: number;
export function measure(o: {
  fixture: string;
  device?: string;
  dtype?: "f32" | "bf16";
  chunk?: number;
  steps?: number;
  kScale?: number;
  vScale?: number;
}): Promise<Fp8AccuracyResult & { fixture: string; device: string; dtype: string }>;
export function baseline(o: {
  fixture: string;
  device?: string;
  chunk?: number;
  steps?: number;
}): Promise<Fp8AccuracyResult & { fixture: string }>;

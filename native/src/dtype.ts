/** Element types; the numeric values are native/runtime/dtype.h's DType. */
export const DType = {
  f32: 0,
  bf16: 1,
  f16: 2,
  fp8_e4m3: 3,
  q8_0: 4,
  q4_0: 5,
  i32: 6,
  // GGUF K-quants: super-blocks of 256 weights (native/runtime/kquant.h).
  q4_k: 7,
  q5_k: 8,
  q6_k: 9,
  // q4_0 / q8_0 in the GPU's split row layout (CUDA only; ops.repack converts to and from the GGUF
  // blocks): each row's quant runs, then its f16 scales. Same bytes per row (native/runtime/dtype.h).
  q4_0s: 10,
  q8_0s: 11,
} as const;
export type DTypeName = keyof typeof DType;

const names = Object.keys(DType) as DTypeName[];

export function dtypeCode(name: DTypeName): number {
  const c = DType[name];
  if (c === undefined) throw new TypeError(`Unknown dtype: ${String(name)}`);
  return c;
}
export function dtypeName(code: number): DTypeName {
  const n = names.find((k) => DType[k] === code);
  if (!n) throw new TypeError(`Unknown dtype code: ${code}`);
  return n;
}
/** The GGUF K-quant dtypes (256-weight super-blocks). */
export const K_QUANTS = ["q4_k", "q5_k", "q6_k"] as const;
export type KQuantName = (typeof K_QUANTS)[number];
export function isKQuant(d: DTypeName): d is KQuantName {
  return d === "q4_k" || d === "q5_k" || d === "q6_k";
}
/** Elements per block: 32 for q8_0/q4_0 (and their split layouts), 256 for the K-quants, else 1. */
export function blockSize(d: DTypeName): number {
  return d === "q8_0" || d === "q4_0" || d === "q4_0s" || d === "q8_0s"
    ? 32
    : isKQuant(d)
      ? 256
      : 1;
}
/** Whether the dtype stores raw GGUF blocks (bytes, not numbers, cross the API). */
export function isBlock(d: DTypeName): boolean {
  return blockSize(d) > 1;
}
/** Bytes of `n` elements laid out along a row (n % blockSize == 0 for block formats). */
export function rowBytes(d: DTypeName, n: number): number {
  switch (d) {
    case "f32":
    case "i32":
      return n * 4;
    case "bf16":
    case "f16":
      return n * 2;
    case "fp8_e4m3":
      return n;
    case "q8_0":
    case "q8_0s":
      return (n / 32) * 34;
    case "q4_0":
    case "q4_0s":
      return (n / 32) * 18;
    case "q4_k":
      return (n / 256) * 144;
    case "q5_k":
      return (n / 256) * 176;
    case "q6_k":
      return (n / 256) * 210;
  }
}
export function isQuantized(d: DTypeName): boolean {
  return (
    d === "q8_0" ||
    d === "q4_0" ||
    d === "q4_0s" ||
    d === "q8_0s" ||
    d === "fp8_e4m3" ||
    isKQuant(d)
  );
}

// The one file that types the whole native addon surface (native/addon/addon.cc) and loads it.
// Everything else in the package goes through these types; nothing else calls `require` on .node.
import { createRequire } from "node:module";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** An owning device allocation. `free()` drops the JS handle; queued work keeps the memory alive. */
export interface NativeBuffer {
  readonly byteLength: number;
  /** -1 = cpu, 0..N-1 = cuda device */
  readonly device: number;
  readonly freed: boolean;
  free(): void;
}

/** A captured op sequence (CUDA graph, or a recorded CPU task list). */
export interface NativeGraph {
  readonly nodes: number;
  launch(): void;
  dispose(): void;
}

/** A device-to-host copy enqueued in stream order, waited for on its own (runtime/device.h). */
export interface NativeReadback {
  enqueue(src: NativeBuffer, offset: number, bytes: number): void;
  /** resolves once the copy enqueued last is done (not the ops enqueued after it) */
  wait(dst: ArrayBufferView): Promise<void>;
  dispose(): void;
}

/** A group of ranks for collectives (native/ops/collective.h). */
export interface NativeCommunicator {
  readonly backend: "nccl" | "host" | "disposed";
  /** whether allReduce may be issued while every rank's device captures a graph */
  readonly graphCapturable: boolean;
  allReduce(tensors: readonly TensorArg[]): void;
  /** blocks until every rank's device has run the work queued on it */
  waitIdle(): void;
  dispose(): void;
}

/** What the addon reads from a tensor argument. */
export interface TensorArg {
  readonly storage: NativeBuffer;
  readonly byteOffset: number;
  readonly dtype: number;
  readonly shape: readonly number[];
}
type T = TensorArg;
type OptT = TensorArg | null;

export interface PrefillParamsArg {
  maxQLen: number;
  smScale: number;
  window: number;
  causal: boolean;
}
export interface DecodeParamsArg {
  maxKvLen: number;
  smScale: number;
  window: number;
  /** fp8_e4m3 caches: key = e4m3 · kScale, value = e4m3 · vScale (default 1; must be 1 otherwise) */
  kScale?: number;
  vScale?: number;
}

export interface Addon {
  buildInfo(): { cuda: boolean; cublas: boolean; nccl: boolean; cpuThreads: number };
  deviceCount(): number;
  deviceInfo(device: number): {
    name: string;
    totalMemory: number;
    smCount: number;
    computeCapability: string;
    l2Bytes: number;
  };
  memoryInfo(device: number): { free: number; total: number };
  alloc(device: number, bytes: number): NativeBuffer;
  copyFromHost(dst: NativeBuffer, offset: number, src: ArrayBufferView): void;
  copyToHost(src: NativeBuffer, offset: number, dst: ArrayBufferView): Promise<void>;
  copyBuffer(
    dst: NativeBuffer,
    dstOffset: number,
    src: NativeBuffer,
    srcOffset: number,
    bytes: number,
  ): void;
  fill(dst: NativeBuffer, offset: number, bytes: number, value: number): void;
  synchronize(device: number): Promise<void>;
  /** Test hook, GEMMA3_FAULT_INJECTION=1 only (runtime/fault.h). */
  injectFault(kind: "alloc" | "sticky" | "trap" | "clear", device: number, after: number): void;
  graphBegin(device: number): void;
  graphEnd(device: number): NativeGraph;
  readbackCreate(device: number, capacity: number): NativeReadback;

  matmul(x: T, w: T, wScale: OptT, y: T): void;
  rmsnorm(x: T, w: T, out: T, eps: number): void;
  rmsnormAdd(x: T, w: T, residual: T, eps: number): void;
  layernorm(x: T, w: T, b: T, out: T, eps: number): void;
  geluMul(gate: T, up: OptT, out: T, x?: OptT, w?: OptT, wScale?: OptT): void;
  add(a: T, b: T, out: T): void;
  scale(x: T, out: T, s: number): void;
  embedding(ids: T, table: T, out: T, scale: number): void;
  softmax(x: T, out: T): void;
  argmax(x: T, out: T): void;
  topk(x: T, values: T, indices: T): void;
  rope(x: T, positions: T, base: number, scale: number): void;
  qkNormRope(
    qkv: OptT,
    q: T,
    k: T,
    v: OptT,
    qW: T,
    kW: T,
    positions: T,
    eps: number,
    base: number,
    scale: number,
    kvRows?: OptT,
    x?: OptT,
    w?: OptT,
  ): void;
  rmsnormAddRmsnorm(x: T, w: T, residual: T, wNext: T, out: T, eps: number): void;
  attentionPrefill(
    q: T,
    k: T,
    v: T,
    out: T,
    qoIndptr: T,
    kvIndptr: T,
    kvLast: OptT,
    p: PrefillParamsArg,
  ): void;
  attentionDecode(
    q: T,
    kCache: T,
    vCache: T,
    out: T,
    kvIndptr: T,
    kvIndices: T,
    kvLen: T,
    workspace: OptT,
    p: DecodeParamsArg,
  ): void;
  attentionDecodeQkv(
    qkv: T,
    q: T,
    qW: T,
    kW: T,
    positions: T,
    kvRows: T,
    kCache: T,
    vCache: T,
    out: T,
    kvIndptr: T,
    kvIndices: T,
    kvLen: T,
    workspace: OptT,
    p: DecodeParamsArg & { eps: number; base: number; ropeScale: number },
  ): void;
  attentionDecodeWorkspaceFloats(
    device: number,
    batch: number,
    numQoHeads: number,
    headDim: number,
    maxKvLen: number,
  ): number;
  biasAdd(x: T, bias: T, residual: OptT, out: T, gelu: boolean): void;
  patchify(pixels: T, out: T, patch: number): void;
  attentionPrefillQkv(
    qkv: T,
    out: T,
    qoIndptr: T,
    kvIndptr: T,
    numQoHeads: number,
    numKvHeads: number,
    p: PrefillParamsArg,
  ): void;
  avgPool2d(x: T, out: T, k: number): void;
  cast(src: T, dst: T): void;
  quantize(src: T, dst: T, scale: OptT): void;
  dequantize(src: T, scale: OptT, dst: T): void;
  repack(src: T, dst: T): void;
  copyRows(src: T, dst: T, dstRows: T): void;
  communicatorCreate(devices: number[], backend: "auto" | "nccl" | "host"): NativeCommunicator;
  copyColumns(src: T, srcCol: number, dst: T, dstCol: number, width: number): void;
}

function findAddon(): string {
  const pkg = dirname(dirname(fileURLToPath(import.meta.url)));
  const candidates = [
    process.env.GEMMA3_ADDON_PATH,
    join(pkg, "build", "Release", "gemma3.node"),
    join(pkg, "build", "Debug", "gemma3.node"),
  ].filter((p): p is string => !!p);
  for (const p of candidates) if (existsSync(p)) return p;
  throw new Error(
    `@gemma3/native: the addon is not built (looked in ${candidates.join(", ")}). ` +
      "Run `npm run build --workspace @gemma3/native`.",
  );
}

let cached: Addon | undefined;
/** The loaded addon (loaded on first use). */
export function addon(): Addon {
  if (!cached) cached = createRequire(import.meta.url)(findAddon()) as Addon;
  return cached;
}

// Byte-pair encoding over typed arrays: the HF `tokenizers` (Rust) BPE model as Gemma 3 uses it
// (byte_fallback, fuse_unk, no dropout, no subword prefix/suffix). Merges live in an
// open-addressing hash table keyed by (left id, right id), so a 515k-merge table builds in tens of
// milliseconds and one 10 MB word merges in O(n log n) without an object per symbol.

/** Merge table: (left id, right id) → (rank, merged id). Rank = index in tokenizer.json's merges. */
export class MergeTable {
  private readonly mask: number;
  // Parallel arrays of `capacity` slots; left = -1 marks an empty slot.
  private readonly left: Int32Array;
  private readonly right: Int32Array;
  readonly rank: Int32Array;
  readonly merged: Int32Array;
  size = 0;

  constructor(expected: number) {
    let cap = 1024;
    while (cap < expected * 2) cap *= 2;
    this.mask = cap - 1;
    this.left = new Int32Array(cap).fill(-1);
    this.right = new Int32Array(cap);
    this.rank = new Int32Array(cap);
    this.merged = new Int32Array(cap);
  }

  private static hash(a: number, b: number): number {
    let h = Math.imul(a, 0x9e3779b1) ^ b;
    h ^= h >>> 15;
    h = Math.imul(h, 0x85ebca77);
    return h ^ (h >>> 13);
  }

  /** Later duplicates overwrite earlier ones, as HF's HashMap collect does. */
  set(a: number, b: number, rank: number, merged: number): void {
    let i = MergeTable.hash(a, b) & this.mask;
    for (;;) {
      const l = this.left[i]!;
      if (l === -1) {
        if (this.size * 2 >= this.mask) throw new Error("MergeTable: over capacity");
        this.left[i] = a;
        this.right[i] = b;
        this.size++;
        break;
      }
      if (l === a && this.right[i] === b) break;
      i = (i + 1) & this.mask;
    }
    this.rank[i] = rank;
    this.merged[i] = merged;
  }

  /** Slot of the pair, or -1. */
  find(a: number, b: number): number {
    let i = MergeTable.hash(a, b) & this.mask;
    for (;;) {
      const l = this.left[i]!;
      if (l === -1) return -1;
      if (l === a && this.right[i] === b) return i;
      i = (i + 1) & this.mask;
    }
  }
}

// Heap keys pack (rank, position) into one exact double: lowest rank first, then leftmost, the
// order of HF's `Merge` (BinaryHeap with reversed Ord).
const POS_RANGE = 2 ** 33;
/** Ranks that fit beside a position in one exact double: rank × 2^33 + position < 2^53. */
export const MAX_MERGE_RANKS = 2 ** 20;

/** Binary min-heap of doubles that grows as needed. */
class KeyHeap {
  a: Float64Array;
  n = 0;
  constructor(cap: number) {
    this.a = new Float64Array(Math.max(cap, 16));
  }
  push(k: number): void {
    if (this.n === this.a.length) {
      const b = new Float64Array(this.a.length * 2);
      b.set(this.a);
      this.a = b;
    }
    const a = this.a;
    let i = this.n++;
    while (i > 0) {
      const p = (i - 1) >> 1;
      const pk = a[p]!;
      if (pk <= k) break;
      a[i] = pk;
      i = p;
    }
    a[i] = k;
  }
  pop(): number {
    const a = this.a;
    const top = a[0]!;
    const last = a[--this.n]!;
    const n = this.n;
    let i = 0;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= n) break;
      if (c + 1 < n && a[c + 1]! < a[c]!) c++;
      if (a[c]! >= last) break;
      a[i] = a[c]!;
      i = c;
    }
    a[i] = last;
    return top;
  }
  /** Bottom-up heap construction over the first n keys already in `a`. */
  heapify(n: number): void {
    this.n = n;
    const a = this.a;
    for (let s = (n >> 1) - 1; s >= 0; s--) {
      const k = a[s]!;
      let i = s;
      for (;;) {
        let c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && a[c + 1]! < a[c]!) c++;
        if (a[c]! >= k) break;
        a[i] = a[c]!;
        i = c;
      }
      a[i] = k;
    }
  }
}

/**
 * Applies merges to one word, in place. Mirrors `Word::merge_all` of HF tokenizers: pop the
 * lowest (rank, pos); skip it if that pair no longer stands there; merge; queue the two new pairs.
 * @param syms initial symbol ids: [n] int32 (overwritten)
 * @returns the merged ids, in order
 */
export function mergeWord(merges: MergeTable, syms: Int32Array, n: number): number[] {
  if (n < 2) return Array.from(syms.subarray(0, n));
  const prev = new Int32Array(n);
  const next = new Int32Array(n);
  const heap = new KeyHeap(2 * n);
  let m = 0;
  for (let i = 0; i < n; i++) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
    if (i + 1 < n) {
      const s = merges.find(syms[i]!, syms[i + 1]!);
      if (s >= 0) heap.a[m++] = merges.rank[s]! * POS_RANGE + i;
    }
  }
  heap.heapify(m);
  const { rank, merged } = merges;
  while (heap.n > 0) {
    const key = heap.pop();
    const r = Math.floor(key / POS_RANGE);
    const pos = key - r * POS_RANGE;
    const left = syms[pos]!;
    if (left < 0) continue;
    const nx = next[pos]!;
    if (nx < 0) continue;
    // A stale entry: the pair at pos changed since it was queued (ranks are unique per pair).
    const s = merges.find(left, syms[nx]!);
    if (s < 0 || rank[s] !== r) continue;
    const id = merged[s]!;
    syms[pos] = id;
    syms[nx] = -1;
    const nn = next[nx]!;
    next[pos] = nn;
    if (nn >= 0) prev[nn] = pos;
    const p = prev[pos]!;
    if (p >= 0) {
      const t = merges.find(syms[p]!, id);
      if (t >= 0) heap.push(rank[t]! * POS_RANGE + p);
    }
    if (nn >= 0) {
      const t = merges.find(id, syms[nn]!);
      if (t >= 0) heap.push(rank[t]! * POS_RANGE + pos);
    }
  }
  const out: number[] = [];
  for (let i = 0; i >= 0; i = next[i]!) out.push(syms[i]!);
  return out;
}

// Prefix index (issue 5 item 4): full global pages registered under a chained hash of their token
// ids, kept after their sequence is freed and evicted least recently released first, plus the
// bounded pool of sliding-layer snapshot blocks that makes a cached prefix usable by the rings.
//
// An entry is one block of `pageSize` tokens at a fixed depth of a prefix tree: its key is
// hash(parent's hash, its ids), but a lookup trusts no hash: it also compares the block's ids and
// the parent entry itself, so a match is the exact token prefix. Pure bookkeeping, no addon.
import type { PagePool } from "./pages.js";

/** Block hash: (hash of the previous block, or 0 for the first; this block's ids) → key. */
export type BlockHash = (parent: number, ids: readonly number[]) => number;

/** FNV-style 53-bit chain hash (two 32-bit lanes); collisions are harmless (ids are compared). */
export const hashBlock: BlockHash = (parent, ids) => {
  let a = ((parent % 0x100000000) ^ 0x811c9dc5) >>> 0;
  let b = (Math.floor(parent / 0x100000000) ^ 0x01000193 ^ ids.length) >>> 0;
  for (const id of ids) {
    a = Math.imul(a ^ id, 0x01000193) >>> 0;
    b = Math.imul(b ^ (id + 0x9e3779b9), 0x5bd1e995) >>> 0;
    b ^= b >>> 15;
  }
  return (b & 0x1fffff) * 0x100000000 + a;
};

/** One registered block: a full global page of `pageSize` tokens. */
export interface PrefixEntry {
  readonly hash: number;
  readonly parent: PrefixEntry | null;
  /** block index: the entry covers positions [depth · pageSize, (depth + 1) · pageSize) */
  readonly depth: number;
  /** the block's token ids (compared on every lookup) */
  readonly ids: Int32Array;
  /** global page (the index holds one reference) */
  readonly page: number;
  /** sliding-layer snapshot block holding this block's sliding K/V, or −1 */
  snap: number;
  alive: boolean;
  readonly children: Set<PrefixEntry>;
}

export class PrefixIndex {
  private readonly buckets = new Map<number, PrefixEntry[]>();
  private readonly byPage = new Map<number, PrefixEntry>();
  /** Entries only the index holds (page refcount 1): eviction order, least recently released first. */
  private readonly idle = new Set<PrefixEntry>();
  /** Entries holding a snapshot block, least recently used first. */
  private readonly snapLru = new Set<PrefixEntry>();
  private readonly freeSlots: number[];

  constructor(
    private readonly pool: PagePool,
    readonly pageSize: number,
    /** Snapshot blocks in the pool (0 = no snapshots). */
    readonly snapshotBlocks: number,
    private readonly hash: BlockHash = hashBlock,
  ) {
    this.freeSlots = Array.from({ length: snapshotBlocks }, (_, i) => snapshotBlocks - 1 - i);
  }

  /** Registered blocks (each holds one page). */
  get size(): number {
    return this.byPage.size;
  }
  /** Pages only the index holds: eviction can free exactly this many. */
  get evictable(): number {
    return this.idle.size;
  }
  get freeSnapshotBlocks(): number {
    return this.freeSlots.length;
  }
  /** Snapshot blocks held by registered entries (the rest are free or filling in a sequence). */
  get cachedSnapshotBlocks(): number {
    return this.snapLru.size;
  }

  /** The entry for `ids` (one block) under `parent`, comparing ids exactly; null when none. */
  find(parent: PrefixEntry | null, ids: readonly number[]): PrefixEntry | null {
    const bucket = this.buckets.get(this.hash(parent ? parent.hash : 0, ids));
    if (!bucket) return null;
    for (const e of bucket) if (e.parent === parent && sameIds(e.ids, ids)) return e;
    return null;
  }

  /** Longest chain of registered blocks that is a prefix of `tokens`, at most `maxBlocks` long. */
  match(tokens: readonly number[], maxBlocks: number): PrefixEntry[] {
    const P = this.pageSize;
    const out: PrefixEntry[] = [];
    let parent: PrefixEntry | null = null;
    for (let b = 0; b < maxBlocks && (b + 1) * P <= tokens.length; b++) {
      const e = this.find(parent, tokens.slice(b * P, (b + 1) * P));
      if (!e) break;
      out.push(e);
      parent = e;
    }
    return out;
  }

  /** Registers `page` (a full page whose tokens are `ids`) under `parent`; takes a page reference. */
  insert(parent: PrefixEntry | null, ids: readonly number[], page: number): PrefixEntry {
    const e: PrefixEntry = {
      hash: this.hash(parent ? parent.hash : 0, ids),
      parent,
      depth: parent ? parent.depth + 1 : 0,
      ids: Int32Array.from(ids),
      page,
      snap: -1,
      alive: true,
      children: new Set(),
    };
    this.pool.retain(page);
    const bucket = this.buckets.get(e.hash);
    if (bucket) bucket.push(e);
    else this.buckets.set(e.hash, [e]);
    this.byPage.set(page, e);
    parent?.children.add(e);
    if (this.pool.refcount(page) === 1) this.idle.add(e);
    return e;
  }

  /** Call after a page's refcount changed (retain or release by a sequence). */
  refChanged(page: number): void {
    const e = this.byPage.get(page);
    if (!e) return;
    // Re-adding moves the entry to the end: released last, evicted last.
    this.idle.delete(e);
    if (this.pool.refcount(page) === 1) this.idle.add(e);
  }

  /** Whether `page` is registered. */
  has(page: number): boolean {
    return this.byPage.has(page);
  }

  /** Whether eviction may free `page` (only the index holds it). */
  isIdle(page: number): boolean {
    const e = this.byPage.get(page);
    return e !== undefined && this.idle.has(e);
  }

  /** Evicts least recently released blocks until `pages` pages are free (or nothing is left). */
  reclaim(pages: number): void {
    while (this.pool.free < pages && this.idle.size > 0)
      this.remove(this.idle.values().next().value!);
  }

  /** Drops every entry (pages only the index held are freed, snapshot blocks return to the pool). */
  clear(): void {
    for (const e of [...this.byPage.values()]) if (e.alive) this.remove(e);
  }

  // ---- snapshot blocks ----------------------------------------------------------------------

  /** A free snapshot block, else the least recently used entry's; −1 when every one is filling. */
  allocSnapshot(): number {
    const slot = this.freeSlots.pop();
    if (slot !== undefined) return slot;
    const victim = this.snapLru.values().next().value;
    if (!victim) return -1;
    const s = victim.snap;
    victim.snap = -1;
    this.snapLru.delete(victim);
    return s;
  }
  freeSnapshot(slot: number): void {
    this.freeSlots.push(slot);
  }
  /** Hands a filled snapshot block to `e` (or back to the pool when `e` has one already). */
  giveSnapshot(e: PrefixEntry, slot: number): void {
    if (e.snap >= 0 || !e.alive) return this.freeSnapshot(slot);
    e.snap = slot;
    this.snapLru.add(e);
  }
  touchSnapshot(e: PrefixEntry): void {
    if (e.snap < 0) return;
    this.snapLru.delete(e);
    this.snapLru.add(e);
  }

  /** Test hook: every live entry (for invariants). */
  entries(): PrefixEntry[] {
    return [...this.byPage.values()];
  }

  /** Removes `e` and its descendants (unreachable without it), releasing the index's references. */
  private remove(root: PrefixEntry): void {
    root.parent?.children.delete(root);
    const stack = [root];
    while (stack.length > 0) {
      const e = stack.pop()!;
      for (const c of e.children) stack.push(c);
      e.children.clear();
      e.alive = false;
      const bucket = this.buckets.get(e.hash)!;
      bucket.splice(bucket.indexOf(e), 1);
      if (bucket.length === 0) this.buckets.delete(e.hash);
      this.byPage.delete(e.page);
      this.idle.delete(e);
      if (e.snap >= 0) {
        this.snapLru.delete(e);
        this.freeSlots.push(e.snap);
        e.snap = -1;
      }
      this.pool.release(e.page);
    }
  }
}

function sameIds(a: Int32Array, b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

// The global layers' page pool: page ids with reference counts (forked sequences share pages;
// a page returns to the free list when its last holder lets go). Pure bookkeeping: the same page
// id indexes every global layer's storage, so one page table per sequence serves them all.
import { KVCacheError } from "./errors.js";

export class PagePool {
  private readonly refs: Int32Array;
  /** Free page ids as a stack (lowest ids handed out first after construction). */
  private readonly freeStack: Int32Array;
  private freeTop: number;

  constructor(readonly numPages: number) {
    this.refs = new Int32Array(numPages);
    this.freeStack = new Int32Array(numPages);
    for (let i = 0; i < numPages; i++) this.freeStack[i] = numPages - 1 - i;
    this.freeTop = numPages;
  }

  get free(): number {
    return this.freeTop;
  }
  get used(): number {
    return this.numPages - this.freeTop;
  }
  refcount(page: number): number {
    return this.refs[page] ?? 0;
  }

  /** Takes a free page (refcount 1). Callers check `free` first (admission control). */
  alloc(): number {
    if (this.freeTop === 0) throw new KVCacheError("PagePool.alloc: no free page", "E_KV_FULL");
    const p = this.freeStack[--this.freeTop]!;
    this.refs[p] = 1;
    return p;
  }

  /** One more holder of `page` (fork). */
  retain(page: number): void {
    if (!(this.refs[page]! > 0)) throw new KVCacheError(`retain of free page ${page}`, "E_KV_SEQ");
    this.refs[page]!++;
  }

  /** One holder fewer; the page is free again at zero. Returns true when it was freed. */
  release(page: number): boolean {
    if (!(this.refs[page]! > 0)) throw new KVCacheError(`release of free page ${page}`, "E_KV_SEQ");
    if (--this.refs[page]! > 0) return false;
    this.freeStack[this.freeTop++] = page;
    return true;
  }
}

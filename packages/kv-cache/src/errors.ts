// Errors the cache reports. Every one is thrown before any state changes (a failed add, fork,
// trim or plan leaves the cache as it was), so callers can refuse a request and go on.

export class KVCacheError extends Error {
  constructor(
    message: string,
    /** E_KV_FULL (no pages / sequence slots left), E_KV_ROLLBACK (ring cannot restore), E_KV_SEQ (unknown or busy sequence), E_KV_RANGE (past maxSeqLen) */
    readonly code: "E_KV_FULL" | "E_KV_ROLLBACK" | "E_KV_SEQ" | "E_KV_RANGE",
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** The page pool or the sequence slots cannot take the request (admission control said no). */
export class KVCacheFullError extends KVCacheError {
  constructor(message: string) {
    super(message, "E_KV_FULL");
  }
}

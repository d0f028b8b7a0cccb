// A request's own random generator: xoshiro128** seeded through splitmix64 (the seeding its
// authors recommend), so a seed gives the same stream on every machine and no request's draws
// depend on another's (batch-invariant). Every state word mixes all 64 bits of the seed: an earlier
// seeding ran splitmix32 over each half separately, so every seed below 2^32 shared the word the
// first output reads, and the first draw (a request's first sampled token) was the same for seeds
// 1, 2, 3, …
import { randomBytes } from "node:crypto";

const MASK64 = (1n << 64n) - 1n;

/** splitmix64: the next 64-bit output of state `st` (advanced in place). */
function splitmix64(st: { s: bigint }): bigint {
  st.s = (st.s + 0x9e3779b97f4a7c15n) & MASK64;
  let z = st.s;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
  return z ^ (z >> 31n);
}

export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  /** `seed`: any integer (64 bits are used); undefined draws one from the OS. */
  constructor(seed?: bigint | number) {
    const st = {
      s: seed === undefined ? randomBytes(8).readBigUInt64LE() : BigInt.asUintN(64, BigInt(seed)),
    };
    const w0 = splitmix64(st);
    const w1 = splitmix64(st);
    this.a = Number(w0 & 0xffffffffn) | 0;
    this.b = Number(w0 >> 32n) | 0;
    this.c = Number(w1 & 0xffffffffn) | 0;
    this.d = Number(w1 >> 32n) | 0;
    if ((this.a | this.b | this.c | this.d) === 0) this.a = 1; // the all-zero state is a fixed point
  }

  /** Next 32 random bits. */
  nextU32(): number {
    const r = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return r;
  }

  /** Uniform in [0, 1) with 53 random bits. */
  next(): number {
    const hi = this.nextU32() >>> 5; // 27 bits
    const lo = this.nextU32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

// A request's own random generator: xoshiro128** seeded through splitmix32, so a seed gives the
// same stream on every machine and no request's draws depend on another's (batch-invariant).
import { randomBytes } from "node:crypto";

function splitmix32(state: { s: number }): number {
  state.s = (state.s + 0x9e3779b9) | 0;
  let z = state.s;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  /** `seed`: any integer (64 bits are used); undefined draws one from the OS. */
  constructor(seed?: bigint | number) {
    const s =
      seed === undefined ? randomBytes(8).readBigUInt64LE() : BigInt.asUintN(64, BigInt(seed));
    const lo = { s: Number(s & 0xffffffffn) | 0 };
    const hi = { s: Number(s >> 32n) ^ 0x5bd1e995 };
    this.a = splitmix32(lo);
    this.b = splitmix32(hi);
    this.c = splitmix32(lo);
    this.d = splitmix32(hi);
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

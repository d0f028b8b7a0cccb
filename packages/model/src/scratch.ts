// Activation memory of a forward step: one arena per model, sized for the largest step seen and
// reused in stream order (ops on a device run in order, so the next layer's writes never overtake
// the previous layer's reads). Nothing is allocated per op; a step larger than any before grows
// the arena once, before the step's first op.
import { Arena, Device, Tensor, byteSize, type DTypeName, type Shape } from "@gemma3/native";

export class Scratch {
  private arena: Arena | undefined;
  /** Bumped whenever the arena is reallocated (captured graphs hold its addresses). */
  generation = 0;

  constructor(private readonly device: Device) {}

  /** Makes room for a step needing `bytes` (grows the arena when needed), and starts it. */
  begin(bytes: number): void {
    if (!this.arena || this.arena.capacity < bytes) {
      this.arena?.dispose();
      this.arena = new Arena(Math.ceil(bytes * 1.25), this.device);
      this.generation++;
    }
    this.arena.reset();
  }

  /** An activation tensor valid until the next `begin`/`rewind` that passes it. */
  alloc(shape: Shape, dtype: DTypeName): Tensor {
    if (!this.arena) throw new Error("Scratch.alloc before begin");
    return this.arena.alloc(shape, dtype);
  }

  /** Current fill level, to `rewind` to after a layer (its temporaries are dead by then). */
  mark(): number {
    return this.arena?.used ?? 0;
  }
  rewind(mark: number): void {
    this.arena?.rewindTo(mark);
  }

  /** Bytes that `alloc(shape, dtype)` takes including alignment. */
  static bytes(shape: Shape, dtype: DTypeName): number {
    return Math.ceil(byteSize(shape, dtype) / 256) * 256;
  }

  dispose(): void {
    this.arena?.dispose();
    this.arena = undefined;
  }
}

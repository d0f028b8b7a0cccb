/** Typed errors for everything the native core reports. `code` is the native StatusCode name. */
export class Gemma3Error extends Error {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
    this.name = new.target.name;
  }
}
export class ShapeError extends Gemma3Error {}
export class DTypeError extends Gemma3Error {}
export class DeviceError extends Gemma3Error {}
export class UnsupportedError extends Gemma3Error {}
export class OutOfMemoryError extends Gemma3Error {}
export class CudaError extends Gemma3Error {}
export class OutOfRangeError extends Gemma3Error {}
export class InvalidArgumentError extends Gemma3Error {}
/** Use of a tensor, buffer or graph after dispose(). */
export class DisposedError extends Gemma3Error {}

const byCode: Record<string, new (m: string, c: string) => Gemma3Error> = {
  E_SHAPE: ShapeError,
  E_DTYPE: DTypeError,
  E_DEVICE: DeviceError,
  E_UNSUPPORTED: UnsupportedError,
  E_OUT_OF_MEMORY: OutOfMemoryError,
  E_CUDA: CudaError,
  E_OUT_OF_RANGE: OutOfRangeError,
  E_INVALID_ARGUMENT: InvalidArgumentError,
  E_DISPOSED: DisposedError,
  E_CUDA_STICKY: CudaError,
};

/**
 * True for an error after which the device is unusable until the process exits (a sticky CUDA
 * error such as an illegal address): a server should fail its health check and exit so a
 * supervisor restarts it.
 */
export function isStickyDeviceError(e: unknown): boolean {
  return (e as { code?: unknown } | null)?.code === "E_CUDA_STICKY";
}

/** Turns an error thrown by the addon into its typed class (others pass through). */
export function typedError(e: unknown): unknown {
  if (e instanceof Error && !(e instanceof Gemma3Error)) {
    const code = (e as Error & { code?: unknown }).code;
    if (typeof code === "string") {
      const Cls = byCode[code] ?? Gemma3Error;
      const t = new Cls(e.message, code);
      t.stack = e.stack;
      return t;
    }
  }
  return e;
}

/** Runs a native call, rethrowing its error as a typed one. */
export function native<R>(fn: () => R): R {
  try {
    return fn();
  } catch (e) {
    throw typedError(e);
  }
}
/** Awaits a native promise, rejecting with a typed error. */
export async function nativeAsync<R>(p: () => Promise<R>): Promise<R> {
  try {
    return await p();
  } catch (e) {
    throw typedError(e);
  }
}

// Typed errors for image input: a server maps `code` to a 4xx answer, a CLI prints `message`.

export type ImageErrorCode =
  /** Not PNG, JPEG, WebP or GIF (by its bytes), or a variant the decoder does not take. */
  | "E_IMAGE_FORMAT"
  /** Over the byte or pixel limit (checked from the header, before any pixel is decoded). */
  | "E_IMAGE_TOO_LARGE"
  /** Empty, truncated or damaged data. */
  | "E_IMAGE_CORRUPT"
  /** A data URL that is malformed, not base64, of a MIME type not taken, or whose MIME type
   *  disagrees with its bytes. */
  | "E_IMAGE_DATA_URL"
  /** The file could not be read (missing, a directory, no permission). */
  | "E_IMAGE_READ"
  /** The caller passed something that is not an image input or bad options. */
  | "E_IMAGE_ARGUMENT";

export class ImageError extends Error {
  override name = "ImageError";
  constructor(
    readonly code: ImageErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** True for an ImageError (also across package copies, by name and code). */
export function isImageError(e: unknown): e is ImageError {
  return (
    e instanceof ImageError ||
    (e instanceof Error && e.name === "ImageError" && typeof (e as ImageError).code === "string")
  );
}

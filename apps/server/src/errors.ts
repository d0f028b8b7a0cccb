// OpenAI's error contract: every failure is JSON `{"error": {"message", "type", "param", "code"}}`
// with a 4xx status for anything the client can fix, 429/503 (+ Retry-After) for overload and
// loading, 500 only for our own faults.
import { GenerationError } from "@gemma3/generation";
import { isStickyDeviceError } from "@gemma3/native";

export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    /** The request field at fault (OpenAI's `param`). */
    readonly param: string | null = null,
    /** OpenAI's `code` (e.g. "context_length_exceeded", "invalid_api_key"). */
    readonly code: string | null = null,
    /** Seconds for a Retry-After header (429, 503). */
    readonly retryAfter?: number,
  ) {
    super(message);
    this.name = "HttpError";
  }

  get type(): string {
    if (this.status === 401) return "authentication_error";
    if (this.status === 403) return "permission_error";
    if (this.status === 404) return "not_found_error";
    if (this.status === 429) return "rate_limit_error";
    if (this.status >= 500) return this.status === 503 ? "service_unavailable" : "server_error";
    return "invalid_request_error";
  }

  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return {
      error: { message: this.message, type: this.type, param: this.param, code: this.code },
    };
  }
}

export const badRequest = (
  message: string,
  param: string | null = null,
  code: string | null = null,
) => new HttpError(400, message, param, code);

/** camelCase runtime names back to the API's snake_case for `param`. */
const PARAM_NAMES: Record<string, string> = {
  topK: "top_k",
  topP: "top_p",
  minP: "min_p",
  repetitionPenalty: "repetition_penalty",
  frequencyPenalty: "frequency_penalty",
  presencePenalty: "presence_penalty",
  logitBias: "logit_bias",
  maxTokens: "max_tokens",
  minTokens: "min_tokens",
  logprobs: "top_logprobs",
};

/** Maps an error from the runtime to its HTTP form (anything unknown is a 500). */
export function toHttpError(e: unknown): HttpError {
  if (e instanceof HttpError) return e;
  if (e instanceof GenerationError) {
    const param = e.field ? (PARAM_NAMES[e.field] ?? e.field) : null;
    switch (e.code) {
      case "E_INVALID":
        return badRequest(
          e.message.replace(/^(\w+):/, (_, f: string) => `${PARAM_NAMES[f] ?? f}:`),
          param,
        );
      case "E_TOO_LONG":
        return badRequest(e.message, param, "context_length_exceeded");
      case "E_QUEUE_FULL":
        return new HttpError(429, `server busy: ${e.message}`, null, "queue_full", 1);
      case "E_CLOSED":
        return new HttpError(503, "server is shutting down", null, "shutting_down", 5);
    }
  }
  if (isStickyDeviceError(e))
    return new HttpError(503, `device fault: ${(e as Error).message}`, null, "device_fault");
  const name = (e as { name?: string } | null)?.name;
  if (name === "OutOfMemoryError")
    return new HttpError(
      503,
      `out of device memory: ${(e as Error).message}`,
      null,
      "out_of_memory",
      1,
    );
  return new HttpError(
    500,
    `internal error: ${(e as Error)?.message ?? String(e)}`,
    null,
    "internal_error",
  );
}

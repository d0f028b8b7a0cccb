// Constrained decoding for OpenAI's response_format (json_object, json_schema).
import { GenerationError } from "../params.js";
import { compileResponseFormat, type GrammarOptions, type ResponseFormat } from "./grammar.js";
import { JsonConstraint } from "./mask.js";
import { TokenVocab, type ConstraintTokenizer } from "./vocab.js";

export * from "./grammar.js";
export {
  advance,
  initialState,
  isComplete,
  isTerminated,
  type Node as JsonNode,
  type PState,
} from "./automaton.js";
export * from "./mask.js";
export { TokenVocab, type ConstraintTokenizer, type ByteTrie } from "./vocab.js";

/** Whether `tok` has what a constraint needs (idToToken, byteOf, pieceText, isSpecial). */
export function isConstraintTokenizer(tok: unknown): tok is ConstraintTokenizer {
  const t = tok as Partial<ConstraintTokenizer> | null;
  return (
    !!t &&
    typeof t.vocabSize === "number" &&
    typeof t.idToToken === "function" &&
    typeof t.byteOf === "function" &&
    typeof t.pieceText === "function" &&
    typeof t.isSpecial === "function"
  );
}

/**
 * The constraint of a response_format for one request, or null for `{type: "text"}`.
 * Throws GenerationError E_INVALID (field "response_format") for a bad or unsupported format.
 * @param o.vocabSize the model's vocabulary (logits per row), the masks' width
 * @param o.stopTokenIds the request's stop ids: allowed exactly when the JSON value is complete
 */
export function createResponseFormatConstraint(
  rf: ResponseFormat | unknown,
  tokenizer: unknown,
  o: { vocabSize: number; stopTokenIds: readonly number[] } & GrammarOptions,
): JsonConstraint | null {
  const grammar = compileResponseFormat(rf, o);
  if (!grammar) return null;
  if (!isConstraintTokenizer(tokenizer))
    throw new GenerationError(
      "response_format needs a tokenizer (token texts for the masks)",
      "E_INVALID",
      "response_format",
    );
  return new JsonConstraint(grammar, TokenVocab.of(tokenizer, o.vocabSize), o.stopTokenIds);
}

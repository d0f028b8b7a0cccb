// Chat prompts: the model's own `chat_template` (tokenizer_config.json) rendered with
// @huggingface/jinja, with the variables transformers' apply_chat_template passes.
import { Template } from "@huggingface/jinja";

export interface ChatTextPart {
  type: "text";
  text: string;
}
/** An image slot; the template emits one `<start_of_image>` for it. Other keys (path, url) ride along. */
export interface ChatImagePart {
  type: "image";
  [key: string]: unknown;
}
export type ChatContentPart = ChatTextPart | ChatImagePart;

export interface ChatMessage {
  /** "system" (first message only), "user", "assistant" (rendered as Gemma's "model"). */
  role: string;
  content: string | ChatContentPart[];
}

export interface ChatTemplateOptions {
  /** End with "<start_of_turn>model\n" so the model answers. Default true. */
  addGenerationPrompt?: boolean;
  /** More template variables (tools, documents, …), as apply_chat_template's **kwargs. */
  variables?: Record<string, unknown>;
}

/** The conversation broke the template's rules, or the template failed; the message says which. */
export class ChatTemplateError extends Error {
  override name = "ChatTemplateError";
}

function checkMessages(messages: unknown): asserts messages is ChatMessage[] {
  if (!Array.isArray(messages) || messages.length === 0)
    throw new ChatTemplateError("messages: expected a non-empty array of {role, content}");
  messages.forEach((m: unknown, i) => {
    const msg = m as ChatMessage;
    if (!msg || typeof msg !== "object" || typeof msg.role !== "string")
      throw new ChatTemplateError(`messages[${i}]: expected {role: string, content}`);
    if (typeof msg.content === "string") return;
    if (!Array.isArray(msg.content))
      throw new ChatTemplateError(`messages[${i}].content: expected a string or an array of parts`);
    msg.content.forEach((p: unknown, j) => {
      const part = p as ChatContentPart;
      if (!part || typeof part !== "object" || typeof part.type !== "string")
        throw new ChatTemplateError(
          `messages[${i}].content[${j}]: expected {type: "text" | "image", …}`,
        );
      if (part.type === "text" && typeof (part as ChatTextPart).text !== "string")
        throw new ChatTemplateError(
          `messages[${i}].content[${j}]: a text part needs "text": string`,
        );
    });
  });
}

/** A compiled chat template plus the special-token variables it may use (bos_token, …). */
export class ChatTemplate {
  private readonly template: Template;

  constructor(
    readonly source: string,
    private readonly tokens: Record<string, string> = {},
  ) {
    try {
      this.template = new Template(source);
    } catch (e) {
      throw new ChatTemplateError(`chat template does not parse: ${(e as Error).message}`);
    }
  }

  /** Renders a conversation to prompt text (Gemma 3: starts with "<bos>"). */
  render(messages: readonly ChatMessage[], opts: ChatTemplateOptions = {}): string {
    checkMessages(messages);
    try {
      return this.template.render({
        ...this.tokens,
        ...opts.variables,
        messages,
        add_generation_prompt: opts.addGenerationPrompt ?? true,
      });
    } catch (e) {
      // raise_exception("Conversation roles must alternate …") lands here with its own message.
      throw new ChatTemplateError(`chat template: ${(e as Error).message}`);
    }
  }
}

/** The chat template source from tokenizer_config.json: a string, or the "default" of a named list. */
export function chatTemplateSource(tokenizerConfig: Record<string, unknown>): string | undefined {
  const t = tokenizerConfig.chat_template;
  if (typeof t === "string") return t;
  if (Array.isArray(t)) {
    const named = t as { name?: unknown; template?: unknown }[];
    const d = named.find((x) => x?.name === "default") ?? named[0];
    if (typeof d?.template === "string") return d.template;
  }
  return undefined;
}

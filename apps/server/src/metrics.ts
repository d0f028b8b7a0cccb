// Prometheus metrics (text exposition format 0.0.4): request counts by endpoint and status, tokens,
// time to first token and inter-token latency histograms, and gauges read from the scheduler at
// scrape time (KV usage, running and waiting sequences). Names follow vLLM's where one exists.
import type { GenerationSummary, SchedulerStats } from "@gemma3/generation";

export class Histogram {
  private readonly counts: number[];
  private sum = 0;
  private count = 0;

  constructor(
    readonly name: string,
    readonly help: string,
    /** upper bounds, seconds, ascending */
    readonly buckets: readonly number[],
  ) {
    this.counts = buckets.map(() => 0);
  }

  observe(v: number): void {
    if (!Number.isFinite(v)) return;
    this.sum += v;
    this.count++;
    for (let i = 0; i < this.buckets.length; i++) if (v <= this.buckets[i]!) this.counts[i]!++;
  }

  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    this.buckets.forEach((b, i) => lines.push(`${this.name}_bucket{le="${b}"} ${this.counts[i]}`));
    lines.push(`${this.name}_bucket{le="+Inf"} ${this.count}`);
    lines.push(`${this.name}_sum ${this.sum}`, `${this.name}_count ${this.count}`);
    return lines.join("\n");
  }
}

const LATENCY = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export class Metrics {
  readonly ttft = new Histogram(
    "gemma3_time_to_first_token_seconds",
    "Time from request to first token.",
    LATENCY,
  );
  readonly interToken = new Histogram(
    "gemma3_inter_token_latency_seconds",
    "Time between streamed tokens.",
    LATENCY,
  );
  readonly e2e = new Histogram(
    "gemma3_e2e_request_latency_seconds",
    "Time from request to its last token.",
    [...LATENCY, 60, 120],
  );
  private readonly requests = new Map<string, number>();
  private promptTokens = 0;
  private generationTokens = 0;
  private readonly finished = new Map<string, number>();
  /** Set when the engine runs with prefix caching: prompts are then looked up in the cache. */
  prefixCaching = false;
  private prefixQueries = 0;
  private prefixHits = 0;

  onRequest(endpoint: string, status: number): void {
    const k = `endpoint="${endpoint}",status="${status}"`;
    this.requests.set(k, (this.requests.get(k) ?? 0) + 1);
  }

  onFinish(s: GenerationSummary): void {
    this.promptTokens += s.usage.promptTokens;
    this.generationTokens += s.usage.completionTokens;
    if (this.prefixCaching) {
      this.prefixQueries += s.usage.promptTokens;
      this.prefixHits += s.usage.cachedTokens;
    }
    this.finished.set(s.finishReason, (this.finished.get(s.finishReason) ?? 0) + 1);
    this.ttft.observe(s.timings.ttftMs / 1000);
    this.e2e.observe(s.timings.totalMs / 1000);
  }

  render(stats: SchedulerStats | null): string {
    const out: string[] = [];
    const counter = (name: string, help: string, rows: [string, number][]) => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} counter`);
      for (const [labels, v] of rows) out.push(`${name}${labels ? `{${labels}}` : ""} ${v}`);
    };
    const gauge = (name: string, help: string, v: number) =>
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} gauge`, `${name} ${v}`);
    counter("gemma3_http_requests_total", "HTTP requests by endpoint and status.", [
      ...this.requests,
    ]);
    counter("gemma3_prompt_tokens_total", "Prompt tokens of finished sequences.", [
      ["", this.promptTokens],
    ]);
    counter("gemma3_generation_tokens_total", "Generated tokens of finished sequences.", [
      ["", this.generationTokens],
    ]);
    // vLLM's prefix_cache_queries / prefix_cache_hits: hit rate = hits / queries, in tokens.
    counter(
      "gemma3_prefix_cache_queries_total",
      "Prompt tokens looked up in the prefix cache (0 without --enable-prefix-caching).",
      [["", this.prefixQueries]],
    );
    counter(
      "gemma3_prefix_cache_hits_total",
      "Prompt tokens whose KV came from the prefix cache.",
      [["", this.prefixHits]],
    );
    counter(
      "gemma3_request_success_total",
      "Finished sequences by finish reason.",
      [...this.finished].map(([r, v]) => [`finished_reason="${r}"`, v]),
    );
    if (stats) {
      gauge("gemma3_num_requests_running", "Sequences in the running batch.", stats.running);
      gauge("gemma3_num_requests_waiting", "Sequences waiting for KV admission.", stats.waiting);
      const kv = stats.kv;
      const used = kv.numPages > 0 ? (kv.numPages - kv.freePages) / kv.numPages : 0;
      gauge("gemma3_kv_cache_usage_perc", "Fraction of global-layer KV pages in use.", used);
      gauge("gemma3_kv_cache_free_pages", "Free global-layer KV pages.", kv.freePages);
      gauge("gemma3_kv_sequences_active", "Sequences holding KV.", kv.sequences);
    }
    out.push(this.ttft.render(), this.interToken.render(), this.e2e.render());
    return out.join("\n") + "\n";
  }
}

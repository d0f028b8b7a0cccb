#!/usr/bin/env python3
"""Tiny random Gemma 3 checkpoints in the hub layout, with float32 goldens from HF transformers.

Runs on the GPU machine (python3 with torch + transformers 5.x; CPU float32, eager attention, so the
numbers are exact float32 reference values). For each fixture it writes, under OUT/NAME/:
  config.json                 the hub's sparse 4.50-style config (what users have on disk)
  model.safetensors           weights in the hub layout (1B: model.*, 4B+: language_model.model.*,
                              vision_tower.vision_model.*, multi_modal_projector.*), no lm_head
  goldens.json                prompt ids, greedy ids, per-position argmax/top-2 margin, shapes
  logits.f32                  float32 [prompt_len, vocab] logits of the prompt (no cache)
  greedy_logits.f32           float32 [24, vocab] logits of each greedy decode step (with cache)
  hidden.f32                  float32 [num_layers + 1, prompt_len, hidden] hidden states (debugging)
HF's init leaves norm weights at zero and linears at std 0.02, which hides bugs ("1 + w", scales):
every norm weight is randomized and linears use std 1/sqrt(fan_in) (FACTS.md, "Testing").

  python3 tools/reference/make_goldens.py OUT_DIR
"""
import json
import os
import sys

import torch
import transformers
from safetensors.torch import save_file

torch.manual_seed(0)
OUT = sys.argv[1] if len(sys.argv) > 1 else "fixtures"
PROMPT_LEN = 40
GREEDY = 24

FIXTURES = {
    # 1B-like: Gemma3ForCausalLM, 1 kv head, head_dim == query_pre_attn_scalar, no RoPE scaling,
    # window 16 < prompt length, 7 layers (layer 5 global, layer 6 local again).
    "tiny-1b": {
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        "vocab_size": 512,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 7,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "head_dim": 32,
        "query_pre_attn_scalar": 32,
        "sliding_window": 16,
        "sliding_window_pattern": 6,
        "rope_theta": 1000000,
        "rope_local_base_freq": 10000,
        "rope_scaling": None,
        "max_position_embeddings": 1024,
        "rms_norm_eps": 1e-06,
        "eos_token_id": [1, 106],
        "torch_dtype": "float32",
    },
    # 27B-like: Gemma3ForConditionalGeneration (hub 4B+ layout), head_dim 16 != scalar 24,
    # linear RoPE scaling 8 on global layers, GQA 4/2, window 12, 8 layers, tiny SigLIP tower.
    "tiny-27b": {
        "architectures": ["Gemma3ForConditionalGeneration"],
        "model_type": "gemma3",
        "mm_tokens_per_image": 4,
        "text_config": {
            "model_type": "gemma3_text",
            "vocab_size": 512,
            "hidden_size": 48,
            "intermediate_size": 96,
            "num_hidden_layers": 8,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "query_pre_attn_scalar": 24,
            "sliding_window": 12,
            "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
            "max_position_embeddings": 1024,
        },
        "vision_config": {
            "model_type": "siglip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 28,
            "patch_size": 14,
            "vision_use_head": False,
        },
        "eos_token_id": [1, 106],
        "torch_dtype": "float32",
    },
}


def randomize(model):
    """Norms ~ U(-0.5, 0.5) (offsets of the (1 + w) scale; post-block norms U(1, 3)); linears ~ N(0, 1/fan_in); embeddings
    ~ N(0, 1/hidden) so that tied logits come out at unit scale."""
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "post_attention_layernorm" in name or "post_feedforward_layernorm" in name:
                # Larger block outputs, so the residual is not dominated by the input embedding and
                # greedy decoding does not just repeat the last token of a tied-embedding model.
                p.copy_(torch.rand(p.shape, generator=g) * 2 + 1.0)
            elif "norm" in name or "layernorm" in name:
                p.copy_(torch.rand(p.shape, generator=g) - 0.5)
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
            elif p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def hub_key(k: str, multimodal: bool) -> str | None:
    """transformers-5 state-dict names -> the hub's published names (None: not saved)."""
    if k == "lm_head.weight" or k.endswith(".lm_head.weight"):
        return None  # tied to the embedding; the hub files have no lm_head
    if not multimodal:
        return k  # Gemma3ForCausalLM: model.* is the 1B hub layout already
    for a, b in (
        ("model.language_model.", "language_model.model."),
        ("model.vision_tower.vision_model.", "vision_tower.vision_model."),
        ("model.vision_tower.", "vision_tower.vision_model."),
        ("model.multi_modal_projector.", "multi_modal_projector."),
    ):
        if k.startswith(a):
            return b + k[len(a):]
    raise ValueError(f"unmapped key {k}")


def main():
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    for name, cfg in FIXTURES.items():
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        config = transformers.AutoConfig.from_pretrained(d)
        multimodal = cfg["model_type"] == "gemma3"
        cls = transformers.Gemma3ForConditionalGeneration if multimodal else transformers.Gemma3ForCausalLM
        model = cls._from_config(config, attn_implementation="eager", torch_dtype=torch.float32).eval()
        randomize(model)
        sd = {}
        for k, v in model.state_dict().items():
            hk = hub_key(k, multimodal)
            if hk is not None:
                sd[hk] = v.contiguous().clone()
        save_file(sd, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})

        text = config.text_config if multimodal else config
        vocab = text.vocab_size
        g = torch.Generator().manual_seed(7)
        prompt = [2] + torch.randint(3, vocab, (PROMPT_LEN - 1,), generator=g).tolist()
        ids = torch.tensor([prompt])
        with torch.no_grad():
            out = model(input_ids=ids, output_hidden_states=True, use_cache=False)
            logits = out.logits[0].float()
            hidden = torch.stack([h[0] for h in out.hidden_states]).float()
            # Greedy decode with HF's cache, token by token, as our runtime does (no eos stop).
            step = model(input_ids=ids, use_cache=True)
            past = step.past_key_values
            nxt = int(step.logits[0, -1].argmax())
            greedy, greedy_logits = [], []
            for _ in range(GREEDY):
                greedy.append(nxt)
                step = model(input_ids=torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
                past = step.past_key_values
                greedy_logits.append(step.logits[0, -1].float())
                nxt = int(step.logits[0, -1].argmax())
            # The same sequence without a cache: the logits of the greedy tokens must agree.
            full = model(input_ids=torch.tensor([prompt + greedy]), use_cache=False).logits[0]
            nocache_err = float((full[PROMPT_LEN:] - torch.stack(greedy_logits)).abs().max())

        top2 = logits.topk(2, dim=-1).values
        logits.numpy().astype("<f4").tofile(os.path.join(d, "logits.f32"))
        torch.stack(greedy_logits).numpy().astype("<f4").tofile(os.path.join(d, "greedy_logits.f32"))
        hidden.numpy().astype("<f4").tofile(os.path.join(d, "hidden.f32"))
        meta = {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "prompt_ids": prompt,
            "greedy_ids": greedy,
            "argmax": logits.argmax(-1).tolist(),
            "top2_margin": (top2[:, 0] - top2[:, 1]).tolist(),
            "vocab": vocab,
            "hidden_size": text.hidden_size,
            "num_layers": text.num_hidden_layers,
            "logits_shape": list(logits.shape),
            "greedy_logits_shape": [GREEDY, vocab],
            "hidden_shape": list(hidden.shape),
            "cache_vs_nocache_max_abs": nocache_err,
            "logits_abs_max": float(logits.abs().max()),
            "logits_std": float(logits.std()),
        }
        with open(os.path.join(d, "goldens.json"), "w") as f:
            json.dump(meta, f)
        print(f"{name}: {sum(v.numel() for v in sd.values())} params, logits std {meta['logits_std']:.3f}, "
              f"greedy {greedy}, cache vs no-cache {nocache_err:.2e}")


if __name__ == "__main__":
    main()

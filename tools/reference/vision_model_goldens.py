#!/usr/bin/env python3
"""Multimodal goldens from HF transformers: image features and logits of prompts with images.

Runs on the GPU machine (python3 with torch + transformers 5.x; CPU float32, eager attention). For
each fixture it writes, under OUT/NAME/:
  pixel_values.f32     float32 [2, 3, S, S] seeded uniform values in [-1, 1) (two images)
  vision_hidden.f32    float32 [2, patches, vision hidden] SigLIP last_hidden_state
  image_features.f32   float32 [2, mm_tokens, text hidden] Gemma3Model.get_image_features
  mm_logits.f32        float32 [prompt_len, vocab] logits of a prompt holding both images
  mm_greedy_logits.f32 float32 [GREEDY, vocab] logits of each greedy step (HF cache)
  goldens.json         prompt ids, token_type_ids, greedy ids, argmax/top-2 margin, shapes
Fixtures:
  tiny-27b  the committed packages/model/test/fixtures/tiny-27b (REPO/...): 2x2 patches pooled to
            2x2 tokens (kernel 1), image_token_index 262144 outside its 512-token vocabulary (HF
            embeds it as PAD, 0), no boi/eoi (also outside the vocabulary).
  tiny-mm   a new Gemma3ForConditionalGeneration written here, beside its goldens, in the hub
            layout (config.json + model.safetensors): 8x8 patches avg-pooled 4x4 to 2x2 tokens (as 64x64 -> 16x16 at
            real scale), vision head_dim 72 (So400m's), 2 vision layers, boi/eoi/image ids inside
            the vocabulary, as in the real checkpoints.
The prompt is [bos] text [boi] image*T [eoi] text [boi] image*T [eoi] text, with token_type_ids 1
on the image tokens (HF's bidirectional image blocks).

  python3 tools/reference/vision_model_goldens.py packages/vision/test/fixtures/mm [REPO_ROOT]
"""
import json
import os
import sys

import torch
import transformers
from safetensors.torch import load_file, save_file

OUT = sys.argv[1] if len(sys.argv) > 1 else "vision-goldens"
REPO = sys.argv[2] if len(sys.argv) > 2 else "."
GREEDY = 8

TINY_MM = {
    "architectures": ["Gemma3ForConditionalGeneration"],
    "model_type": "gemma3",
    "mm_tokens_per_image": 4,
    "boi_token_index": 500,
    "eoi_token_index": 501,
    "image_token_index": 502,
    "text_config": {
        "model_type": "gemma3_text",
        "vocab_size": 512,
        "hidden_size": 48,
        "intermediate_size": 96,
        "num_hidden_layers": 6,
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
        "hidden_size": 144,
        "intermediate_size": 288,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 56,
        "patch_size": 7,
        "layer_norm_eps": 1e-6,
        "vision_use_head": False,
    },
    "eos_token_id": [1, 106],
    "torch_dtype": "float32",
}


def hub_key(k: str) -> str | None:
    """transformers-5 state-dict names -> the hub's published names (None: tied lm_head)."""
    if k == "lm_head.weight":
        return None
    for a, b in (
        ("model.language_model.", "language_model.model."),
        ("model.vision_tower.vision_model.", "vision_tower.vision_model."),
        ("model.vision_tower.", "vision_tower.vision_model."),
        ("model.multi_modal_projector.", "multi_modal_projector."),
    ):
        if k.startswith(a):
            return b + k[len(a):]
    raise ValueError(f"unmapped key {k}")


def randomize(model):
    """As make_goldens.py: norms ~ U(-0.5, 0.5) ((1 + w) offsets; LayerNorm weights around 1),
    post-block norms U(1, 3), linears ~ N(0, 1/fan_in), embeddings N(0, 1/hidden), biases N(0, 0.1)."""
    g = torch.Generator().manual_seed(4321)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "post_attention_layernorm" in name or "post_feedforward_layernorm" in name:
                p.copy_(torch.rand(p.shape, generator=g) * 2 + 1.0)
            elif "vision" in name and ("layer_norm" in name or "post_layernorm" in name):
                # SigLIP LayerNorm: w * x_hat + b (no "1 +"), so weights around 1.
                if name.endswith("weight"):
                    p.copy_(torch.rand(p.shape, generator=g) + 0.5)
                else:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            elif "norm" in name:
                p.copy_(torch.rand(p.shape, generator=g) - 0.5)
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
            elif "mm_input_projection_weight" in name:
                # x·W with W [vision hidden, text hidden]: fan-in is dim 0; scaled so image rows
                # sit at the scale of the (sqrt(hidden)-scaled) text embeddings.
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[0] ** 0.5)
            elif "position_embedding" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            elif p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def build(name):
    """The fixture's model (float32, eager) with its weights, and its directory."""
    if name == "tiny-27b":
        d = os.path.join(REPO, "packages/model/test/fixtures/tiny-27b")
        config = transformers.AutoConfig.from_pretrained(d)
        model = transformers.Gemma3ForConditionalGeneration._from_config(
            config, attn_implementation="eager", torch_dtype=torch.float32
        ).eval()
        stored = load_file(os.path.join(d, "model.safetensors"))
        sd = {}
        for k in model.state_dict():
            hk = hub_key(k)
            if hk is not None:
                sd[k] = stored[hk]
        missing, unexpected = model.load_state_dict(sd, strict=False)
        assert set(missing) <= {"lm_head.weight"} and not unexpected, (missing, unexpected)
        model.tie_weights()
        return model, config, None
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(TINY_MM, f, indent=2)
    config = transformers.AutoConfig.from_pretrained(d)
    torch.manual_seed(0)
    model = transformers.Gemma3ForConditionalGeneration._from_config(
        config, attn_implementation="eager", torch_dtype=torch.float32
    ).eval()
    randomize(model)
    sd = {}
    for k, v in model.state_dict().items():
        hk = hub_key(k)
        if hk is not None:
            sd[hk] = v.contiguous().clone()
    save_file(sd, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    return model, config, d


def token_id(config, *names):
    for n in names:
        v = getattr(config, n, None)
        if v is not None:
            return int(v)
    raise KeyError(names)


def main():
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    for name in ["tiny-27b", "tiny-mm"]:
        model, config, _ = build(name)
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        text, vision = config.text_config, config.vision_config
        vocab = text.vocab_size
        S = vision.image_size
        T = config.mm_tokens_per_image
        img = token_id(config, "image_token_id", "image_token_index")
        boi = token_id(config, "boi_token_id", "boi_token_index")
        eoi = token_id(config, "eoi_token_id", "eoi_token_index")

        g = torch.Generator().manual_seed(11)
        pixels = torch.rand((2, 3, S, S), generator=g) * 2 - 1
        block = ([boi] if boi < vocab else []) + [img] * T + ([eoi] if eoi < vocab else [])
        text_ids = lambda n: torch.randint(3, 400, (n,), generator=g).tolist()
        prompt = [2] + text_ids(7) + block + text_ids(6) + block + text_ids(5)
        types = [1 if t == img else 0 for t in prompt]
        ids = torch.tensor([prompt])
        tt = torch.tensor([types])

        with torch.no_grad():
            hidden = model.model.vision_tower(pixel_values=pixels).last_hidden_state
            feats = model.model.multi_modal_projector(hidden)
            out = model(input_ids=ids, pixel_values=pixels, token_type_ids=tt, use_cache=False)
            logits = out.logits[0].float()
            # Greedy with HF's cache: the prompt (with images) once, then one token per step.
            step = model(input_ids=ids, pixel_values=pixels, token_type_ids=tt, use_cache=True)
            past = step.past_key_values
            nxt = int(step.logits[0, -1].argmax())
            greedy, greedy_logits = [], []
            for _ in range(GREEDY):
                greedy.append(nxt)
                step = model(input_ids=torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
                past = step.past_key_values
                greedy_logits.append(step.logits[0, -1].float())
                nxt = int(step.logits[0, -1].argmax())
            full = model(
                input_ids=torch.tensor([prompt + greedy]),
                pixel_values=pixels,
                token_type_ids=torch.tensor([types + [0] * GREEDY]),
                use_cache=False,
            ).logits[0]
            nocache_err = float((full[len(prompt):] - torch.stack(greedy_logits)).abs().max())
            # How much the image blocks' bidirectional mask matters (a test that could not fail
            # otherwise): the same forward with every token causal.
            causal = model(input_ids=ids, pixel_values=pixels, use_cache=False).logits[0]
            bidir_effect = float((causal - logits).abs().max())

        top2 = logits.topk(2, dim=-1).values
        pixels.numpy().astype("<f4").tofile(os.path.join(d, "pixel_values.f32"))
        hidden.numpy().astype("<f4").tofile(os.path.join(d, "vision_hidden.f32"))
        feats.numpy().astype("<f4").tofile(os.path.join(d, "image_features.f32"))
        logits.numpy().astype("<f4").tofile(os.path.join(d, "mm_logits.f32"))
        torch.stack(greedy_logits).numpy().astype("<f4").tofile(os.path.join(d, "mm_greedy_logits.f32"))
        meta = {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            # the checkpoint: the committed tiny-27b, or this directory (tiny-mm)
            "model_dir": "packages/model/test/fixtures/tiny-27b" if name == "tiny-27b" else None,
            "pixel_values_shape": list(pixels.shape),
            "vision_hidden_shape": list(hidden.shape),
            "image_features_shape": list(feats.shape),
            "prompt_ids": prompt,
            "token_type_ids": types,
            "image_token_id": img,
            "greedy_ids": greedy,
            "argmax": logits.argmax(-1).tolist(),
            "top2_margin": (top2[:, 0] - top2[:, 1]).tolist(),
            "vocab": vocab,
            "cache_vs_nocache_max_abs": nocache_err,
            "bidirectional_effect_max_abs": bidir_effect,
            "features_abs_max": float(feats.abs().max()),
            "logits_std": float(logits.std()),
        }
        with open(os.path.join(d, "goldens.json"), "w") as f:
            json.dump(meta, f)
        print(f"{name}: features {list(feats.shape)} |max| {meta['features_abs_max']:.3f}, logits std "
              f"{meta['logits_std']:.3f}, greedy {greedy}, cache vs no-cache {nocache_err:.2e}, "
              f"bidirectional effect {bidir_effect:.3e}")


if __name__ == "__main__":
    main()

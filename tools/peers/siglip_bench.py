#!/usr/bin/env python3
"""HF's SigLIP-So400m vision tower + Gemma 3 projector at real shape, bf16 on CUDA: writes a
random-weight checkpoint (hub layout, vision + projector only) for our encoder, times HF's
tower + projector on one 896x896 image (median of N after warm-up; SDPA with torch's default
backend choice, then each backend forced), and saves the pixels and HF's features so our run
(packages/vision/bench/siglip_bench.mjs) can compare.

  python3 tools/peers/siglip_bench.py DIR [--runs 20] > hf.json
"""
import argparse
import json
import os
import statistics
import time

import torch
import transformers
from safetensors.torch import save_file
from transformers.models.gemma3.modeling_gemma3 import Gemma3MultiModalProjector
from transformers.models.siglip.modeling_siglip import SiglipVisionModel

VISION = {
    "model_type": "siglip_vision_model",
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "image_size": 896,
    "patch_size": 14,
    "layer_norm_eps": 1e-6,
    "vision_use_head": False,
}
TEXT = {"model_type": "gemma3_text", "hidden_size": 2560, "intermediate_size": 10240,
        "num_hidden_layers": 34, "sliding_window": 1024,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"}}


def timed(fn, runs, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": statistics.median(ts), "min_ms": min(ts), "runs": runs}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--runs", type=int, default=20)
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    cfg = {"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
           "mm_tokens_per_image": 256, "text_config": TEXT, "vision_config": VISION}
    with open(os.path.join(a.dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    config = transformers.AutoConfig.from_pretrained(a.dir)
    torch.manual_seed(0)
    tower = SiglipVisionModel._from_config(config.vision_config, attn_implementation="sdpa")
    proj = Gemma3MultiModalProjector(config)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        # HF's init leaves LayerNorms at 1/0 and the projector at zeros: randomize what matters.
        for n, p in list(tower.named_parameters()) + list(proj.named_parameters()):
            if "norm" in n and n.endswith("weight"):
                p.copy_(torch.rand(p.shape, generator=g) * 0.5 + 0.75)
            elif n.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
            elif "mm_input_projection_weight" in n:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[0] ** 0.5)
            elif p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
    tower = tower.to("cuda", torch.bfloat16).eval()
    proj = proj.to("cuda", torch.bfloat16).eval()
    # The hub layout: vision_tower.vision_model.* (5.x may drop the inner "vision_model.").
    sd = {"vision_tower." + (k if k.startswith("vision_model.") else "vision_model." + k): v.contiguous()
          for k, v in tower.state_dict().items()}
    sd.update({"multi_modal_projector." + k: v.contiguous() for k, v in proj.state_dict().items()})
    save_file({k: v.cpu() for k, v in sd.items()}, os.path.join(a.dir, "model.safetensors"))

    pixels = torch.rand((1, 3, 896, 896), generator=g) * 2 - 1
    pixels.numpy().astype("<f4").tofile(os.path.join(a.dir, "pixel_values.f32"))
    pv = pixels.to("cuda")

    def run():
        with torch.no_grad():
            h = tower(pixel_values=pv.to(torch.bfloat16)).last_hidden_state
            return proj(h)

    feats = run().float().cpu()
    feats.numpy().astype("<f4").tofile(os.path.join(a.dir, "hf_features.f32"))
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
           "transformers": transformers.__version__, "shape": "So400m 27x1152 (16 heads, d 72), "
           "896px / 14 = 4096 patches, pool 4x4 -> 256 x 2560", "default": timed(run, a.runs)}
    from torch.nn.attention import SDPBackend, sdpa_kernel
    for name, be in [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                     ("efficient", SDPBackend.EFFICIENT_ATTENTION)]:
        try:
            with sdpa_kernel([be]):
                res[name] = timed(run, a.runs)
        except Exception as e:  # a backend may refuse head_dim 72
            res[name] = {"error": str(e)[:200]}
    # The attention share: 27 x SDPA over [1, 16, 4096, 72] bf16 (default backend, and each).
    q, k, v = (torch.randn(1, 16, 4096, 72, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    def attn():
        for _ in range(27):
            torch.nn.functional.scaled_dot_product_attention(q, k, v)
    res["attention_27_layers_default"] = timed(attn, a.runs)
    for name, be in [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)]:
        try:
            with sdpa_kernel([be]):
                res["attention_27_layers_" + name] = timed(attn, a.runs)
        except Exception as e:
            res["attention_27_layers_" + name] = {"error": str(e)[:200]}
    print(json.dumps(res))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""ViT parity fixtures (tests/test_vit.c, tests/test_classify.sh): small ViTs
built locally by transformers from random configs (nothing downloaded).

Writes, from the repository root:
  tests/data/vit-tiny/       ViTForImageClassification, F32, 5 labels, with
                             preprocessor_config.json (ViTImageProcessor)
  tests/data/vit-tiny-f16/   the same weights in F16
  tests/data/vit-model-bf16/ a ViTModel (encoder + pooler, no "vit." prefix,
                             no classifier), BF16, qkv_bias false
  tests/data/vit_expect.safetensors
      pixels_<img>_32      F32 [3, 32, 32]  ViTImageProcessorPil's output
      logits_32            F32 [n, 5]  vit-tiny on the images at 32 x 32
      logits_40x48         F32 [n, 5]  at 40 x 48 (height x width) with
                                       interpolate_pos_encoding=True
      logits_f16_32        F32 [n, 5]  vit-tiny-f16 (its F16 weights in F32)
      pooled_bf16_32       F32 [n, E]  vit-model-bf16's pooler output
      hidden_bf16_48       F32 [n, 37, E] its last hidden state at 48 x 48
                                       (interpolated)
      attn_32              F32 [L, H, 17, 17] the attention of image 0
  tests/data/vit-tiny-top3.tsv  the 3 most probable labels of each image at
                             32 x 32 with their probabilities (softmax of
                             transformers' logits): IMAGE<TAB>LABEL<TAB>P
The images are tests/data/image/{china.jpg, flower.jpg, rgba8.png, gray.jpg}
(scripts/make_image_fixtures.py). Weights are drawn wider than ViT's own
initialisation (std 0.02) so the logits are far from zero and differ by
image."""
import os

import numpy as np
import torch
from PIL import Image
from safetensors.numpy import save_file
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil, ViTModel

IMAGES = ["china.jpg", "flower.jpg", "rgba8.png", "gray.jpg"]
LABELS = ["tench", "goldfish", "great white shark", "tiger shark", "hammerhead"]


def widen(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layernorm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))


def pixels(h, w):
    proc = ViTImageProcessorPil(size={"height": h, "width": w}, do_convert_rgb=True,
                                image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    ims = [Image.open(os.path.join("tests/data/image", n)) for n in IMAGES]
    return proc, torch.tensor(proc(ims, return_tensors="np")["pixel_values"])


def main():
    torch.manual_seed(0)
    cfg = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=64, num_labels=len(LABELS),
                    id2label=dict(enumerate(LABELS)), label2id={l: i for i, l in enumerate(LABELS)},
                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                    layer_norm_eps=1e-6)
    model = ViTForImageClassification(cfg).eval()
    widen(model, 1)
    proc, px32 = pixels(32, 32)
    _, px40 = pixels(40, 48)
    out = {}
    with torch.no_grad():
        out["logits_32"] = model(px32).logits
        out["logits_40x48"] = model(px40, interpolate_pos_encoding=True).logits
    model.set_attn_implementation("eager")  # the probabilities are returned by eager only
    with torch.no_grad():
        att = model(px32[:1], output_attentions=True).attentions
        out["attn_32"] = torch.stack([a[0] for a in att])
    model.set_attn_implementation("sdpa")
    model.save_pretrained("tests/data/vit-tiny")
    proc.save_pretrained("tests/data/vit-tiny")
    half = ViTForImageClassification(cfg).eval()
    half.load_state_dict(model.state_dict())
    half.half()
    half.save_pretrained("tests/data/vit-tiny-f16")
    proc.save_pretrained("tests/data/vit-tiny-f16")
    half.float()
    with torch.no_grad():
        out["logits_f16_32"] = half(px32).logits

    bcfg = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=48, qkv_bias=False,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    enc = ViTModel(bcfg, add_pooling_layer=True).eval()
    widen(enc, 2)
    enc.to(torch.bfloat16).to(torch.float32)  # the weights as BF16 holds them
    _, px48 = pixels(48, 48)
    with torch.no_grad():
        out["pooled_bf16_32"] = enc(px32).pooler_output
        out["hidden_bf16_48"] = enc(px48, interpolate_pos_encoding=True).last_hidden_state
    enc.to(torch.bfloat16).save_pretrained("tests/data/vit-model-bf16")
    proc.save_pretrained("tests/data/vit-model-bf16")
    for i, n in enumerate(IMAGES):
        out[f"pixels_{i}_32"] = px32[i]
    save_file({k: np.ascontiguousarray(v.float().numpy()) for k, v in out.items()},
              "tests/data/vit_expect.safetensors")
    # what `attn classify --top-k 3` must print (tests/test_classify.sh)
    with open("tests/data/vit-tiny-top3.tsv", "w") as f:
        for i, n in enumerate(IMAGES):
            p = torch.softmax(out["logits_32"][i].double(), 0)
            for k in torch.argsort(p, descending=True)[:3]:
                f.write(f"{n}\t{LABELS[int(k)]}\t{float(p[k]):.6f}\n")
    print({k: tuple(v.shape) for k, v in out.items()})
    print("logits_32", out["logits_32"])


if __name__ == "__main__":
    main()

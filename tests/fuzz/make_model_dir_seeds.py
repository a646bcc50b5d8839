#!/usr/bin/env python3
"""Seeds of fuzz_model_dir (tests/fuzz/corpus/model_dir): model directories
as one input each, the files in fuzz_model_dir.c's order cut at b"\\x01\\x02":
config.json, modules.json, sentence_bert_config.json, 1_Pooling/config.json,
tokenizer_config.json, vocab.txt, model.safetensors. Built from the tiny
BERT of tests/fixtures/tiny_bert.py, so a seed that opens reaches the
weights and an embedding. Run: python3 tests/fuzz/make_model_dir_seeds.py"""
import json, os, subprocess, sys, tempfile

here = os.path.dirname(os.path.abspath(__file__))
out = os.path.join(here, "corpus", "model_dir")
os.makedirs(out, exist_ok=True)
with tempfile.TemporaryDirectory() as t:
    subprocess.run([sys.executable, os.path.join(here, "..", "fixtures", "tiny_bert.py"), t],
                   check=True, stdout=subprocess.DEVNULL)
    def rd(d, f):
        p = os.path.join(t, d, f)
        return open(p, "rb").read() if os.path.exists(p) else None
    cfg, vocab, st = rd("f32", "config.json"), rd("f32", "vocab.txt"), rd("f32", "model.safetensors")
    modules = json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize",
         "type": "sentence_transformers.models.Normalize"}]).encode()
    pooling = json.dumps({"word_embedding_dimension": 4, "pooling_mode_cls_token": False,
                          "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
                          "pooling_mode_mean_sqrt_len_tokens": False}).encode()
    pool_cls = json.dumps({"word_embedding_dimension": 4,
                           "pooling_mode_cls_token": True}).encode()
    sbert = json.dumps({"max_seq_length": 8, "do_lower_case": False}).encode()
    tokcfg = open(os.path.join(here, "..", "data", "tokenizer", "tokenizer_config.json"),
                  "rb").read()
    seeds = {
        "full": [cfg, modules, sbert, pooling, tokcfg, vocab, st],
        "bare": [cfg, None, None, None, None, vocab, st],
        "cls_pooling": [cfg, modules, sbert, pool_cls, tokcfg, vocab, st],
        "config_only": [cfg],
        "tokenizer_only": [b"", b"", b"", b"", tokcfg, vocab],
        "f16": [rd("f16", "config.json"), None, None, None, None, rd("f16", "vocab.txt"),
                rd("f16", "model.safetensors")],
        "prefixed": [rd("prefixed", "config.json"), None, None, None, None,
                     rd("prefixed", "vocab.txt"), rd("prefixed", "model.safetensors")],
        "gpt": [rd("gpt", "config.json")],
        "modules_escape": [cfg, json.dumps([{"type": "Pooling", "path": "../../etc"}]).encode()],
    }
    for name, parts in seeds.items():
        # an empty part is an absent file
        while parts and parts[-1] is None:
            parts.pop()
        data = b"\x01\x02".join(p if p is not None else b"" for p in parts)
        open(os.path.join(out, name), "wb").write(data)
print(f"{len(seeds)} seeds in {out}")

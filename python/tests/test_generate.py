"""attn.Model.generate and classify: the same tokens, text and labels as the
CLI (`attn generate`, `attn classify`) and as the transformers fixtures it is
tested against (tests/data/gpt2-tiny/generate.tsv and gen_<i>.txt, written by
scripts/make_gpt_fixtures.py; tests/data/vit-tiny-top3.tsv); sampling is
repeatable by seed; bad arguments raise clear errors."""

import os
import shutil
import subprocess

import numpy as np
import pytest

import attn
from conftest import DATA, REPO, need

GPT = DATA / "gpt2-tiny"
LLAMA = DATA / "llama-tiny"
VIT = DATA / "vit-tiny"


def cli():
    exe = os.environ.get("ATTN") or shutil.which("attn") or str(REPO / "build" / "attn")
    need(os.access(exe, os.X_OK), "the attn CLI (set ATTN=<path>)")
    return exe


def fixture_rows(d):
    rows = []
    for line in (d / "generate.tsv").read_text(encoding="utf-8").split("\n"):
        if line:
            text, pids, gen = line.split("\t")
            rows.append((text, [int(x) for x in pids.split()], [int(x) for x in gen.split()]))
    assert len(rows) >= 4
    return rows


@pytest.fixture(scope="module")
def gpt():
    return attn.Model.open(GPT)


@pytest.fixture(scope="module")
def vit():
    return attn.Model.open(VIT)


@pytest.mark.parametrize("d", [GPT, LLAMA], ids=["gpt2", "llama"])
def test_greedy_ids_equal_transformers(d):
    m = attn.Model.open(d)
    for text, pids, gen in fixture_rows(d):
        assert m.tokenize(text) == pids, text
        assert m.generate(pids, 64, ignore_eos=True) == gen, text
        assert m.generate(pids, 64, ignore_eos=True, threads=1) == gen, text


def test_greedy_text_equals_transformers_decode(gpt):
    for i, (text, _, _) in enumerate(fixture_rows(GPT)):
        want = (GPT / ("gen_%d.txt" % i)).read_bytes().decode("utf-8")
        assert gpt.generate(text, 64, ignore_eos=True) == want, text


@pytest.mark.parametrize("kw,flags", [
    (dict(temperature=0.0), ["--temperature", "0"]),
    (dict(temperature=1.0, seed=7), ["--temperature", "1", "--seed", "7"]),
    (dict(temperature=0.8, top_k=20, top_p=0.9, seed=123),
     ["--temperature", "0.8", "--top-k", "20", "--top-p", "0.9", "--seed", "123"]),
])
def test_equals_the_cli(gpt, kw, flags):
    exe = cli()
    for text, pids, _ in fixture_rows(GPT)[:3]:
        base = [exe, "generate", "--model", str(GPT), "--max-new-tokens", "40", *flags]
        r = subprocess.run(base + ["--prompt-ids", ",".join(map(str, pids)), "--ids"],
                           capture_output=True, text=True, check=True)
        want_ids = [int(x) for x in r.stdout.split()]
        assert gpt.generate(pids, 40, **kw) == want_ids, (text, kw)
        r = subprocess.run(base + ["--prompt", text], capture_output=True, check=True)
        want = r.stdout.decode("utf-8")
        assert want.endswith("\n")
        assert gpt.generate(text, 40, **kw) == want[:-1], (text, kw)


def test_stop_string_equals_the_cli(gpt):
    text = fixture_rows(GPT)[0][0]
    full = gpt.generate(text, 64, ignore_eos=True)
    stop = full[20:23]
    got = gpt.generate(text, 64, stop=stop, ignore_eos=True)
    assert got == full[:full.find(stop) + len(stop)] and len(got) < len(full)
    r = subprocess.run([cli(), "generate", "--model", str(GPT), "--prompt", text, "--temperature",
                        "0", "--ignore-eos", "--stop", stop], capture_output=True, check=True)
    assert got + "\n" == r.stdout.decode("utf-8")
    # the stop string ends generation early: fewer tokens than asked for
    assert len(gpt.tokenize(got)) < 64


def test_greedy_is_deterministic_and_sampling_repeats_by_seed(gpt):
    pids = fixture_rows(GPT)[1][1]
    g = gpt.generate(pids, 32, ignore_eos=True)
    assert all(gpt.generate(pids, 32, ignore_eos=True, threads=t) == g for t in (1, 2))
    a = gpt.generate(pids, 32, temperature=1.0, seed=5, ignore_eos=True)
    assert gpt.generate(pids, 32, temperature=1.0, seed=5, ignore_eos=True, threads=1) == a
    b = gpt.generate(pids, 32, temperature=1.0, seed=6, ignore_eos=True)
    assert a != b  # a tiny random model's distribution is wide: other seeds, other tokens
    assert len(a) == len(b) == 32
    assert gpt.generate(pids, 0) == []
    # top_k = 1 is greedy whatever the temperature and seed
    assert gpt.generate(pids, 32, temperature=2.0, top_k=1, seed=9, ignore_eos=True) == g


def test_bad_arguments(gpt, vit):
    pids = [268, 453]
    for kw, word in [(dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"),
                     (dict(top_p=float("nan")), "top_p"), (dict(temperature=-0.1), "temperature"),
                     (dict(temperature=float("inf")), "temperature"), (dict(top_k=-1), "top_k"),
                     (dict(max_new_tokens=-1), "max_new_tokens"), (dict(seed=-1), "seed")]:
        with pytest.raises(ValueError, match=word):
            gpt.generate(pids, **kw)
    with pytest.raises(ValueError, match="empty"):
        gpt.generate([])
    with pytest.raises(ValueError, match="not a token id"):
        gpt.generate([1, -3])
    with pytest.raises(ValueError):  # the library's message: an id out of range
        gpt.generate([gpt.vocab_size])
    with pytest.raises(ValueError, match="n_positions|positions"):
        gpt.generate(pids, 100000)
    with pytest.raises(ValueError, match="not a decoder"):
        vit.generate("x")
    with pytest.raises(ValueError, match="not an image classifier"):
        gpt.classify(str(DATA / "image" / "china.jpg"))
    with pytest.raises(ValueError, match="top_k"):
        vit.classify(str(DATA / "image" / "china.jpg"), top_k=0)
    with pytest.raises(ValueError, match="uint8"):
        vit.classify(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        vit.classify(np.zeros((4, 4), np.uint8))
    with pytest.raises(OSError):
        vit.classify(str(DATA / "image" / "no-such.png"))
    with pytest.raises(ValueError):  # not a PNG or JPEG: the decoder's message
        vit.classify(str(VIT / "config.json"))
    with pytest.raises(ValueError, match="no tokenizer"):
        vit.tokenize("x")


def top3():
    rows = {}
    for line in (DATA / "vit-tiny-top3.tsv").read_text(encoding="utf-8").split("\n"):
        if line:
            f, label, p = line.split("\t")
            rows.setdefault(f, []).append((label, float(p)))
    return rows


def test_classify_equals_the_fixture_and_the_cli(vit):
    want = top3()
    files = list(want)
    got = vit.classify([DATA / "image" / f for f in files], top_k=3)
    for f, g in zip(files, got):
        assert [l for l, _ in g] == [l for l, _ in want[f]], f
        assert np.allclose([p for _, p in g], [p for _, p in want[f]], atol=2e-6), f
    r = subprocess.run([cli(), "classify", "--model", str(VIT), "--top-k", "5", *files],
                       cwd=DATA / "image", capture_output=True, text=True, check=True)
    cli_rows = {}
    for line in r.stdout.split("\n"):
        if line:
            f, label, p = line.split("\t")
            cli_rows.setdefault(f, []).append((label, float(p)))
    for f, g in zip(files, vit.classify([str(DATA / "image" / f) for f in files])):
        assert len(g) == 5
        assert [l for l, _ in g] == [l for l, _ in cli_rows[f]], f
        assert np.allclose([p for _, p in g], [p for _, p in cli_rows[f]], atol=1e-6), f
    # one image gives one list; probabilities are sorted and a full top_k sums to 1
    one = vit.classify(DATA / "image" / files[0], top_k=1000)
    assert len(one) == len(vit._labels) and abs(sum(p for _, p in one) - 1) < 1e-9
    assert all(a[1] >= b[1] for a, b in zip(one, one[1:]))


def test_classify_pixels_equal_the_file():
    # an RGB PNG decodes to exactly its pixels: feed those as an array
    v = attn.Model.open(VIT)
    png = DATA / "image" / "rgb8.png"
    try:
        from PIL import Image
    except ImportError:
        need(False, "PIL (to read the PNG's pixels)")
    px = np.asarray(Image.open(png).convert("RGB"))
    a = v.classify(str(png), top_k=5)
    b = v.classify(px, top_k=5)
    c = v.classify(px[::-1, :, :][::-1], top_k=5)  # a non-contiguous view is copied
    assert [l for l, _ in a] == [l for l, _ in b] == [l for l, _ in c]
    assert np.allclose([p for _, p in a], [p for _, p in b], atol=1e-7)
    d = v.classify(np.ascontiguousarray(px[:, ::-1]), top_k=5)  # a different image
    assert d != b


@pytest.mark.parametrize("d", [GPT, LLAMA], ids=["gpt2", "llama"])
def test_bf16_weights_equal_the_cli(d):
    """Model.open(weights="bf16") generates what `attn generate --weights
    bf16` does, and bad values or model types are ValueErrors."""
    m = attn.Model.open(d, weights="bf16")
    exe = cli()
    for text, pids, _ in fixture_rows(d)[:2]:
        r = subprocess.run([exe, "generate", "--model", str(d), "--max-new-tokens", "32",
                            "--temperature", "0", "--ignore-eos", "--weights", "bf16",
                            "--prompt-ids", ",".join(map(str, pids)), "--ids"],
                           capture_output=True, text=True, check=True)
        want = [int(x) for x in r.stdout.split()]
        assert len(want) == 32
        assert m.generate(pids, 32, ignore_eos=True) == want, text


def test_bf16_weights_bad():
    for bad in ("bf", "fp16", "BF16", None):
        with pytest.raises(ValueError, match="weights must be 'f32' or 'bf16'"):
            attn.Model.open(GPT, weights=bad)
    with pytest.raises(ValueError, match="bf16 weights are an option of gpt2 and llama"):
        attn.Model.open(VIT, weights="bf16")
    assert attn.Model.open(GPT, weights="f32").generate([1, 2, 3], 4) == \
        attn.Model.open(GPT).generate([1, 2, 3], 4)

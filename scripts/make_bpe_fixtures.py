#!/usr/bin/env python3
"""Byte-level BPE fixtures for tests/test_bpe.c (tests/data/bpe/).

Trains small byte-level BPE tokenizers with the `tokenizers` library on
Debian's license texts (/usr/share/common-licenses, nothing is downloaded), saves them the way
Hugging Face does, and writes what Hugging Face gives for a set of texts:

  gpt2/tokenizer.json         GPT-2 style: ByteLevel pre-tokenizer (GPT-2's
                              regex), <|endoftext|> as the special token
  gpt2/vocab.json, merges.txt the same vocabulary in the older two-file form
                              (GPT2TokenizerFast.save_pretrained)
  gpt2_legacy/tokenizer.json  the same with merges written as "a b" strings
  gpt2_prefix/tokenizer.json  the same with add_prefix_space = true
  llama3/tokenizer.json       Llama-3 style: Split(Llama-3's regex) then
                              ByteLevel without regex, ignore_merges, a BOS
                              added by a TemplateProcessing post-processor
  qwen2/tokenizer.json        the Llama-3 file with Qwen2's regex (single
                              digits instead of groups of three) and its NFC
                              normalizer
  gpt2_added/tokenizer.json   GPT-2 with added tokens: <mask> (special,
                              lstrip), xyzzy (rstrip) and Hello (not special)
  cases.txt                   per tokenizer and text: HF's ids with and
                              without special tokens, and HF's decode
  decode.txt                  id sequences (including ones whose bytes are
                              not UTF-8) and HF's decode of them
  random.txt                  HF's ids for 300 random strings over characters
                              at the regexes' edges, per tokenizer
  classes.txt                 the class (L letter, N number, S white space,
                              O other) the reference's regex engine gives
                              every code point, as ranges "lo hi class"

Run from the repository root: python3 scripts/make_bpe_fixtures.py
"""
import glob
import json
import os
import shutil

from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors,
                        trainers)

OUT = os.environ.get("BPE_FIXTURE_DIR", "tests/data/bpe")  # elsewhere: to compare
LLAMA3_PAT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
              r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PAT = LLAMA3_PAT.replace(r"\p{N}{1,3}", r"\p{N}")

# Some text beyond English so that merges exist for accents, CJK and emoji.
EXTRA = [
    "Café, naïve, über, façade, jalapeño, résumé, crème brûlée, Ångström, smörgåsbord.",
    "Ελληνικά γράμματα, русский язык, עברית, العربية, हिन्दी, ไทย.",
    "你好，世界！今天天气很好。我们一起学习自然语言处理。東京は日本の首都です。한국어 문장입니다.",
    "Emoji: 😀 😃 😄 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ 🚀✨",
    "It's, I'm, you're, we've, they'll, he'd, IT'S, WE'LL, She'S, don't, can't.",
    "Numbers: 0 12 345 6789 1234567890 3.14159 2026-11-30 1,000,000 ½ ² Ⅻ ٣",
]


def corpus_lines():
    # Debian's license texts (package base-files, on every Debian system):
    # fixed text, so that running this script again gives the same files
    files = sorted(glob.glob("/usr/share/common-licenses/*"))
    lines = []
    for f in files:
        if os.path.isfile(f) and not os.path.islink(f):
            with open(f, encoding="utf-8") as fh:
                lines.extend(fh.read().splitlines())
    assert lines, "needs /usr/share/common-licenses (Debian's base-files)"
    return lines + EXTRA * 20


def train(pre, vocab_size, specials):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus_lines(), trainer)
    return tok


def save(tok, name):
    os.makedirs(f"{OUT}/{name}", exist_ok=True)
    tok.save(f"{OUT}/{name}/tokenizer.json", pretty=False)


TEXTS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "",
    " ",
    "   ",
    "a",
    " leading space",
    "trailing spaces   ",
    "tabs\tand\t\ttabs",
    "new\nlines\n\n\nand\r\nCRLF\r\n",
    "mixed \t\n whitespace \n\t x",
    "  two leading, then  two  inside  ",
    "\u00a0non-breaking\u00a0space\u3000ideographic\u2003em",
    "Café naïve über façade jalapeño",
    "Ångström smörgåsbord résumé crème brûlée",
    "Ελληνικά γράμματα русский язык",
    "你好，世界！今天天气很好。",
    "東京は日本の首都です。한국어",
    "😀 😃 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ 🚀✨",
    "It's I'm you're we've they'll he'd",
    "IT'S WE'LL She'S You'Re THEY'VE I'M HE'D don'T",
    "'s 't 're 've 'm 'll 'd 'x 'sa ''s ' s",
    "rock'n'roll o'clock ma'am",
    "Numbers: 0 12 345 6789 1234567890",
    "pi = 3.14159265358979323846264338327950288419716939937510",
    "12345678901234567890123456789 and 2026-11-30",
    "½ ² Ⅻ ٣ ١٢٣٤ ⅓",
    "<|endoftext|>",
    "Hello<|endoftext|>world",
    "one <|endoftext|> two<|endoftext|><|endoftext|> three",
    "<|endoftext|> leading and trailing <|endoftext|>",
    "<|endoftext| almost <|endoftext",
    "$$$ !!! ??? ... --- *** ### @@@ %%% ^^^ &&& (((",
    "foo.bar(baz) -> qux[0] {x: 1}; // comment",
    "x!y?z.w,v",
    "antidisestablishmentarianism supercalifragilisticexpialidocious",
    "a" * 300,
    "ab" * 80 + " " + "xyz" * 50,
    "é" * 70,
    "!" * 100,
    " " * 40 + "x",
    "\n" * 10 + "end",
    "control\x01\x02\x7f chars and NUL\x00inside",
    "\u200b\u200dzero width\ufeffbom",
    "Ⓐⓑⓒ ＡＢＣ ｆｕｌｌｗｉｄｔｈ",
    "Mixed: abc123def 456ghi!!jkl 7ab",
    "ſ 'ſ 'ſt Kelvin \u212a",
    "\U0001F600\U0001F600\U0001F600x",
    "attention is all you need; attn computes softmax(QK^T/sqrt(d))V",
    "NFC: e\u0301 a\u0308o\u0308 \u212b \u2126 \u1100\u1161\u11a8 \ufb01 \u0041\u030a\u0323 "
    "\u1e9b\u0323 \u0958 q\u0307\u0323",
]


def hexs(b):
    return b.hex() if b else "-"


def ids_str(ids):
    return " ".join(map(str, ids)) if ids else "-"


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)

    gpt2 = train(pre_tokenizers.ByteLevel(add_prefix_space=False), 1500, ["<|endoftext|>"])
    gpt2.post_processor = processors.ByteLevel(trim_offsets=False)
    save(gpt2, "gpt2")

    from transformers import GPT2TokenizerFast
    fast = GPT2TokenizerFast(tokenizer_object=Tokenizer.from_str(gpt2.to_str()),
                             bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                             unk_token="<|endoftext|>")
    fast.save_pretrained(f"{OUT}/gpt2")
    # tokenizer_config.json (bos/eos) from transformers; tokenizer.json written
    # compactly again, and the older two-file form vocab.json + merges.txt
    # beside it (the test loads both and checks they agree)
    for junk in ("special_tokens_map.json",):
        if os.path.exists(f"{OUT}/gpt2/{junk}"):
            os.remove(f"{OUT}/gpt2/{junk}")
    save(gpt2, "gpt2")
    gpt2.model.save(f"{OUT}/gpt2")

    # the older tokenizer.json form of the merges ("a b" strings, as the
    # GPT-2 and Llama 3 files on the Hub have them); HF reads both
    j = json.loads(gpt2.to_str())
    j["model"]["merges"] = [" ".join(m) for m in j["model"]["merges"]]
    legacy = Tokenizer.from_str(json.dumps(j))
    assert legacy.encode("Hello, world! It's 2026.").ids == gpt2.encode("Hello, world! It's 2026.").ids
    os.makedirs(f"{OUT}/gpt2_legacy", exist_ok=True)
    with open(f"{OUT}/gpt2_legacy/tokenizer.json", "w") as f:
        json.dump(j, f, ensure_ascii=False, separators=(",", ":"))

    pref = Tokenizer.from_str(gpt2.to_str())
    pref.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    save(pref, "gpt2_prefix")

    llama_specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    llama = train(pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PAT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)]),
        2000, [])
    # Llama 3 keeps its special tokens after the vocabulary (added tokens)
    llama.add_special_tokens(llama_specials)
    bos = llama.token_to_id("<|begin_of_text|>")
    llama.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)])])
    j = json.loads(llama.to_str())
    j["model"]["ignore_merges"] = True
    llama = Tokenizer.from_str(json.dumps(j))
    save(llama, "llama3")
    j["pre_tokenizer"]["pretreat"] = None
    j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = QWEN2_PAT
    j["model"]["ignore_merges"] = False
    j["normalizer"] = {"type": "NFC"}  # as Qwen2's own file has
    qwen = Tokenizer.from_str(json.dumps(j))
    save(qwen, "qwen2")

    # added tokens with lstrip / rstrip, and a non-special one
    added = Tokenizer.from_str(gpt2.to_str())
    added.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=False, normalized=False)])
    added.add_tokens([AddedToken("xyzzy", lstrip=False, rstrip=True, normalized=False),
                      AddedToken("Hello", normalized=True)])
    save(added, "gpt2_added")

    toks = {"gpt2": gpt2, "gpt2_prefix": pref, "llama3": llama, "qwen2": qwen,
            "gpt2_added": added}
    texts = list(TEXTS)
    texts += ["<|begin_of_text|>hi<|eot_id|>", "x<|end_of_text|>", "<|begin_of_text|>",
              "a <mask> b  <mask>c\t<mask>", "<mask><mask> <mask>", "  <mask>  ",
              "xyzzy  foo xyzzy\n\nbar xyzzyxyzzy ", "Hello Hellooo <mask>xyzzy Hello"]
    with open(f"{OUT}/cases.txt", "w") as f:
        f.write("# tokenizer <TAB> text (hex) <TAB> ids <TAB> ids with special tokens"
                " <TAB> decode of ids (hex); '-' = empty\n")
        for name, tok in toks.items():
            for t in texts:
                plain = tok.encode(t, add_special_tokens=False).ids
                spec = tok.encode(t, add_special_tokens=True).ids
                dec = tok.decode(plain, skip_special_tokens=False).encode("utf-8")
                f.write(f"{name}\t{hexs(t.encode())}\t{ids_str(plain)}\t{ids_str(spec)}\t{hexs(dec)}\n")

    # random strings over characters that stress the regexes' edges
    import random
    rng = random.Random(12)
    pool = (list("aZ09 '\t\n\r!?.,-_sStTlLdDmMrReEvV") + ["  ", "\r\n", "'s", "'LL", "'ve"] +
            ["\u00a0", "\u2003", "\u3000", "\u0085", "\u2028", "\u000b", "\u000c"] +
            ["é", "ß", "Ω", "ж", "中", "あ", "한", "ـ", "٣", "²", "½", "Ⅻ", "\u0301", "\u0308",
             "\u200d", "\ufeff", "\u017f", "\u212a", "😀", "👍🏽", "\U00010400", "\U0001D7D8",
             "\u1c89", "\U000105c0", "<|endoftext|>", "<|begin_of_text|>", "<|eot_id|>", "\x00"])
    with open(f"{OUT}/random.txt", "w") as f:
        f.write("# tokenizer <TAB> text (hex) <TAB> ids; random strings (seed 12)\n")
        texts_r = ["".join(rng.choice(pool) for _ in range(rng.randint(1, 30)))
                   for _ in range(300)]
        for name in ("gpt2", "gpt2_prefix", "llama3", "qwen2"):
            for t in texts_r:
                ids = toks[name].encode(t, add_special_tokens=False).ids
                f.write(f"{name}\t{hexs(t.encode())}\t{ids_str(ids)}\n")

    # decoding ids whose bytes are not (all) valid UTF-8: single byte tokens
    with open(f"{OUT}/decode.txt", "w") as f:
        f.write("# tokenizer <TAB> ids <TAB> HF decode (hex)\n")
        bl = pre_tokenizers.ByteLevel.alphabet()
        from tokenizers.pre_tokenizers import ByteLevel as _BL  # noqa: F401
        # byte -> its byte-level character (GPT-2's bytes_to_unicode)
        bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
        cs = bs[:]
        n = 0
        for b in range(256):
            if b not in bs:
                bs.append(b)
                cs.append(256 + n)
                n += 1
        b2c = {b: chr(c) for b, c in zip(bs, cs)}
        assert set(b2c.values()) == set(bl)
        seqs = [
            [0xff], [0xc3], [0xc3, 0xa9], [0xe2, 0x82], [0xe2, 0x82, 0xac], [0xe2, 0x82, 0x41],
            [0xf0, 0x9f, 0x98], [0xf0, 0x9f, 0x98, 0x80], [0xed, 0xa0, 0x80], [0xc0, 0xaf],
            [0xf4, 0x90, 0x80, 0x80], [0xf5], [0x80, 0x80], [0xe0, 0x80, 0x80], [0xf8, 0x88],
            [0x41, 0xff, 0x42, 0xc3], [0xef, 0xbf, 0xbd], [0x00, 0x0a, 0x20],
        ]
        for name, tok in toks.items():
            for s in seqs:
                ids = [tok.token_to_id(b2c[b]) for b in s]
                dec = tok.decode(ids, skip_special_tokens=False).encode("utf-8")
                f.write(f"{name}\t{ids_str(ids)}\t{hexs(dec)}\n")
            # multi-byte tokens and special tokens mixed with broken bytes
            ids = tok.encode("Héllo 世界 <|endoftext|>!", add_special_tokens=False).ids
            ids = ids + [tok.token_to_id(b2c[0xe4])] + ids[:3]
            dec = tok.decode(ids, skip_special_tokens=False).encode("utf-8")
            f.write(f"{name}\t{ids_str(ids)}\t{hexs(dec)}\n")


def code_point_classes():
    """Class of every scalar value in the reference's regex engine, found by
    splitting probes with GPT-2's pattern: "a"+c is one piece only when c is
    a letter, "1"+c only for a number, "!"+c only for "other"; the rest is
    white space (checked: c c a is then three pieces, but for U+0020)."""
    gpt2_pat = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
    sp = pre_tokenizers.Split(Regex(gpt2_pat), behavior="isolated", invert=False)
    runs = []
    for c in range(0x110000):
        if 0xD800 <= c <= 0xDFFF:
            continue
        ch = chr(c)
        if len(sp.pre_tokenize_str("a" + ch)) == 1:
            k = "L"
        elif len(sp.pre_tokenize_str("1" + ch)) == 1:
            k = "N"
        elif len(sp.pre_tokenize_str("!" + ch)) == 1:
            k = "O"
        else:
            assert ch == " " or len(sp.pre_tokenize_str(ch + ch + "a")) == 3, hex(c)
            k = "S"
        if runs and runs[-1][2] == k and runs[-1][1] == c - 1:
            runs[-1][1] = c
        elif runs and runs[-1][2] == k and runs[-1][1] == 0xD7FF and c == 0xE000:
            runs[-1][1] = c
        else:
            runs.append([c, c, k])
    with open(f"{OUT}/classes.txt", "w") as f:
        f.write("# lo hi class (hex; L letter, N number, S white space, O other), "
                "surrogates excluded\n")
        for lo, hi, k in runs:
            f.write(f"{lo:x} {hi:x} {k}\n")


if __name__ == "__main__":
    main()
    code_point_classes()

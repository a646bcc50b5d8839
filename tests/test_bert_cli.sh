#!/usr/bin/env bash
# `attn embed` / `attn similarity` on tiny model directories written here
# (python3 standard library only) and on bad input: every failure must exit
# non-zero with a message naming the file, tensor or line, and print nothing
# on stdout. Also: F16, BF16 and a "bert." prefix load to the same model.
set -euo pipefail
: "${ATTN:?path of the attn binary}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0

# expect RC PATTERN CMD...: exit status RC, stderr matching PATTERN, empty stdout
expect() {
    local want=$1 pat=$2 rc=0
    shift 2
    "$@" > "$tmp/out" 2> "$tmp/err" || rc=$?
    if [ "$rc" != "$want" ] || ! grep -q -- "$pat" "$tmp/err" || [ -s "$tmp/out" ]; then
        echo "FAIL: $* -> exit $rc (want $want), stderr: $(cat "$tmp/err"), stdout bytes: $(wc -c < "$tmp/out")"
        echo "      expected stderr to match: $pat"
        fails=$((fails + 1))
    else
        echo "ok    $pat"
    fi
}

# A tiny BERT (E=4, 2 heads, I=8, 1 layer) whose weights are multiples of
# 1/64 in [-1, 1]: exact in F16 and BF16, so every dtype loads the same model.
python3 - "$tmp" <<'EOF'
import json, os, struct, sys

root = sys.argv[1]
E, I, V, P = 4, 8, 9, 16
names = []
def lin(pre, o, i):
    names.append((pre + ".weight", [o, i])); names.append((pre + ".bias", [o]))
def ln(pre):
    names.append((pre + ".weight", [E])); names.append((pre + ".bias", [E]))
names += [("embeddings.word_embeddings.weight", [V, E]),
          ("embeddings.position_embeddings.weight", [P, E]),
          ("embeddings.token_type_embeddings.weight", [2, E])]
ln("embeddings.LayerNorm")
p = "encoder.layer.0."
for x in ("query", "key", "value"):
    lin(p + "attention.self." + x, E, E)
lin(p + "attention.output.dense", E, E); ln(p + "attention.output.LayerNorm")
lin(p + "intermediate.dense", I, E); lin(p + "output.dense", E, I); ln(p + "output.LayerNorm")

def values(n, seed):
    out, s = [], seed
    for _ in range(n):
        s = (s * 1103515245 + 12345) % 2**31
        out.append(((s >> 8) % 129 - 64) / 64.0)
    return out

def f16(x):
    return struct.pack("<e", x)
def bf16(x):
    return struct.pack("<f", x)[2:]  # exact: multiples of 1/64 need few mantissa bits

def write(path, dtype, prefix="", override=None):
    header, data = {}, b""
    for k, (name, shape) in enumerate(names):
        n = 1
        for d in shape: n *= d
        vals = values(n, k + 1)
        if name.endswith("LayerNorm.weight"): vals = [1.0 + v / 2 for v in vals]
        dt, shp = dtype, shape
        if override and override[0] == name:
            dt, shp = override[1], override[2]
            n = 1
            for d in shp: n *= d
            vals = values(n, k + 1)
        enc = {"F32": lambda v: struct.pack("<f", v), "F16": f16, "BF16": bf16,
               "I32": lambda v: struct.pack("<i", int(v * 64))}[dt]
        blob = b"".join(enc(v) for v in vals)
        header[prefix + name] = {"dtype": dt, "shape": shp,
                                 "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)

config = {"vocab_size": V, "hidden_size": E, "num_hidden_layers": 1, "num_attention_heads": 2,
          "intermediate_size": I, "max_position_embeddings": P, "type_vocab_size": 2,
          "layer_norm_eps": 1e-12, "hidden_act": "gelu"}
vocab = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nworld\n##s\n.\n"
cases = {"f32": ("F32", "", None), "f16": ("F16", "", None), "bf16": ("BF16", "", None),
         "prefixed": ("F32", "bert.", None),
         "i32": ("F32", "", ("encoder.layer.0.attention.self.key.weight", "I32", [E, E])),
         "shape": ("F32", "", ("encoder.layer.0.intermediate.dense.weight", "F32", [I, E + 1]))}
for d, (dt, pre, ov) in cases.items():
    os.makedirs(os.path.join(root, d))
    write(os.path.join(root, d, "model.safetensors"), dt, pre, ov)
    json.dump(config, open(os.path.join(root, d, "config.json"), "w"))
    open(os.path.join(root, d, "vocab.txt"), "w").write(vocab)
# config sizes that disagree with the weights
for d, key, val in (("wide", "hidden_size", 6), ("deep", "num_hidden_layers", 2),
                    ("shallow", "num_hidden_layers", 0), ("vocab", "vocab_size", 10)):
    os.makedirs(os.path.join(root, d))
    os.symlink(os.path.join(root, "f32", "model.safetensors"), os.path.join(root, d, "model.safetensors"))
    c = dict(config); c[key] = val
    json.dump(c, open(os.path.join(root, d, "config.json"), "w"))
    open(os.path.join(root, d, "vocab.txt"), "w").write(vocab + ("x\n" if d == "vocab" else ""))
# vocab.txt with one id more than config.json's vocab_size (and the weights)
os.makedirs(os.path.join(root, "vocabtxt"))
os.symlink(os.path.join(root, "f32", "model.safetensors"), os.path.join(root, "vocabtxt", "model.safetensors"))
json.dump(config, open(os.path.join(root, "vocabtxt", "config.json"), "w"))
open(os.path.join(root, "vocabtxt", "vocab.txt"), "w").write(vocab + "x\n")
# a model type other than BERT
os.makedirs(os.path.join(root, "gpt"))
json.dump(dict(config, model_type="gpt2"), open(os.path.join(root, "gpt", "config.json"), "w"))
os.makedirs(os.path.join(root, "noweights"))
json.dump(config, open(os.path.join(root, "noweights", "config.json"), "w"))
EOF

# the same model whatever the stored dtype or prefix: identical output
"$ATTN" embed --model "$tmp/f32" "hello worlds." "world" > "$tmp/f32.out"
[ "$(wc -l < "$tmp/f32.out")" = 2 ] || { echo "FAIL: f32 model gave no embeddings"; fails=$((fails + 1)); }
for d in f16 bf16 prefixed; do
    if "$ATTN" embed --model "$tmp/$d" "hello worlds." "world" | cmp -s - "$tmp/f32.out"; then
        echo "ok    $d model embeds exactly as F32"
    else
        echo "FAIL: $d model differs from the F32 one"; fails=$((fails + 1))
    fi
done

M=(--model "$tmp/f32")
expect 1 "/nonexistent/model/config.json" "$ATTN" embed --model /nonexistent/model "x"
expect 1 "noweights/model.safetensors" "$ATTN" embed --model "$tmp/noweights" "x"
expect 1 "tensor 'encoder.layer.0.attention.self.key.weight' has dtype I32" \
    "$ATTN" embed --model "$tmp/i32" "x"
expect 1 "tensor 'encoder.layer.0.intermediate.dense.weight' has shape \[8, 5\], but config.json implies \[8, 4\]" \
    "$ATTN" embed --model "$tmp/shape" "x"
expect 1 "'embeddings.word_embeddings.weight' has shape \[9, 4\], but config.json implies \[9, 6\]" \
    "$ATTN" embed --model "$tmp/wide" "x"
expect 1 "tensor 'encoder.layer.1.attention.self.query.weight' is missing" \
    "$ATTN" embed --model "$tmp/deep" "x"
expect 1 "num_hidden_layers\" = 0 is out of range" "$ATTN" embed --model "$tmp/shallow" "x"
expect 1 "'embeddings.word_embeddings.weight' has shape \[9, 4\], but config.json implies \[10, 4\]" \
    "$ATTN" similarity --model "$tmp/vocab" "x"
expect 1 "vocabtxt/vocab.txt has 10 tokens but config.json says vocab_size 9" \
    "$ATTN" embed --model "$tmp/vocabtxt" "x"
expect 1 "gpt/config.json: model_type \"gpt2\" is not supported" "$ATTN" embed --model "$tmp/gpt" "x"

printf 'hello\nworld\n\xff\xfe bad\nhello\n' > "$tmp/bad_utf8.txt"
expect 1 "bad_utf8.txt:3: invalid UTF-8 at byte 0" "$ATTN" embed "${M[@]}" --input "$tmp/bad_utf8.txt"
printf 'caf\xc3' > "$tmp/cut.txt"
expect 1 "cut.txt:1: invalid UTF-8 at byte 3" "$ATTN" similarity "${M[@]}" --input "$tmp/cut.txt"
expect 1 "argument 2: invalid UTF-8 at byte 1" "$ATTN" embed "${M[@]}" "ok" "$(printf 'a\xed\xa0\x80')"
: > "$tmp/empty.txt"
expect 1 "empty.txt: empty input file" "$ATTN" embed "${M[@]}" --input "$tmp/empty.txt"
expect 1 "missing.txt: cannot open" "$ATTN" embed "${M[@]}" --input "$tmp/missing.txt"
expect 2 "no TEXT given" "$ATTN" embed "${M[@]}"
expect 2 "unknown option '--bogus'" "$ATTN" similarity "${M[@]}" --bogus x
expect 2 "--threads must be an integer in \[0, 4096\], got '-1'" "$ATTN" embed "${M[@]}" --threads -1 x
expect 2 "--show-attention wants --layer L, --head H and one TEXT" \
    "$ATTN" embed "${M[@]}" --layer 0 --show-attention a b
expect 2 "--layer and --head go with --show-attention" "$ATTN" embed "${M[@]}" --layer 0 --head 0 x
expect 1 "layer 1 / head 0 out of range" "$ATTN" embed "${M[@]}" --layer 1 --head 0 --show-attention x
expect 1 "layer 0 / head 2 out of range" "$ATTN" embed "${M[@]}" --layer 0 --head 2 --show-attention x

# lines of a file: a final newline ends the last line, \r\n is one newline,
# an empty line is the empty text
printf 'hello\r\n\nworld' > "$tmp/lines.txt"
"$ATTN" embed "${M[@]}" "hello" "" "world" > "$tmp/args.out"
if "$ATTN" embed "${M[@]}" --input "$tmp/lines.txt" | cmp -s - "$tmp/args.out"; then
    echo "ok    --input lines equal the same texts as arguments"
else
    echo "FAIL: --input lines differ from arguments"; fails=$((fails + 1))
fi

# stdin as the input file
if printf 'hello\n\nworld\n' | "$ATTN" embed "${M[@]}" --input - | cmp -s - "$tmp/args.out"; then
    echo "ok    --input - reads stdin"
else
    echo "FAIL: --input - differs from arguments"; fails=$((fails + 1))
fi

# similarity: labelled rows and columns, the cosines of the embeddings
"$ATTN" similarity "${M[@]}" "hello worlds." "world" "hello worlds." > "$tmp/sim.txt"
"$ATTN" embed "${M[@]}" "hello worlds." "world" > "$tmp/e.jsonl"
if python3 - "$tmp/sim.txt" "$tmp/e.jsonl" <<'PY'
import json, math, sys
lines = open(sys.argv[1], encoding="utf-8").read().split("\n")
assert "  [1] hello worlds." in lines and "  [2] world" in lines, lines
head = [l for l in lines if l.split()[:3] == ["[1]", "[2]", "[3]"]]
assert len(head) == 1, lines
rows = {l.split()[0]: [float(v) for v in l.split()[1:]] for l in lines
        if l.strip().startswith("[") and len(l.split()) == 4}
a, b = [json.loads(l) for l in open(sys.argv[2])]
cos = sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
m = [rows["[%d]" % i] for i in (1, 2, 3)]
assert all(abs(m[i][i] - 1) < 1e-3 for i in range(3)), m
assert abs(m[0][2] - 1) < 1e-3 and abs(m[0][1] - cos) < 1e-3 and m[0][1] == m[1][0], (m, cos)
PY
then
    echo "ok    similarity matrix: labels, diagonal 1, the embeddings' cosine"
else
    echo "FAIL: similarity output"; cat "$tmp/sim.txt"; fails=$((fails + 1))
fi

# the shared option parser: --opt=value is --opt value, and both commands
# take --threads (embeddings do not depend on the thread count here)
"$ATTN" similarity "${M[@]}" --threads 2 "hello worlds." "world" "hello worlds." > "$tmp/sim2.txt"
M_EQ=("--model=$tmp/f32")
if "$ATTN" embed "${M_EQ[@]}" --threads=2 --input="$tmp/lines.txt" | cmp -s - "$tmp/args.out" &&
    "$ATTN" similarity "${M_EQ[@]}" --threads=1 "hello worlds." "world" "hello worlds." |
    cmp -s - "$tmp/sim.txt" && cmp -s "$tmp/sim.txt" "$tmp/sim2.txt" &&
    "$ATTN" embed "${M[@]}" --threads 1 --layer=0 --head=1 --show-attention "hello" >/dev/null; then
    echo "ok    --opt=value and --threads in embed and similarity"
else
    echo "FAIL: --opt=value or --threads in embed / similarity"; fails=$((fails + 1))
fi

[ "$fails" = 0 ] || { echo "$fails failure(s)"; exit 1; }

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
python3 "${ATTN_SRC:?}/tests/fixtures/tiny_bert.py" "$tmp"

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
expect 1 "gpt/config.json: model_type \"t5\" is not supported" "$ATTN" embed --model "$tmp/gpt" "x"
expect 1 "gpt2-tiny: not a BERT model" "$ATTN" embed --model "$ATTN_TEST_DATA/gpt2-tiny" "x"

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

# ---- machine-readable outputs ---------------------------------------------
# check NAME CMD...: run CMD (a check in python3, standard library only)
check() {
    local name=$1
    shift
    if "$@"; then echo "ok    $name"; else echo "FAIL: $name"; fails=$((fails + 1)); fi
}
# --format npy / safetensors: the same float32 [N, dim] matrix as the jsonl rows
"$ATTN" embed "${M[@]}" --input "$tmp/lines.txt" --format npy --output "$tmp/e.npy"
"$ATTN" embed "${M[@]}" --input "$tmp/lines.txt" --format safetensors --output "$tmp/e.st"
"$ATTN" embed "${M[@]}" --input "$tmp/lines.txt" --format jsonl --output "$tmp/e2.jsonl"
check "embed --format jsonl --output equals stdout" cmp -s "$tmp/e2.jsonl" "$tmp/args.out"
check "embed --format npy and safetensors hold the jsonl matrix" \
    python3 - "$tmp/e.npy" "$tmp/e.st" "$tmp/args.out" <<'PY'
import ast, json, struct, sys
rows = [json.loads(l) for l in open(sys.argv[3])]
n, d = len(rows), len(rows[0])
b = open(sys.argv[1], "rb").read()
assert b[:8] == b"\x93NUMPY\x01\x00", b[:8]
hl = struct.unpack("<H", b[8:10])[0]
assert (10 + hl) % 64 == 0, hl
h = ast.literal_eval(b[10:10 + hl].decode())
assert h == {"descr": "<f4", "fortran_order": False, "shape": (n, d)}, h
vals = struct.unpack("<%df" % (n * d), b[10 + hl:])
for i in range(n):
    for k in range(d):
        assert abs(vals[i * d + k] - rows[i][k]) <= 1e-6 * max(1, abs(rows[i][k])), (i, k)
s = open(sys.argv[2], "rb").read()
hl = struct.unpack("<Q", s[:8])[0]
hdr = json.loads(s[8:8 + hl])
e = hdr["embeddings"]
assert e["dtype"] == "F32" and e["shape"] == [n, d] and set(hdr) <= {"embeddings", "__metadata__"}, hdr
a, z = e["data_offsets"]
assert struct.unpack("<%df" % (n * d), s[8 + hl + a:8 + hl + z]) == vals
PY
# --id line / --id tab in jsonl
printf 'a1\thello\r\nb2\t\nc3\tworld' > "$tmp/tab.txt"
"$ATTN" embed "${M[@]}" --input "$tmp/lines.txt" --id line > "$tmp/idl.jsonl"
"$ATTN" embed "${M[@]}" --input "$tmp/tab.txt" --id tab > "$tmp/idt.jsonl"
check "embed --id line / tab: ids with the same embeddings" \
    python3 - "$tmp/idl.jsonl" "$tmp/idt.jsonl" "$tmp/args.out" <<'PY'
import json, sys
plain = [json.loads(l) for l in open(sys.argv[3])]
byline = [json.loads(l) for l in open(sys.argv[1])]
bytab = [json.loads(l) for l in open(sys.argv[2])]
assert [r["id"] for r in byline] == [1, 2, 3], byline
assert [r["id"] for r in bytab] == ["a1", "b2", "c3"], bytab
assert [r["embedding"] for r in byline] == plain == [r["embedding"] for r in bytab]
PY
printf 'a\tx\nno tab here\n' > "$tmp/tab.txt"
expect 1 "tab.txt:2: no tab (--id tab wants ID<TAB>TEXT)" \
    "$ATTN" embed "${M[@]}" --input "$tmp/tab.txt" --id tab
expect 2 "--format must be jsonl, npy or safetensors, got 'csv'" "$ATTN" embed "${M[@]}" --format csv x
expect 2 "--format npy writes binary: give --output FILE" "$ATTN" embed "${M[@]}" --format npy x
expect 2 "--id must be line or tab" "$ATTN" embed "${M[@]}" --id row x
expect 2 "--id goes with the jsonl format" "$ATTN" embed "${M[@]}" --id line --format npy \
    --output "$tmp/x.npy" x
[ ! -e "$tmp/x.npy" ] || { echo "FAIL: bad usage left an output"; fails=$((fails + 1)); }
expect 2 "--top-k goes with --query TEXT" "$ATTN" similarity "${M[@]}" --top-k 3 x y
expect 2 "--query needs texts to search" "$ATTN" similarity "${M[@]}" --query x
expect 2 "--top-k must be an integer" "$ATTN" similarity "${M[@]}" --query x --top-k 0 y

# similarity --json: the table's numbers; --query --top-k over a corpus file
"$ATTN" similarity "${M[@]}" --json "hello worlds." "world" "hello worlds." > "$tmp/sim.json"
for i in $(seq 1 300); do
    case $((i % 3)) in 0) echo "hello world number $i.";; 1) echo "worlds";; 2) echo "hello";; esac
done > "$tmp/corpus.txt"
printf 'a "quoted"\ttab text\n' >> "$tmp/corpus.txt"
"$ATTN" similarity "${M[@]}" --input "$tmp/corpus.txt" --query "hello worlds." --top-k 5 --json \
    > "$tmp/top.json"
"$ATTN" similarity "${M[@]}" --input "$tmp/corpus.txt" --query "hello worlds." --top-k 5 \
    > "$tmp/top.txt"
{ echo "hello worlds."; cat "$tmp/corpus.txt"; } > "$tmp/qcorpus.txt"
"$ATTN" embed "${M[@]}" --input "$tmp/qcorpus.txt" > "$tmp/corpus.jsonl"
check "similarity --json and --query --top-k: the embeddings' cosines, best first" \
    python3 - "$tmp/sim.json" "$tmp/sim.txt" "$tmp/top.json" "$tmp/corpus.jsonl" "$tmp/top.txt" \
    "$tmp/corpus.txt" <<'PY'
import json, math, sys
m = json.load(open(sys.argv[1]))
assert m["texts"] == ["hello worlds.", "world", "hello worlds."], m
rows = [l.split()[1:] for l in open(sys.argv[2]) if l.startswith("   [")]
assert len(rows) == 3 and all(abs(float(rows[i][j]) - m["similarity"][i][j]) < 6e-4
                              for i in range(3) for j in range(3)), (rows, m)
top = json.load(open(sys.argv[3]))
emb = [json.loads(l) for l in open(sys.argv[4])]
corpus = open(sys.argv[6], encoding="utf-8").read().split("\n")[:-1]
q, docs = emb[0], emb[1:]
def cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
scores = sorted(((cos(q, d), -i) for i, d in enumerate(docs)), reverse=True)[:5]
assert top["query"] == "hello worlds." and len(top["results"]) == 5, top
for r, (s, mi) in zip(top["results"], scores):
    assert abs(r["score"] - s) < 1e-5, (r, s)
    assert corpus[r["line"] - 1] == r["text"], r
assert [r["rank"] for r in top["results"]] == [1, 2, 3, 4, 5]
table = open(sys.argv[5]).read().split("\n")
assert table[0].startswith("the 5 of 301 texts most similar to: hello worlds."), table[0]
first = table[3].split()
assert first[0] == "1" and int(first[2]) == top["results"][0]["line"], table[3]
PY
# long texts are cut to stay readable
long=$(printf 'word%.0s ' $(seq 1 80))
"$ATTN" similarity "${M[@]}" "$long" "hello" > "$tmp/long.txt"
check "similarity table cuts long texts" \
    python3 -c 'import sys; l = open(sys.argv[1], encoding="utf-8").read().split("\n")[2]; assert len(l) <= 80 and l.endswith("…"), l' \
    "$tmp/long.txt"

# --show-attention --format json|safetensors: every layer and head, rows sum to 1,
# head H of layer L as the display shows
"$ATTN" embed "${M[@]}" --show-attention --format json "hello worlds." > "$tmp/att.json"
"$ATTN" embed "${M[@]}" --show-attention --format safetensors --output "$tmp/att.st" "hello worlds."
"$ATTN" embed "${M[@]}" --layer 0 --head 1 --show-attention "hello worlds." > "$tmp/att.txt"
check "--show-attention exports every layer and head" \
    python3 - "$tmp/att.json" "$tmp/att.st" "$tmp/att.txt" <<'PY'
import json, struct, sys
a = json.load(open(sys.argv[1]))
L, H, toks = a["num_layers"], a["num_heads"], a["tokens"]
T = len(toks)
assert (L, H) == (1, 2) and toks[0] == "[CLS]" and toks[-1] == "[SEP]", a
att = a["attentions"]
assert len(att) == L and all(len(l) == H and all(len(h) == T for h in l) for l in att)
for l in att:
    for h in l:
        for row in h:
            assert len(row) == T and abs(sum(row) - 1) < 1e-5, row
s = open(sys.argv[2], "rb").read()
hl = struct.unpack("<Q", s[:8])[0]
hdr = json.loads(s[8:8 + hl])
e = hdr["attentions"]
assert e["dtype"] == "F32" and e["shape"] == [L, H, T, T], hdr
assert hdr["input_ids"]["dtype"] == "I32" and hdr["input_ids"]["shape"] == [T]
assert json.loads(hdr["__metadata__"]["tokens"]) == toks
a0, z0 = e["data_offsets"]
flat = struct.unpack("<%df" % (L * H * T * T), s[8 + hl + a0:8 + hl + z0])
want = [x for l in att for h in l for row in h for x in row]
assert all(abs(x - y) <= 1e-7 * max(1, abs(y)) for x, y in zip(flat, want))
# the display's strongest link of each token is the row's argmax in head 1
rows = [l.split() for l in open(sys.argv[3]) if l[:4].strip().isdigit()]
for i, r in enumerate(rows):
    row = att[0][1][i]
    assert int(r[3]) == max(range(T), key=lambda j: (row[j], -j)), (r, row)
    assert abs(float(r[5]) - max(row)) < 1e-4
PY
expect 2 "--show-attention --format must be json or safetensors" \
    "$ATTN" embed "${M[@]}" --show-attention --format npy x
expect 2 "--format safetensors needs --output FILE" \
    "$ATTN" embed "${M[@]}" --show-attention --format safetensors x
expect 2 "--layer and --head go with the display" \
    "$ATTN" embed "${M[@]}" --show-attention --format json --layer 0 --head 0 x

[ "$fails" = 0 ] || { echo "$fails failure(s)"; exit 1; }

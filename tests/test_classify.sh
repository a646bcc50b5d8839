#!/usr/bin/env bash
# `attn classify` on the tiny ViT (scripts/make_vit_fixtures.py): the top-k
# labels and probabilities transformers gives (tests/data/vit-tiny-top3.tsv),
# jsonl, interpolated sizes, --show-attention PNGs; and bad input: a clear
# error naming the file, the right exit status, nothing on stdout and no
# output file written.
set -euo pipefail
: "${ATTN:?path of the attn binary}"
D="${ATTN_TEST_DATA:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
ok() { echo "ok    $*"; }
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }

# expect RC PATTERN CMD...: exit status RC, stderr matching PATTERN, empty stdout
expect() {
    local want=$1 pat=$2 rc=0
    shift 2
    "$@" > "$tmp/out" 2> "$tmp/err" || rc=$?
    if [ "$rc" != "$want" ] || ! grep -q -- "$pat" "$tmp/err" || [ -s "$tmp/out" ]; then
        bad "$* -> exit $rc (want $want), stderr: $(cat "$tmp/err"), stdout bytes: $(wc -c < "$tmp/out")"
    else
        ok "$pat"
    fi
}

m="$D/vit-tiny"
imgs=(china.jpg flower.jpg rgba8.png gray.jpg)

# top-3 against transformers: same labels in the same order, probabilities
# within 1e-4
(cd "$D/image" && "$ATTN" classify --model "$m" --top-k 3 "${imgs[@]}") > "$tmp/top3.tsv"
if paste "$tmp/top3.tsv" "$D/vit-tiny-top3.tsv" | awk -F'\t' '
    { n++; if ($1 != $4 || $2 != $5) bad = 1; d = $3 - $6; if (d < 0) d = -d; if (d > 1e-4) bad = 1 }
    END { exit !(n == 12 && !bad) }'; then
    ok "top-3 labels and probabilities as transformers"
else
    bad "top-3: $(paste "$tmp/top3.tsv" "$D/vit-tiny-top3.tsv")"
fi
# the F16 copy gives the same ranking
(cd "$D/image" && "$ATTN" classify --model "$D/vit-tiny-f16" --top-k 3 "${imgs[@]}") | cut -f1,2 > "$tmp/f16"
cut -f1,2 "$D/vit-tiny-top3.tsv" | cmp -s - "$tmp/f16" && ok "F16 ranking" || bad "F16 ranking"
# --top-k beyond the labels gives all 5, probabilities summing to 1
"$ATTN" classify --model "$m" --top-k 100 "$D/image/china.jpg" > "$tmp/all"
awk -F'\t' '{ s += $3; n++ } END { exit !(n == 5 && s > 0.99999 && s < 1.00001) }' "$tmp/all" &&
    ok "top-k 100: 5 labels summing to 1" || bad "top-k 100: $(cat "$tmp/all")"
# jsonl; options after the images
"$ATTN" classify "$D/image/china.jpg" "$D/image/flower.jpg" --model "$m" --format jsonl --top-k 2 > "$tmp/j"
[ "$(wc -l < "$tmp/j")" = 2 ] && grep -q '^{"image": ".*china.jpg", "top": \[{"id": 2, "label": "great white shark", "prob": 0.828' "$tmp/j" &&
    ok "jsonl" || bad "jsonl: $(cat "$tmp/j")"
# another size with interpolated position embeddings
"$ATTN" classify --model "$m" --size 40,48 --interpolate --top-k 1 "$D/image/china.jpg" > "$tmp/i" &&
    grep -q "great white shark" "$tmp/i" && ok "--size 40,48 --interpolate" || bad "interpolate: $(cat "$tmp/i")"

# --show-attention: a PNG (8x the 32-pixel input), rollout by default
png_size() { od -An -tu1 -j16 -N8 "$1" | awk '{ print $1*16777216+$2*65536+$3*256+$4, $5*16777216+$6*65536+$7*256+$8 }'; }
"$ATTN" classify --model "$m" --show-attention --output "$tmp/roll.png" "$D/image/china.jpg" > "$tmp/s"
"$ATTN" classify --model "$m" --show-attention --layer 1 --head 2 --output "$tmp/h.png" "$D/image/china.jpg" > /dev/null
"$ATTN" classify --model "$m" --show-attention --rollout --output "$tmp/roll2.png" "$D/image/china.jpg" > /dev/null
if [ "$(head -c 8 "$tmp/roll.png" | od -An -tx1 | tr -d ' ')" = 89504e470d0a1a0a ] &&
    [ "$(png_size "$tmp/roll.png")" = "256 256" ] && cmp -s "$tmp/roll.png" "$tmp/roll2.png" &&
    ! cmp -s "$tmp/roll.png" "$tmp/h.png" && [ "$(wc -l < "$tmp/s")" = 5 ]; then
    ok "--show-attention PNGs (rollout, one head)"
else
    bad "--show-attention: $(png_size "$tmp/roll.png")"
fi
"$ATTN" classify --model "$m" --show-attention --size 64,48 --interpolate --output "$tmp/i.png" "$D/image/flower.jpg" > /dev/null
[ "$(png_size "$tmp/i.png")" = "192 256" ] && ok "--show-attention at 64 x 48" || bad "64x48 png: $(png_size "$tmp/i.png")"

# bad input: exit 1, the file named, nothing printed, nothing written
C="$D/../fuzz/corpus/image"
head -c 300 "$D/image/rgb8.png" > "$tmp/trunc.png"
head -c 900 "$D/image/china.jpg" > "$tmp/trunc.jpg"
: > "$tmp/empty.png"
expect 1 "config.json: not a PNG or JPEG" "$ATTN" classify --model "$m" "$m/config.json"
expect 1 "trunc.png: corrupt PNG" "$ATTN" classify --model "$m" "$D/image/china.jpg" "$tmp/trunc.png"
expect 1 "trunc.jpg: corrupt JPEG" "$ATTN" classify --model "$m" "$tmp/trunc.jpg"
expect 1 "empty.png: empty file" "$ATTN" classify --model "$m" "$tmp/empty.png"
expect 1 "zero_width.png: PNG image has zero size" "$ATTN" classify --model "$m" "$C/zero_width.png"
expect 1 "huge.png: PNG image of 30000 x 30000 pixels is too large" "$ATTN" classify --model "$m" "$C/huge.png"
expect 1 "huge.jpg: corrupt JPEG" "$ATTN" classify --model "$m" "$C/huge.jpg"
expect 1 "no-such.png: cannot open" "$ATTN" classify --model "$m" "$tmp/no-such.png"
expect 1 "trunc.png: corrupt PNG" "$ATTN" classify --model "$m" --show-attention --output "$tmp/never.png" "$tmp/trunc.png"
[ ! -e "$tmp/never.png" ] && ok "no PNG written for a bad image" || bad "never.png written"
expect 2 "40 x 48 pixels, but the model takes 32 x 32: add --interpolate" "$ATTN" classify --model "$m" --size 40,48 "$D/image/china.jpg"
expect 2 "smaller than a patch" "$ATTN" classify --model "$m" --size 4,48 --interpolate "$D/image/china.jpg"
expect 2 "--size '0,3'" "$ATTN" classify --model "$m" --size 0,3 "$D/image/china.jpg"
expect 2 "the model has 2 layers of 4 heads" "$ATTN" classify --model "$m" --show-attention --layer 2 --head 0 --output "$tmp/never.png" "$D/image/china.jpg"
expect 2 "--layer and --head go together" "$ATTN" classify --model "$m" --show-attention --layer 1 --output "$tmp/never.png" "$D/image/china.jpg"
expect 2 "needs --output" "$ATTN" classify --model "$m" --show-attention "$D/image/china.jpg"
expect 2 "one IMAGE" "$ATTN" classify --model "$m" --show-attention --output "$tmp/never.png" "$D/image/china.jpg" "$D/image/flower.jpg"
expect 2 "the output is the input file" "$ATTN" classify --model "$m" --show-attention --output "$tmp/trunc.png" "$tmp/trunc.png"
expect 2 "--model DIR is required" "$ATTN" classify "$D/image/china.jpg"
expect 2 "no IMAGE" "$ATTN" classify --model "$m"
expect 2 "go with --show-attention" "$ATTN" classify --model "$m" --rollout "$D/image/china.jpg"
[ ! -e "$tmp/never.png" ] && ok "nothing written on bad usage" || bad "never.png written"

# bad model directories: config.json against the weights, id2label, type
mk() { # DIR CONFIG-JSON: a directory with vit-tiny's weights and this config
    mkdir -p "$1" && ln -sf "$m/model.safetensors" "$1/model.safetensors" && printf '%s' "$2" > "$1/config.json"
}
base='"model_type": "vit", "image_size": 32, "patch_size": 8, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64'
mk "$tmp/m1" "{$base, \"hidden_size\": 48}"
expect 1 "m1/model.safetensors: tensor '.*' has shape" "$ATTN" classify --model "$tmp/m1" "$D/image/china.jpg"
mk "$tmp/m2" "{$base, \"hidden_size\": 32, \"id2label\": {\"0\": \"a\", \"1\": \"b\"}}"
expect 1 "m2/config.json: id2label has 2 labels but the classifier has 5 outputs" "$ATTN" classify --model "$tmp/m2" "$D/image/china.jpg"
mk "$tmp/m3" "{${base/\"patch_size\": 8/\"patch_size\": 64}, \"hidden_size\": 32}"
expect 1 "m3/config.json: patch_size 64" "$ATTN" classify --model "$tmp/m3" "$D/image/china.jpg"
mk "$tmp/m4" '{"model_type": "swin"}'
expect 1 "m4/config.json: model_type \"swin\" is not supported" "$ATTN" classify --model "$tmp/m4" "$D/image/china.jpg"
expect 1 "no classifier" "$ATTN" classify --model "$D/vit-model-bf16" "$D/image/china.jpg"

[ "$fails" = 0 ] || { echo "$fails failure(s)"; exit 1; }

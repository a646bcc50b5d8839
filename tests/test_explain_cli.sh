#!/usr/bin/env bash
# `attn explain` on a tiny model directory (tests/fixtures/tiny_bert.py):
# the summary, --json (shapes, distributions, the same numbers as
# `attn embed --show-attention --format json`), --html (self-contained: no
# network), --png, --heads, --faithfulness; and bad input: a clear error,
# the right exit status, nothing on stdout and no output file written.
set -euo pipefail
: "${ATTN:?path of the attn binary}"
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

python3 "${ATTN_SRC:?}/tests/fixtures/tiny_bert.py" "$tmp"
m="$tmp/f32"

"$ATTN" explain --model "$m" "hello worlds." > "$tmp/sum.txt" && grep -q "per head" "$tmp/sum.txt" &&
    ok "summary" || bad "summary: $(cat "$tmp/sum.txt")"

"$ATTN" explain --model "$m" --json "$tmp/a.json" --html "$tmp/a.html" --png "$tmp/a.png" \
    --heads --faithfulness --steps 3 --head 1 "hello worlds." "world hello" > /dev/null
"$ATTN" embed --model "$m" --show-attention --format json --output "$tmp/embed.json" "hello worlds."
if python3 - "$tmp" <<'PY'
import json, math, struct, sys
d = sys.argv[1]
j = json.load(open(d + "/a.json"))
e = json.load(open(d + "/embed.json"))
assert j["num_layers"] == 1 and j["num_heads"] == 2 and j["head"] == 1, "sizes"
t = j["texts"][0]
T = len(t["tokens"])
assert t["tokens"] == e["tokens"], "tokens"
A = t["attentions"]
assert len(A) == 1 and len(A[0]) == 2 and all(len(r) == T for r in A[0][0]), "attention shape"
assert A == e["attentions"], "attentions differ from attn embed --show-attention's"
for h in range(2):
    for row in A[0][h]:
        assert abs(sum(row) - 1) < 1e-5, "attention rows are distributions"
for row in t["rollout"]:
    assert abs(sum(row) - 1) < 1e-5, "rollout rows are distributions"
assert t["flow_rows"] == T and len(t["flow"]) == T, "flow rows"
# one layer: rollout is 0.5 * mean head + 0.5 I, and flow equals it
for i in range(T):
    for k in range(T):
        want = 0.5 * (A[0][0][i][k] + A[0][1][i][k]) / 2 + 0.5 * (i == k)
        assert abs(t["rollout"][i][k] - want) < 1e-6, "rollout"
        assert abs(t["flow"][i][k] - want) < 1e-6, "flow"
# entropy of head 0 from the probabilities
ent = sum(-p * math.log(p) for row in A[0][0] for p in row if p > 0) / T
assert abs(t["stats"]["entropy"][0][0] - ent) < 1e-5, "entropy"
# the strongest links: up to 5 per head, off the diagonal, strongest first,
# the first the statistics' own
for h in range(2):
    links = t["stats"]["strongest_links"][0][h]
    assert len(links) == min(5, T * T - T) and links[0] == t["stats"]["top_links"][0][h], "links"
    assert all(i != k for i, k, _ in links) and all(links[q][2] >= links[q + 1][2] for q in range(len(links) - 1))
    assert all(A[0][h][i][k] == p for i, k, p in links), "link values"
assert t["token_class"][0] == "cls" and t["token_class"][-1] == "sep" and "punct" in t["token_class"]
assert j["heads"]["texts"] == 2 and len(j["heads"]["pruning"]) == 3, "heads"
assert abs(j["heads"]["pruning"][0] - 1) < 1e-6
f = j["faithfulness"]
assert f["steps"] == 3 and set(f["area"]) == {"attention", "rollout", "flow", "random"}, "faithfulness"
assert len(t["deletion"]["rollout"]) == 4
c = j["comparison"]
assert len(c["token_similarity"]) == T and len(c["token_similarity"][0]) == len(j["texts"][1]["tokens"])
png = open(d + "/a.png", "rb").read()
assert png[:8] == b"\x89PNG\r\n\x1a\n", "png signature"
w, h = struct.unpack(">II", png[16:24])
assert w > 100 and h > 100, "png size"
html = open(d + "/a.html", encoding="utf-8").read()
import re
assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', html), "the page loads something"
assert "@import" not in html and "url(" not in html, "the page loads something"
assert '"tokens":["[CLS]"' in html, "the page holds the data"
PY
then ok "json, html and png hold the analyses"; else bad "json/html/png checks"; fi

# a '<' in a text cannot end the page's data script early
"$ATTN" explain --model "$m" --html "$tmp/lt.html" "hello </script> world" > /dev/null
grep -q '</script> world' "$tmp/lt.html" && bad "'</script>' reached the page unescaped" ||
    ok "text with </script> escaped in the page"

# bad usage (2) and bad input (1): a message, nothing on stdout, no file
out="$tmp/never.json"
expect 1 "out of range" "$ATTN" explain --model "$m" --layer 1 --json "$out" "hello"
expect 1 "out of range" "$ATTN" explain --model "$m" --head 2 --html "$out" "hello"
expect 1 "tokenizes to no tokens" "$ATTN" explain --model "$m" --json "$out" "   "
expect 1 "argument 2: the text tokenizes to no tokens" "$ATTN" explain --model "$m" --json "$out" "hello" ""
expect 1 "cannot write there" "$ATTN" explain --model "$m" --json "$tmp/no/such/dir/a.json" "hello"
expect 1 "cannot write there" "$ATTN" explain --model "$m" --png "$tmp/no/dir/a.png" "hello"
expect 2 "png-map must be head or rollout" "$ATTN" explain --model "$m" --png-map x --png "$out" "hello"
expect 2 "give a FILE" "$ATTN" explain --model "$m" --png - "hello"
expect 2 "flow must be" "$ATTN" explain --model "$m" --flow some "hello"
expect 2 "steps" "$ATTN" explain --model "$m" --steps 0 --faithfulness "hello"
expect 2 "no TEXT" "$ATTN" explain --model "$m"
expect 2 "both go to stdout" "$ATTN" explain --model "$m" --json - --html - "hello"
expect 1 "config.json" "$ATTN" explain --model "$tmp/no-model" "hello"
expect 2 "relevance must be similarity or dim:K" "$ATTN" explain --model "$m" --relevance dim:x "hello"
expect 2 "needs two or more texts" "$ATTN" explain --model "$m" --relevance similarity --json "$out" "hello"
expect 1 "the embedding has 4 dimensions" "$ATTN" explain --model "$m" --relevance dim:4 --json "$out" "hello"
[ -e "$out" ] && bad "a failed run left $out" || ok "no output file after failures"
ls "$tmp" | grep -q 'tmp-' && bad "a temporary file was left: $(ls "$tmp")" || ok "no temporary files left"

# --relevance dim:K: R is I plus non-negative terms, and it joins --faithfulness
"$ATTN" explain --model "$m" --relevance dim:2 --faithfulness --steps 2 --json "$tmp/r.json" \
    "hello worlds. hello" > "$tmp/r.txt" && python3 -c "
import json, sys
j = json.load(open(sys.argv[1])); t = j['texts'][0]; R = t['relevance']
assert j['relevance_of'] == 'dim:2' and len(R) == len(t['tokens'])
assert all(R[i][k] >= (1 if i == k else 0) for i in range(len(R)) for k in range(len(R)))
assert 'relevance' in t['scores'] and 'relevance' in j['faithfulness']['area']" "$tmp/r.json" &&
    grep -q "^relevance" "$tmp/r.txt" && ok "--relevance dim:K" || bad "--relevance dim:K"

# --png-map rollout and --flow cls run
"$ATTN" explain --model "$m" --png "$tmp/r.png" --png-map rollout --flow cls --json "$tmp/c.json" \
    "hello worlds." > /dev/null && python3 -c "
import json, sys; t = json.load(open(sys.argv[1]))['texts'][0]; assert t['flow_rows'] == 1 and len(t['flow']) == 1" \
    "$tmp/c.json" && ok "--flow cls, --png-map rollout" || bad "--flow cls / --png-map rollout"

[ "$fails" = 0 ] || { echo "$fails failure(s)"; exit 1; }

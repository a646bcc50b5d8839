#!/usr/bin/env bash
# The `attn explain --html` page in a real headless browser (Chromium, as
# scripts/setup.sh installs it from Debian): the page loads with no console
# error, its self-test (#selftest) chooses another layer and head and a cell
# of the model view as a user would, and what it then shows (the head view's
# lines, the entropy heat map, the token scores) equals the --json numbers
# exactly; a screenshot is taken and must not be blank. Without a browser
# the test reports itself skipped (exit 77), never passed.
set -euo pipefail
: "${ATTN:?path of the attn binary}"
browser=""
for b in chromium chromium-browser google-chrome; do
    if command -v "$b" > /dev/null 2>&1; then browser=$b; break; fi
done
if [ -z "$browser" ]; then
    echo "skipped: no chromium on PATH (scripts/setup.sh installs it)"
    exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 "${ATTN_SRC:?}/tests/fixtures/tiny_bert.py" "$tmp"
"$ATTN" explain --model "$tmp/f32" --json "$tmp/a.json" --html "$tmp/a.html" --relevance dim:1 \
    "hello worlds. hello world." "world hello" > /dev/null

# --no-sandbox: CI containers run as root; a profile of its own, no network
run_browser() {
    timeout 120 "$browser" --headless --no-sandbox --disable-gpu --no-first-run \
        --user-data-dir="$tmp/profile" --enable-logging=stderr --v=0 "$@"
}
run_browser --dump-dom "file://$tmp/a.html#selftest" > "$tmp/dom.html" 2> "$tmp/console.txt"
run_browser --hide-scrollbars --window-size=1200,1000 --screenshot="$tmp/shot.png" \
    "file://$tmp/a.html" > /dev/null 2>> "$tmp/console.txt"

python3 - "$tmp" <<'PY'
import html, json, re, struct, sys, zlib
d = sys.argv[1]
fails = []
console = [l for l in open(d + "/console.txt", errors="replace") if "CONSOLE" in l or "Uncaught" in l]
if console:
    fails.append("console messages: " + "".join(console))
dom = open(d + "/dom.html", encoding="utf-8").read()
m = re.search(r'<pre id="selftest">(.*?)</pre>', dom, re.S)
if not m:
    sys.exit("FAIL: the page's self-test wrote nothing (did the script run?)")
st = json.loads(html.unescape(m.group(1)))
j = json.load(open(d + "/a.json"))
t = j["texts"][0]
if st["errors"]:
    fails.append("page errors: %s" % st["errors"])
if not st["changed"]:
    fails.append("choosing another layer/head did not change the head view")
for view in ("first", "second"):
    v = st[view]
    P = t["attentions"][v["layer"]][v["head"]]
    want = sorted((i, k, P[i][k]) for i in range(len(P)) for k in range(len(P)) if P[i][k] >= 0.01)
    got = sorted(tuple(x) for x in v["lines"])
    if got != want:
        fails.append("head view (layer %d, head %d): lines %s != json %s" % (v["layer"], v["head"], got[:4], want[:4]))
    else:
        print("ok    head view of layer %d head %d: %d lines equal the json" % (v["layer"], v["head"], len(got)))
if st["clicked"] != {"layer": 0, "head": 1}:
    fails.append("clicking the model view's cell opened %s" % st["clicked"])
ent = {(l, h): v for l, h, v in st["entropy"]}
want = {(l, h): t["stats"]["entropy"][l][h] for l in range(j["num_layers"]) for h in range(j["num_heads"])}
if ent != want:
    fails.append("entropy heat map %s != json %s" % (ent, want))
else:
    print("ok    entropy heat map equals the json")
for k, v in st["scores"].items():
    if v != t["scores"][k]:
        fails.append("%s scores %s != json %s" % (k, v, t["scores"][k]))
if set(st["scores"]) != set(t["scores"]) or "relevance" not in st["scores"]:
    fails.append("token score views %s, json %s" % (list(st["scores"]), list(t["scores"])))
else:
    print("ok    relevance, rollout, flow and attention scores equal the json")

# the screenshot: decode the PNG (8-bit RGB/RGBA) and look for content
png = open(d + "/shot.png", "rb").read()
assert png[:8] == b"\x89PNG\r\n\x1a\n", "screenshot is not a PNG"
pos, idat, w = 8, b"", 0
while pos < len(png):
    n, typ = struct.unpack(">I4s", png[pos:pos + 8])
    body = png[pos + 8:pos + 8 + n]
    if typ == b"IHDR":
        w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
    elif typ == b"IDAT":
        idat += body
    pos += 12 + n
bpp = {2: 3, 6: 4}[ctype]
raw, stride, prev, rows = zlib.decompress(idat), w * bpp, bytearray(w * bpp), []
for y in range(h):
    f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    for x in range(stride):
        a = line[x - bpp] if x >= bpp else 0
        b, c = prev[x], prev[x - bpp] if x >= bpp else 0
        if f == 1: line[x] = (line[x] + a) & 255
        elif f == 2: line[x] = (line[x] + b) & 255
        elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c; pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    rows.append(bytes(line)); prev = line
colors, ink = set(), 0
for r in rows[::4]:
    for x in range(0, stride, bpp * 4):
        px = r[x:x + 3]; colors.add(px)
        ink += px != b"\xff\xff\xff"
total = len(rows[::4]) * len(range(0, stride, bpp * 4))
if len(colors) < 16 or ink < total * 0.02:
    fails.append("the screenshot looks blank: %d colours, %.1f%% non-white" % (len(colors), 100.0 * ink / total))
else:
    print("ok    screenshot %dx%d: %d colours, %.1f%% non-white" % (w, h, len(colors), 100.0 * ink / total))
if fails:
    print("FAIL: " + "\nFAIL: ".join(fails)); sys.exit(1)
print("ok    no console errors; layer/head choice redraws; model view opens a head")
PY

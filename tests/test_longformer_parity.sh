#!/usr/bin/env bash
# Global tokens against Hugging Face's Longformer (tests/data/longformer,
# made by tests/fixtures/make_longformer_fixture.py): `attn sdpa --window
# W,W` on the layer's q, k, v with its global tokens and padding must give
# the layer's float64 output within 2x the float32 layer's error + 1e-6
# (padded query rows, which Longformer zeroes, are not compared). The same
# without the global tokens must not (they matter). Python's standard
# library only. Needs ATTN, ATTN_SRC.
set -u
D="$ATTN_SRC/tests/data/longformer"
W=$(mktemp -d "${TMPDIR:-/tmp}/attn_longformer.XXXXXX")
trap 'rm -rf "$W"' EXIT
w=$(python3 -c "
import json, struct
b = open('$D/case.in.safetensors', 'rb').read()
n = struct.unpack('<Q', b[:8])[0]
print(json.loads(b[8:8 + n])['__metadata__']['window'])") || exit 1
"$ATTN" sdpa "$D/case.in.safetensors" "$W/out.st" --window "$w,$w" || exit 1
# the same inputs without global_tokens
python3 - "$D/case.in.safetensors" "$W/noglob.st" <<'PY' || exit 1
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
data = b[8 + n:]
keep = {k: v for k, v in h.items() if k not in ("global_tokens", "__metadata__")}
out, blob = {}, b""
for k, v in keep.items():
    s, e = v["data_offsets"]
    out[k] = dict(v, data_offsets=[len(blob), len(blob) + e - s])
    blob += data[s:e]
hb = json.dumps(out).encode()
hb += b" " * (-len(hb) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(hb)) + hb + blob)
PY
"$ATTN" sdpa "$W/noglob.st" "$W/out_noglob.st" --window "$w,$w" || exit 1
python3 - "$D/case.ref.safetensors" "$W/out.st" "$W/out_noglob.st" <<'PY'
import json, struct, sys
def load(p):
    b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    t = {}
    for k, v in h.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        raw = b[8 + n + s:8 + n + e]
        fmt = "<%df" % (len(raw) // 4) if v["dtype"] == "F32" else "<%dB" % len(raw)
        t[k] = (v["shape"], struct.unpack(fmt, raw))
    return t
ref, got, nog = load(sys.argv[1]), load(sys.argv[2]), load(sys.argv[3])
(B, H, L, Dh), f64 = ref["out_f64"]
f32 = ref["out_f32"][1]
rows = ref["rows"][1]
out, outn = got["out"][1], nog["out"][1]
err = err32 = errn = 0.0
for b in range(B):
    for h in range(H):
        for i in range(L):
            if not rows[b * L + i]:
                continue
            for d in range(Dh):
                e = ((b * H + h) * L + i) * Dh + d
                err = max(err, abs(out[e] - f64[e]))
                err32 = max(err32, abs(f32[e] - f64[e]))
                errn = max(errn, abs(outn[e] - f64[e]))
tol = 2 * err32 + 1e-6
print("attn vs Longformer float64: max err %.3g (float32 Longformer %.3g, tol %.3g); "
      "without global tokens %.3g" % (err, err32, tol, errn))
ok = err <= tol and errn > 100 * tol
sys.exit(0 if ok else 1)
PY

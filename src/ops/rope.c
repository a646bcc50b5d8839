/* Rotary position embedding helpers of the public API: the frequency table
 * with Hugging Face's scalings (linear, llama3), and rotating a tensor in
 * place (keys written into a KV cache). The attention option itself is
 * applied inside the drivers (sdpa_fwd.c, sdpa_bwd.c, sdpa_probs.c). */
#include "ops/sdpa_plan.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

attn_status attn_rope_inv_freq(attn_ctx *ctx, int64_t rot_dim, double theta,
                               const attn_rope_scaling *sc, float *inv_freq) {
    attn__ctx_clear(ctx);
    if (!inv_freq) return attn_ctx_fail(ctx, ATTN_E_ARG, "inv_freq is NULL");
    if (rot_dim < 2 || rot_dim % 2 || rot_dim > (1 << 20))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "rot_dim = %lld: must be even, in [2, 2^20]",
                             (long long)rot_dim);
    if (!(theta > 0.0) || !isfinite(theta))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "theta = %g: must be finite and > 0", theta);
    const int type = sc ? (int)sc->type : ATTN_ROPE_SCALING_NONE;
    if (type != ATTN_ROPE_SCALING_NONE && type != ATTN_ROPE_SCALING_LINEAR &&
        type != ATTN_ROPE_SCALING_LLAMA3)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "rope scaling type %d is unknown", type);
    if (type != ATTN_ROPE_SCALING_NONE && (!(sc->factor > 0.0) || !isfinite(sc->factor)))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "rope scaling factor = %g: must be finite and > 0",
                             sc->factor);
    if (type == ATTN_ROPE_SCALING_LLAMA3) {
        if (!(sc->low_freq_factor > 0.0) || !isfinite(sc->high_freq_factor) ||
            !(sc->high_freq_factor > sc->low_freq_factor))
            return attn_ctx_fail(ctx, ATTN_E_ARG,
                                 "llama3 rope scaling: need 0 < low_freq_factor (%g) < "
                                 "high_freq_factor (%g)",
                                 sc->low_freq_factor, sc->high_freq_factor);
        if (!(sc->original_max_position_embeddings > 0.0) ||
            !isfinite(sc->original_max_position_embeddings))
            return attn_ctx_fail(ctx, ATTN_E_ARG,
                                 "llama3 rope scaling: original_max_position_embeddings = %g "
                                 "must be finite and > 0",
                                 sc->original_max_position_embeddings);
    }
    const double pi = 3.14159265358979323846;
    for (int64_t i = 0; i < rot_dim / 2; i++) {
        double f = pow(theta, -2.0 * (double)i / (double)rot_dim);
        if (type == ATTN_ROPE_SCALING_LINEAR) {
            f /= sc->factor;
        } else if (type == ATTN_ROPE_SCALING_LLAMA3) {
            /* wavelengths longer than the original context / low_freq_factor
             * are slowed by factor, shorter than context / high_freq_factor
             * kept, and those between blended linearly in context/wavelength */
            const double L = sc->original_max_position_embeddings;
            const double wl = 2.0 * pi / f;
            const double lo_wl = L / sc->low_freq_factor, hi_wl = L / sc->high_freq_factor;
            if (wl > lo_wl) {
                f /= sc->factor;
            } else if (wl >= hi_wl) {
                double sm = (L / wl - sc->low_freq_factor) /
                            (sc->high_freq_factor - sc->low_freq_factor);
                f = (1.0 - sm) * f / sc->factor + sm * f;
            }
        }
        inv_freq[i] = (float)f;
    }
    return ATTN_OK;
}

attn_status attn_rope_apply(attn_ctx *ctx, const attn_rope *r, attn_tensor x) {
    attn__ctx_clear(ctx);
    if (!r) return attn_ctx_fail(ctx, ATTN_E_ARG, "rope is NULL");
    if (!x.data) return attn_ctx_fail(ctx, ATTN_E_ARG, "x: missing (data is NULL)");
    if (x.dtype != ATTN_F32) return attn_ctx_fail(ctx, ATTN_E_DTYPE, "x: dtype must be F32");
    if (x.ndim != 4)
        return attn_ctx_fail(ctx, ATTN_E_SHAPE, "x: expected [B, H, T, D], got %d dims", x.ndim);
    for (int d = 0; d < 4; d++)
        if (x.shape[d] < 0) return attn_ctx_fail(ctx, ATTN_E_SHAPE, "x: negative size in dim %d", d);
    if (x.stride[3] != 1 && x.shape[3] > 1)
        return attn_ctx_fail(ctx, ATTN_E_LAYOUT, "x: last stride must be 1");
    if (r->rot_dim == 0) return attn_ctx_fail(ctx, ATTN_E_ARG, "rope.rot_dim is 0 (rope off)");
    if (x.shape[2] > INT32_MAX || x.shape[3] > (1 << 20))
        return attn_ctx_fail(ctx, ATTN_E_SHAPE, "x: too large (T < 2^31, D <= 2^20)");
    attn__sdpa_plan p;
    memset(&p, 0, sizeof p);
    attn_status st = attn__rope_plan(ctx, r, x.shape[0], x.shape[3], &p);
    if (st) return st;
    const int64_t B = x.shape[0], H = x.shape[1], T = x.shape[2], D = x.shape[3];
    if (B == 0 || H == 0 || T == 0) return ATTN_OK;
    const int64_t nbh = B * H;
    const int nth = (int)ATTN_MAX(1, ATTN_MIN((int64_t)attn_ctx_threads(ctx), nbh));
    int fail = 0;
#pragma omp parallel num_threads(nth) reduction(| : fail)
    {
        double *tmp = malloc(attn__rope_tmp_doubles(p.rs.rot) * sizeof *tmp);
        if (!tmp) fail = 1;
#pragma omp for schedule(static)
        for (int64_t bh = 0; bh < nbh; bh++) {
            if (!tmp) continue;
            const int64_t b = bh / H, h = bh % H;
            float *row = (float *)x.data + b * x.stride[0] + h * x.stride[1];
            attn__rope_rows(&p.rs, row, x.stride[2], row, x.stride[2], (int)T, (int)D,
                            attn__rope_kpos(&p, b), 0, tmp);
        }
        free(tmp);
    }
    if (fail) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory");
    return ATTN_OK;
}

/* Attention probabilities of chosen rows, rebuilt from the forward's lse
 * with the forward's own kernels and score rules:
 *   p[r, j] = exp(s(b, h, i0 + r, j) - lse[b, h, i0 + r])  (x dropout factor)
 * Strips of the family's mr rows are packed as the forward packs them and
 * scored key block by key block with the same qk kernel and the same
 * attn__mask_tile, so every score is bitwise the one the forward
 * normalised; only the exponential differs (libm's expf here, the family's
 * in the forward: both within an ulp or so). Memory: one strip and one key
 * block per thread; nothing T x S besides the caller's output. */
#include "kernels/arch.h"
#include "ops/sdpa_mask.h"

#include <math.h>
#include <omp.h>
#include <string.h>

typedef struct probs_job {
    const attn__sdpa_plan *p;
    const attn__arch *ar;
    int64_t b, h, i0, n;
    float *out;
    int64_t ld; /* row stride of out */
} probs_job;

static size_t ws_floats(const attn__sdpa_plan *p, const attn__arch *ar) {
    size_t R = (size_t)ar->mr;
    return attn__round16((size_t)p->D * R) + (size_t)ar->bk * R + attn__round16(R) +
           attn__round16(4 * R) + attn__mask_seg_floats(p) +
           (p->rope ? attn__round16(R * p->D) + attn__round16((size_t)ar->bk * p->D) +
                          attn__round16(2 * attn__rope_tmp_doubles(p->rs.rot))
                    : 0);
}

/* Rows [r0, r0 + mr) of the job, r0 relative to job->i0. */
static void probs_strip(const probs_job *jb, int64_t r0, float *ws) {
    const attn__sdpa_plan *p = jb->p;
    const attn__arch *ar = jb->ar;
    const int R = ar->mr, mr = (int)ATTN_MIN((int64_t)R, jb->n - r0);
    const int64_t b = jb->b, h = jb->h, i0 = jb->i0 + r0, S = p->S;
    float *qt = ws, *s = qt + attn__round16((size_t)p->D * R);
    float *lse = s + (size_t)ar->bk * R;
    attn__strip_mask sm;
    sm.lo = (int64_t *)(lse + attn__round16((size_t)R));
    sm.hi = sm.lo + R;
    sm.seg = (attn__seg *)(lse + attn__round16((size_t)R) + attn__round16(4 * (size_t)R));
    attn__mask_strip(p, b, h, i0, mr, &sm);
    for (int r = 0; r < mr; r++)
        memset(jb->out + (r0 + r) * jb->ld, 0, (size_t)S * sizeof(float));
    if (!sm.nseg) return;
    for (int r = 0; r < mr; r++)
        lse[r] = p->lse[b * p->ls[0] + h * p->ls[1] + (i0 + r) * p->ls[2]];
    /* RoPE scratch: rotated queries [R][D], a rotated key tile [bk][D] */
    float *rq = (float *)sm.seg + attn__mask_seg_floats(p);
    float *rk = rq + attn__round16((size_t)R * p->D);
    double *rtmp = (double *)(rk + attn__round16((size_t)ar->bk * p->D));
    const float *q = p->q + b * p->qs[0] + h * p->qs[1] + i0 * p->qs[2];
    int64_t qs = p->qs[2];
    if (p->rope) {
        attn__rope_rows(&p->rs, q, qs, rq, p->D, mr, (int)p->D, attn__rope_qpos(p, b) + i0, 0,
                        rtmp);
        q = rq, qs = p->D;
    }
    ar->fwd.pack_q(q, qs, mr, R, (int)p->D, p->scale, qt);
    const float *kb = p->k + b * p->ks[0] + (h / p->group) * p->ks[1];
    /* the forward's tiles: runs of adjacent segments cut at multiples of bk */
    int k = 0;
    for (int64_t a, e; attn__mask_next_run(&sm, &k, &a, &e);) {
        for (int64_t ca = a; ca < e;) {
            int64_t cb = ATTN_MIN(e, (ca / ar->bk + 1) * ar->bk);
            int n = (int)(cb - ca);
            const float *kt = kb + ca * p->ks[2];
            int64_t kst = p->ks[2];
            if (p->rope_k) {
                attn__rope_rows(&p->rs, kt, kst, rk, p->D, n, (int)p->D,
                                attn__rope_kpos(p, b) + ca, 0, rtmp);
                kt = rk, kst = p->D;
            }
            ar->fwd.qk(qt, R, kt, kst, n, (int)p->D, s);
            attn__mask_tile(p, &sm, s, NULL, R, ca, cb);
            for (int r = 0; r < mr; r++) {
                if (lse[r] == -INFINITY) continue; /* no visible key: zeros */
                float *dst = jb->out + (r0 + r) * jb->ld;
                for (int64_t j = ca; j < cb; j++) {
                    float x = s[(j - ca) * R + r];
                    float pr = x == -INFINITY ? 0.0f : expf(x - lse[r]);
                    if (p->dropout_p > 0.0f) pr *= attn__dropout_factor(p, b, h, i0 + r, j);
                    dst[j] = pr;
                }
            }
            ca = cb;
        }
    }
}

static attn_status probs_run(attn_ctx *ctx, const attn__sdpa_plan *pp, int64_t b, int64_t h,
                             int64_t i0, int64_t n, attn_tensor probs);

static attn_status sdpa_probs(attn_ctx *ctx, const attn_sdpa_args *a, int64_t b, int64_t h,
                              int64_t i0, attn_tensor probs) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    attn__sdpa_plan p;
    attn_status st = attn__sdpa_plan_make(ctx, a, ATTN__PLAN_NEED_LSE | ATTN__PLAN_NO_OUT, &p);
    if (st) return st;
    if (b < 0 || b >= p.B || h < 0 || h >= p.H)
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "probs: (b, h) = (%lld, %lld) outside [0,%lld) x [0,%lld)",
                             (long long)b, (long long)h, (long long)p.B, (long long)p.H);
    if (!probs.data && !(probs.ndim == 2 && probs.shape[0] == 0))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "probs: missing (data is NULL)");
    if (probs.dtype != ATTN_F32)
        return attn_ctx_fail(ctx, ATTN_E_DTYPE, "probs: dtype must be F32");
    if (probs.ndim != 2)
        return attn_ctx_fail(ctx, ATTN_E_SHAPE, "probs: expected [rows, S], got %d dims",
                             probs.ndim);
    const int64_t n = probs.shape[0];
    if (probs.shape[1] != p.S || n < 0)
        return attn_ctx_fail(ctx, ATTN_E_SHAPE, "probs: must be [rows, S=%lld], got [%lld, %lld]",
                             (long long)p.S, (long long)probs.shape[0], (long long)probs.shape[1]);
    if (i0 < 0 || i0 > p.T || n > p.T - i0)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "probs: rows [%lld, %lld) outside [0, T=%lld)",
                             (long long)i0, (long long)(i0 + n), (long long)p.T);
    if (probs.stride[1] != 1 && p.S > 1)
        return attn_ctx_fail(ctx, ATTN_E_LAYOUT, "probs: last stride must be 1");
    if (n > 1 && probs.stride[0] < p.S)
        return attn_ctx_fail(ctx, ATTN_E_LAYOUT, "probs: row stride %lld overlaps rows of %lld",
                             (long long)probs.stride[0], (long long)p.S);
    if (n == 0 || p.S == 0) return ATTN_OK;
    attn__glob glob; /* the global tokens' index, for this call */
    if ((st = attn__mask_glob_build(ctx, &p, &glob))) return st;
    st = probs_run(ctx, &p, b, h, i0, n, probs);
    attn__mask_glob_free(&glob);
    return st;
}

static attn_status probs_run(attn_ctx *ctx, const attn__sdpa_plan *pp, int64_t b, int64_t h,
                             int64_t i0, int64_t n, attn_tensor probs) {
    const attn__sdpa_plan p = *pp;
    attn_status st;
    const attn__arch *ar = ctx->arch;
    probs_job jb = {&p, ar, b, h, i0, n, probs.data, probs.stride[0]};
    const int64_t nstrip = (n + ar->mr - 1) / ar->mr;
    int nth = (int)ATTN_MAX(1, ATTN_MIN((int64_t)ctx->nthreads, nstrip));
    if ((st = attn__ws_reserve(ctx, nth, ws_floats(&p, ar) * sizeof(float)))) return st;
    if (nth == 1) {
        for (int64_t k = 0; k < nstrip; k++)
            probs_strip(&jb, k * ar->mr, attn__ws_get(ctx, 0));
    } else {
#pragma omp parallel for num_threads(nth) schedule(dynamic, 1)
        for (int64_t k = 0; k < nstrip; k++)
            probs_strip(&jb, k * ar->mr, attn__ws_get(ctx, omp_get_thread_num()));
    }
    return ATTN_OK;
}

attn_status attn_sdpa_probs(attn_ctx *ctx, const attn_sdpa_args *a, int64_t b, int64_t h,
                            int64_t i0, attn_tensor probs) {
    if (!ctx) return ATTN_E_ARG;
    if (attn__ctx_enter(ctx)) return ATTN_E_BUSY; /* another thread's ctx: write nothing */
    attn_status st = sdpa_probs(ctx, a, b, h, i0, probs);
    attn__ctx_leave(ctx);
    return st;
}

/* Argument validation shared by the forward, backward and oracle. */
#include "ops/sdpa_plan.h"

#include <math.h>
#include <string.h>

static attn_status check_view(attn_ctx *ctx, const char *name, const attn_tensor *t, int ndim) {
    if (!t->data) return attn_ctx_fail(ctx, ATTN_E_ARG, "%s: missing (data is NULL)", name);
    if (t->dtype != ATTN_F32)
        return attn_ctx_fail(ctx, ATTN_E_DTYPE, "%s: dtype must be F32", name);
    if (t->ndim != ndim)
        return attn_ctx_fail(ctx, ATTN_E_SHAPE, "%s: expected %d dims, got %d", name, ndim,
                             t->ndim);
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] < 0)
            return attn_ctx_fail(ctx, ATTN_E_SHAPE, "%s: negative size in dim %d", name, i);
    if (t->stride[ndim - 1] != 1 && t->shape[ndim - 1] > 1)
        return attn_ctx_fail(ctx, ATTN_E_LAYOUT, "%s: last stride is %lld, must be 1", name,
                             (long long)t->stride[ndim - 1]);
    return ATTN_OK;
}

/* The bytes [*lo, *hi) a view can touch; 0 when it touches none (no data,
 * no elements) or its extent overflows (no real view spans 2^63 bytes). */
static int view_span(const attn_tensor *t, uintptr_t *lo, uintptr_t *hi) {
    if (!t->data || t->ndim < 0 || t->ndim > ATTN_MAX_DIMS) return 0;
    int64_t mn = 0, mx = 0;
    for (int d = 0; d < t->ndim; d++) {
        int64_t ext;
        if (t->shape[d] <= 0) return 0;
        if (__builtin_mul_overflow(t->shape[d] - 1, t->stride[d], &ext)) return 0;
        if (ext < 0 ? __builtin_add_overflow(mn, ext, &mn) : __builtin_add_overflow(mx, ext, &mx))
            return 0;
    }
    int64_t es = (int64_t)attn_dtype_size(t->dtype), bl, bh;
    if (__builtin_mul_overflow(mn, es, &bl) || __builtin_mul_overflow(mx + 1, es, &bh)) return 0;
    *lo = (uintptr_t)t->data + (uintptr_t)bl;
    *hi = (uintptr_t)t->data + (uintptr_t)bh;
    return 1;
}

int attn__views_overlap(const attn_tensor *x, const attn_tensor *y) {
    uintptr_t xl, xh, yl, yh;
    return view_span(x, &xl, &xh) && view_span(y, &yl, &yh) && xl < yh && yl < xh;
}

int attn__sdpa_inputs(const attn_sdpa_args *a, const attn__sdpa_plan *p, attn_tensor *in,
                      const char **names) {
    int n = 0;
    in[n] = a->q, names[n++] = "q";
    in[n] = a->k, names[n++] = "k";
    in[n] = a->v, names[n++] = "v";
    in[n] = a->mask, names[n++] = "mask";
    in[n] = a->key_padding_mask, names[n++] = "key_padding_mask";
    in[n] = a->global_tokens, names[n++] = "global_tokens";
    if (a->alibi_slopes)
        in[n] = attn_tensor_make((void *)a->alibi_slopes, ATTN_F32, 1, (int64_t[]){p->H}),
        names[n++] = "alibi_slopes";
    if (a->kv_len)
        in[n] = attn_tensor_make((void *)a->kv_len, ATTN_I32, 1, (int64_t[]){p->B}),
        names[n++] = "kv_len";
    if (p->rope && a->rope.inv_freq)
        in[n] = attn_tensor_make((void *)a->rope.inv_freq, ATTN_F32, 1,
                                 (int64_t[]){a->rope.rot_dim / 2}),
        names[n++] = "rope.inv_freq";
    if (p->rope && a->rope.q_pos_b)
        in[n] = attn_tensor_make((void *)a->rope.q_pos_b, ATTN_I32, 1, (int64_t[]){p->B}),
        names[n++] = "rope.q_pos_b";
    if (p->rope && a->rope.k_pos_b)
        in[n] = attn_tensor_make((void *)a->rope.k_pos_b, ATTN_I32, 1, (int64_t[]){p->B}),
        names[n++] = "rope.k_pos_b";
    return n;
}

/* out and lse may not share memory with an input: a strip's output would
 * overwrite rows another strip still reads (out == k, out over q shifted
 * by a row gave wrong results). The one aliasing allowed is out == q
 * exactly (same data and strides, D == Dv): each strip reads its q rows
 * before it writes the same out rows. */
static attn_status check_aliasing(attn_ctx *ctx, const attn_sdpa_args *a, const attn__sdpa_plan *p,
                                  int use_out) {
    attn_tensor in[ATTN__SDPA_NIN];
    const char *names[ATTN__SDPA_NIN];
    int n = attn__sdpa_inputs(a, p, in, names);
    int out_is_q = a->out.data == a->q.data && p->D == p->Dv &&
                   !memcmp(a->out.stride, a->q.stride, sizeof a->q.stride);
    for (int i = 0; i < n; i++) {
        if (use_out && !(i == 0 && out_is_q) && attn__views_overlap(&a->out, &in[i]))
            return attn_ctx_fail(ctx, ATTN_E_ARG,
                                 "out overlaps %s in memory (outputs may not share memory with "
                                 "inputs; only out == q exactly is allowed)",
                                 names[i]);
        if (a->lse.data && attn__views_overlap(&a->lse, &in[i]))
            return attn_ctx_fail(ctx, ATTN_E_ARG, "lse overlaps %s in memory", names[i]);
    }
    if (use_out && a->lse.data && attn__views_overlap(&a->lse, &a->out))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "lse overlaps out in memory");
    return ATTN_OK;
}

attn_status attn__rope_plan(attn_ctx *ctx, const attn_rope *r, int64_t B, int64_t D,
                            attn__sdpa_plan *p) {
    const int64_t lim = (int64_t)1 << 40;
    if (r->rot_dim == 0) return ATTN_OK;
    if (r->rot_dim < 0 || r->rot_dim % 2)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "rope.rot_dim = %lld: must be even and >= 2 (0 = off)",
                             (long long)r->rot_dim);
    if (r->rot_dim > D)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "rope.rot_dim = %lld exceeds the head dim D = %lld",
                             (long long)r->rot_dim, (long long)D);
    if (r->style != ATTN_ROPE_HALF && r->style != ATTN_ROPE_INTERLEAVED)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "rope.style = %d: must be ATTN_ROPE_HALF or "
                             "ATTN_ROPE_INTERLEAVED", (int)r->style);
    if (r->inv_freq) {
        for (int64_t i = 0; i < r->rot_dim / 2; i++)
            if (!isfinite(r->inv_freq[i]))
                return attn_ctx_fail(ctx, ATTN_E_ARG, "rope.inv_freq[%lld] = %g is not finite",
                                     (long long)i, (double)r->inv_freq[i]);
    } else if (!(r->theta > 0.0) || !isfinite(r->theta)) {
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "rope.theta = %g: must be finite and > 0 (or give rope.inv_freq)",
                             r->theta);
    }
    if (r->q_pos <= -lim || r->q_pos >= lim || r->k_pos <= -lim || r->k_pos >= lim)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "rope.q_pos = %lld / rope.k_pos = %lld: must be "
                             "within (-2^40, 2^40)", (long long)r->q_pos, (long long)r->k_pos);
    p->rope = 1;
    p->rope_k = !r->k_rotated;
    p->rs.rot = (int)r->rot_dim;
    p->rs.interleaved = r->style == ATTN_ROPE_INTERLEAVED;
    p->rs.theta = r->theta;
    p->rs.freq = r->inv_freq;
    p->rqpos = r->q_pos;
    p->rkpos = r->k_pos;
    p->rqpos_b = r->q_pos_b;
    p->rkpos_b = r->k_pos_b;
    (void)B;
    return ATTN_OK;
}

#define SHAPE_FAIL(...) return attn_ctx_fail(ctx, ATTN_E_SHAPE, __VA_ARGS__)

attn_status attn__sdpa_plan_make(attn_ctx *ctx, const attn_sdpa_args *a, int flags,
                                 attn__sdpa_plan *p) {
    attn_status st;
    memset(p, 0, sizeof *p);
    if (!a) return attn_ctx_fail(ctx, ATTN_E_ARG, "args is NULL");
    const int use_out = !(flags & ATTN__PLAN_NO_OUT) || a->out.data;
    if ((st = check_view(ctx, "q", &a->q, 4)) || (st = check_view(ctx, "k", &a->k, 4)) ||
        (st = check_view(ctx, "v", &a->v, 4)) ||
        (use_out && (st = check_view(ctx, "out", &a->out, 4))))
        return st;
    p->B = a->q.shape[0];
    p->H = a->q.shape[1];
    p->T = a->q.shape[2];
    p->D = a->q.shape[3];
    p->Hkv = a->k.shape[1];
    p->S = a->k.shape[2];
    p->Dv = a->v.shape[3];
    if (p->B < 1 || p->H < 1 || p->Hkv < 1 || p->D < 1 || p->Dv < 1)
        SHAPE_FAIL("B, H, Hkv, D and Dv must be >= 1 (got B=%lld H=%lld Hkv=%lld D=%lld Dv=%lld)",
                   (long long)p->B, (long long)p->H, (long long)p->Hkv, (long long)p->D,
                   (long long)p->Dv);
    if (a->k.shape[0] != p->B || a->v.shape[0] != p->B || (use_out && a->out.shape[0] != p->B))
        SHAPE_FAIL("batch sizes differ: q %lld, k %lld, v %lld, out %lld", (long long)p->B,
                   (long long)a->k.shape[0], (long long)a->v.shape[0],
                   (long long)(use_out ? a->out.shape[0] : p->B));
    if (a->v.shape[1] != p->Hkv)
        SHAPE_FAIL("k has %lld heads but v has %lld", (long long)p->Hkv, (long long)a->v.shape[1]);
    if (p->H % p->Hkv)
        SHAPE_FAIL("query heads H=%lld are not a multiple of key/value heads Hkv=%lld",
                   (long long)p->H, (long long)p->Hkv);
    if (a->v.shape[2] != p->S)
        SHAPE_FAIL("k has S=%lld keys but v has %lld", (long long)p->S, (long long)a->v.shape[2]);
    if (a->k.shape[3] != p->D)
        SHAPE_FAIL("q has D=%lld but k has D=%lld", (long long)p->D, (long long)a->k.shape[3]);
    if (use_out && (a->out.shape[1] != p->H || a->out.shape[2] != p->T || a->out.shape[3] != p->Dv))
        SHAPE_FAIL("out must be [%lld,%lld,%lld,%lld], got [%lld,%lld,%lld,%lld]", (long long)p->B,
                   (long long)p->H, (long long)p->T, (long long)p->Dv, (long long)a->out.shape[0],
                   (long long)a->out.shape[1], (long long)a->out.shape[2],
                   (long long)a->out.shape[3]);
    if (p->T > INT32_MAX || p->S > INT32_MAX || p->D > (1 << 20) || p->Dv > (1 << 20))
        SHAPE_FAIL("sizes too large (T, S < 2^31; D, Dv <= 2^20)");
    /* Every product is checked whatever the zeros (an empty T must not hide
     * 2^40 heads that the oracle would walk and the backward make tasks
     * for): at most 2^31 - 1 (batch, head) pairs, and each tensor's nonzero
     * sizes multiply to fewer than 2^60 elements. Such a size is "too
     * large", never "out of memory". */
    int64_t bh, bhk;
    if (__builtin_mul_overflow(p->B, p->H, &bh) || __builtin_mul_overflow(p->B, p->Hkv, &bhk) ||
        bh > INT32_MAX || bhk > INT32_MAX)
        SHAPE_FAIL("too large: B*H = %lld*%lld (batch, head) pairs, at most 2^31 - 1",
                   (long long)p->B, (long long)p->H);
    const int64_t rows[2] = {ATTN_MAX(p->T, 1), ATTN_MAX(p->S, 1)};
    const int64_t cols[4] = {p->D, p->Dv, p->D, p->Dv};
    for (int k = 0; k < 4; k++) {
        int64_t n;
        if (__builtin_mul_overflow(k < 2 ? bh : bhk, rows[k / 2], &n) ||
            __builtin_mul_overflow(n, cols[k], &n) || n >= ((int64_t)1 << 60))
            SHAPE_FAIL("too large: %s has 2^60 elements or more (B=%lld H=%lld Hkv=%lld "
                       "T=%lld S=%lld D=%lld Dv=%lld)",
                       k == 0   ? "q"
                       : k == 1 ? "out"
                       : k == 2 ? "k"
                                : "v",
                       (long long)p->B, (long long)p->H, (long long)p->Hkv, (long long)p->T,
                       (long long)p->S, (long long)p->D, (long long)p->Dv);
    }
    p->group = p->H / p->Hkv;

    if (a->lse.data) {
        if ((st = check_view(ctx, "lse", &a->lse, 3))) return st;
        if (a->lse.shape[0] != p->B || a->lse.shape[1] != p->H || a->lse.shape[2] != p->T)
            SHAPE_FAIL("lse must be [%lld,%lld,%lld]", (long long)p->B, (long long)p->H,
                       (long long)p->T);
        p->lse = a->lse.data;
        memcpy(p->ls, a->lse.stride, sizeof p->ls);
    } else if (flags & ATTN__PLAN_NEED_LSE) {
        return attn_ctx_fail(ctx, ATTN_E_ARG, "lse: required (the forward's log-sum-exp)");
    }

    if (!isfinite(a->scale))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "scale must be finite, got %g", (double)a->scale);
    p->scale = a->scale != 0.0f ? a->scale : (float)(1.0 / sqrt((double)p->D));
    if (!(a->softcap >= 0.0f) || !isfinite(a->softcap))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "softcap must be finite and >= 0, got %g",
                             (double)a->softcap);
    p->softcap = a->softcap;
    if (a->align != ATTN_ALIGN_TOP_LEFT && a->align != ATTN_ALIGN_BOTTOM_RIGHT)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "align must be top-left or bottom-right");
    p->shift = a->align == ATTN_ALIGN_BOTTOM_RIGHT ? p->S - p->T : 0;
    p->causal = a->causal != 0;
    p->window = a->window != 0;
    if (p->window) {
        if (a->window_left < -1 || a->window_right < -1)
            return attn_ctx_fail(ctx, ATTN_E_ARG,
                                 "window (%lld,%lld): each side must be >= 0, or -1 for unbounded",
                                 (long long)a->window_left, (long long)a->window_right);
        /* a side of S + T or more keeps every key on that side (p(i) is in
         * [-T, S + T)): clamped there, so p(i) - wl and p(i) + wr + 1 stay
         * far from overflow and every reader (tile classes, the oracle,
         * attn_sdpa_flops) sees the same numbers */
        const int64_t lim = p->S + p->T;
        p->wl = ATTN_MIN(a->window_left, lim);
        p->wr = ATTN_MIN(a->window_right, lim);
    }
    if (a->kv_len) {
        for (int64_t b = 0; b < p->B; b++)
            if (a->kv_len[b] < 0 || a->kv_len[b] > p->S)
                return attn_ctx_fail(ctx, ATTN_E_ARG, "kv_len[%lld] = %d is outside [0, S=%lld]",
                                     (long long)b, a->kv_len[b], (long long)p->S);
        p->kv_len = a->kv_len;
    }
    if (a->mask.data) {
        const attn_tensor *m = &a->mask;
        if (m->dtype == ATTN_F32)
            p->mask_kind = ATTN__MASK_FLOAT;
        else if (m->dtype == ATTN_BOOL || m->dtype == ATTN_U8)
            p->mask_kind = ATTN__MASK_BOOL;
        else
            return attn_ctx_fail(ctx, ATTN_E_DTYPE, "mask: dtype must be F32, BOOL or U8");
        /* PyTorch's broadcasting: dims align on the right, missing leading
         * dims are 1, and a dim of size 1 broadcasts (its stride is ignored):
         * [S], [T|1, S], [H|1, T|1, S], [B|1, H|1, T|1, S]. */
        if (m->ndim < 1 || m->ndim > 4)
            SHAPE_FAIL("mask: expected 1 to 4 dims ([B|1,H|1,T|1,S] right-aligned), got %d dims",
                       m->ndim);
        int64_t sh[4] = {1, 1, 1, 1}, sd[4] = {0, 0, 0, 0};
        for (int d = 0; d < m->ndim; d++) {
            sh[4 - m->ndim + d] = m->shape[d];
            sd[4 - m->ndim + d] = m->stride[d];
        }
        if ((sh[0] != 1 && sh[0] != p->B) || (sh[1] != 1 && sh[1] != p->H) ||
            (sh[2] != 1 && sh[2] != p->T) || sh[3] != p->S)
            SHAPE_FAIL(
                "mask: shape [%lld,%lld,%lld,%lld] does not broadcast to [%lld,%lld,%lld,%lld]",
                (long long)sh[0], (long long)sh[1], (long long)sh[2], (long long)sh[3],
                (long long)p->B, (long long)p->H, (long long)p->T, (long long)p->S);
        if (sd[3] != 1 && sh[3] > 1)
            return attn_ctx_fail(ctx, ATTN_E_LAYOUT, "mask: last stride must be 1");
        p->mask = m->data;
        p->msb = sh[0] == 1 ? 0 : sd[0];
        p->msh = sh[1] == 1 ? 0 : sd[1];
        p->mst = sh[2] == 1 ? 0 : sd[2];
    }
    if (a->key_padding_mask.data) {
        const attn_tensor *m = &a->key_padding_mask;
        if (m->dtype != ATTN_BOOL && m->dtype != ATTN_U8)
            return attn_ctx_fail(ctx, ATTN_E_DTYPE,
                                 "key_padding_mask: dtype must be BOOL or U8 (true = padding)");
        int64_t kb = m->ndim == 2 ? m->shape[0] : 1, ks = m->ndim >= 1 ? m->shape[m->ndim - 1] : 0;
        if ((m->ndim != 1 && m->ndim != 2) || (kb != 1 && kb != p->B) || ks != p->S)
            SHAPE_FAIL("key_padding_mask: expected [B|1,S] = [%lld,%lld] or [S], got %d dims "
                       "ending in %lld",
                       (long long)p->B, (long long)p->S, m->ndim, (long long)ks);
        if (m->stride[m->ndim - 1] != 1 && ks > 1)
            return attn_ctx_fail(ctx, ATTN_E_LAYOUT, "key_padding_mask: last stride must be 1");
        p->kpm = m->data;
        p->kpb = kb == 1 ? 0 : m->stride[0];
    }
    if (a->global_tokens.data) {
        const attn_tensor *m = &a->global_tokens;
        if (m->dtype != ATTN_BOOL && m->dtype != ATTN_U8)
            return attn_ctx_fail(ctx, ATTN_E_DTYPE,
                                 "global_tokens: dtype must be BOOL or U8 (nonzero = global)");
        int64_t gb = m->ndim == 2 ? m->shape[0] : 1, gs = m->ndim >= 1 ? m->shape[m->ndim - 1] : 0;
        if ((m->ndim != 1 && m->ndim != 2) || (gb != 1 && gb != p->B) || gs != p->S)
            SHAPE_FAIL("global_tokens: expected [B|1,S] = [%lld,%lld] or [S], got %d dims "
                       "ending in %lld",
                       (long long)p->B, (long long)p->S, m->ndim, (long long)gs);
        if (m->stride[m->ndim - 1] != 1 && gs > 1)
            return attn_ctx_fail(ctx, ATTN_E_LAYOUT, "global_tokens: last stride must be 1");
        p->gtok = m->data;
        p->gtb = gb == 1 ? 0 : m->stride[0];
    }
    p->alibi = a->alibi_slopes;
    if (a->layout) {
        const attn_sdpa_layout *L = a->layout;
        if (!L->blocks) return attn_ctx_fail(ctx, ATTN_E_ARG, "layout: blocks is NULL");
        if (L->bq < 1 || L->bk < 1)
            return attn_ctx_fail(ctx, ATTN_E_ARG, "layout: block sizes %lld x %lld must be >= 1",
                                 (long long)L->bq, (long long)L->bk);
        int64_t nq = (p->T + L->bq - 1) / L->bq, nk = (p->S + L->bk - 1) / L->bk;
        if (L->nqb != nq || L->nkb != nk)
            SHAPE_FAIL("layout: %lld x %lld blocks, but T=%lld and S=%lld in blocks of %lld x "
                       "%lld need %lld x %lld",
                       (long long)L->nqb, (long long)L->nkb, (long long)p->T, (long long)p->S,
                       (long long)L->bq, (long long)L->bk, (long long)nq, (long long)nk);
        p->lay = L->blocks;
        p->lbq = L->bq, p->lbk = L->bk, p->lnkb = nk;
        p->lhs = L->per_head ? nq * nk : 0;
    }
    if (!(a->dropout_p >= 0.0f && a->dropout_p < 1.0f))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "dropout_p must be in [0, 1), got %g",
                             (double)a->dropout_p);
    p->dropout_p = a->dropout_p;
    p->drop_thr = attn__dropout_threshold(a->dropout_p);
    p->seed = a->seed;
    if ((st = attn__rope_plan(ctx, &a->rope, p->B, p->D, p))) return st;
    p->q = a->q.data;
    p->k = a->k.data;
    p->v = a->v.data;
    p->out = a->out.data;
    memcpy(p->qs, a->q.stride, sizeof p->qs);
    memcpy(p->ks, a->k.stride, sizeof p->ks);
    memcpy(p->vs, a->v.stride, sizeof p->vs);
    memcpy(p->os, a->out.stride, sizeof p->os);
    return check_aliasing(ctx, a, p, use_out);
}

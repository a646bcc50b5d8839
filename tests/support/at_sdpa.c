/* Test support for attention: the plain fp32 implementation that sets the
 * tolerance, problem descriptions, allocation of a whole problem, and the
 * forward check against the float64 oracle. */
#include "attn_test.h"
#include "ops/sdpa_plan.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The naive code reads everything from the arguments themselves, as the
 * header documents them, and uses the library only to validate: so a slip in
 * how the library resolves the arguments (the oracle shares that code) shows
 * up as a disagreement between naive32 and the oracle. */

/* Mask element (b, h, i, j) of a mask broadcast as PyTorch does: dims
 * aligned on the right, a dim of size 1 read at index 0. */
static const void *mask_elem(const attn_tensor *m, int64_t b, int64_t h, int64_t i, int64_t j) {
    const int64_t full[4] = {b, h, i, j};
    int64_t idx[4];
    for (int d = 0; d < m->ndim; d++)
        idx[d] = m->shape[d] == 1 ? 0 : full[4 - m->ndim + d];
    return at_ptr(m, idx);
}

/* Structural and boolean masks, written out from the documented rules. */
static int naive_visible(const attn_sdpa_args *a, int64_t shift, int64_t b, int64_t h, int64_t i,
                         int64_t j) {
    int64_t pos = i + shift;
    if (a->kv_len && j >= a->kv_len[b]) return 0;
    if (a->causal && j > pos) return 0;
    /* global tokens ([B|1, S] or [S], in key positions) lift the window and
     * the layout */
    int global = 0;
    if (a->global_tokens.data) {
        const attn_tensor *g = &a->global_tokens;
        const int64_t S = a->k.shape[2];
        int64_t idx[2] = {g->ndim == 2 && g->shape[0] > 1 ? b : 0, j};
        global = *(const uint8_t *)at_ptr(g, g->ndim == 2 ? idx : idx + 1) != 0;
        idx[1] = pos;
        if (pos >= 0 && pos < S && *(const uint8_t *)at_ptr(g, g->ndim == 2 ? idx : idx + 1))
            global = 1;
    }
    if (a->window && !global) {
        if (a->window_left >= 0 && j < pos - a->window_left) return 0;
        if (a->window_right >= 0 && j > pos + a->window_right) return 0;
    }
    if (a->mask.data && a->mask.dtype != ATTN_F32 &&
        !*(const uint8_t *)mask_elem(&a->mask, b, h, i, j))
        return 0;
    if (a->key_padding_mask.data) { /* nonzero = padding key */
        const attn_tensor *k = &a->key_padding_mask;
        int64_t idx[2] = {k->ndim == 2 && k->shape[0] > 1 ? b : 0, j};
        if (*(const uint8_t *)at_ptr(k, k->ndim == 2 ? idx : idx + 1)) return 0;
    }
    if (a->layout && !global) { /* the block pair (i / bq, j / bk) must be computed */
        const attn_sdpa_layout *L = a->layout;
        int64_t hl = L->per_head ? h : 0;
        if (!L->blocks[(hl * L->nqb + i / L->bq) * L->nkb + j / L->bk]) return 0;
    }
    return 1;
}

/* The n-th index of 0..len-1 in the summation order of variant v: forward,
 * reverse, evens then odds, odds then evens. */
static int64_t order(int v, int64_t n, int64_t len) {
    switch (v & 3) {
    case 1:
        return len - 1 - n;
    case 2:
        return n < (len + 1) / 2 ? 2 * n : 2 * (n - (len + 1) / 2) + 1;
    case 3:
        return n < len / 2 ? 2 * n + 1 : 2 * (n - len / 2);
    default:
        return n;
    }
}

/* RoPE in plain fp32: cos and sin of each angle (taken in float64) rounded
 * to float, the rotation in float arithmetic, as a cos/sin-table
 * implementation does it. */
static void rope_row_f32(const attn_rope *r, int64_t pos, float *x, int inverse) {
    const int64_t half = r->rot_dim / 2;
    for (int64_t i = 0; i < half; i++) {
        double f = r->inv_freq ? (double)r->inv_freq[i]
                               : pow(r->theta, -2.0 * (double)i / (double)r->rot_dim);
        float c = (float)cos((double)pos * f), sn = (float)sin((double)pos * f);
        if (inverse) sn = -sn;
        int64_t ia = r->style == ATTN_ROPE_INTERLEAVED ? 2 * i : i;
        int64_t ib = r->style == ATTN_ROPE_INTERLEAVED ? 2 * i + 1 : i + half;
        float xa = x[ia], xb = x[ib];
        x[ia] = xa * c - xb * sn;
        x[ib] = xb * c + xa * sn;
    }
}

int64_t at_rope_pos(const attn_rope *r, int is_k, int64_t b, int64_t i) {
    if (is_k) return r->k_pos + (r->k_pos_b ? r->k_pos_b[b] : 0) + i;
    return r->q_pos + (r->q_pos_b ? r->q_pos_b[b] : 0) + i;
}

void at_rope_rotate(const attn_rope *r, const attn_tensor *x, int is_k, int inverse) {
    for (int64_t b = 0; b < x->shape[0]; b++)
        for (int64_t h = 0; h < x->shape[1]; h++)
            for (int64_t i = 0; i < x->shape[2]; i++)
                rope_row_f32(r, at_rope_pos(r, is_k, b, i), at_f32(x, b, h, i, 0), inverse);
}

int at_rope_copies(const attn_sdpa_args *a, at_buf *qr, at_buf *kr, attn_sdpa_args *r) {
    memset(qr, 0, sizeof *qr);
    memset(kr, 0, sizeof *kr);
    if (at_buf_copy_of(qr, &a->q) || at_buf_copy_of(kr, &a->k)) {
        at_buf_free(qr), at_buf_free(kr);
        return -1;
    }
    at_rope_rotate(&a->rope, &qr->t, 0, 0);
    if (!a->rope.k_rotated) at_rope_rotate(&a->rope, &kr->t, 1, 0);
    *r = *a;
    r->q = qr->t;
    r->k = kr->t;
    memset(&r->rope, 0, sizeof r->rope);
    return 0;
}

attn_status at_naive32_forward_order(attn_ctx *ctx, const attn_sdpa_args *a, int variant) {
    attn__sdpa_plan p; /* validation only */
    attn_status st = attn__sdpa_plan_make(ctx, a, 0, &p);
    if (st) return st;
    if (a->rope.rot_dim) { /* on rotated copies of q and k */
        at_buf qr, kr;
        attn_sdpa_args r;
        if (at_rope_copies(a, &qr, &kr, &r)) return ATTN_E_NOMEM;
        st = at_naive32_forward_order(ctx, &r, variant);
        at_buf_free(&qr), at_buf_free(&kr);
        return st;
    }
    const int64_t B = a->q.shape[0], H = a->q.shape[1], T = a->q.shape[2], D = a->q.shape[3];
    const int64_t Hkv = a->k.shape[1], S = a->k.shape[2], Dv = a->v.shape[3];
    const int64_t shift = a->align == ATTN_ALIGN_BOTTOM_RIGHT ? S - T : 0;
    const float scale = a->scale != 0.0f ? a->scale : (float)(1.0 / sqrt((double)D));
    const float cap = a->softcap, pdrop = a->dropout_p;
    float *s = malloc((size_t)(S > 0 ? S : 1) * sizeof *s);
    float *acc = malloc((size_t)Dv * sizeof *acc);
    if (!s || !acc) {
        free(s);
        free(acc);
        return ATTN_E_NOMEM;
    }
    const float drop_keep = pdrop > 0.0f ? 1.0f / (1.0f - pdrop) : 1.0f;
    const uint32_t drop_thr = attn__dropout_threshold(pdrop);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < T; i++) {
                const float *q = at_f32(&a->q, b, h, i, 0);
                int64_t hk = h / (H / Hkv), pos = i + shift;
                float mx = -INFINITY;
                int nan = 0;
                for (int64_t jj = 0; jj < S; jj++) {
                    int64_t j = variant & 1 ? S - 1 - jj : jj;
                    if (!naive_visible(a, shift, b, h, i, j)) {
                        s[j] = -INFINITY;
                        continue;
                    }
                    const float *k = at_f32(&a->k, b, hk, j, 0);
                    float x = 0.0f;
                    for (int64_t dd = 0; dd < D; dd++) {
                        int64_t d = order(variant, dd, D);
                        x += q[d] * k[d];
                    }
                    x *= scale;
                    if (cap > 0.0f) x = cap * tanhf(x / cap);
                    if (a->mask.data && a->mask.dtype == ATTN_F32)
                        x += *(const float *)mask_elem(&a->mask, b, h, i, j);
                    if (a->alibi_slopes) x -= a->alibi_slopes[h] * (float)llabs(pos - j);
                    s[j] = x;
                    if (isnan(x))
                        nan = 1;
                    else if (x > mx)
                        mx = x;
                }
                if (nan) mx = NAN;
                float l = 0.0f;
                for (int64_t c = 0; c < Dv; c++)
                    acc[c] = 0.0f;
                if (mx != -INFINITY) {
                    for (int64_t jj = 0; jj < S; jj++) {
                        int64_t j = variant & 1 ? S - 1 - jj : jj;
                        if (s[j] == -INFINITY) continue;
                        float e = expf(s[j] - mx);
                        l += e;
                        if (pdrop > 0.0f) {
                            /* the documented pure function of (seed, b, h, i, j) */
                            uint32_t u = attn__rng_u32(a->seed, (uint64_t)b, (uint64_t)h,
                                                       (uint64_t)i, (uint64_t)j);
                            e *= u >= drop_thr ? drop_keep : 0.0f;
                        }
                        const float *v = at_f32(&a->v, b, hk, j, 0);
                        for (int64_t c = 0; c < Dv; c++)
                            acc[c] += e * v[c];
                    }
                }
                float *o = at_f32(&a->out, b, h, i, 0);
                for (int64_t c = 0; c < Dv; c++)
                    o[c] = mx == -INFINITY ? 0.0f : acc[c] / l;
                if (a->lse.data)
                    *at_f32(&a->lse, b, h, i, 0) = mx == -INFINITY ? -INFINITY : mx + logf(l);
            }
    free(s);
    free(acc);
    return ATTN_OK;
}

attn_status at_naive32_forward(attn_ctx *ctx, const attn_sdpa_args *a) {
    return at_naive32_forward_order(ctx, a, 0);
}

void at_sdpa_describe(const attn_sdpa_args *a, char *buf, size_t n) {
    const attn_tensor *q = &a->q, *k = &a->k, *v = &a->v;
    int canon = q->stride[2] == q->shape[3] && q->stride[1] == q->shape[2] * q->shape[3] &&
                k->stride[2] == k->shape[3] && v->stride[2] == v->shape[3];
    size_t u =
        (size_t)snprintf(buf, n, "B=%lld H=%lld Hkv=%lld T=%lld S=%lld D=%lld Dv=%lld%s",
                         (long long)q->shape[0], (long long)q->shape[1], (long long)k->shape[1],
                         (long long)q->shape[2], (long long)k->shape[2], (long long)q->shape[3],
                         (long long)v->shape[3], canon ? "" : " strided");
#define ADD(...)                                                                                   \
    do {                                                                                           \
        if (u < n) u += (size_t)snprintf(buf + u, n - u, __VA_ARGS__);                             \
    } while (0)
    if (a->scale != 0.0f) ADD(" scale=%g", (double)a->scale);
    if (a->softcap != 0.0f) ADD(" softcap=%g", (double)a->softcap);
    if (a->causal) ADD(" causal");
    if (a->window)
        ADD(" window=(%lld,%lld)", (long long)a->window_left, (long long)a->window_right);
    if ((a->causal || a->window || a->alibi_slopes) || q->shape[2] != k->shape[2])
        ADD(" %s", a->align == ATTN_ALIGN_BOTTOM_RIGHT ? "bottom-right" : "top-left");
    if (a->kv_len) {
        ADD(" kv_len=[");
        for (int64_t b = 0; b < q->shape[0] && b < 8; b++)
            ADD("%s%d", b ? "," : "", a->kv_len[b]);
        ADD("]");
    }
    if (a->mask.data) {
        ADD(" mask=%s[", attn_dtype_name(a->mask.dtype));
        for (int d = 0; d < a->mask.ndim; d++)
            ADD("%s%lld", d ? "," : "", (long long)a->mask.shape[d]);
        ADD("]");
    }
    if (a->key_padding_mask.data)
        ADD(" key_padding_mask[%s]", a->key_padding_mask.ndim == 2 ? "B,S" : "S");
    if (a->global_tokens.data) {
        const attn_tensor *g = &a->global_tokens;
        const int64_t S = k->shape[2], nb = g->ndim == 2 ? g->shape[0] : 1;
        ADD(" global_tokens[%s]={", g->ndim == 2 ? "B,S" : "S");
        for (int64_t b = 0, cnt = 0; b < nb; b++) /* the first few marked positions */
            for (int64_t j = 0; j < S && cnt < 12; j++) {
                int64_t idx[2] = {b, j};
                if (*(const uint8_t *)at_ptr(g, g->ndim == 2 ? idx : idx + 1))
                    ADD("%s%lld:%lld", cnt++ ? "," : "", (long long)b, (long long)j);
            }
        ADD("}");
    }
    if (a->alibi_slopes) ADD(" alibi");
    if (a->dropout_p > 0.0f)
        ADD(" dropout=%g seed=%llu", (double)a->dropout_p, (unsigned long long)a->seed);
    if (a->rope.rot_dim)
        ADD(" rope(rot=%lld %s theta=%g%s qpos=%lld%s kpos=%lld%s%s)", (long long)a->rope.rot_dim,
            a->rope.style == ATTN_ROPE_INTERLEAVED ? "interleaved" : "half", a->rope.theta,
            a->rope.inv_freq ? " table" : "", (long long)a->rope.q_pos,
            a->rope.q_pos_b ? "+[b]" : "", (long long)a->rope.k_pos,
            a->rope.k_pos_b ? "+[b]" : "", a->rope.k_rotated ? " k-rotated" : "");
    if (!a->lse.data) ADD(" no-lse");
#undef ADD
}

int at_sdpa_check_forward(attn_ctx *ctx, const attn_sdpa_args *a, const at_buf *outb,
                          const at_buf *lseb, const char *label, uint64_t seed) {
    char desc[512];
    at_sdpa_describe(a, desc, sizeof desc);
    char full[768];
    snprintf(full, sizeof full, "%s%s%s", label ? label : "", label ? ": " : "", desc);
    const int64_t B = a->q.shape[0], H = a->q.shape[1], T = a->q.shape[2], Dv = a->v.shape[3];
    /* [0] oracle, [1..AT_NAIVE_ORDERS] naive32 in each summation order */
    at_buf o[1 + AT_NAIVE_ORDERS], l[1 + AT_NAIVE_ORDERS];
    const int nb = 1 + AT_NAIVE_ORDERS;
    int ok = 0;
    memset(o, 0, sizeof o);
    memset(l, 0, sizeof l);
    int64_t lsh[3] = {B, H, T};
    for (int k = 0; k < nb; k++)
        if (at_buf_f32(&o[k], B, H, T, Dv) || at_buf_alloc(&l[k], ATTN_F32, 3, lsh, NULL, 0)) {
            fprintf(stderr, "out of memory in the test\n");
            goto done;
        }
    attn_status st = attn_sdpa_forward(ctx, a);
    if (st != ATTN_OK) {
        fprintf(stderr, "attn_sdpa_forward failed (%s: %s) in case: %s\n", attn_status_str(st),
                attn_ctx_last_error(ctx), full);
        goto done;
    }
    for (int k = 0; k < nb; k++) {
        attn_sdpa_args r = *a;
        r.out = o[k].t;
        r.lse = a->lse.data ? l[k].t : (attn_tensor){0};
        st = k == 0 ? attn_sdpa_forward_ref(ctx, &r) : at_naive32_forward_order(ctx, &r, k - 1);
        if (st != ATTN_OK) {
            fprintf(stderr, "%s failed (%s) in case: %s\n", k ? "naive32" : "oracle",
                    attn_ctx_last_error(ctx), full);
            goto done;
        }
    }
    const attn_tensor *no[AT_NAIVE_ORDERS], *nl[AT_NAIVE_ORDERS];
    for (int k = 0; k < AT_NAIVE_ORDERS; k++)
        no[k] = &o[k + 1].t, nl[k] = &l[k + 1].t;
    ok = at_check_n("out", full, seed, &a->out, &o[0].t, no, AT_NAIVE_ORDERS, NULL);
    if (ok && a->lse.data)
        ok = at_check_n("lse", full, seed, &a->lse, &l[0].t, nl, AT_NAIVE_ORDERS, NULL);
    if (ok && ((outb && !at_buf_padding_intact(outb)) || (lseb && !at_buf_padding_intact(lseb)))) {
        fprintf(stderr, "  ... in case: %s (ATTN_TEST_SEED=%llu)\n", full,
                (unsigned long long)at_base_seed());
        ok = 0;
    }
done:
    for (int k = 0; k < nb; k++)
        at_buf_free(&o[k]), at_buf_free(&l[k]);
    return ok;
}

static const int perm_bthd[4] = {0, 2, 1, 3};

int at_buf_layout(at_buf *b, int64_t d0, int64_t d1, int64_t d2, int64_t d3, at_layout l) {
    int64_t sh[4] = {d0, d1, d2, d3};
    int pad = l == AT_BHTD_PAD || l == AT_BTHD_PAD ? 3 : 0;
    const int *perm = l == AT_BTHD || l == AT_BTHD_PAD ? perm_bthd : NULL;
    return at_buf_alloc(b, ATTN_F32, 4, sh, perm, pad);
}

int at_sdpa_alloc(at_sdpa *x, int64_t B, int64_t H, int64_t Hkv, int64_t T, int64_t S, int64_t D,
                  int64_t Dv, at_layout layout, at_rng *r) {
    memset(x, 0, sizeof *x);
    int64_t lsh[3] = {B, H, T};
    if (at_buf_layout(&x->q, B, H, T, D, layout) || at_buf_layout(&x->k, B, Hkv, S, D, layout) ||
        at_buf_layout(&x->v, B, Hkv, S, Dv, layout) ||
        at_buf_layout(&x->out, B, H, T, Dv, layout) ||
        at_buf_alloc(&x->lse, ATTN_F32, 3, lsh, NULL, layout == AT_BHTD ? 0 : 2)) {
        at_sdpa_free(x);
        return -1;
    }
    at_fill_uniform(&x->q.t, r, -1.0f, 1.0f);
    at_fill_uniform(&x->k.t, r, -1.0f, 1.0f);
    at_fill_uniform(&x->v.t, r, -1.0f, 1.0f);
    x->a.q = x->q.t;
    x->a.k = x->k.t;
    x->a.v = x->v.t;
    x->a.out = x->out.t;
    x->a.lse = x->lse.t;
    return 0;
}

void at_sdpa_free(at_sdpa *x) {
    at_buf_free(&x->q), at_buf_free(&x->k), at_buf_free(&x->v);
    at_buf_free(&x->out), at_buf_free(&x->lse), at_buf_free(&x->mask);
    at_buf_free(&x->kpm), at_buf_free(&x->gtok);
    free(x->kv_len);
    free(x->alibi);
    x->kv_len = NULL;
    x->alibi = NULL;
}

int at_sdpa_build(at_sdpa *x, const at_case *c, at_rng *r) {
    int64_t Hkv = c->Hkv ? c->Hkv : c->H, Dv = c->Dv ? c->Dv : c->D;
    if (at_sdpa_alloc(x, c->B, c->H, Hkv, c->T, c->S, c->D, Dv, c->layout, r)) return -1;
    attn_sdpa_args *a = &x->a;
    if (c->logit_mul != 0.0f && c->logit_mul != 1.0f) {
        for (int64_t b = 0; b < c->B; b++)
            for (int64_t h = 0; h < c->H; h++)
                for (int64_t i = 0; i < c->T; i++)
                    for (int64_t d = 0; d < c->D; d++)
                        *at_f32(&a->q, b, h, i, d) *= c->logit_mul;
    }
    if (c->no_lse) a->lse = (attn_tensor){0};
    a->rope = c->rope;
    a->causal = c->causal;
    a->align = c->align;
    a->window = c->window;
    a->window_left = c->wl;
    a->window_right = c->wr;
    a->softcap = c->softcap;
    a->scale = c->scale;
    a->dropout_p = c->dropout_p;
    a->seed = c->dropout_seed;
    if (c->kv_len) {
        x->kv_len = malloc((size_t)c->B * sizeof *x->kv_len);
        if (!x->kv_len) goto fail;
        for (int64_t b = 0; b < c->B; b++)
            x->kv_len[b] = b == 0               ? (int32_t)c->S
                           : b == 1 && c->B > 2 ? 0
                                                : (int32_t)at_rng_int(r, 0, c->S);
        a->kv_len = x->kv_len;
    }
    if (c->alibi) {
        x->alibi = malloc((size_t)c->H * sizeof *x->alibi);
        if (!x->alibi) goto fail;
        /* the geometric slopes of the ALiBi paper: 2^(-8(h+1)/H) */
        for (int64_t h = 0; h < c->H; h++)
            x->alibi[h] = (float)pow(2.0, -8.0 * (double)(h + 1) / (double)c->H);
        a->alibi_slopes = x->alibi;
    }
    if (c->mask_bcast != AT_MASK_NONE) {
        int64_t sh[4];
        int nd = at_mask_shape(c, c->mask_bcast, sh);
        int pad = c->layout == AT_BHTD_PAD || c->layout == AT_BTHD_PAD ? 5 : 0;
        if (at_buf_alloc(&x->mask, c->mask_dtype, nd, sh, NULL, pad)) goto fail;
        attn_tensor *m = &x->mask.t;
        int64_t n = 1;
        for (int d = 0; d < nd; d++)
            n *= sh[d];
        float keep = c->mask_keep > 0.0f ? c->mask_keep : 0.7f;
        for (int64_t e = 0; e < n; e++) { /* row-major walk over the mask's own dims */
            int64_t idx[4], rem = e;
            for (int d = nd - 1; d >= 0; d--)
                idx[d] = rem % sh[d], rem /= sh[d];
            void *el = at_ptr(m, idx);
            if (c->mask_dtype == ATTN_F32) {
                float v = at_rng_uniform(r, -2.0f, 2.0f);
                if (c->mask_ninf > 0.0f && at_rng_unit(r) < c->mask_ninf) v = -INFINITY;
                *(float *)el = v;
            } else {
                *(uint8_t *)el = at_rng_unit(r) < keep;
            }
        }
        a->mask = *m;
    }
    if (c->kpm) {
        int64_t sh[2] = {c->B, c->S};
        int one = c->kpm == 2;
        if (at_buf_alloc(&x->kpm, ATTN_BOOL, one ? 1 : 2, one ? sh + 1 : sh, NULL, 0)) goto fail;
        for (int64_t b = 0; b < (one ? 1 : c->B); b++)
            for (int64_t j = 0; j < c->S; j++) {
                int64_t idx[2] = {b, j};
                /* b = 0: left padding (the first third), which kv_len cannot say */
                uint8_t pad = b == 0               ? j < c->S / 3
                              : b == 1 && c->B > 2 ? 1
                                                   : at_rng_unit(r) < 0.3f;
                *(uint8_t *)at_ptr(&x->kpm.t, one ? idx + 1 : idx) = pad;
            }
        a->key_padding_mask = x->kpm.t;
    }
    if (c->global) {
        int64_t sh[2] = {c->B, c->S};
        int one = c->global == 2;
        if (at_buf_alloc(&x->gtok, ATTN_U8, one ? 1 : 2, one ? sh + 1 : sh, NULL, 0)) goto fail;
        float dens = c->global_frac > 0.0f ? c->global_frac : 0.1f;
        for (int64_t b = 0; b < (one ? 1 : c->B); b++)
            for (int64_t j = 0; j < c->S; j++) {
                int64_t idx[2] = {b, j};
                /* b = 1 of several: none (the row must equal its layout/window
                 * result), the others random */
                uint8_t g = b == 1 && !one ? 0 : at_rng_unit(r) < dens;
                *(uint8_t *)at_ptr(&x->gtok.t, one ? idx + 1 : idx) = g;
            }
        a->global_tokens = x->gtok.t;
    }
    return 0;
fail:
    at_sdpa_free(x);
    return -1;
}

int at_sdpa_run_forward(attn_ctx *ctx, const at_case *c, uint64_t case_id, const char *label) {
    at_rng r = at_rng_for(case_id);
    at_sdpa x;
    if (at_sdpa_build(&x, c, &r)) {
        fprintf(stderr, "out of memory building a test case\n");
        return 0;
    }
    int ok = at_sdpa_check_forward(ctx, &x.a, &x.out, c->no_lse ? NULL : &x.lse, label, r.seed);
    at_sdpa_free(&x);
    return ok;
}

int at_mask_shape(const at_case *c, int k, int64_t *sh) {
    const int64_t B = c->B, H = c->H, T = c->T, S = c->S;
    switch (k) {
    case AT_MASK_TS:
        sh[0] = T, sh[1] = S;
        return 2;
    case AT_MASK_1HTS:
        sh[0] = 1, sh[1] = H, sh[2] = T, sh[3] = S;
        return 4;
    case AT_MASK_B1TS:
        sh[0] = B, sh[1] = 1, sh[2] = T, sh[3] = S;
        return 4;
    case AT_MASK_BHTS:
        sh[0] = B, sh[1] = H, sh[2] = T, sh[3] = S;
        return 4;
    case AT_MASK_S:
        sh[0] = S;
        return 1;
    case AT_MASK_1S:
        sh[0] = 1, sh[1] = S;
        return 2;
    case AT_MASK_H1S:
        sh[0] = H, sh[1] = 1, sh[2] = S;
        return 3;
    case AT_MASK_HTS:
        sh[0] = H, sh[1] = T, sh[2] = S;
        return 3;
    case AT_MASK_B11S:
        sh[0] = B, sh[1] = 1, sh[2] = 1, sh[3] = S;
        return 4;
    case AT_MASK_BH1S:
        sh[0] = B, sh[1] = H, sh[2] = 1, sh[3] = S;
        return 4;
    default:
        return 0;
    }
}

at_case at_case_random(at_rng *r, uint64_t k, const int64_t *lens, int nlens) {
    static const attn_dtype dts[] = {ATTN_F32, ATTN_BOOL, ATTN_U8};
    at_case c = {0};
    c.B = at_rng_int(r, 1, 3);
    c.Hkv = at_rng_int(r, 1, 3);
    c.H = c.Hkv * at_rng_int(r, 1, 3);
    c.T = lens[at_rng_int(r, 0, nlens - 1)];
    c.S = at_rng_int(r, 0, 9) == 0 ? 0 : lens[at_rng_int(r, 0, nlens - 1)];
    c.D = at_rng_int(r, 1, 70);
    c.Dv = at_rng_int(r, 1, 70);
    c.layout = (at_layout)at_rng_int(r, 0, 3);
    c.causal = (int)at_rng_int(r, 0, 1);
    c.align = (attn_align)at_rng_int(r, 0, 1);
    c.window = (int)at_rng_int(r, 0, 1);
    c.wl = at_rng_int(r, -1, 40);
    c.wr = at_rng_int(r, -1, 40);
    c.kv_len = (int)at_rng_int(r, 0, 1);
    c.mask_bcast = (int)at_rng_int(r, AT_MASK_NONE, AT_MASK_BHTS);
    c.mask_dtype = dts[at_rng_int(r, 0, 2)];
    c.mask_ninf = at_rng_int(r, 0, 1) ? 0.3f : 0.0f;
    c.mask_keep = at_rng_int(r, 0, 1) ? 0.05f : 0.0f; /* sparse keep-masks: empty rows */
    c.alibi = (int)at_rng_int(r, 0, 1);
    c.softcap = at_rng_int(r, 0, 2) == 0 ? 7.0f : 0.0f;
    c.dropout_p = at_rng_int(r, 0, 3) == 0 ? 0.25f : 0.0f;
    c.dropout_seed = k;
    c.no_lse = at_rng_int(r, 0, 5) == 0;
    return c;
}

int at_run_random_cases(int n, uint64_t case_base, uint64_t input_base, const char *what,
                        at_case_gen gen, at_case_run run) {
    attn_ctx *ctx;
    if (attn_ctx_create(&ctx, 1)) return n;
    int fails = 0;
    for (int k = 0; k < n; k++) {
        at_rng r = at_rng_for(case_base + (uint64_t)k);
        at_case c = gen(&r, (uint64_t)k);
        int threads = (int)at_rng_int(&r, 1, 3);
        if (attn_ctx_set_threads(ctx, threads)) {
            fails++;
            continue;
        }
        char label[96];
        snprintf(label, sizeof label, "%s %d, %d threads", what, k, threads);
        fails += !run(ctx, &c, input_base + (uint64_t)k, label);
    }
    attn_ctx_free(ctx);
    return fails;
}

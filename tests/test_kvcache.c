/* The paged KV cache (attn_kvcache_*): random caches (block sizes 1 to 32,
 * F32 / F16 / BF16 storage, GQA groups, several sequences appended in
 * random pieces, interleaved, with freed sequences fragmenting the pool),
 * attention through them (decode: T * group <= 16, split into key chunks
 * and merged; prefill: the tiled forward gathering K/V per block), causal
 * or not, with RoPE (keys rotated when appended) or without:
 *  - against the float64 oracle on the stored (rounded) K/V with the
 *    tolerance rule (plain fp32 references on the same values);
 *  - F16/BF16 against the fp32 oracle on the unrounded K/V within the bound
 *    documented in kvcache.h;
 *  - bitwise the same for 1 and 3 threads;
 *  - stored rows within the storage's rounding of what was appended;
 *  - pool accounting (blocks return, a full cache refuses an append and
 *    writes nothing) and argument checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <math.h>

#include "attn_test.h"

#define MAXB 3
#define MIN64(a, b) ((a) < (b) ? (a) : (b))

typedef struct kv_case {
    int64_t Hkv, G, D, Dv, bs, T, B;
    int64_t len[MAXB];
    attn_dtype dt;
    int causal, rope;
} kv_case;

static double unit_roundoff(attn_dtype dt) {
    return dt == ATTN_F16 ? ldexp(1.0, -11) : dt == ATTN_BF16 ? ldexp(1.0, -8) : 0.0;
}

static kv_case random_kv_case(at_rng *r, int decode) {
    static const int64_t Ds[] = {8, 16, 33, 64, 128};
    static const int64_t bss[] = {1, 3, 16, 32};
    static const attn_dtype dts[] = {ATTN_F32, ATTN_F16, ATTN_BF16};
    kv_case c;
    memset(&c, 0, sizeof c);
    c.Hkv = at_rng_int(r, 1, 3);
    c.G = (int64_t)1 << at_rng_int(r, 0, 3);
    c.D = Ds[at_rng_int(r, 0, 4)];
    c.Dv = at_rng_int(r, 0, 2) == 0 ? Ds[at_rng_int(r, 0, 4)] : c.D;
    c.bs = bss[at_rng_int(r, 0, 3)];
    c.dt = dts[at_rng_int(r, 0, 2)];
    c.B = at_rng_int(r, 1, MAXB);
    c.T = decode ? at_rng_int(r, 1, 16 / c.G > 3 ? 3 : 16 / c.G) : at_rng_int(r, 2, 40);
    if (!decode && c.T * c.G <= 16) c.T = 16 / c.G + 1; /* make it a prefill */
    for (int64_t b = 0; b < c.B; b++)
        c.len[b] = c.T + at_rng_int(r, 0, at_rng_int(r, 0, 3) == 0 ? 2500 : 300);
    c.causal = at_rng_int(r, 0, 3) != 0;
    c.rope = at_rng_int(r, 0, 2) == 0 && c.D >= 2;
    return c;
}

/* A filled cache: each sequence's K/V (unrounded, [Hkv, len, D|Dv]) kept in
 * k32/v32, appended in random pieces, sequences interleaved, a scratch
 * sequence created and freed between to fragment the pool. */
typedef struct kv_fix {
    attn_kvcache *c;
    int32_t seq[MAXB];
    at_buf k32[MAXB], v32[MAXB];
    attn_rope rope; /* keys rotated when appended (rot_dim 0: none) */
} kv_fix;

static void fix_free(kv_fix *f) {
    attn_kvcache_free(f->c);
    for (int b = 0; b < MAXB; b++)
        at_buf_free(&f->k32[b]), at_buf_free(&f->v32[b]);
}

static void fix_build(attn_ctx *ctx, const kv_case *c, at_rng *r, kv_fix *f) {
    memset(f, 0, sizeof *f);
    int64_t tot = 0;
    for (int64_t b = 0; b < c->B; b++)
        tot += (c->len[b] + c->bs - 1) / c->bs + 1;
    attn_kvcache_config cfg = {c->Hkv, c->D, c->Dv, c->bs, tot + 8, c->dt, 8};
    assert_int_equal(attn_kvcache_create(ctx, &cfg, &f->c), ATTN_OK);
    if (c->rope) {
        f->rope.rot_dim = 2 * at_rng_int(r, 1, c->D / 2);
        f->rope.theta = 10000.0;
        f->rope.style = at_rng_int(r, 0, 1) ? ATTN_ROPE_INTERLEAVED : ATTN_ROPE_HALF;
        f->rope.k_rotated = 1;
    }
    int64_t done[MAXB] = {0};
    for (int64_t b = 0; b < c->B; b++) {
        assert_int_equal(attn_kvcache_seq_new(ctx, f->c, &f->seq[b]), ATTN_OK);
        int64_t ks[4] = {1, c->Hkv, c->len[b], c->D}, vs[4] = {1, c->Hkv, c->len[b], c->Dv};
        assert_int_equal(at_buf_alloc(&f->k32[b], ATTN_F32, 4, ks, NULL, 0), 0);
        assert_int_equal(at_buf_alloc(&f->v32[b], ATTN_F32, 4, vs, NULL, 0), 0);
        at_fill_uniform(&f->k32[b].t, r, -1, 1);
        at_fill_uniform(&f->v32[b].t, r, -1, 1);
    }
    for (;;) {
        int64_t b = at_rng_int(r, 0, c->B - 1), left = 0;
        for (int64_t i = 0; i < c->B; i++)
            left += c->len[i] - done[i];
        if (!left) break;
        if (done[b] == c->len[b]) continue;
        const int64_t want = at_rng_int(r, 1, at_rng_int(r, 0, 1) ? 7 : 400);
        int64_t n = MIN64(c->len[b] - done[b], want);
        if (at_rng_int(r, 0, 5) == 0) { /* fragment: a short-lived sequence */
            int32_t tmp;
            if (attn_kvcache_seq_new(ctx, f->c, &tmp) == ATTN_OK) {
                attn_tensor k1 = f->k32[0].t, v1 = f->v32[0].t;
                k1.ndim = v1.ndim = 3;
                for (int d = 0; d < 3; d++)
                    k1.shape[d] = k1.shape[d + 1], k1.stride[d] = k1.stride[d + 1],
                    v1.shape[d] = v1.shape[d + 1], v1.stride[d] = v1.stride[d + 1];
                k1.shape[1] = v1.shape[1] = MIN64(c->bs + 1, c->len[0]);
                assert_int_equal(attn_kvcache_append(ctx, f->c, tmp, k1, v1, NULL), ATTN_OK);
                assert_int_equal(attn_kvcache_seq_free(ctx, f->c, tmp), ATTN_OK);
            }
        }
        /* rows [done, done + n) of sequence b as [Hkv, n, D] views */
        attn_tensor k = f->k32[b].t, v = f->v32[b].t;
        k.ndim = v.ndim = 3;
        k.data = at_f32(&f->k32[b].t, 0, 0, done[b], 0);
        v.data = at_f32(&f->v32[b].t, 0, 0, done[b], 0);
        for (int d = 0; d < 3; d++)
            k.shape[d] = k.shape[d + 1], k.stride[d] = k.stride[d + 1],
            v.shape[d] = v.shape[d + 1], v.stride[d] = v.stride[d + 1];
        k.shape[1] = v.shape[1] = n;
        attn_rope ro = f->rope;
        ro.k_pos = 0; /* positions len + t */
        assert_int_equal(attn_kvcache_append(ctx, f->c, f->seq[b], k, v, c->rope ? &ro : NULL),
                         ATTN_OK);
        done[b] += n;
        assert_int_equal(attn_kvcache_seq_len(f->c, f->seq[b]), done[b]);
    }
}

/* One case: attend through the cache, then per sequence the dense oracle
 * and naive references on the stored K/V, and the bound against fp32. */
static int run_case(attn_ctx *ctx, const kv_case *c, uint64_t id, const char *label) {
    at_rng r = at_rng_for(id);
    kv_fix f;
    fix_build(ctx, c, &r, &f);
    const int64_t H = c->Hkv * c->G, B = c->B, T = c->T;
    at_buf q, out, lse, out3;
    int64_t ls[3] = {B, H, T};
    assert_int_equal(at_buf_layout(&q, B, H, T, c->D, at_rng_int(&r, 0, 1) ? AT_BTHD_PAD : AT_BHTD), 0);
    assert_int_equal(at_buf_f32(&out, B, H, T, c->Dv), 0);
    assert_int_equal(at_buf_f32(&out3, B, H, T, c->Dv), 0);
    assert_int_equal(at_buf_alloc(&lse, ATTN_F32, 3, ls, NULL, 0), 0);
    at_fill_uniform(&q.t, &r, -2, 2);
    attn_kvcache_attend_args a = {q.t, out.t, lse.t, f.seq, 0.0f, c->causal, f.rope};
    attn_status st = attn_kvcache_attend(ctx, f.c, &a);
    if (st) {
        fprintf(stderr, "%s: attend failed: %s\n", label, attn_ctx_last_error(ctx));
        return 0;
    }
    /* any thread count: the same bits */
    int nth = attn_ctx_threads(ctx);
    assert_int_equal(attn_ctx_set_threads(ctx, nth == 1 ? 3 : 1), ATTN_OK);
    a.out = out3.t, a.lse = (attn_tensor){0};
    assert_int_equal(attn_kvcache_attend(ctx, f.c, &a), ATTN_OK);
    assert_int_equal(attn_ctx_set_threads(ctx, nth), ATTN_OK);
    int ok = at_bitwise_equal("out", "1 vs 3 threads", &out.t, &out3.t);
    char full[400];
    snprintf(full, sizeof full,
             "%s: Hkv=%lld G=%lld D=%lld Dv=%lld bs=%lld T=%lld B=%lld dt=%s%s%s len0=%lld",
             label, (long long)c->Hkv, (long long)c->G, (long long)c->D, (long long)c->Dv,
             (long long)c->bs, (long long)T, (long long)B, attn_dtype_name(c->dt),
             c->causal ? " causal" : "", c->rope ? " rope" : "", (long long)c->len[0]);
    const double u = unit_roundoff(c->dt);
    for (int64_t b = 0; ok && b < B; b++) {
        const int64_t L = c->len[b];
        at_buf ks, vs; /* the stored values, as float32 */
        int64_t k4[4] = {1, c->Hkv, L, c->D}, v4[4] = {1, c->Hkv, L, c->Dv};
        assert_int_equal(at_buf_alloc(&ks, ATTN_F32, 4, k4, NULL, 0), 0);
        assert_int_equal(at_buf_alloc(&vs, ATTN_F32, 4, v4, NULL, 0), 0);
        attn_tensor k3 = ks.t, v3 = vs.t;
        k3.ndim = v3.ndim = 3;
        for (int d = 0; d < 3; d++)
            k3.shape[d] = k3.shape[d + 1], k3.stride[d] = k3.stride[d + 1],
            v3.shape[d] = v3.shape[d + 1], v3.stride[d] = v3.stride[d + 1];
        assert_int_equal(attn_kvcache_read(ctx, f.c, f.seq[b], k3, v3), ATTN_OK);
        /* the unrounded keys as attention sees them (rotated when rope) */
        at_buf k32r;
        assert_int_equal(at_buf_copy_of(&k32r, &f.k32[b].t), 0);
        if (c->rope) {
            attn_rope ro = f.rope;
            ro.k_pos = 0;
            assert_int_equal(attn_rope_apply(ctx, &ro, k32r.t), ATTN_OK);
        }
        /* stored = appended within the storage's rounding (F16 subnormals,
         * below 2^-14, are spaced 2^-24: half of that absolute) */
        const double sub = c->dt == ATTN_F16 ? ldexp(1.0, -25) : 0.0;
        for (int64_t hk = 0; ok && hk < c->Hkv; hk++)
            for (int64_t j = 0; ok && j < L; j++) {
                for (int64_t d = 0; ok && d < c->D; d++) {
                    float x = *at_f32(&k32r.t, 0, hk, j, d), y = *at_f32(&ks.t, 0, hk, j, d);
                    if (fabs((double)y - x) > u * fabs(x) + sub) {
                        fprintf(stderr, "%s: stored k %g for %g\n", full, y, x);
                        ok = 0;
                    }
                }
                for (int64_t d = 0; ok && d < c->Dv; d++) {
                    float x = *at_f32(&f.v32[b].t, 0, hk, j, d), y = *at_f32(&vs.t, 0, hk, j, d);
                    if (fabs((double)y - x) > u * fabs(x) + sub) {
                        fprintf(stderr, "%s: stored v %g for %g\n", full, y, x);
                        ok = 0;
                    }
                }
            }
        /* the oracle and naive32 on the stored values: the tolerance rule */
        attn_tensor qb = q.t, ob = out.t, lb = lse.t;
        qb.data = at_f32(&q.t, b, 0, 0, 0), qb.shape[0] = 1;
        ob.data = at_f32(&out.t, b, 0, 0, 0), ob.shape[0] = 1;
        lb.data = (float *)lse.t.data + b * lse.t.stride[0], lb.shape[0] = 1;
        at_buf o[1 + AT_NAIVE_ORDERS], l[1 + AT_NAIVE_ORDERS], o32, l32;
        int64_t l1[3] = {1, H, T};
        for (int k = 0; k <= AT_NAIVE_ORDERS; k++) {
            assert_int_equal(at_buf_f32(&o[k], 1, H, T, c->Dv), 0);
            assert_int_equal(at_buf_alloc(&l[k], ATTN_F32, 3, l1, NULL, 0), 0);
        }
        assert_int_equal(at_buf_f32(&o32, 1, H, T, c->Dv), 0);
        assert_int_equal(at_buf_alloc(&l32, ATTN_F32, 3, l1, NULL, 0), 0);
        attn_sdpa_args s = {.q = qb, .k = ks.t, .v = vs.t, .causal = c->causal,
                            .align = ATTN_ALIGN_BOTTOM_RIGHT, .rope = f.rope};
        s.rope.q_pos = L - T;
        for (int k = 0; k <= AT_NAIVE_ORDERS; k++) {
            s.out = o[k].t, s.lse = l[k].t;
            assert_int_equal(k ? at_naive32_forward_order(ctx, &s, k - 1)
                               : attn_sdpa_forward_ref(ctx, &s),
                             ATTN_OK);
        }
        const attn_tensor *no[AT_NAIVE_ORDERS], *nl[AT_NAIVE_ORDERS];
        for (int k = 0; k < AT_NAIVE_ORDERS; k++)
            no[k] = &o[k + 1].t, nl[k] = &l[k + 1].t;
        ok = ok && at_check_n("out", full, id, &ob, &o[0].t, no, AT_NAIVE_ORDERS, NULL);
        ok = ok && at_check_n("lse", full, id, &lb, &l[0].t, nl, AT_NAIVE_ORDERS, NULL);
        if (ok && u > 0) {
            /* against the fp32 oracle on the unrounded K/V: kvcache.h's bound */
            s.k = k32r.t, s.v = f.v32[b].t, s.out = o32.t, s.lse = l32.t;
            assert_int_equal(attn_sdpa_forward_ref(ctx, &s), ATTN_OK);
            const double scale = 1.0 / sqrt((double)c->D);
            double vmax = 0;
            for (int64_t hk = 0; hk < c->Hkv; hk++)
                for (int64_t j = 0; j < L; j++)
                    for (int64_t d = 0; d < c->Dv; d++)
                        vmax = fmax(vmax, fabs(*at_f32(&f.v32[b].t, 0, hk, j, d)));
            double fp32_tol = 0; /* the tolerance the rule gave on stored values */
            for (int64_t h = 0; h < H; h++)
                for (int64_t t = 0; t < T; t++)
                    for (int64_t d = 0; d < c->Dv; d++)
                        fp32_tol = fmax(fp32_tol, fabs(*at_f32(&ob, 0, h, t, d) -
                                                       *at_f32(&o[0].t, 0, h, t, d)));
            for (int64_t h = 0; ok && h < H; h++)
                for (int64_t t = 0; ok && t < T; t++) {
                    /* delta = u * scale * max_j sum_d |q_d k_jd| (rotated q: the
                     * rotation keeps |q| but not sum |q_d|, so bound by the
                     * rotated row's 2-norm times sqrt(D)) */
                    double qn = 0;
                    for (int64_t d = 0; d < c->D; d++)
                        qn += (double)*at_f32(&qb, 0, h, t, d) * *at_f32(&qb, 0, h, t, d);
                    double kmax = 0;
                    for (int64_t j = 0; j < L; j++) {
                        double kn = 0;
                        for (int64_t d = 0; d < c->D; d++)
                            kn += (double)*at_f32(&k32r.t, 0, h / c->G, j, d) *
                                  *at_f32(&k32r.t, 0, h / c->G, j, d);
                        kmax = fmax(kmax, sqrt(kn));
                    }
                    double delta = u * scale * sqrt(qn) * kmax * sqrt((double)c->D);
                    double bound = u * vmax + 2.0 * delta * vmax + 2.0 * fp32_tol + 1e-6;
                    for (int64_t d = 0; ok && d < c->Dv; d++) {
                        double e = fabs(*at_f32(&ob, 0, h, t, d) - *at_f32(&o32.t, 0, h, t, d));
                        if (e > bound) {
                            fprintf(stderr, "%s: |out - out_fp32| = %g > bound %g\n", full, e,
                                    bound);
                            ok = 0;
                        }
                    }
                    double le = fabs(*at_f32(&lb, 0, h, t, 0) - *at_f32(&l32.t, 0, h, t, 0));
                    if (ok && le > delta + 1e-5 * (1 + fabs(*at_f32(&l32.t, 0, h, t, 0)))) {
                        fprintf(stderr, "%s: |lse - lse_fp32| = %g > delta %g\n", full, le, delta);
                        ok = 0;
                    }
                }
        }
        for (int k = 0; k <= AT_NAIVE_ORDERS; k++)
            at_buf_free(&o[k]), at_buf_free(&l[k]);
        at_buf_free(&o32), at_buf_free(&l32), at_buf_free(&ks), at_buf_free(&vs);
        at_buf_free(&k32r);
    }
    at_buf_free(&q), at_buf_free(&out), at_buf_free(&out3), at_buf_free(&lse);
    fix_free(&f);
    return ok;
}

static void sweep(int decode, int n, uint64_t base) {
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 2), ATTN_OK);
    int fails = 0;
    for (int k = 0; k < n; k++) {
        at_rng r = at_rng_for(base + (uint64_t)k);
        kv_case c = random_kv_case(&r, decode);
        assert_int_equal(attn_ctx_set_threads(ctx, (int)at_rng_int(&r, 1, 3)), ATTN_OK);
        char label[64];
        snprintf(label, sizeof label, "%s %d", decode ? "decode" : "prefill", k);
        fails += !run_case(ctx, &c, base + 0x1000 + (uint64_t)k, label);
    }
    attn_ctx_free(ctx);
    assert_int_equal(fails, 0);
}

static void test_decode_random(void **state) {
    (void)state;
    sweep(1, at_quick() ? 10 : 60, 0x6b0000);
}

static void test_prefill_random(void **state) {
    (void)state;
    sweep(0, at_quick() ? 5 : 25, 0x6b1000);
}

static void test_pool_and_arguments(void **state) {
    (void)state;
    attn_ctx *ctx;
    assert_int_equal(attn_ctx_create(&ctx, 1), ATTN_OK);
    attn_kvcache *c = NULL;
    attn_kvcache_config cfg = {2, 8, 0, 4, 5, ATTN_F16, 2};
    assert_int_equal(attn_kvcache_create(ctx, &cfg, &c), ATTN_OK);
    float kx[2 * 30 * 8], vx[2 * 30 * 8];
    for (int i = 0; i < 2 * 30 * 8; i++)
        kx[i] = (float)i * 0.01f, vx[i] = -(float)i * 0.01f;
    int64_t sh[3] = {2, 9, 8};
    attn_tensor k = attn_tensor_make(kx, ATTN_F32, 3, sh), v = attn_tensor_make(vx, ATTN_F32, 3, sh);
    int32_t s0, s1, s2;
    assert_int_equal(attn_kvcache_seq_new(ctx, c, &s0), ATTN_OK);
    assert_int_equal(attn_kvcache_seq_new(ctx, c, &s1), ATTN_OK);
    assert_int_equal(attn_kvcache_seq_new(ctx, c, &s2), ATTN_E_NOMEM); /* max_seqs = 2 */
    assert_int_equal(attn_kvcache_append(ctx, c, s0, k, v, NULL), ATTN_OK); /* 9 rows: 3 blocks */
    assert_int_equal(attn_kvcache_free_blocks(c), 2);
    /* 9 more would need 3 blocks: refused, nothing written */
    assert_int_equal(attn_kvcache_append(ctx, c, s1, k, v, NULL), ATTN_E_NOMEM);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "cache full"));
    assert_int_equal(attn_kvcache_seq_len(c, s1), 0);
    assert_int_equal(attn_kvcache_free_blocks(c), 2);
    /* s0 grows into its last block's room, no block taken */
    sh[1] = 3;
    attn_tensor k3 = attn_tensor_make(kx, ATTN_F32, 3, sh), v3 = attn_tensor_make(vx, ATTN_F32, 3, sh);
    assert_int_equal(attn_kvcache_append(ctx, c, s0, k3, v3, NULL), ATTN_OK);
    assert_int_equal(attn_kvcache_seq_len(c, s0), 12);
    assert_int_equal(attn_kvcache_free_blocks(c), 2);
    assert_int_equal(attn_kvcache_seq_free(ctx, c, s0), ATTN_OK);
    assert_int_equal(attn_kvcache_free_blocks(c), 5);
    assert_int_equal(attn_kvcache_seq_len(c, s0), -1);
    assert_int_equal(attn_kvcache_seq_free(ctx, c, s0), ATTN_E_ARG);
    assert_int_equal(attn_kvcache_seq_new(ctx, c, &s2), ATTN_OK);
    assert_int_equal(s2, s0); /* the id is reused */
    /* bad appends */
    attn_tensor kb = k;
    kb.shape[2] = 7;
    assert_int_equal(attn_kvcache_append(ctx, c, s2, kb, v, NULL), ATTN_E_SHAPE);
    kb = k;
    kb.dtype = ATTN_F16;
    assert_int_equal(attn_kvcache_append(ctx, c, s2, kb, v, NULL), ATTN_E_DTYPE);
    assert_int_equal(attn_kvcache_append(ctx, c, 7, k, v, NULL), ATTN_E_ARG);
    attn_rope bad = {.rot_dim = 3, .theta = 1e4};
    assert_int_equal(attn_kvcache_append(ctx, c, s2, k, v, &bad), ATTN_E_ARG);
    assert_int_equal(attn_kvcache_seq_len(c, s2), 0);
    /* bad attends */
    float qx[4 * 2 * 8], ox[4 * 2 * 8];
    attn_tensor q = attn_tensor_f32_4d(qx, 1, 4, 2, 8), o = attn_tensor_f32_4d(ox, 1, 4, 2, 8);
    memset(qx, 0, sizeof qx);
    attn_kvcache_attend_args a = {q, o, {0}, &s2, 0, 1, {0}};
    assert_int_equal(attn_kvcache_attend(ctx, c, &a), ATTN_E_ARG); /* seq shorter than T */
    assert_non_null(strstr(attn_ctx_last_error(ctx), "fewer than T"));
    assert_int_equal(attn_kvcache_append(ctx, c, s2, k, v, NULL), ATTN_OK);
    assert_int_equal(attn_kvcache_attend(ctx, c, &a), ATTN_OK);
    a.rope = (attn_rope){.rot_dim = 8, .theta = 1e4};
    assert_int_equal(attn_kvcache_attend(ctx, c, &a), ATTN_E_ARG); /* k_rotated unset */
    assert_non_null(strstr(attn_ctx_last_error(ctx), "k_rotated"));
    a.rope = (attn_rope){0};
    a.seqs = NULL;
    assert_int_equal(attn_kvcache_attend(ctx, c, &a), ATTN_E_ARG);
    int32_t dead = 1;
    a.seqs = &dead; /* s1 is live (empty): shorter than T */
    assert_int_equal(attn_kvcache_attend(ctx, c, &a), ATTN_E_ARG);
    a.seqs = &s2;
    a.q = attn_tensor_f32_4d(qx, 1, 3, 2, 8); /* H = 3, Hkv = 2 */
    assert_int_equal(attn_kvcache_attend(ctx, c, &a), ATTN_E_SHAPE);
    attn_kvcache_free(c);
    /* bad configs */
    attn_kvcache_config bc = cfg;
    bc.block_size = 0;
    assert_int_equal(attn_kvcache_create(ctx, &bc, &c), ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(ctx), "block_size"));
    assert_null(c);
    bc = cfg;
    bc.dtype = ATTN_I32;
    assert_int_equal(attn_kvcache_create(ctx, &bc, &c), ATTN_E_DTYPE);
    bc = cfg;
    bc.num_blocks = 0;
    assert_int_equal(attn_kvcache_create(ctx, &bc, &c), ATTN_E_ARG);
    bc = cfg;
    bc.Hkv = 0;
    assert_int_equal(attn_kvcache_create(ctx, &bc, &c), ATTN_E_ARG);
    attn_kvcache_free(NULL);
    attn_ctx_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_random),
        cmocka_unit_test(test_prefill_random),
        cmocka_unit_test(test_pool_and_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

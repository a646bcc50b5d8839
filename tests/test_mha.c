/* The multi-head attention layer against a float64 oracle (a naive MHA with
 * materialised scores, tests/test_mha_naive.inc), forward, attention weights
 * and every gradient, over odd sizes, cross-attention, kdim != vdim, GQA/MQA,
 * every mask kind, dropout and strided inputs. The oracle's own backward is
 * checked by central finite differences.
 *
 * Tolerance (DESIGN.md): max |attn - oracle| <= 2 * max |naive fp32 - oracle|
 * + 1e-6, where "naive fp32" is the same naive code compiled with float. */
#include <attn/attn.h>

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/internal.h"

struct naive_prob {
    int64_t B, T, S, E, H, Hkv, kdim, vdim;
    float scale;
    const float *mask; /* dense [B,H,T,S], 0 or -inf or the float mask */
    const float *drop; /* dense [B,H,T,S] dropout factors, or NULL */
};

#define REAL double
#define NAIVE(n) n##_f64
#define NAIVE_EXP(x) exp(x)
#include "test_mha_naive.inc"
#undef REAL
#undef NAIVE
#undef NAIVE_EXP
#define REAL float
#define NAIVE(n) n##_f32
#define NAIVE_EXP(x) expf(x)
#include "test_mha_naive.inc"
#undef REAL
#undef NAIVE
#undef NAIVE_EXP

enum { SELF = 0, KV, SPLIT };
enum { MASK_NONE = 0, MASK_FLOAT, MASK_BOOL_TS, MASK_BOOL_B1 };

typedef struct mcase {
    int64_t B, T, S, E, H, Hkv, kdim, vdim;
    int mode, no_bias, causal, align, window;
    int64_t wl, wr;
    int mask, kv_len; /* kv_len: 1 = random lengths (batch 0 gets 0 if B > 1) */
    float dropout;
    int strided, weights; /* weights: 0 none, 1 per head, 2 averaged */
    int quick;            /* run under ATTN_TEST_QUICK */
} mcase;

static uint64_t g_seed = 1234;
static uint64_t rng_state;
static float urand(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)(z >> 40) / 16777216.0f * 2.0f - 1.0f;
}

/* A [B,R,W] input, strided when asked (padded rows and batches). */
typedef struct xin {
    float *buf;
    attn_tensor t;
    float *dense; /* [B,R,W] copy */
} xin;

static void make_x(xin *x, int64_t B, int64_t R, int64_t W, int strided) {
    int64_t s1 = strided ? W + 3 : W, s0 = strided ? R * s1 + 5 : R * W;
    x->buf = calloc((size_t)(B * s0 + 8), sizeof(float));
    x->dense = malloc((size_t)(B * R * W) * sizeof(float));
    int64_t sh[3] = {B, R, W};
    x->t = attn_tensor_make(x->buf, ATTN_F32, 3, sh);
    x->t.stride[0] = s0, x->t.stride[1] = s1;
    for (int64_t b = 0; b < B; b++)
        for (int64_t r = 0; r < R; r++)
            for (int64_t c = 0; c < W; c++) {
                float v = urand();
                x->buf[b * s0 + r * s1 + c] = v;
                x->dense[(b * R + r) * W + c] = v;
            }
}

static void free_x(xin *x) {
    free(x->buf);
    free(x->dense);
}

static float getx(const attn_tensor *t, int64_t b, int64_t r, int64_t c) {
    return ((const float *)t->data)[b * t->stride[0] + r * t->stride[1] + c];
}

static double *to_f64(const float *x, int64_t n) {
    double *d = malloc((size_t)(n > 0 ? n : 1) * sizeof *d);
    for (int64_t i = 0; i < n; i++)
        d[i] = x[i];
    return d;
}

/* max |a - ref| and the index of the first element above `tol` */
static double maxerr_f(const float *a, const double *ref, int64_t n) {
    double e = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - ref[i]);
        if (isnan(d)) return INFINITY;
        if (d > e) e = d;
    }
    return e;
}

static int check(const char *what, const mcase *c, const float *got, const float *naive,
                 const double *ref, int64_t n) {
    double eg = maxerr_f(got, ref, n), en = maxerr_f(naive, ref, n);
    double tol = 2.0 * en + 1e-6;
    if (getenv("ATTN_TEST_VERBOSE")) printf("%-22s got %.3g naive %.3g\n", what, eg, en);
    if (eg <= tol) return 0;
    for (int64_t i = 0; i < n; i++)
        if (fabs((double)got[i] - ref[i]) > tol || isnan(got[i])) {
            print_error("seed %llu case B=%lld T=%lld S=%lld E=%lld H=%lld Hkv=%lld mode=%d: %s "
                        "max err %.3g > tol %.3g (naive fp32 %.3g); first mismatch [%lld]: "
                        "got %.9g want %.9g\n",
                        (unsigned long long)g_seed, (long long)c->B, (long long)c->T,
                        (long long)c->S, (long long)c->E, (long long)c->H,
                        (long long)(c->Hkv ? c->Hkv : c->H), c->mode, what, eg, tol, en,
                        (long long)i, (double)got[i], ref[i]);
            break;
        }
    return 1;
}

static const attn_param *find(const attn_param *ps, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(ps[i].name, name)) return &ps[i];
    return NULL;
}

/* Pointers to Wq, Wk, Wv and bq, bk, bv inside the layer's parameters
 * (value or grad) whatever the naming scheme. */
static void split_in(const attn_param *ps, int n, int grad, int64_t E, int64_t KV, int64_t kdim,
                     float **w3, float **b3) {
    const attn_param *p = find(ps, n, "in_proj_weight");
#define DATA(p) ((float *)(grad ? (p)->grad.data : (p)->value.data))
    if (p) {
        w3[0] = DATA(p), w3[1] = w3[0] + E * E, w3[2] = w3[1] + KV * kdim;
    } else {
        w3[0] = DATA(find(ps, n, "q_proj_weight"));
        w3[1] = DATA(find(ps, n, "k_proj_weight"));
        w3[2] = DATA(find(ps, n, "v_proj_weight"));
    }
    b3[0] = b3[1] = b3[2] = NULL;
    if ((p = find(ps, n, "in_proj_bias"))) {
        b3[0] = DATA(p), b3[1] = b3[0] + E, b3[2] = b3[1] + KV;
    } else if ((p = find(ps, n, "q_proj_bias"))) {
        b3[0] = DATA(p);
        b3[1] = DATA(find(ps, n, "k_proj_bias"));
        b3[2] = DATA(find(ps, n, "v_proj_bias"));
    }
#undef DATA
}

static int64_t numel(const attn_param *p) {
    return attn_tensor_numel(&p->value);
}

/* Dense [B,H,T,S] additive mask with the structural masks, from the
 * semantics in DESIGN.md written independently of the library. */
static float *dense_mask(const mcase *c, const float *fmask, const uint8_t *bmask,
                         const int32_t *kv_len, int64_t S) {
    int64_t B = c->B, H = c->H, T = c->T;
    float *m = malloc((size_t)(B * H * T * S) * sizeof *m);
    int64_t shift = c->align ? S - T : 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < T; i++)
                for (int64_t j = 0; j < S; j++) {
                    int64_t p = i + shift;
                    int vis = 1;
                    if (c->causal && j > p) vis = 0;
                    if (c->window && c->wl >= 0 && j < p - c->wl) vis = 0;
                    if (c->window && c->wr >= 0 && j > p + c->wr) vis = 0;
                    if (kv_len && j >= kv_len[b]) vis = 0;
                    float add = 0;
                    if (c->mask == MASK_FLOAT) add = fmask[(b * T + i) * S + j]; /* [B,1,T,S] */
                    if (c->mask == MASK_BOOL_TS && !bmask[i * S + j]) vis = 0;
                    if (c->mask == MASK_BOOL_B1 && !bmask[(b * T + i) * S + j]) vis = 0;
                    m[((b * H + h) * T + i) * S + j] = vis ? add : -INFINITY;
                }
    return m;
}

static int run_case(attn_ctx *ctx, const mcase *c) {
    int fails = 0;
    rng_state = g_seed ^ (uint64_t)(c->T * 131 + c->S * 7 + c->E);
    int64_t B = c->B, T = c->T, E = c->E, H = c->H, Hkv = c->Hkv ? c->Hkv : c->H;
    int64_t kdim = c->kdim ? c->kdim : E, vdim = c->vdim ? c->vdim : kdim;
    int64_t S = c->mode == SELF ? T : c->S, Dh = E / H, KV = Hkv * Dh;
    attn_mha_config cfg = {0};
    cfg.E = E, cfg.H = H, cfg.Hkv = Hkv, cfg.kdim = kdim, cfg.vdim = vdim;
    cfg.no_bias = c->no_bias, cfg.dropout = c->dropout, cfg.causal = c->causal;
    cfg.align = c->align ? ATTN_ALIGN_BOTTOM_RIGHT : ATTN_ALIGN_TOP_LEFT;
    cfg.window = c->window, cfg.window_left = c->wl, cfg.window_right = c->wr;
    attn_mha *m = NULL;
    assert_int_equal(attn_mha_create(ctx, &cfg, g_seed, &m), ATTN_OK);
    int np;
    const attn_param *ps = attn_mha_get_params(m, &np);
    /* random biases so the bias paths are exercised (init makes them 0) */
    for (int i = 0; i < np; i++)
        if (strstr(ps[i].name, "bias"))
            for (int64_t j = 0; j < numel(&ps[i]); j++)
                ((float *)ps[i].value.data)[j] = urand();
    float *w3[3], *b3[3], *gw3[3], *gb3[3];
    split_in(ps, np, 0, E, KV, kdim, w3, b3);
    split_in(ps, np, 1, E, KV, kdim, gw3, gb3);
    const attn_param *pwo = find(ps, np, "out_proj.weight"), *pbo = find(ps, np, "out_proj.bias");

    xin xq, xk = {0}, xv = {0}, dy;
    make_x(&xq, B, T, E, c->strided);
    if (c->mode != SELF) make_x(&xk, B, S, kdim, c->strided);
    if (c->mode == SPLIT) make_x(&xv, B, S, vdim, c->strided);
    make_x(&dy, B, T, E, c->strided);
    const float *dxk_in = c->mode == SELF ? xq.dense : xk.dense;
    const float *dxv_in = c->mode == SPLIT ? xv.dense : dxk_in;

    /* masks */
    float *fmask = NULL;
    uint8_t *bmask = NULL;
    int32_t *kv_len = NULL;
    attn_mha_args a;
    memset(&a, 0, sizeof a);
    if (c->mask == MASK_FLOAT) {
        fmask = malloc((size_t)(B * T * S) * sizeof *fmask);
        for (int64_t i = 0; i < B * T * S; i++)
            fmask[i] = 2.0f * urand();
        int64_t sh[4] = {B, 1, T, S};
        a.mask = attn_tensor_make(fmask, ATTN_F32, 4, sh);
    } else if (c->mask == MASK_BOOL_TS || c->mask == MASK_BOOL_B1) {
        int64_t n = c->mask == MASK_BOOL_TS ? T * S : B * T * S;
        bmask = malloc((size_t)n);
        for (int64_t i = 0; i < n; i++)
            bmask[i] = urand() > -0.5f; /* 3/4 attend */
        if (c->mask == MASK_BOOL_TS) {
            int64_t sh[2] = {T, S};
            a.mask = attn_tensor_make(bmask, ATTN_BOOL, 2, sh);
        } else {
            int64_t sh[4] = {B, 1, T, S};
            a.mask = attn_tensor_make(bmask, ATTN_BOOL, 4, sh);
        }
    }
    if (c->kv_len) {
        kv_len = malloc((size_t)B * sizeof *kv_len);
        for (int64_t b = 0; b < B; b++)
            kv_len[b] =
                (b == 0 && B > 1) ? 0 : (int32_t)(1 + (int64_t)((urand() + 1) * 0.5f * S) % S);
        a.kv_len = kv_len;
    }
    float *dmask = dense_mask(c, fmask, bmask, kv_len, S);
    float *drop = NULL;
    a.training = c->dropout > 0;
    a.seed = g_seed * 7 + 1;
    if (c->dropout > 0) {
        drop = malloc((size_t)(B * H * T * S) * sizeof *drop);
        uint32_t thr = attn__dropout_threshold(c->dropout);
        for (int64_t b = 0; b < B; b++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t i = 0; i < T; i++)
                    for (int64_t j = 0; j < S; j++)
                        drop[((b * H + h) * T + i) * S + j] =
                            attn__rng_u32(a.seed, b, h, i, j) >= thr ? 1.0f / (1.0f - c->dropout)
                                                                     : 0.0f;
    }

    /* the library */
    xin y, dxq, dxk = {0}, dxv = {0};
    make_x(&y, B, T, E, c->strided);
    make_x(&dxq, B, T, E, c->strided);
    if (c->mode != SELF) make_x(&dxk, B, S, kdim, c->strided);
    if (c->mode == SPLIT) make_x(&dxv, B, S, vdim, c->strided);
    a.x_q = xq.t;
    if (c->mode != SELF) a.x_k = xk.t;
    if (c->mode == SPLIT) a.x_v = xv.t;
    a.y = y.t;
    float *wts = NULL;
    int64_t nw = c->weights == 1 ? B * H * T * S : B * T * S;
    if (c->weights) {
        wts = malloc((size_t)nw * sizeof *wts);
        int64_t sh4[4] = {B, H, T, S}, sh3[3] = {B, T, S};
        a.attn_weights = c->weights == 1 ? attn_tensor_make(wts, ATTN_F32, 4, sh4)
                                         : attn_tensor_make(wts, ATTN_F32, 3, sh3);
    }
    attn_status st = attn_mha_forward(ctx, m, &a);
    if (st) print_error("forward: %s\n", attn_ctx_last_error(ctx));
    assert_int_equal(st, ATTN_OK);
    attn_mha_grads g;
    memset(&g, 0, sizeof g);
    g.dy = dy.t;
    g.dx_q = dxq.t;
    if (c->mode != SELF) g.dx_k = dxk.t;
    if (c->mode == SPLIT) g.dx_v = dxv.t;
    st = attn_mha_backward(ctx, m, &a, &g);
    if (st) print_error("backward: %s\n", attn_ctx_last_error(ctx));
    assert_int_equal(st, ATTN_OK);

    /* the oracle (f64) and the naive fp32 twin */
    struct naive_prob P = {B,     T,   S, E, H, Hkv, kdim, vdim, (float)(1.0 / sqrt((double)Dh)),
                           dmask, drop};
    int64_t nq = E * E, nk = KV * kdim, nv = KV * vdim, nx = B * T * E;
    int64_t nxk = B * S * kdim, nxv = B * S * vdim;
    mha_f64 o64 = {0};
    mha_f32 o32 = {0};
    double *xq64 = to_f64(xq.dense, nx), *dy64 = to_f64(dy.dense, nx);
    double *xk64 = c->mode == SELF ? xq64 : to_f64(xk.dense, nxk);
    double *xv64 = c->mode == SPLIT ? to_f64(xv.dense, nxv) : xk64;
    double *w64[4] = {to_f64(w3[0], nq), to_f64(w3[1], nk), to_f64(w3[2], nv),
                      to_f64(pwo->value.data, nq)};
    double *b64[4] = {NULL, NULL, NULL, NULL};
    if (!c->no_bias) {
        b64[0] = to_f64(b3[0], E), b64[1] = to_f64(b3[1], KV), b64[2] = to_f64(b3[2], KV);
        b64[3] = to_f64(pbo->value.data, E);
    }
    o64.Wq = w64[0], o64.Wk = w64[1], o64.Wv = w64[2], o64.Wo = w64[3];
    o64.bq = b64[0], o64.bk = b64[1], o64.bv = b64[2], o64.bo = b64[3];
    o32.Wq = w3[0], o32.Wk = w3[1], o32.Wv = w3[2], o32.Wo = pwo->value.data;
    if (!c->no_bias) o32.bq = b3[0], o32.bk = b3[1], o32.bv = b3[2], o32.bo = pbo->value.data;
#define ALLOC_ACT(A_, R)                                                                           \
    A_.q = calloc((size_t)nx, sizeof(R)), A_.k = calloc((size_t)(B * S * KV), sizeof(R)),          \
    A_.v = calloc((size_t)(B * S * KV), sizeof(R)),                                                \
    A_.p = calloc((size_t)(B * H * T * S), sizeof(R)), A_.o = calloc((size_t)nx, sizeof(R)),       \
    A_.y = calloc((size_t)nx, sizeof(R)), A_.dxq = calloc((size_t)nx, sizeof(R)),                  \
    A_.dxk = c->mode == SELF ? A_.dxq : calloc((size_t)nxk, sizeof(R)),                            \
    A_.dxv = c->mode == SPLIT ? calloc((size_t)nxv, sizeof(R)) : A_.dxk,                           \
    A_.dWq = calloc((size_t)nq, sizeof(R)), A_.dWk = calloc((size_t)nk, sizeof(R)),                \
    A_.dWv = calloc((size_t)nv, sizeof(R)), A_.dWo = calloc((size_t)nq, sizeof(R)),                \
    A_.dbq = c->no_bias ? NULL : calloc((size_t)E, sizeof(R)),                                     \
    A_.dbk = c->no_bias ? NULL : calloc((size_t)KV, sizeof(R)),                                    \
    A_.dbv = c->no_bias ? NULL : calloc((size_t)KV, sizeof(R)),                                    \
    A_.dbo = c->no_bias ? NULL : calloc((size_t)E, sizeof(R))
    ALLOC_ACT(o64, double);
    ALLOC_ACT(o32, float);
    forward_f64(&P, &o64, xq64, xk64, xv64);
    backward_f64(&P, &o64, xq64, xk64, xv64, dy64);
    forward_f32(&P, &o32, xq.dense, c->mode == SELF ? xq.dense : xk.dense,
                c->mode == SPLIT ? xv.dense : (c->mode == SELF ? xq.dense : xk.dense));
    backward_f32(&P, &o32, xq.dense, c->mode == SELF ? xq.dense : xk.dense,
                 c->mode == SPLIT ? xv.dense : (c->mode == SELF ? xq.dense : xk.dense), dy.dense);
    (void)dxk_in, (void)dxv_in;

    /* gather the library's strided outputs densely */
    float *yd = calloc((size_t)nx, sizeof *yd), *dxqd = calloc((size_t)nx, sizeof *dxqd);
    float *dxkd = malloc((size_t)(nxk + 1) * sizeof *dxkd), *dxvd = malloc((size_t)(nxv + 1) * 4);
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t e = 0; e < E; e++) {
                yd[(b * T + t) * E + e] = getx(&y.t, b, t, e);
                dxqd[(b * T + t) * E + e] = getx(&dxq.t, b, t, e);
            }
    for (int64_t b = 0; c->mode != SELF && b < B; b++)
        for (int64_t s = 0; s < S; s++) {
            for (int64_t e = 0; e < kdim; e++)
                dxkd[(b * S + s) * kdim + e] = getx(&dxk.t, b, s, e);
            for (int64_t e = 0; c->mode == SPLIT && e < vdim; e++)
                dxvd[(b * S + s) * vdim + e] = getx(&dxv.t, b, s, e);
        }
    fails += check("y", c, yd, o32.y, o64.y, nx);
    if (c->weights) {
        /* probabilities after dropout, per head or averaged */
        double *pw = calloc((size_t)nw, sizeof *pw);
        float *pw32 = calloc((size_t)nw, sizeof *pw32);
        for (int64_t b = 0; b < B; b++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t i = 0; i < T * S; i++) {
                    int64_t src = (b * H + h) * T * S + i;
                    double f = drop ? drop[src] : 1.0;
                    int64_t dst = c->weights == 1 ? src : b * T * S + i;
                    double sc = c->weights == 1 ? 1.0 : 1.0 / (double)H;
                    pw[dst] += o64.p[src] * f * sc;
                    pw32[dst] += o32.p[src] * (float)f * (float)sc;
                }
        fails += check("attn_weights", c, wts, pw32, pw, nw);
        free(pw), free(pw32);
    }
    fails += check("dx_q", c, dxqd, o32.dxq, o64.dxq, nx);
    if (c->mode != SELF) fails += check("dx_k", c, dxkd, o32.dxk, o64.dxk, nxk);
    if (c->mode == SPLIT) fails += check("dx_v", c, dxvd, o32.dxv, o64.dxv, nxv);
    fails += check("grad Wq", c, gw3[0], o32.dWq, o64.dWq, nq);
    fails += check("grad Wk", c, gw3[1], o32.dWk, o64.dWk, nk);
    fails += check("grad Wv", c, gw3[2], o32.dWv, o64.dWv, nv);
    fails += check("grad out_proj.weight", c, pwo->grad.data, o32.dWo, o64.dWo, nq);
    if (!c->no_bias) {
        fails += check("grad bq", c, gb3[0], o32.dbq, o64.dbq, E);
        fails += check("grad bk", c, gb3[1], o32.dbk, o64.dbk, KV);
        fails += check("grad bv", c, gb3[2], o32.dbv, o64.dbv, KV);
        fails += check("grad out_proj.bias", c, pbo->grad.data, o32.dbo, o64.dbo, E);
    }

#define FREE_ACT(A_)                                                                               \
    free(A_.q), free(A_.k), free(A_.v), free(A_.p), free(A_.o), free(A_.y), free(A_.dxq),          \
        (c->mode != SELF ? free(A_.dxk) : (void)0), (c->mode == SPLIT ? free(A_.dxv) : (void)0),   \
        free(A_.dWq), free(A_.dWk), free(A_.dWv), free(A_.dWo), free(A_.dbq), free(A_.dbk),        \
        free(A_.dbv), free(A_.dbo)
    FREE_ACT(o64);
    FREE_ACT(o32);
    for (int i = 0; i < 4; i++)
        free(w64[i]), free(b64[i]);
    if (c->mode != SELF) free(xk64);
    if (c->mode == SPLIT) free(xv64);
    free(xq64), free(dy64), free(yd), free(dxqd), free(dxkd), free(dxvd);
    free(dmask), free(drop), free(fmask), free(bmask), free(kv_len), free(wts);
    free_x(&xq), free_x(&dy), free_x(&y), free_x(&dxq);
    if (c->mode != SELF) free_x(&xk), free_x(&dxk);
    if (c->mode == SPLIT) free_x(&xv), free_x(&dxv);
    attn_mha_free(m);
    return fails;
}

static const mcase CASES[] = {
    /* B  T   S   E   H Hkv kdim vdim mode  nobias causal align window wl wr mask kvl drop str w q
     */
    {2, 7, 0, 16, 4, 0, 0, 0, SELF, 0, 0, 0, 0, 0, 0, MASK_NONE, 0, 0, 0, 1, 1},
    {1, 65, 0, 24, 3, 0, 0, 0, SELF, 0, 1, 0, 0, 0, 0, MASK_NONE, 0, 0, 0, 2, 1},
    {2, 5, 9, 12, 2, 0, 10, 10, KV, 0, 0, 0, 0, 0, 0, MASK_NONE, 1, 0, 0, 1, 1},
    {2, 6, 11, 16, 4, 0, 7, 13, SPLIT, 1, 0, 0, 0, 0, 0, MASK_FLOAT, 0, 0, 0, 2, 1},
    {2, 33, 0, 32, 8, 2, 0, 0, SELF, 0, 0, 0, 0, 0, 0, MASK_BOOL_TS, 1, 0, 0, 1, 1},
    {1, 5, 12, 16, 4, 1, 9, 9, KV, 0, 1, 1, 0, 0, 0, MASK_NONE, 0, 0, 0, 1, 1},
    {3, 10, 0, 16, 2, 0, 0, 0, SELF, 0, 0, 0, 0, 0, 0, MASK_NONE, 0, 0, 1, 2, 1},
    {2, 9, 14, 12, 3, 1, 5, 8, SPLIT, 0, 0, 0, 0, 0, 0, MASK_BOOL_B1, 1, 0, 1, 1, 1},
    {1, 40, 0, 16, 2, 0, 0, 0, SELF, 0, 0, 0, 1, 3, 2, MASK_NONE, 0, 0, 0, 1, 1},
    {2, 20, 0, 16, 4, 0, 0, 0, SELF, 0, 0, 0, 0, 0, 0, MASK_NONE, 0, 0.25f, 0, 1, 1},
    {1, 1, 0, 15, 5, 0, 0, 0, SELF, 0, 0, 0, 0, 0, 0, MASK_NONE, 0, 0, 0, 2, 1},
    {2, 1, 1, 15, 5, 0, 4, 0, KV, 1, 0, 0, 0, 0, 0, MASK_NONE, 0, 0, 1, 1, 1},
    {1, 130, 0, 64, 4, 0, 0, 0, SELF, 0, 1, 0, 0, 0, 0, MASK_FLOAT, 0, 0, 0, 2, 0},
    {2, 70, 100, 48, 6, 3, 40, 24, SPLIT, 0, 0, 1, 1, 20, 5, MASK_NONE, 1, 0.1f, 1, 1, 0},
};

static void test_vs_oracle(void **state) {
    (void)state;
    attn_ctx *ctx = NULL;
    assert_int_equal(attn_ctx_create(&ctx, 2), ATTN_OK);
    const char *q = getenv("ATTN_TEST_QUICK");
    int quick = q && *q && strcmp(q, "0");
    int fails = 0;
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++)
        if (!quick || CASES[i].quick) fails += run_case(ctx, &CASES[i]);
    attn_ctx_free(ctx);
    assert_int_equal(fails, 0);
}

/* The oracle's backward against central finite differences of
 * L = sum(dy * y) in float64: h = 1e-5 gives truncation ~h^2 and rounding
 * ~1e-16/h, both far below the 1e-6 relative bound. */
static int oracle_fd(int64_t B, int64_t T, int64_t S, int64_t E, int64_t H, int64_t Hkv,
                     int64_t kdim, int64_t vdim) {
    rng_state = g_seed + (uint64_t)(T * 1000 + E);
    int64_t Dh = E / H, KV = Hkv * Dh;
    struct naive_prob P = {B, T, S, E, H, Hkv, kdim, vdim, (float)(1.0 / sqrt((double)Dh)), 0, 0};
    float *mask = calloc((size_t)(B * H * T * S), sizeof *mask);
    for (int64_t i = 0; i < B * H * T * S; i++)
        mask[i] = urand() < -0.6f ? -INFINITY : urand();
    P.mask = mask;
    double *par[8];
    int64_t sz[8] = {E * E, KV * kdim, KV * vdim, E * E, E, KV, KV, E};
    for (int i = 0; i < 8; i++) {
        par[i] = malloc((size_t)sz[i] * sizeof(double));
        for (int64_t j = 0; j < sz[i]; j++)
            par[i][j] = urand() * 0.5;
    }
    int64_t nx = B * T * E, nk = B * S * kdim, nv = B * S * vdim;
    double *xq = malloc(nx * 8), *xk = malloc(nk * 8), *xv = malloc(nv * 8), *dy = malloc(nx * 8);
    for (int64_t i = 0; i < nx; i++)
        xq[i] = urand(), dy[i] = urand();
    for (int64_t i = 0; i < nk; i++)
        xk[i] = urand();
    for (int64_t i = 0; i < nv; i++)
        xv[i] = urand();
    mha_f64 o = {.Wq = par[0],
                 .Wk = par[1],
                 .Wv = par[2],
                 .Wo = par[3],
                 .bq = par[4],
                 .bk = par[5],
                 .bv = par[6],
                 .bo = par[7]};
    o.q = calloc(nx, 8), o.k = calloc(B * S * KV, 8), o.v = calloc(B * S * KV, 8);
    o.p = calloc(B * H * T * S, 8), o.o = calloc(nx, 8), o.y = calloc(nx, 8);
    o.dxq = calloc(nx, 8), o.dxk = calloc(nk, 8), o.dxv = calloc(nv, 8);
    double *gpar[8];
    for (int i = 0; i < 8; i++)
        gpar[i] = calloc((size_t)sz[i], 8);
    o.dWq = gpar[0], o.dWk = gpar[1], o.dWv = gpar[2], o.dWo = gpar[3];
    o.dbq = gpar[4], o.dbk = gpar[5], o.dbv = gpar[6], o.dbo = gpar[7];
    forward_f64(&P, &o, xq, xk, xv);
    backward_f64(&P, &o, xq, xk, xv, dy);
    double *vars[11] = {xq, xk, xv, par[0], par[1], par[2], par[3], par[4], par[5], par[6], par[7]};
    double *grads[11] = {o.dxq,   o.dxk,   o.dxv,   gpar[0], gpar[1], gpar[2],
                         gpar[3], gpar[4], gpar[5], gpar[6], gpar[7]};
    int64_t n[11] = {nx, nk, nv, sz[0], sz[1], sz[2], sz[3], sz[4], sz[5], sz[6], sz[7]};
    int fails = 0;
    for (int vi = 0; vi < 11; vi++)
        for (int64_t e = 0; e < n[vi]; e += 1 + n[vi] / 7) {
            double keep = vars[vi][e], h = 1e-5, lp = 0, lm = 0;
            vars[vi][e] = keep + h;
            forward_f64(&P, &o, xq, xk, xv);
            for (int64_t i = 0; i < nx; i++)
                lp += dy[i] * o.y[i];
            vars[vi][e] = keep - h;
            forward_f64(&P, &o, xq, xk, xv);
            for (int64_t i = 0; i < nx; i++)
                lm += dy[i] * o.y[i];
            vars[vi][e] = keep;
            double fd = (lp - lm) / (2 * h), an = grads[vi][e];
            if (fabs(fd - an) > 1e-6 * (1 + fabs(an))) {
                print_error("seed %llu: oracle gradient %d[%lld] = %.12g, finite difference "
                            "%.12g\n",
                            (unsigned long long)g_seed, vi, (long long)e, an, fd);
                fails++;
            }
        }
    for (int i = 0; i < 8; i++)
        free(par[i]), free(gpar[i]);
    free(xq), free(xk), free(xv), free(dy), free(mask);
    free(o.q), free(o.k), free(o.v), free(o.p), free(o.o), free(o.y);
    free(o.dxq), free(o.dxk), free(o.dxv);
    return fails;
}

static void test_oracle_fd(void **state) {
    (void)state;
    int fails = 0;
    /* MQA cross-attention with kdim != vdim; head width 3; grouped heads
     * (H=4, Hkv=2) with a single query over a few keys */
    fails += oracle_fd(2, 5, 7, 12, 3, 1, 5, 8);
    fails += oracle_fd(1, 9, 9, 15, 5, 5, 15, 15);
    fails += oracle_fd(3, 1, 4, 8, 4, 2, 3, 3);
    assert_int_equal(fails, 0);
}

int main(void) {
    const char *s = getenv("ATTN_TEST_SEED");
    if (s && *s) g_seed = strtoull(s, NULL, 10);
    printf("test_mha: seed %llu (set ATTN_TEST_SEED to change)\n", (unsigned long long)g_seed);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_oracle_fd),
        cmocka_unit_test(test_vs_oracle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Test support: seeds, random numbers, owned strided views, the tolerance
 * checker. See attn_test.h. */
#include "attn_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define AT_DEFAULT_SEED 20240611ull

uint64_t at_base_seed(void) {
    static int init;
    static uint64_t seed;
    if (!init) {
        const char *e = getenv("ATTN_TEST_SEED");
        seed = AT_DEFAULT_SEED;
        if (e && *e) {
            char *end;
            unsigned long long v = strtoull(e, &end, 0);
            if (*end == '\0')
                seed = (uint64_t)v;
            else
                fprintf(stderr, "ATTN_TEST_SEED=%s is not a number; using %llu\n", e,
                        (unsigned long long)seed);
        }
        init = 1;
    }
    return seed;
}

static int env_flag(const char *name) {
    const char *e = getenv(name);
    return e && *e && strcmp(e, "0") != 0;
}

int at_quick(void) {
    return env_flag("ATTN_TEST_QUICK");
}
int at_verbose(void) {
    return env_flag("ATTN_TEST_VERBOSE");
}

/* ---- a shared context ---------------------------------------------------- */
attn_ctx *at_ctx;

int at_ctx_setup(void **state) {
    (void)state;
    return attn_ctx_create(&at_ctx, 2) == ATTN_OK ? 0 : -1;
}

int at_ctx_teardown(void **state) {
    (void)state;
    attn_ctx_free(at_ctx);
    at_ctx = NULL;
    return 0;
}

/* ---- random numbers ------------------------------------------------------ */
static uint64_t mix64(uint64_t x) {
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

void at_rng_init(at_rng *r, uint64_t seed) {
    r->seed = seed;
    r->state = seed;
}

at_rng at_rng_for(uint64_t case_id) {
    at_rng r;
    at_rng_init(&r, mix64(at_base_seed() ^ mix64(case_id + 0x632be59bd9b4e019ull)));
    return r;
}

uint64_t at_rng_u64(at_rng *r) {
    r->state += 0x9e3779b97f4a7c15ull;
    return mix64(r->state);
}

double at_rng_unit(at_rng *r) {
    return (double)(at_rng_u64(r) >> 11) * 0x1.0p-53;
}

float at_rng_uniform(at_rng *r, float lo, float hi) {
    float x = (float)((double)lo + ((double)hi - (double)lo) * at_rng_unit(r));
    return x < hi ? x : lo; /* rounding to float may reach hi */
}

float at_rng_normal(at_rng *r) {
    /* Box-Muller; 1 - unit is in (0, 1] so the log is finite */
    double u = 1.0 - at_rng_unit(r), v = at_rng_unit(r);
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

int64_t at_rng_int(at_rng *r, int64_t lo, int64_t hi) {
    uint64_t span = (uint64_t)(hi - lo) + 1;
    return lo + (int64_t)(span ? at_rng_u64(r) % span : at_rng_u64(r));
}

/* ---- owned strided views ------------------------------------------------- */
int at_buf_alloc(at_buf *b, attn_dtype dtype, int ndim, const int64_t *shape, const int *perm,
                 int64_t pad) {
    memset(b, 0, sizeof *b);
    int id[ATTN_MAX_DIMS] = {0, 1, 2, 3};
    if (!perm) perm = id;
    b->t.dtype = dtype;
    b->t.ndim = ndim;
    for (int i = 0; i < ndim; i++)
        b->t.shape[i] = shape[i];
    /* innermost memory dim (the last logical dim) has stride 1; each outer
     * memory dim spans the inner block plus pad unused elements */
    int64_t extent = shape[ndim - 1] + pad;
    b->t.stride[ndim - 1] = 1;
    for (int k = ndim - 2; k >= 0; k--) {
        b->t.stride[perm[k]] = extent;
        extent = shape[perm[k]] * extent + pad;
    }
    b->count = (size_t)(extent > 0 ? extent : 1);
    size_t es = attn_dtype_size(dtype);
    b->mem = malloc(b->count * es);
    if (!b->mem) return -1;
    b->t.data = b->mem;
    at_buf_fill_sentinel(b);
    return 0;
}

int at_buf_f32(at_buf *b, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    int64_t sh[4] = {d0, d1, d2, d3};
    return at_buf_alloc(b, ATTN_F32, 4, sh, NULL, 0);
}

void at_buf_free(at_buf *b) {
    free(b->mem);
    memset(b, 0, sizeof *b);
}

void *at_ptr(const attn_tensor *t, const int64_t *idx) {
    int64_t off = 0;
    for (int i = 0; i < t->ndim; i++)
        off += idx[i] * t->stride[i];
    return (char *)t->data + off * (int64_t)attn_dtype_size(t->dtype);
}

float *at_f32(const attn_tensor *t, int64_t i0, int64_t i1, int64_t i2, int64_t i3) {
    int64_t idx[4] = {i0, i1, i2, i3};
    return (float *)at_ptr(t, idx);
}

/* Multi-index of the n-th element (row-major over the logical shape). */
static void unravel(const attn_tensor *t, int64_t n, int64_t *idx) {
    for (int i = t->ndim - 1; i >= 0; i--) {
        int64_t s = t->shape[i] > 0 ? t->shape[i] : 1;
        idx[i] = n % s;
        n /= s;
    }
}

static int64_t numel(const attn_tensor *t) {
    return attn_tensor_numel(t);
}

int at_buf_copy_of(at_buf *dst, const attn_tensor *src) {
    if (at_buf_alloc(dst, ATTN_F32, src->ndim, src->shape, NULL, 0)) return -1;
    int64_t idx[4];
    for (int64_t n = 0; n < numel(src); n++) {
        unravel(src, n, idx);
        *(float *)at_ptr(&dst->t, idx) = *(const float *)at_ptr(src, idx);
    }
    return 0;
}

void at_fill_uniform(const attn_tensor *t, at_rng *r, float lo, float hi) {
    int64_t idx[4];
    for (int64_t n = 0; n < numel(t); n++) {
        unravel(t, n, idx);
        *(float *)at_ptr(t, idx) = at_rng_uniform(r, lo, hi);
    }
}

void at_fill_normal(const attn_tensor *t, at_rng *r, float sigma) {
    int64_t idx[4];
    for (int64_t n = 0; n < numel(t); n++) {
        unravel(t, n, idx);
        *(float *)at_ptr(t, idx) = sigma * at_rng_normal(r);
    }
}

void at_fill_value(const attn_tensor *t, float v) {
    int64_t idx[4];
    for (int64_t n = 0; n < numel(t); n++) {
        unravel(t, n, idx);
        *(float *)at_ptr(t, idx) = v;
    }
}

void at_buf_fill_sentinel(at_buf *b) {
    if (!b->mem) return;
    if (b->t.dtype == ATTN_F32) {
        float *f = b->mem;
        for (size_t i = 0; i < b->count; i++)
            f[i] = AT_SENTINEL;
    } else {
        memset(b->mem, AT_SENTINEL_BYTE, b->count * attn_dtype_size(b->t.dtype));
    }
}

static int is_sentinel(const at_buf *b, size_t i) {
    if (b->t.dtype == ATTN_F32) {
        float s = AT_SENTINEL;
        return memcmp((const float *)b->mem + i, &s, sizeof s) == 0;
    }
    size_t es = attn_dtype_size(b->t.dtype);
    const unsigned char *p = (const unsigned char *)b->mem + i * es;
    for (size_t k = 0; k < es; k++)
        if (p[k] != AT_SENTINEL_BYTE) return 0;
    return 1;
}

int at_buf_padding_intact(const at_buf *b) {
    if (!b->mem) return 1;
    unsigned char *in = calloc(b->count, 1);
    if (!in) return 0;
    int64_t idx[4];
    size_t es = attn_dtype_size(b->t.dtype);
    for (int64_t n = 0; n < numel(&b->t); n++) {
        unravel(&b->t, n, idx);
        in[((char *)at_ptr(&b->t, idx) - (char *)b->mem) / (int64_t)es] = 1;
    }
    int ok = 1;
    for (size_t i = 0; i < b->count && ok; i++)
        if (!in[i] && !is_sentinel(b, i)) {
            fprintf(stderr, "padding element %zu of a view was written\n", i);
            ok = 0;
        }
    free(in);
    return ok;
}

int at_buf_untouched(const at_buf *b) {
    for (size_t i = 0; b->mem && i < b->count; i++)
        if (!is_sentinel(b, i)) {
            fprintf(stderr, "element %zu was written (expected no output)\n", i);
            return 0;
        }
    return 1;
}

int at_qkv_alloc(at_qkv *x, int64_t B, int64_t T, int64_t H, int64_t D) {
    memset(x, 0, sizeof *x);
    x->count = (size_t)(B * T * 3 * H * D);
    x->mem = malloc((x->count ? x->count : 1) * sizeof(float));
    if (!x->mem) return -1;
    attn_tensor *v[3] = {&x->q, &x->k, &x->v};
    for (int w = 0; w < 3; w++) {
        *v[w] = attn_tensor_f32_4d(x->mem + (size_t)w * H * D, B, H, T, D);
        v[w]->stride[0] = T * 3 * H * D;
        v[w]->stride[1] = D;
        v[w]->stride[2] = 3 * H * D;
        v[w]->stride[3] = 1;
    }
    return 0;
}

void at_qkv_free(at_qkv *x) {
    free(x->mem);
    memset(x, 0, sizeof *x);
}

/* ---- comparison ------------------------------------------------------------ */
static void fmt_index(const attn_tensor *t, const int64_t *idx, char *buf, size_t n) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, n - k, "[");
    for (int i = 0; i < t->ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? "," : "", (long long)idx[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

/* Same class of non-finite value: NaN matches NaN, an infinity itself. */
static int nonfinite_match(float f, float o) {
    if (isnan(o)) return isnan(f);
    return f == o;
}

int at_check(const char *what, const char *label, uint64_t seed, const attn_tensor *fast,
             const attn_tensor *oracle, const attn_tensor *naive, at_stats *st) {
    return at_check_n(what, label, seed, fast, oracle, &naive, 1, st);
}

int at_check_n(const char *what, const char *label, uint64_t seed, const attn_tensor *fast,
               const attn_tensor *oracle, const attn_tensor *const *naive, int nnaive,
               at_stats *st) {
    at_stats s = {0};
    int64_t idx[4], n = numel(oracle);
    double se = 0.0, so = 0.0, omax = 0.0;
    int64_t bad = -1; /* first element whose kind (finite or not) is wrong */
    for (int64_t e = 0; e < n; e++) {
        unravel(oracle, e, idx);
        float o = *(float *)at_ptr(oracle, idx), f = *(float *)at_ptr(fast, idx);
        if (!isfinite(o)) {
            if (!nonfinite_match(f, o) && bad < 0) bad = e;
            continue;
        }
        if (!isfinite(f)) {
            if (bad < 0) bad = e;
            continue;
        }
        double d = fabs((double)f - (double)o);
        if (d > s.max_err) s.max_err = d;
        /* a non-finite naive value where the oracle is finite is an
         * infinite disagreement: caught by the sanity bound below */
        for (int k = 0; k < nnaive; k++) {
            float nv = *(float *)at_ptr(naive[k], idx);
            double dn = isfinite(nv) ? fabs((double)nv - (double)o) : INFINITY;
            if (dn > s.naive_err) s.naive_err = dn;
        }
        if (fabs((double)o) > omax) omax = fabs((double)o);
        se += d * d;
        so += (double)o * (double)o;
        s.n++;
    }
    s.tol = 2.0 * s.naive_err + 1e-6;
    s.nmse = so > 0.0 ? se / so : se;
    int64_t first = bad;
    if (first < 0 && s.max_err > s.tol) {
        for (int64_t e = 0; e < n; e++) {
            unravel(oracle, e, idx);
            float o = *(float *)at_ptr(oracle, idx), f = *(float *)at_ptr(fast, idx);
            if (isfinite(o) && fabs((double)f - (double)o) > s.tol) {
                first = e;
                break;
            }
        }
    }
    if (st) *st = s;
    /* The naive result must itself be close to the oracle, or the tolerance
     * it sets would mean nothing: it is an independent fp32 implementation,
     * so a large gap means one of the two has the semantics wrong. */
    if (s.naive_err > 1e-2 * (omax + 1.0)) {
        fprintf(stderr,
                "NAIVE32 DISAGREES with the oracle on %s (max diff %.6g, max |oracle| %.6g)\n"
                "  in case: %s\n  seed: ATTN_TEST_SEED=%llu (case rng seed %llu)\n",
                what, s.naive_err, omax, label ? label : "", (unsigned long long)at_base_seed(),
                (unsigned long long)seed);
        return 0;
    }
    if (at_verbose())
        fprintf(stderr, "  %-4s %s: max_err %.3g naive %.3g tol %.3g nmse %.3g\n", what,
                label ? label : "", s.max_err, s.naive_err, s.tol, s.nmse);
    if (first < 0) return 1;
    char ib[96];
    unravel(oracle, first, idx);
    fmt_index(oracle, idx, ib, sizeof ib);
    fprintf(stderr,
            "MISMATCH %s in case: %s\n  seed: ATTN_TEST_SEED=%llu (case rng seed %llu)\n"
            "  first bad index %s: fast %.9g oracle %.9g naive32 %.9g\n"
            "  max_err %.6g > tol %.6g (= 2 * naive err %.6g + 1e-6), nmse %.3g%s\n",
            what, label ? label : "", (unsigned long long)at_base_seed(), (unsigned long long)seed,
            ib, (double)*(float *)at_ptr(fast, idx), (double)*(float *)at_ptr(oracle, idx),
            (double)*(float *)at_ptr(naive[0], idx), s.max_err, s.tol, s.naive_err, s.nmse,
            bad >= 0 ? " (finite/non-finite disagreement)" : "");
    return 0;
}

int at_bitwise_equal(const char *what, const char *label, const attn_tensor *x,
                     const attn_tensor *y) {
    int64_t idx[4];
    for (int64_t e = 0; e < numel(x); e++) {
        unravel(x, e, idx);
        float a = *(float *)at_ptr(x, idx), b = *(float *)at_ptr(y, idx);
        if (memcmp(&a, &b, sizeof a) != 0) {
            char ib[96];
            fmt_index(x, idx, ib, sizeof ib);
            fprintf(stderr,
                    "NOT BITWISE EQUAL %s in case: %s\n  seed: ATTN_TEST_SEED=%llu\n"
                    "  first difference at %s: %.9g vs %.9g\n",
                    what, label ? label : "", (unsigned long long)at_base_seed(), ib, (double)a,
                    (double)b);
            return 0;
        }
    }
    return 1;
}

int at_check_f64(const char *what, const float *got, const double *ref, const float *f32, int64_t n,
                 uint64_t seed) {
    double err = 0.0, err32 = 0.0;
    int64_t worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - ref[i]);
        if (!(e <= err)) err = e, worst = i;
        err32 = fmax(err32, fabs((double)f32[i] - ref[i]));
    }
    double tol = 2.0 * err32 + 1e-6;
    if (at_verbose()) fprintf(stderr, "%s: max error %.3g (plain f32 %.3g)\n", what, err, err32);
    if (err <= tol) return 1;
    fprintf(
        stderr, "%s (seed %llu): max error %.3g > tolerance %.3g at %lld: got %.9g, oracle %.9g\n",
        what, (unsigned long long)seed, err, tol, (long long)worst, (double)got[worst], ref[worst]);
    return 0;
}

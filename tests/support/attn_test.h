/* Shared helpers for the test programs (prefix at_: test support only,
 * never part of libattn).
 *
 * - Seeds: every random input comes from at_rng seeded by at_rng_for(case id),
 *   which mixes the base seed (ATTN_TEST_SEED, else a fixed default) with the
 *   case id. Failures print the base seed, so `ATTN_TEST_SEED=<n> ./test_x`
 *   reproduces them.
 * - Views: at_buf owns memory and an attn_tensor view over it, optionally with
 *   padded strides and a permuted memory order; padding holds a sentinel so
 *   a test can check that nothing outside the view was written.
 * - Tolerance (docs/DESIGN.md): max |fast - oracle| must be at most
 *   2 * max |naive32 - oracle| + 1e-6, where naive32 is a plain fp32
 *   implementation with materialised scores and the same semantics (its
 *   error is the worst over AT_NAIVE_ORDERS summation orders: see
 *   at_check_n). The naive code only sets the tolerance, and must itself agree
 *   with the oracle to 1%; correctness is judged against the float64 oracle. Non-finite oracle
 * values must be matched exactly (NaN by NaN,
 *   +-inf by the same infinity), e.g. lse = -inf for a row with no key. */
#ifndef ATTN_TEST_H
#define ATTN_TEST_H

#include <attn/attn.h>
#include <stdint.h>
#include <stdio.h>

/* ---- environment --------------------------------------------------------- */
/* The base seed: ATTN_TEST_SEED (decimal or 0x hex) if set, else a default. */
uint64_t at_base_seed(void);
/* Nonzero when ATTN_TEST_QUICK is set (sanitizer runs): shrink sweeps. */
int at_quick(void);
/* Nonzero when ATTN_TEST_VERBOSE is set: print every check's figures. */
int at_verbose(void);

/* ---- a shared context (cmocka group setup / teardown) ------------------- */
/* at_ctx_setup creates at_ctx with 2 threads (returns 0, or -1 so cmocka
 * fails the group); at_ctx_teardown frees it. */
extern attn_ctx *at_ctx;
int at_ctx_setup(void **state);
int at_ctx_teardown(void **state);

/* ---- random numbers (splitmix64; reproducible on every platform) --------- */
typedef struct at_rng {
    uint64_t state;
    uint64_t seed; /* the seed it started from, for messages */
} at_rng;

at_rng at_rng_for(uint64_t case_id); /* seeded from (base seed, case id) */
void at_rng_init(at_rng *r, uint64_t seed);
uint64_t at_rng_u64(at_rng *r);
double at_rng_unit(at_rng *r);                         /* [0, 1) */
float at_rng_uniform(at_rng *r, float lo, float hi);   /* [lo, hi) */
float at_rng_normal(at_rng *r);                        /* N(0, 1) */
int64_t at_rng_int(at_rng *r, int64_t lo, int64_t hi); /* [lo, hi] */

/* ---- owned strided views ------------------------------------------------- */
/* A view [shape] of dtype over its own allocation. perm gives the memory
 * order: perm[0] is the logical dim stored outermost ... perm[ndim-1] the
 * innermost, which must be the last logical dim (NULL = identity). pad adds
 * that many unused elements after each innermost row and after each outer
 * block, so every stride differs from the contiguous one. Padding and the
 * view are filled with AT_SENTINEL bytes; fill the view with at_fill_*. */
typedef struct at_buf {
    void *mem;    /* the allocation (NULL if empty) */
    size_t count; /* elements allocated */
    attn_tensor t;
} at_buf;

#define AT_SENTINEL (-7.25e30f) /* float sentinel: an unlikely finite value */
#define AT_SENTINEL_BYTE 0xA5   /* byte sentinel for BOOL/U8/I32 buffers */

/* Returns 0 on success, -1 on allocation failure. */
int at_buf_alloc(at_buf *b, attn_dtype dtype, int ndim, const int64_t *shape, const int *perm,
                 int64_t pad);
/* Contiguous F32 [d0, d1, d2, d3] (the common case). */
int at_buf_f32(at_buf *b, int64_t d0, int64_t d1, int64_t d2, int64_t d3);
void at_buf_free(at_buf *b);

/* A contiguous copy of an F32 view (any strides). Returns 0 or -1. */
int at_buf_copy_of(at_buf *dst, const attn_tensor *src);

/* Pointer to element idx (ndim indices) of a view of any dtype. */
void *at_ptr(const attn_tensor *t, const int64_t *idx);
/* F32 element (i0, i1, i2, i3) of a view with up to 4 dims (extra indices ignored). */
float *at_f32(const attn_tensor *t, int64_t i0, int64_t i1, int64_t i2, int64_t i3);

/* Fill the view's elements (not the padding). */
void at_fill_uniform(const attn_tensor *t, at_rng *r, float lo, float hi);
void at_fill_normal(const attn_tensor *t, at_rng *r, float sigma);
void at_fill_value(const attn_tensor *t, float v);
/* Fill the whole allocation, padding included, with the sentinel. */
void at_buf_fill_sentinel(at_buf *b);
/* 1 if every allocated element outside the view still holds the sentinel. */
int at_buf_padding_intact(const at_buf *b);
/* 1 if the whole allocation still holds the sentinel (nothing written). */
int at_buf_untouched(const at_buf *b);

/* A packed QKV buffer [B, T, 3, H, D] as produced by one fused projection:
 * q, k, v are [B, H, T, D] views into it with strides (T*3*H*D, D, 3*H*D, 1). */
typedef struct at_qkv {
    float *mem;
    size_t count;
    attn_tensor q, k, v;
} at_qkv;
int at_qkv_alloc(at_qkv *x, int64_t B, int64_t T, int64_t H, int64_t D);
void at_qkv_free(at_qkv *x);

/* ---- comparison against the oracle --------------------------------------- */
typedef struct at_stats {
    double max_err;   /* max |fast - oracle| over finite oracle entries */
    double naive_err; /* max |naive32 - oracle| */
    double tol;       /* 2 * naive_err + 1e-6 */
    double nmse;      /* sum (fast - oracle)^2 / sum oracle^2 */
    int64_t n;        /* elements compared */
} at_stats;

/* Compare fast against oracle with the tolerance set by naive (all views of
 * the same shape, F32, any strides). what names the tensor ("out", "lse"),
 * label the case. Returns 1 on pass; on failure prints the case, the seed,
 * the first offending index and its three values, and returns 0. Also fails
 * when naive itself is far from the oracle (max diff > 1% of max |oracle| + 1,
 * or non-finite where the oracle is finite): then the two implementations
 * disagree on the semantics and the tolerance would mean nothing. */
int at_check(const char *what, const char *label, uint64_t seed, const attn_tensor *fast,
             const attn_tensor *oracle, const attn_tensor *naive, at_stats *st);

/* The same with several naive results (e.g. two summation orders): the
 * naive error is the largest of theirs. One fp32 rounding pattern is one
 * random draw; where errors are heavy-tailed (large logits make the softmax
 * nearly one-hot, so a single near-tie dominates the max) a single draw can
 * be luckily small, and the rule would then compare the kernel with luck. */
int at_check_n(const char *what, const char *label, uint64_t seed, const attn_tensor *fast,
               const attn_tensor *oracle, const attn_tensor *const *naive, int nnaive,
               at_stats *st);

/* The same rule on plain arrays with a float64 oracle: max |got - ref| <=
 * 2 * max |f32 - ref| + 1e-6 over n elements. Returns 1 on pass; on failure
 * prints what, the seed, the first worst index and its values, and returns
 * 0. ATTN_TEST_VERBOSE prints both errors. */
int at_check_f64(const char *what, const float *got, const double *ref, const float *f32, int64_t n,
                 uint64_t seed);

/* 1 if two F32 views of the same shape are bitwise identical; else prints the
 * first difference and returns 0. */
int at_bitwise_equal(const char *what, const char *label, const attn_tensor *x,
                     const attn_tensor *y);

/* ---- attention helpers --------------------------------------------------- */
/* Plain fp32 attention with the semantics of attn_sdpa_forward (scores of a
 * row materialised, fp32 accumulation, dropout included). Writes a->out and
 * a->lse (if present). Uses the library's argument validation; returns its
 * status. */
attn_status at_naive32_forward(attn_ctx *ctx, const attn_sdpa_args *a);
/* The same with its sums in another order (variant 0..3: dot products
 * forward, reverse, evens then odds, odds then evens; keys forward for even
 * variants, reverse for odd): other plain fp32 implementations, other draws
 * of the rounding errors. at_sdpa_check_forward takes the largest error of
 * AT_NAIVE_ORDERS of them as the naive error. */
attn_status at_naive32_forward_order(attn_ctx *ctx, const attn_sdpa_args *a, int variant);
#define AT_NAIVE_ORDERS 4

/* RoPE in plain fp32 for the naive references (cos/sin of float64 angles
 * rounded to float, float rotation): the position of row i of batch b
 * (is_k: a key), x rotated in place (inverse: the transpose), and
 * contiguous rotated copies of a's q and k (k as is under k_rotated) with r
 * = a on them, rope off. at_rope_copies returns 0 or -1 (no memory). */
int64_t at_rope_pos(const attn_rope *r, int is_k, int64_t b, int64_t i);
void at_rope_rotate(const attn_rope *r, const attn_tensor *x, int is_k, int inverse);
int at_rope_copies(const attn_sdpa_args *a, at_buf *qr, at_buf *kr, attn_sdpa_args *r);

/* Describe a problem in one line ("B=2 H=8 Hkv=2 T=63 S=65 D=40 Dv=24 causal
 * br ...") for messages. */
void at_sdpa_describe(const attn_sdpa_args *a, char *buf, size_t n);

/* Run attn_sdpa_forward on a (its out and lse buffers as given), then the
 * oracle and naive32 (both summation orders) into private contiguous buffers, and check out and lse
 * (lse only if a->lse.data). If outb / lseb (the buffers under a->out and
 * a->lse) are given, also check that their padding is intact. label (may be
 * NULL) is prefixed to the problem's description in messages; seed is the
 * case's rng seed. Returns 1 on pass. */
int at_sdpa_check_forward(attn_ctx *ctx, const attn_sdpa_args *a, const at_buf *outb,
                          const at_buf *lseb, const char *label, uint64_t seed);

/* Owned inputs and outputs of one SDPA problem in the given layout. */
typedef enum at_layout {
    AT_BHTD = 0, /* canonical, contiguous */
    AT_BHTD_PAD, /* canonical order, padded strides */
    AT_BTHD,     /* [B, T, H, D] in memory (a view with permuted strides) */
    AT_BTHD_PAD, /* [B, T, H, D] with padding */
} at_layout;

/* A logical [d0, d1, d2, d3] F32 view in layout l (padded and/or [B,T,H,D]
 * memory order). Returns 0 or -1 (as at_buf_alloc). */
int at_buf_layout(at_buf *b, int64_t d0, int64_t d1, int64_t d2, int64_t d3, at_layout l);

typedef struct at_sdpa {
    at_buf q, k, v, out, lse;
    at_buf mask;      /* optional mask (at_sdpa_build) */
    at_buf kpm;       /* optional key_padding_mask (at_sdpa_build) */
    at_buf gtok;      /* optional global_tokens (at_sdpa_build) */
    int32_t *kv_len;  /* optional [B] */
    float *alibi;     /* optional [H] */
    attn_sdpa_args a; /* q, k, v, out, lse filled in; options zero */
} at_sdpa;

/* Allocate q [B,H,T,D], k [B,Hkv,S,D], v [B,Hkv,S,Dv], out [B,H,T,Dv] in
 * layout, lse [B,H,T]; q, k, v uniform in [-1, 1) from r; out and lse hold
 * sentinels. Returns 0, or -1 on allocation failure. */
int at_sdpa_alloc(at_sdpa *x, int64_t B, int64_t H, int64_t Hkv, int64_t T, int64_t S, int64_t D,
                  int64_t Dv, at_layout layout, at_rng *r);
void at_sdpa_free(at_sdpa *x);

/* One forward/backward test problem: sizes, layout and every option. Zero
 * fields mean "off"; Hkv 0 means H, Dv 0 means D. */
typedef struct at_case {
    int64_t B, H, Hkv, T, S, D, Dv;
    at_layout layout;
    int causal;
    attn_align align;
    int window;
    int64_t wl, wr;
    int kv_len;            /* 1: random kv_len[b] in [0, S], b=0 gets S, b=1 gets 0 if B > 2 */
    attn_dtype mask_dtype; /* with mask_bcast != AT_MASK_NONE */
    int mask_bcast;        /* AT_MASK_* */
    float mask_ninf;       /* float mask: probability of a -inf entry */
    float mask_keep;       /* bool mask: probability of true (0 means 0.7) */
    int alibi;
    float softcap;
    float scale;
    float logit_mul; /* multiply q by this (0 means 1): large scores */
    float dropout_p;
    uint64_t dropout_seed;
    int no_lse;
    int kpm; /* key_padding_mask: 1 [B, S] (b=0 left-padded, b=1 all padding if B > 2,
              * others random), 2 the same as [S] (b=0's pattern) */
    attn_rope rope; /* copied into the args (its arrays owned by the test) */
    int global;     /* global_tokens: 1 U8 [B, S] (b=1 none), 2 U8 [S]; never drawn by
                     * at_case_random (tests set it) */
    float global_frac; /* the fraction of tokens marked (0 means 0.1) */
} at_case;

/* Mask shapes, PyTorch's broadcast forms (dims right-aligned; a 1 broadcasts).
 * The first five are what at_case_random draws. */
enum {
    AT_MASK_NONE = 0,
    AT_MASK_TS,   /* [T, S] */
    AT_MASK_1HTS, /* [1, H, T, S] */
    AT_MASK_B1TS, /* [B, 1, T, S] */
    AT_MASK_BHTS, /* [B, H, T, S] */
    AT_MASK_S,    /* [S] */
    AT_MASK_1S,   /* [1, S] */
    AT_MASK_H1S,  /* [H, 1, S] */
    AT_MASK_HTS,  /* [H, T, S] */
    AT_MASK_B11S, /* [B, 1, 1, S]: the common padding mask */
    AT_MASK_BH1S, /* [B, H, 1, S] */
    AT_MASK_KINDS
};
/* Shape of mask kind k for case c: fills sh, returns ndim. */
int at_mask_shape(const at_case *c, int k, int64_t *sh);

/* Build the problem c into x with inputs from r. Returns 0 or -1 (no memory). */
int at_sdpa_build(at_sdpa *x, const at_case *c, at_rng *r);
/* Build c from a fresh rng for case_id, run at_sdpa_check_forward, free.
 * Returns 1 on pass. */
int at_sdpa_run_forward(attn_ctx *ctx, const at_case *c, uint64_t case_id, const char *label);

/* A random combination of every forward option, its sizes drawn from
 * lens[0..nlens) (S = 0 one time in ten): batch 1-3, GQA, layouts, masks of
 * every kind and broadcast (sparse keep-masks: empty rows), windows, both
 * alignments, kv_len, ALiBi, softcap, dropout (seeded by k), no lse. Tests
 * that need fewer options clear them afterwards. */
at_case at_case_random(at_rng *r, uint64_t k, const int64_t *lens, int nlens);

/* Run n random cases: case k's options come from gen(at_rng_for(case_base
 * + k), k), which also draws its thread count (1-3); its inputs from
 * run(ctx, &c, input_base + k, label). Returns the number of failures. */
typedef at_case (*at_case_gen)(at_rng *r, uint64_t k);
typedef int (*at_case_run)(attn_ctx *ctx, const at_case *c, uint64_t id, const char *label);
int at_run_random_cases(int n, uint64_t case_base, uint64_t input_base, const char *what,
                        at_case_gen gen, at_case_run run);

#endif /* ATTN_TEST_H */

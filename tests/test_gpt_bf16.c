/* Decoders with bf16 weights (ATTN_GPT_WEIGHTS_BF16):
 *   - the bf16-weight matrix-vector and matrix kernels of every kernel
 *     family the CPU runs, against a float64 oracle on the
 *     bf16-rounded weights under the 2x plain-fp32 rule (odd sizes, K not a
 *     multiple of 16, row tails, row strides, accumulation);
 *   - attn__sgemm_bf16w at M = 1 and M > 1 (M in chunks) likewise, and
 *     the same bits on 1 and 2 threads;
 *   - the GPT-2 and Llama fixtures loaded with bf16 weights give the logits
 *     of an fp32 model whose matrices hold the same bf16-rounded values
 *     (within 1e-4, the parity bound), and stay within the documented bound
 *     of the fp32 logits; greedy generation (one sequence and a batch) runs
 *     and makes the tokens of that twin;
 *   - bad options: an unknown weights value, bf16 on a tokenizer-only or
 *     non-decoder (ViT) open, unknown open flags, saving a bf16 model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "attn_test.h"
#include "kernels/arch.h"
#include "kernels/half.h"
#include "nn/nn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char data[1024], tmpdir[64];

/* The documented bound (docs/DESIGN.md, "bf16 weights"): on the fixtures,
 * bf16-weight logits are within this fraction of the largest |fp32 logit|
 * of the fp32 ones. Each weight moves by at most 2^-9 of itself. */
#define LOGIT_BOUND 0.02

static void fill_bf16(at_rng *r, uint16_t *w, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        w[i] = attn__f2bf(at_rng_uniform(r, -1, 1));
}

/* y[j] = sum_k bf(W[j][k]) x[k] (+ y0[j]): the float64 oracle, and for
 * the tolerance a plain fp32 sum, the worst (farthest from the oracle) of
 * several summation orders as the rule takes it (tests/support/attn_test.h):
 * forward (with and without FMA), backward, and in 8 and 16 interleaved
 * partial sums (the orders of the families' kernels). */
static void oracle(const uint16_t *W, int64_t ldw, int64_t N, int64_t K, const float *x,
                   const float *y0, double *ref, float *f32) {
    for (int64_t j = 0; j < N; j++) {
        const uint16_t *w = W + j * ldw;
        double d = y0 ? y0[j] : 0.0;
        for (int64_t k = 0; k < K; k++)
            d += (double)attn__bf2f(w[k]) * x[k];
        float cand[5] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        for (int64_t k = 0; k < K; k++) {
            cand[0] += attn__bf2f(w[k]) * x[k];
            cand[4] = fmaf(attn__bf2f(w[k]), x[k], cand[4]);
        }
        for (int64_t k = K - 1; k >= 0; k--)
            cand[1] += attn__bf2f(w[k]) * x[k];
        for (int o = 0; o < 2; o++) {
            const int lanes = o ? 16 : 8;
            float part[16] = {0};
            for (int64_t k = 0; k < K; k++)
                part[k % lanes] += attn__bf2f(w[k]) * x[k];
            for (int l = 0; l < lanes; l++)
                cand[2 + o] += part[l];
        }
        float worst = cand[0];
        for (int c = 1; c < 5; c++)
            if (fabs((double)cand[c] - (d - (y0 ? y0[j] : 0.0))) >
                fabs((double)worst - (d - (y0 ? y0[j] : 0.0))))
                worst = cand[c];
        ref[j] = d, f32[j] = y0 ? worst + y0[j] : worst;
    }
}

static const int64_t shapes[][2] = {{1, 1},   {3, 5},    {4, 16},   {5, 17},   {7, 31},
                                    {8, 33},  {9, 47},   {67, 773}, {130, 33}, {13, 64},
                                    {4, 100}, {513, 64}, {6, 1000}};
#define NSHAPES (sizeof shapes / sizeof shapes[0])

/* The kernel table's gemv_bf16 and gemm_bf16 of each family, directly. */
static void test_kernels(void **state) {
    (void)state;
    const char *names[] = {"scalar", "avx2", "avx512"};
    int ran = 0;
    for (int fi = 0; fi < 3; fi++) {
        attn_status why;
        const attn__arch *f = attn__arch_find(names[fi], &why);
        if (!f) {
            printf("  family %s: not on this CPU, not checked\n", names[fi]);
            continue;
        }
        ran++;
        for (size_t si = 0; si < NSHAPES; si++) {
            const int64_t N = shapes[si][0], K = shapes[si][1], ldw = K + (int64_t)(si % 3) * 5;
            at_rng r = at_rng_for(4100 + si);
            uint16_t *W = malloc((size_t)(N * ldw) * 2);
            float *x = malloc((size_t)K * 4), *y = malloc((size_t)N * 4),
                  *b = malloc((size_t)N * 4);
            float *f32 = malloc((size_t)N * 4);
            double *ref = malloc((size_t)N * 8);
            assert_true(W && x && y && b && f32 && ref);
            fill_bf16(&r, W, N * ldw);
            for (int64_t k = 0; k < K; k++)
                x[k] = at_rng_uniform(&r, -1, 1);
            for (int64_t j = 0; j < N; j++)
                b[j] = at_rng_uniform(&r, -1, 1);
            for (int acc = 0; acc < 2; acc++) {
                oracle(W, ldw, N, K, x, acc ? b : NULL, ref, f32);
                for (int64_t j = 0; j < N; j++)
                    y[j] = acc ? b[j] : NAN; /* without acc y must not be read */
                f->nn.gemv_bf16(W, ldw, N, K, x, acc, y);
                char what[64];
                snprintf(what, sizeof what, "gemv_bf16 %s N=%lld K=%lld acc=%d", names[fi],
                         (long long)N, (long long)K, acc);
                assert_true(at_check_f64(what, y, ref, f32, N, r.seed));
            }
            /* several rows of x at once (blocks of rows and their tails) */
            const int64_t Ms[] = {2, 6, 7, 13};
            for (size_t mi = 0; mi < 4; mi++) {
                const int64_t M = Ms[mi], ldx = K + 2, ldy = N + 1;
                float *X = malloc((size_t)(M * ldx) * 4), *Y = malloc((size_t)(M * ldy) * 4);
                float *Y0 = malloc((size_t)(M * ldy) * 4);
                assert_true(X && Y && Y0);
                for (int64_t i = 0; i < M * ldx; i++)
                    X[i] = at_rng_uniform(&r, -1, 1);
                for (int64_t i = 0; i < M * ldy; i++)
                    Y0[i] = at_rng_uniform(&r, -1, 1);
                for (int acc = 0; acc < 2; acc++) {
                    memcpy(Y, Y0, (size_t)(M * ldy) * 4);
                    f->nn.gemm_bf16(W, ldw, N, K, X, ldx, M, acc, Y, ldy);
                    for (int64_t i = 0; i < M; i++) {
                        oracle(W, ldw, N, K, X + i * ldx, acc ? Y0 + i * ldy : NULL, ref, f32);
                        char what[80];
                        snprintf(what, sizeof what, "gemm_bf16 %s M=%lld N=%lld K=%lld acc=%d",
                                 names[fi], (long long)M, (long long)N, (long long)K, acc);
                        assert_true(at_check_f64(what, Y + i * ldy, ref, f32, N, r.seed));
                        assert_true(Y[i * ldy + N] == Y0[i * ldy + N]); /* past n untouched */
                    }
                }
                free(X), free(Y), free(Y0);
            }
            free(W), free(x), free(y), free(b), free(f32), free(ref);
        }
    }
    assert_true(ran >= 1);
}

/* The driver (the context's family): M = 1 (gemv) and M > 1 (panels), the
 * same bits on 1 and 2 threads. */
static void test_sgemm_bf16w(void **state) {
    (void)state;
    attn_ctx *one;
    assert_int_equal(attn_ctx_create(&one, 1), ATTN_OK);
    const int64_t Ms[] = {1, 2, 5, 7, 100};
    for (size_t si = 0; si < NSHAPES; si++)
        for (size_t mi = 0; mi < 5; mi++) {
            const int64_t N = shapes[si][0], K = shapes[si][1], M = Ms[mi];
            const int64_t ldb = K + (int64_t)(si % 2) * 3, lda = K + 1, ldc = N + 2;
            at_rng r = at_rng_for(4200 + 10 * si + mi);
            uint16_t *B = malloc((size_t)(N * ldb) * 2);
            float *A = malloc((size_t)(M * lda) * 4), *C = malloc((size_t)(M * ldc) * 4);
            float *C1 = malloc((size_t)(M * ldc) * 4), *c0 = malloc((size_t)(M * ldc) * 4);
            float *f32 = malloc((size_t)N * 4);
            double *ref = malloc((size_t)N * 8);
            assert_true(B && A && C && C1 && c0 && f32 && ref);
            fill_bf16(&r, B, N * ldb);
            for (int64_t i = 0; i < M * lda; i++)
                A[i] = at_rng_uniform(&r, -1, 1);
            for (int64_t i = 0; i < M * ldc; i++)
                c0[i] = at_rng_uniform(&r, -1, 1);
            for (int beta = 0; beta < 2; beta++) {
                memcpy(C, c0, (size_t)(M * ldc) * 4);
                memcpy(C1, c0, (size_t)(M * ldc) * 4);
                attn__sgemm_bf16w(at_ctx, M, N, K, A, lda, B, ldb, (float)beta, C, ldc);
                attn__sgemm_bf16w(one, M, N, K, A, lda, B, ldb, (float)beta, C1, ldc);
                for (int64_t i = 0; i < M; i++) {
                    oracle(B, ldb, N, K, A + i * lda, beta ? c0 + i * ldc : NULL, ref, f32);
                    char what[80];
                    snprintf(what, sizeof what, "sgemm_bf16w M=%lld N=%lld K=%lld beta=%d row %lld",
                             (long long)M, (long long)N, (long long)K, beta, (long long)i);
                    assert_true(at_check_f64(what, C + i * ldc, ref, f32, N, r.seed));
                    /* columns past N untouched */
                    assert_memory_equal(C + i * ldc + N, c0 + i * ldc + N, 2 * 4);
                }
                assert_memory_equal(C, C1, (size_t)(M * ldc) * 4);
            }
            free(B), free(A), free(C), free(C1), free(c0), free(f32), free(ref);
        }
    attn_ctx_free(one);
}

/* ---- models ---------------------------------------------------------------- */

static void copy_file(const char *from, const char *to) {
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    assert_non_null(a);
    assert_non_null(b);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, a)) > 0)
        assert_int_equal(fwrite(buf, 1, n, b), n);
    fclose(a), fclose(b);
}

/* tmpdir: src's config.json, and its model.safetensors in F32 with every
 * weight matrix (2-D tensors but GPT-2's position table) rounded through
 * bf16: the values a bf16-weight load of src computes with. */
static void write_twin(const char *src) {
    char path[1200], to[300];
    snprintf(path, sizeof path, "%s/config.json", src);
    snprintf(to, sizeof to, "%s/config.json", tmpdir);
    copy_file(path, to);
    snprintf(path, sizeof path, "%s/model.safetensors", src);
    attn_safetensors *st;
    assert_int_equal(attn_safetensors_open(at_ctx, path, &st), ATTN_OK);
    const int n = attn_safetensors_count(st);
    const char **names = calloc((size_t)n, sizeof *names);
    attn_tensor *ts = calloc((size_t)n, sizeof *ts);
    float **mem = calloc((size_t)n, sizeof *mem);
    assert_true(names && ts && mem);
    for (int i = 0; i < n; i++) {
        names[i] = attn_safetensors_name(st, i);
        assert_int_equal(attn_safetensors_get_f32(at_ctx, st, names[i], &mem[i], &ts[i]), ATTN_OK);
        ts[i].data = mem[i];
        ts[i].dtype = ATTN_F32;
        const int64_t ne = attn_tensor_numel(&ts[i]);
        const char *dot = strrchr(names[i], '.');
        if (ts[i].ndim == 2 && !strstr(names[i], "wpe.") && dot && !strcmp(dot, ".weight"))
            for (int64_t e = 0; e < ne; e++)
                mem[i][e] = attn__bf2f(attn__f2bf(mem[i][e]));
    }
    snprintf(to, sizeof to, "%s/model.safetensors", tmpdir);
    assert_int_equal(attn_safetensors_write(at_ctx, to, n, names, ts), ATTN_OK);
    for (int i = 0; i < n; i++)
        attn_buffer_free(mem[i]);
    free(mem), free(names), free(ts);
    attn_safetensors_close(st);
}

static void remove_twin(void) {
    char p[300];
    snprintf(p, sizeof p, "%s/config.json", tmpdir);
    remove(p);
    snprintf(p, sizeof p, "%s/model.safetensors", tmpdir);
    remove(p);
}

static attn_gpt *load(const char *dir, attn_gpt_weights w) {
    attn_gpt_load_opts o = {w};
    attn_gpt *m = NULL;
    attn_status st = attn_gpt_load_with(at_ctx, dir, &o, &m);
    if (st) fprintf(stderr, "load %s: %s\n", dir, attn_ctx_last_error(at_ctx));
    assert_int_equal(st, ATTN_OK);
    assert_int_equal(attn_gpt_get_weights(m), w);
    return m;
}

static void logits(attn_gpt *m, int64_t T, const int32_t *ids, float *out) {
    attn_gpt_cache *c;
    assert_int_equal(attn_gpt_cache_create(at_ctx, m, 1, T, &c), ATTN_OK);
    /* a prefill of T - 3 rows (M > 1), then three one-row steps (M = 1) */
    const int64_t V = attn_gpt_get_config(m)->vocab_size, P = T - 3;
    assert_int_equal(attn_gpt_forward(at_ctx, m, c, P, ids, 0, out), ATTN_OK);
    for (int64_t t = P; t < T; t++)
        assert_int_equal(attn_gpt_forward(at_ctx, m, c, 1, ids + t, 1, out + t * V), ATTN_OK);
    attn_gpt_cache_free(c);
}

static void check_model(const char *name) {
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/%s", data, name);
    write_twin(dir);
    attn_gpt *f = load(dir, ATTN_GPT_WEIGHTS_F32), *b = load(dir, ATTN_GPT_WEIGHTS_BF16);
    attn_gpt *tw = load(tmpdir, ATTN_GPT_WEIGHTS_F32);
    const int64_t V = attn_gpt_get_config(f)->vocab_size, T = 12;
    int32_t ids[12];
    at_rng r = at_rng_for(4300);
    for (int64_t t = 0; t < T; t++)
        ids[t] = (int32_t)at_rng_int(&r, 0, V - 1);
    float *lf = malloc((size_t)(T * V) * 4), *lb = malloc((size_t)(T * V) * 4);
    float *lt = malloc((size_t)(T * V) * 4);
    assert_true(lf && lb && lt);
    logits(f, T, ids, lf);
    logits(b, T, ids, lb);
    logits(tw, T, ids, lt);
    double d_twin = 0, d_f32 = 0, scale = 0;
    for (int64_t i = 0; i < T * V; i++) {
        d_twin = fmax(d_twin, fabs((double)lb[i] - lt[i]));
        d_f32 = fmax(d_f32, fabs((double)lb[i] - lf[i]));
        scale = fmax(scale, fabs((double)lf[i]));
        assert_true(isfinite(lb[i]));
    }
    if (at_verbose() || d_twin > 1e-4 || d_f32 > LOGIT_BOUND * scale)
        printf("%s: bf16 weights: max |logit - twin's| = %.3g; max |logit - fp32's| = %.3g "
               "(%.3g of max |logit| %.3g)\n",
               name, d_twin, d_f32, d_f32 / scale, scale);
    assert_true(d_twin <= 1e-4);
    assert_true(d_f32 <= LOGIT_BOUND * scale);
    assert_true(d_f32 > 0.0); /* the weights were rounded: the check can fail */

    /* greedy generation: the twin's tokens, alone and in a batch */
    attn_gen_params p;
    attn_gen_params_default(b, &p);
    p.temperature = 0, p.max_new_tokens = 24, p.eos_id = -1;
    int32_t gb[24], gt[24], g0[24], g1[24];
    int64_t nb = 0, nt = 0;
    assert_int_equal(attn_gpt_generate(at_ctx, b, ids, 5, &p, NULL, NULL, gb, &nb, NULL), ATTN_OK);
    assert_int_equal(attn_gpt_generate(at_ctx, tw, ids, 5, &p, NULL, NULL, gt, &nt, NULL), ATTN_OK);
    assert_int_equal(nb, 24);
    assert_int_equal(nt, 24);
    assert_memory_equal(gb, gt, sizeof gb);
    const int32_t *prompts[2] = {ids, ids + 2};
    const int64_t lens[2] = {5, 9};
    int32_t *outs[2] = {g0, g1};
    int64_t nouts[2];
    assert_int_equal(attn_gpt_generate_batch(at_ctx, b, 2, prompts, lens, &p, outs, nouts),
                     ATTN_OK);
    assert_int_equal(nouts[0], 24);
    assert_int_equal(nouts[1], 24);
    assert_memory_equal(g0, gb, sizeof gb);
    free(lf), free(lb), free(lt);
    attn_gpt_free(f), attn_gpt_free(b), attn_gpt_free(tw);
    remove_twin();
}

static void test_gpt2(void **state) {
    (void)state;
    check_model("gpt2-tiny");
}

static void test_llama(void **state) {
    (void)state;
    check_model("llama-tiny");
}

/* A BF16 file loaded with bf16 weights keeps its values: the same logits
 * as its fp32 load. */
static void test_bf16_file(void **state) {
    (void)state;
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/gpt2-tiny", data);
    write_twin(dir); /* matrices already bf16 values, so a bf16 load changes nothing */
    attn_gpt *a = load(tmpdir, ATTN_GPT_WEIGHTS_F32), *b = load(tmpdir, ATTN_GPT_WEIGHTS_BF16);
    const int64_t V = attn_gpt_get_config(a)->vocab_size;
    const int32_t ids[6] = {1, 50, 7, 99, 3, 2};
    float *la = malloc((size_t)(6 * V) * 4), *lb = malloc((size_t)(6 * V) * 4);
    logits(a, 6, ids, la);
    logits(b, 6, ids, lb);
    double d = 0;
    for (int64_t i = 0; i < 6 * V; i++)
        d = fmax(d, fabs((double)la[i] - lb[i]));
    assert_true(d <= 1e-4);
    free(la), free(lb);
    attn_gpt_free(a), attn_gpt_free(b);
    remove_twin();
}

static void test_bad_options(void **state) {
    (void)state;
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/gpt2-tiny", data);
    attn_gpt_load_opts o = {(attn_gpt_weights)7};
    attn_gpt *m = (attn_gpt *)&o;
    assert_int_equal(attn_gpt_load_with(at_ctx, dir, &o, &m), ATTN_E_ARG);
    assert_null(m);
    assert_non_null(strstr(attn_ctx_last_error(at_ctx), "weights = 7"));
    assert_int_equal(attn_gpt_get_weights(NULL), ATTN_GPT_WEIGHTS_F32);
    /* NULL options: the fp32 default */
    assert_int_equal(attn_gpt_load_with(at_ctx, dir, NULL, &m), ATTN_OK);
    assert_int_equal(attn_gpt_get_weights(m), ATTN_GPT_WEIGHTS_F32);
    attn_gpt_free(m);
    /* a bf16 model cannot be saved */
    m = load(dir, ATTN_GPT_WEIGHTS_BF16);
    char out[300];
    snprintf(out, sizeof out, "%s/saved", tmpdir);
    assert_int_equal(attn_gpt_save(at_ctx, m, out, 0), ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(at_ctx), "bf16"));
    struct stat sb;
    assert_int_not_equal(stat(out, &sb), 0); /* nothing written */
    attn_gpt_free(m);
    /* attn_model_open: a decoder opens with bf16 weights; another model
     * type (a ViT) or a tokenizer-only open with the flag is an error */
    attn_model *mm = NULL;
    assert_int_equal(attn_model_open(at_ctx, dir, ATTN_MODEL_OPEN_BF16, &mm), ATTN_OK);
    assert_int_equal(attn_gpt_get_weights(attn_model_get_gpt(mm)), ATTN_GPT_WEIGHTS_BF16);
    attn_model_free(mm);
    snprintf(dir, sizeof dir, "%s/vit-tiny", data);
    assert_int_equal(attn_model_open(at_ctx, dir, ATTN_MODEL_OPEN_BF16, &mm), ATTN_E_UNSUPPORTED);
    assert_null(mm);
    assert_non_null(strstr(attn_ctx_last_error(at_ctx), "bf16 weights"));
    assert_non_null(strstr(attn_ctx_last_error(at_ctx), "vit"));
    assert_int_equal(
        attn_model_open(at_ctx, dir, ATTN_MODEL_OPEN_BF16 | ATTN_MODEL_OPEN_TOKENIZER, &mm),
        ATTN_E_ARG);
    assert_null(mm);
    assert_int_equal(attn_model_open(at_ctx, dir, 4, &mm), ATTN_E_ARG);
}

static int setup(void **state) {
    const char *d = getenv("ATTN_TEST_DATA");
    snprintf(data, sizeof data, "%s", d ? d : "tests/data");
    snprintf(tmpdir, sizeof tmpdir, "/tmp/attn_bf16_XXXXXX");
    if (!mkdtemp(tmpdir)) return -1;
    return at_ctx_setup(state);
}

static int teardown(void **state) {
    rmdir(tmpdir);
    return at_ctx_teardown(state);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kernels),   cmocka_unit_test(test_sgemm_bf16w),
        cmocka_unit_test(test_gpt2),      cmocka_unit_test(test_llama),
        cmocka_unit_test(test_bf16_file), cmocka_unit_test(test_bad_options),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

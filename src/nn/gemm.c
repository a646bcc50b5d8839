/* The one door to GEMM: every matrix product of nn/ and models/ goes through
 * attn__sgemm, which calls oneDNN's dnnl_sgemm. oneDNN picks its kernels by
 * the CPU's feature flags (its JIT emits AVX2 or AVX-512 code for the CPU it
 * runs on), so a new CPU model gets the kernels of the ISA it has with no
 * environment variable; Debian's OpenBLAS 0.3.21 picks by a CPU-model table
 * (SSE3 kernels on CPUs it does not know) and obeys an inherited
 * OPENBLAS_CORETYPE. The measurements behind the choice are in
 * docs/PERFORMANCE.md ("GEMM"), the reasons in docs/DESIGN.md.
 *
 * One row times a weight matrix (M = 1, B transposed: a Linear layer on the
 * one token of a decoder step) goes to the nn kernel table's gemv instead,
 * rows split over the threads: it reads W at close to the streaming
 * bandwidth where dnnl_sgemm's M = 1 path reached about 60% of it
 * (docs/PERFORMANCE.md, "GPT-2 decoding"). Each output is made by one
 * thread in one order, so it does not depend on the thread count.
 *
 * Weights stored as bfloat16 (a decoder loaded with ATTN_GPT_WEIGHTS_BF16)
 * go through attn__sgemm_bf16w: M = 1 to the kernel table's gemv_bf16, M > 1
 * to its gemm_bf16, with the same row split, so here too each output is
 * made by one thread and the bits do not depend on the thread count.
 * oneDNN 2.6 (Debian's) has no f32 x bf16 matmul, its bf16 x bf16 path
 * would round the activations too, and widening W into panels for
 * dnnl_sgemm measured slower than fp32 (docs/DESIGN.md, "bf16 weights").
 *
 * Threads: oneDNN runs on the calling thread's OpenMP team, sized by
 * omp_get_max_threads(). The context's count is set for this call and the
 * caller's setting put back after it, so nothing process-wide changes. */
#include "kernels/arch.h"
#include "nn/nn.h"

#include <omp.h>
#include <oneapi/dnnl/dnnl.h>
#include <stdio.h>

/* Products of at most SMALL_M rows (a short prompt, a batched decode step)
 * with a transposed weight matrix split W's rows (C's columns) over the
 * threads, one single-threaded dnnl_sgemm each: oneDNN's own 2-thread
 * split of a 32-row product was slower than one thread (GPT-2-small prompt
 * of 32 tokens on Zen 5: 1 thread 543 tokens/s, 2 threads 380-428 with
 * oneDNN's split, 906-927 with this one; docs/PERFORMANCE.md). */
#define SMALL_M 64

/* Rows per task of the GEMV: W rows stream in contiguous runs. */
#define GEMV_ROWS 64

static void gemv(attn_ctx *ctx, int64_t N, int64_t K, const float *x, const float *W, int64_t ldw,
                 int acc, float *y) {
    const attn_nn_kernels *k = attn__nn_kernels();
    const int64_t tasks = (N + GEMV_ROWS - 1) / GEMV_ROWS;
    const int threads = (int)ATTN_MIN((int64_t)attn_ctx_threads(ctx), tasks);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t t = 0; t < tasks; t++) {
        const int64_t j0 = t * GEMV_ROWS, n = ATTN_MIN((int64_t)GEMV_ROWS, N - j0);
        k->gemv(W + j0 * ldw, ldw, n, K, x, acc, y + j0);
    }
}

static void gemv_bf16(attn_ctx *ctx, int64_t N, int64_t K, const float *x, const uint16_t *W,
                      int64_t ldw, int acc, float *y) {
    const attn_nn_kernels *k = attn__nn_kernels();
    const int64_t tasks = (N + GEMV_ROWS - 1) / GEMV_ROWS;
    const int threads = (int)ATTN_MIN((int64_t)attn_ctx_threads(ctx), tasks);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t t = 0; t < tasks; t++) {
        const int64_t j0 = t * GEMV_ROWS, n = ATTN_MIN((int64_t)GEMV_ROWS, N - j0);
        k->gemv_bf16(W + j0 * ldw, ldw, n, K, x, acc, y + j0);
    }
}

void attn__sgemm_bf16w(attn_ctx *ctx, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                       const uint16_t *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    assert(beta == 0.0f || beta == 1.0f);
    if (M < 1 || N < 1 || K < 1) return;
    if (M == 1) {
        gemv_bf16(ctx, N, K, A, B, ldb, beta == 1.0f, C);
        return;
    }
    /* M > 1: the same row split; a task's rows of W are read from memory
     * once and stay in L2 while chunks of A (256 KB each, L2 too) pass over
     * them, four rows of W at a time kept in L1 by the kernel */
    const attn_nn_kernels *k = attn__nn_kernels();
    const int64_t tasks = (N + GEMV_ROWS - 1) / GEMV_ROWS;
    const int64_t mc = ATTN_MAX((int64_t)6, 65536 / K / 6 * 6);
    const int threads = (int)ATTN_MIN((int64_t)attn_ctx_threads(ctx), tasks);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t t = 0; t < tasks; t++) {
        const int64_t j0 = t * GEMV_ROWS, n = ATTN_MIN((int64_t)GEMV_ROWS, N - j0);
        for (int64_t i0 = 0; i0 < M; i0 += mc)
            k->gemm_bf16(B + j0 * ldb, ldb, n, K, A + i0 * lda, lda, ATTN_MIN(mc, M - i0),
                         beta == 1.0f, C + i0 * ldc + j0, ldc);
    }
}

void attn__sgemm(attn_ctx *ctx, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                 float alpha, const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                 float *C, int64_t ldc) {
    if (M == 1 && !trans_a && trans_b && alpha == 1.0f && (beta == 0.0f || beta == 1.0f) && K > 0 && N > 0) {
        gemv(ctx, N, K, A, B, ldb, beta == 1.0f, C);
        return;
    }
    const int want = attn_ctx_threads(ctx), had = omp_get_max_threads();
    if (want > 1 && M <= SMALL_M && !trans_a && trans_b && N >= 256 * (int64_t)want) {
        /* a few rows times a weight matrix: each thread one run of W's rows
         * (columns of C), one single-threaded dnnl_sgemm each */
        const int64_t nb = (N / want + 63) / 64 * 64;
#pragma omp parallel for num_threads(want) schedule(static)
        for (int t = 0; t < want; t++) {
            const int64_t j0 = t * nb, n = ATTN_MIN(nb, N - j0);
            omp_set_num_threads(1); /* this thread's own nested calls only */
            if (n > 0) {
                dnnl_status_t st = dnnl_sgemm('N', 'T', M, n, K, alpha, A, lda, B + j0 * ldb, ldb,
                                              beta, C + j0, ldc);
                assert(st == dnnl_success);
                (void)st;
            }
        }
        return;
    }
    if (want != had) omp_set_num_threads(want);
    dnnl_status_t st = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K, alpha, A, lda,
                                  B, ldb, beta, C, ldc);
    if (want != had) omp_set_num_threads(had);
    /* only invalid dimensions fail, and callers pass validated ones */
    assert(st == dnnl_success);
    (void)st;
}

const char *attn_gemm_name(void) {
    static char buf[96];
    if (buf[0]) return buf;
    const dnnl_version_t *v = dnnl_version();
    const char *isa = "baseline";
    switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_sse41:
        isa = "sse4.1";
        break;
    case dnnl_cpu_isa_avx:
        isa = "avx";
        break;
    case dnnl_cpu_isa_avx2:
        isa = "avx2";
        break;
    case dnnl_cpu_isa_avx2_vnni:
        isa = "avx2+vnni";
        break;
    case dnnl_cpu_isa_avx512_core:
        isa = "avx512";
        break;
    case dnnl_cpu_isa_avx512_core_vnni:
        isa = "avx512+vnni";
        break;
    case dnnl_cpu_isa_avx512_core_bf16:
        isa = "avx512+bf16";
        break;
    case dnnl_cpu_isa_avx512_core_amx:
        isa = "avx512+amx";
        break;
    default:
        break;
    }
    char tmp[96];
    snprintf(tmp, sizeof tmp, "oneDNN %d.%d.%d (%s)", v->major, v->minor, v->patch, isa);
    for (int i = 0;; i++) /* a benign race: every thread writes the same text */
        if (!(buf[i] = tmp[i])) break;
    return buf;
}

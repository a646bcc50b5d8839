/* The scalar family's descriptor: the reference every other family starts
 * from. Its kernels take any strip height; the geometry here is the one the
 * AVX2 family was tuned with (the scalar kernels are far from any peak
 * whatever the tiling), so ATTN_ARCH=scalar walks the same tiles. */
#include "kernels/arch.h"

extern const attn_kernels attn__kernels_scalar;
extern const attn_bwd_kernels attn__bwd_kernels_scalar;
extern const attn_nn_kernels attn__nn_kernels_scalar;
extern const attn_feat_kernels attn__feat_kernels_scalar;

/* Peak of the baseline instruction set these kernels are compiled for (on
 * x86-64: SSE2, no FMA instruction): 12 independent chains x' = x*a + b of
 * 4-lane vectors (GCC and Clang vector extensions), a multiply and an add
 * each. The kernels above stay far below it: they keep fmaf (one rounding,
 * which the tolerance on logits scaled by 100 needs), a library call here. */
#if defined(__GNUC__) || defined(__clang__)
typedef float attn_v4 __attribute__((vector_size(16)));
static double peak_fma_scalar(int64_t iters, float *sink) {
    const attn_v4 a = {0.999999f, 0.999999f, 0.999999f, 0.999999f};
    const attn_v4 b = {1e-3f, 1e-3f, 1e-3f, 1e-3f};
    /* distinct starts, or the compiler merges equal chains */
#define ATTN_X(i) {1.0f + 0.125f * (i), 1.0f, 1.0f, 1.0f}
    attn_v4 x0 = ATTN_X(0), x1 = ATTN_X(1), x2 = ATTN_X(2), x3 = ATTN_X(3), x4 = ATTN_X(4);
    attn_v4 x5 = ATTN_X(5), x6 = ATTN_X(6), x7 = ATTN_X(7), x8 = ATTN_X(8), x9 = ATTN_X(9);
    attn_v4 x10 = ATTN_X(10), x11 = ATTN_X(11);
#undef ATTN_X
    for (int64_t it = 0; it < iters; it++) {
        x0 = x0 * a + b, x1 = x1 * a + b, x2 = x2 * a + b, x3 = x3 * a + b;
        x4 = x4 * a + b, x5 = x5 * a + b, x6 = x6 * a + b, x7 = x7 * a + b;
        x8 = x8 * a + b, x9 = x9 * a + b, x10 = x10 * a + b, x11 = x11 * a + b;
    }
    attn_v4 t = ((x0 + x1) + (x2 + x3)) + ((x4 + x5) + (x6 + x7)) + ((x8 + x9) + (x10 + x11));
    *sink = t[0] + t[3];
    return (double)iters * 12.0 * 4.0 * 2.0;
}
#else
static double peak_fma_scalar(int64_t iters, float *sink) {
    float x[12];
    for (int i = 0; i < 12; i++)
        x[i] = 1.0f + 0.125f * (float)i;
    for (int64_t it = 0; it < iters; it++)
        for (int i = 0; i < 12; i++)
            x[i] = x[i] * 0.999999f + 1e-3f;
    float t = 0.0f;
    for (int i = 0; i < 12; i++)
        t += x[i];
    *sink = t;
    return (double)iters * 12.0 * 2.0;
}
#endif

void attn__arch_init_scalar(attn__arch *a) {
    a->name = "scalar";
    a->mr = 24;
    a->bk = 128;
    a->mrq = 1;
    a->bmr = 96;
    a->bbk = 48;
    a->bmrq = 1;
    a->fwd = attn__kernels_scalar;
    a->bwd = attn__bwd_kernels_scalar;
    a->nn = attn__nn_kernels_scalar;
    a->feat = attn__feat_kernels_scalar;
    a->peak_fma = peak_fma_scalar;
    attn__decode_init_scalar(&a->dec);
}

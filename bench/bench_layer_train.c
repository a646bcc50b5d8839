/* One pre-LN GPT-2-style layer (causal attention, GELU-tanh MLP), training
 * forward (attn__layer_forward_train) and backward (attn__layer_backward),
 * timed by process CPU time (other work on the machine does not count);
 * medians of --reps rounds after one warm-up. bench/bench_layer_train.py
 * runs the same layer in PyTorch for a side-by-side figure.
 *
 *   build/bench/bench_layer_train [--threads N] [--B 8] [--T 256] [--E 256]
 *                                 [--H 8] [--I 1024] [--reps 21] */
#include "nn/block.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint64_t rs = 1;
static float *filled(int64_t n, float scale) {
    float *p = malloc((size_t)n * sizeof *p);
    if (!p) exit(1);
    for (int64_t i = 0; i < n; i++) {
        rs = rs * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = scale * ((float)(rs >> 40) / 8388608.0f - 1.0f);
    }
    return p;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    int64_t B = 8, T = 256, E = 256, H = 8, I = 1024, threads = 1, reps = 21;
    for (int i = 1; i + 1 < argc; i += 2) {
        int64_t v = atoll(argv[i + 1]);
        if (!strcmp(argv[i], "--threads"))
            threads = v;
        else if (!strcmp(argv[i], "--B"))
            B = v;
        else if (!strcmp(argv[i], "--T"))
            T = v;
        else if (!strcmp(argv[i], "--E"))
            E = v;
        else if (!strcmp(argv[i], "--H"))
            H = v;
        else if (!strcmp(argv[i], "--I"))
            I = v;
        else if (!strcmp(argv[i], "--reps"))
            reps = v;
        else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (B < 1 || T < 1 || E < 1 || H < 1 || E % H || I < 1 || reps < 1 || reps > 1000) {
        fprintf(stderr, "bad sizes\n");
        return 2;
    }
    attn_ctx *ctx;
    if (attn_ctx_create(&ctx, (int)threads)) return 1;
    const int64_t N = B * T;
    attn__layer L;
    memset(&L, 0, sizeof L);
    L.attn.heads.H = L.attn.heads.Hkv = H, L.attn.heads.Dh = E / H, L.attn.heads.causal = 1;
    L.attn.E = L.attn.KV = E;
    L.attn.w_qkv = filled(3 * E * E, 0.05f), L.attn.b_qkv = filled(3 * E, 0.1f);
    L.attn.w_out = filled(E * E, 0.05f), L.attn.b_out = filled(E, 0.1f);
    L.ffn.E = E, L.ffn.I = I, L.ffn.gelu_tanh = 1;
    L.ffn.w1 = filled(I * E, 0.05f), L.ffn.b1 = filled(I, 0.1f);
    L.ffn.w2 = filled(E * I, 0.03f), L.ffn.b2 = filled(E, 0.1f);
    L.ln1_g = filled(E, 1.0f), L.ln1_b = filled(E, 0.1f);
    L.ln2_g = filled(E, 1.0f), L.ln2_b = filled(E, 0.1f);
    L.eps = 1e-5f, L.pre_ln = 1;
    attn__layer_grad g = {{filled(3 * E * E, 0), filled(3 * E, 0), filled(E * E, 0), filled(E, 0)},
                          {filled(I * E, 0), filled(I, 0), filled(E * I, 0), filled(E, 0)},
                          filled(E, 0),
                          filled(E, 0),
                          filled(E, 0),
                          filled(E, 0)};
    float *x0 = filled(N * E, 1.0f), *x = filled(N * E, 0), *dx = filled(N * E, 0);
    float *act_mem = filled(attn__layer_act_floats(&L, B, T), 0);
    float *scratch = filled(attn__layer_bwd_floats(&L, B, T), 0);
    attn__layer_act act;
    attn__layer_act_bind(&L, B, T, act_mem, &act);
    const attn__batch bt = {B, T, NULL};
    attn_tensor none;
    memset(&none, 0, sizeof none);
    double *tf = malloc((size_t)reps * sizeof *tf), *tb = malloc((size_t)reps * sizeof *tb);
    for (int64_t r = -1; r < reps; r++) {
        memcpy(x, x0, (size_t)(N * E) * sizeof *x);
        for (int64_t i = 0; i < N * E; i++)
            dx[i] = 0.01f;
        double t0 = cpu_now();
        if (attn__layer_forward_train(ctx, &L, &bt, x, none, &act)) return 1;
        double t1 = cpu_now();
        if (attn__layer_backward(ctx, &L, &bt, none, &act, dx, &g, scratch)) return 1;
        double t2 = cpu_now();
        if (r >= 0) tf[r] = t1 - t0, tb[r] = t2 - t1;
    }
    qsort(tf, (size_t)reps, sizeof *tf, cmp);
    qsort(tb, (size_t)reps, sizeof *tb, cmp);
    /* GEMMs 2 N E (4E + 2I) and causal attention 2 * 2 B H (T^2/2) Dh; the
     * backward counts twice the forward's FLOPs (attention's 2.5x) */
    const double gemm = 2.0 * N * E * (4.0 * E + 2.0 * I);
    const double att = 4.0 * B * H * (T * (T + 1) / 2.0) * (E / H);
    const double mf = tf[reps / 2], mb = tb[reps / 2];
    printf("layer B=%lld T=%lld E=%lld H=%lld I=%lld threads=%lld: forward %.2f ms (%.1f "
           "GFLOP/s), backward %.2f ms (%.1f GFLOP/s), CPU time, median of %lld\n",
           (long long)B, (long long)T, (long long)E, (long long)H, (long long)I, (long long)threads,
           mf * 1e3, (gemm + att) / mf * 1e-9, mb * 1e3, (2.0 * gemm + 2.5 * att) / mb * 1e-9,
           (long long)reps);
    attn_ctx_free(ctx);
    return 0;
}

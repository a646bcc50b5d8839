/* Timing of linear attention / the Performer (attn_approx_forward and
 * attn_approx_backward) on one head, for docs/PERFORMANCE.md:
 *   bench_approx T M REPS backward causal [threads]
 * M = 0: linear attention, else the Performer with M features; backward,
 * causal: 0 or 1. D = Dv = 64, B = H = 1, inputs uniform (q, k in [-1.5,
 * 1.5), v, dout in [-0.5, 0.5)), one untimed run first. Prints the median
 * seconds of REPS runs in wall-clock and process CPU time (all threads; on
 * a shared machine the CPU time of a 1-thread run is the steadier figure)
 * and the GFLOP/s by attn_approx_flops. */
#include <attn/attn.h>

#include "../tools/attn/cli_time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static attn_tensor view(float *d, int64_t T, int64_t D) {
    attn_tensor t;
    memset(&t, 0, sizeof t);
    t.data = d, t.dtype = ATTN_F32, t.ndim = 4;
    t.shape[0] = 1, t.shape[1] = 1, t.shape[2] = T, t.shape[3] = D;
    t.stride[3] = 1, t.stride[2] = D, t.stride[1] = T * D, t.stride[0] = T * D;
    return t;
}

static int cmp(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: bench_approx T M REPS backward causal [threads]\n");
        return 2;
    }
    const int64_t T = atoll(argv[1]), D = 64, m = atoll(argv[2]);
    const int reps = atoi(argv[3]), bwd = atoi(argv[4]), causal = atoi(argv[5]);
    const int threads = argc > 6 ? atoi(argv[6]) : 1;
    if (T < 1 || m < 0 || reps < 1 || reps > 1000) return 2;
    float *buf = malloc((size_t)(8 * T * D) * sizeof *buf);
    attn_ctx *ctx;
    if (!buf || attn_ctx_create(&ctx, threads)) return 1;
    srand(1);
    for (int64_t i = 0; i < 8 * T * D; i++)
        buf[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    for (int64_t i = 0; i < 2 * T * D; i++)
        buf[i] *= 3.0f;
    float *q = buf, *k = q + T * D, *v = k + T * D, *o = v + T * D, *go = o + T * D;
    attn_approx_args a;
    memset(&a, 0, sizeof a);
    a.q = view(q, T, D), a.k = view(k, T, D), a.v = view(v, T, D), a.out = view(o, T, D);
    a.causal = causal;
    if (m) a.method = ATTN_APPROX_PERFORMER, a.features = m, a.seed = 1;
    else a.method = ATTN_APPROX_LINEAR;
    attn_sdpa_grads g;
    memset(&g, 0, sizeof g);
    g.dout = view(go, T, D), g.dq = view(go + T * D, T, D), g.dk = view(go + 2 * T * D, T, D);
    g.dv = view(go + 3 * T * D, T, D);
    double *w = malloc((size_t)reps * sizeof *w), *c = malloc((size_t)reps * sizeof *c);
    if (!w || !c) return 1;
    for (int r = -1; r < reps; r++) {
        const double w0 = attn_cli_clock_s(CLOCK_MONOTONIC);
        const double c0 = attn_cli_clock_s(CLOCK_PROCESS_CPUTIME_ID);
        attn_status st = bwd ? attn_approx_backward(ctx, &a, &g) : attn_approx_forward(ctx, &a);
        if (st) {
            fprintf(stderr, "bench_approx: %s\n", attn_ctx_last_error(ctx));
            return 1;
        }
        if (r < 0) continue;
        w[r] = attn_cli_clock_s(CLOCK_MONOTONIC) - w0;
        c[r] = attn_cli_clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
    }
    qsort(w, (size_t)reps, sizeof *w, cmp);
    qsort(c, (size_t)reps, sizeof *c, cmp);
    const double fl = attn_approx_flops(&a, bwd);
    printf("T=%lld %s%s %s: wall %.4f s, cpu %.4f s (medians of %d), %.1f GFLOP/s by cpu time\n",
           (long long)T, causal ? "causal " : "", m ? "performer" : "linear",
           bwd ? "backward" : "forward", w[reps / 2], c[reps / 2], reps,
           fl / c[reps / 2] * 1e-9);
    free(w), free(c), free(buf);
    attn_ctx_free(ctx);
    return 0;
}

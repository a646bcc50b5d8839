/* Timing of one multi-head attention layer (attn_mha), forward and
 * forward + backward, for bench/bench_mha.py.
 *   bench_mha B T E H THREADS REPS [causal]
 * prints one JSON line: the median milliseconds of each, wall-clock and
 * process CPU time (all threads; on a shared, loaded machine the CPU time of
 * a 1-thread run is the steadier figure). Inputs uniform in [-1, 1);
 * need_weights off, as in PyTorch's fast path. */
#include <attn/attn.h>

#include "../tools/attn/cli_time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double clock_ms(clockid_t id) {
    return 1e3 * attn_cli_clock_s(id);
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: bench_mha B T E H THREADS REPS [causal]\n");
        return 2;
    }
    int64_t B = atoll(argv[1]), T = atoll(argv[2]), E = atoll(argv[3]), H = atoll(argv[4]);
    int threads = atoi(argv[5]), reps = atoi(argv[6]);
    int causal = argc > 7 && !strcmp(argv[7], "causal");
    attn_ctx *ctx;
    attn_mha *m;
    if (reps < 1 || attn_ctx_create(&ctx, threads)) return 1;
    attn_mha_config c = {0};
    c.E = E, c.H = H, c.causal = causal;
    if (attn_mha_create(ctx, &c, 1, &m)) {
        fprintf(stderr, "%s\n", attn_ctx_last_error(ctx));
        return 1;
    }
    size_t n = (size_t)(B * T * E);
    float *x = malloc(n * 4), *y = malloc(n * 4), *dy = malloc(n * 4), *dx = malloc(n * 4);
    double *tf = malloc((size_t)reps * sizeof *tf), *tb = malloc((size_t)reps * sizeof *tb);
    double *cf = malloc((size_t)reps * sizeof *cf), *cb = malloc((size_t)reps * sizeof *cb);
    if (!x || !y || !dy || !dx || !tf || !tb || !cf || !cb) return 1;
    uint64_t s = 42;
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)(s >> 40) / 8388608.0f - 1.0f;
        dy[i] = -x[i] * 0.5f;
    }
    attn_mha_args a;
    memset(&a, 0, sizeof a);
    a.x_q = attn_tensor_make(x, ATTN_F32, 3, (int64_t[]){B, T, E});
    a.y = attn_tensor_make(y, ATTN_F32, 3, (int64_t[]){B, T, E});
    attn_mha_grads g;
    memset(&g, 0, sizeof g);
    g.dy = attn_tensor_make(dy, ATTN_F32, 3, (int64_t[]){B, T, E});
    g.dx_q = attn_tensor_make(dx, ATTN_F32, 3, (int64_t[]){B, T, E});
    for (int r = -1; r < reps; r++) { /* r = -1: warm-up */
        double t0 = clock_ms(CLOCK_MONOTONIC), c0 = clock_ms(CLOCK_PROCESS_CPUTIME_ID);
        if (attn_mha_forward(ctx, m, &a)) goto fail;
        double t1 = clock_ms(CLOCK_MONOTONIC), c1 = clock_ms(CLOCK_PROCESS_CPUTIME_ID);
        if (attn_mha_forward(ctx, m, &a) || attn_mha_backward(ctx, m, &a, &g)) goto fail;
        double t2 = clock_ms(CLOCK_MONOTONIC), c2 = clock_ms(CLOCK_PROCESS_CPUTIME_ID);
        if (r >= 0) tf[r] = t1 - t0, tb[r] = t2 - t1, cf[r] = c1 - c0, cb[r] = c2 - c1;
    }
    printf("{\"forward_ms\": %.3f, \"forward_backward_ms\": %.3f, \"forward_cpu_ms\": %.3f, "
           "\"forward_backward_cpu_ms\": %.3f, \"threads\": %d}\n",
           attn_cli_median(tf, (size_t)reps), attn_cli_median(tb, (size_t)reps),
           attn_cli_median(cf, (size_t)reps), attn_cli_median(cb, (size_t)reps),
           attn_ctx_threads(ctx));
    return 0;
fail:
    fprintf(stderr, "%s\n", attn_ctx_last_error(ctx));
    return 1;
}

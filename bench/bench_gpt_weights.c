/* Prefill and decode of a decoder directory with fp32 and with bf16 weights
 * (attn_gpt_load_with), side by side in one process: a prompt of T tokens
 * through attn_gpt_forward, then `new` one-token steps, each repeated and
 * the median kept. Times are process CPU time and wall clock: on one
 * thread CPU time is the time on a core, which a loaded machine does not
 * stretch (it still shares the memory bus), so it is the figure to compare
 * under load; on a quiet machine the two agree.
 * Standalone (public API only), from the source tree after a build:
 *   cc -O2 -Iinclude bench/bench_gpt_weights.c -Lbuild -lattn \
 *      -Wl,-rpath,$PWD/build -o /tmp/bench_gpt_weights
 *   /tmp/bench_gpt_weights DIR [threads=1] [T=32] [new=64] [reps=5]
 * (DIR: e.g. the GPT-2-small-shaped model bench/bench_generate.py saves in
 * /tmp/attn-gpt2-small). */
#include <attn/attn.h>

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR [threads] [T] [new] [reps]\n", argv[0]);
        return 2;
    }
    const int threads = argc > 2 ? atoi(argv[2]) : 1, T = argc > 3 ? atoi(argv[3]) : 32;
    const int nnew = argc > 4 ? atoi(argv[4]) : 64, reps = argc > 5 ? atoi(argv[5]) : 5;
    if (threads < 1 || T < 1 || nnew < 1 || reps < 1 || reps > 100) return 2;
    attn_ctx *ctx;
    if (attn_ctx_create(&ctx, threads)) return 1;
    printf("%s, %d thread(s), prompt %d, %d new tokens, median of %d\n", argv[1], threads, T, nnew,
           reps);
    printf("%-5s %14s %14s %16s %16s\n", "", "prefill cpu ms", "wall ms", "decode cpu tok/s",
           "wall tok/s");
    double base[4] = {0, 0, 0, 0};
    for (int bf = 0; bf < 2; bf++) {
        attn_gpt_load_opts o = {bf ? ATTN_GPT_WEIGHTS_BF16 : ATTN_GPT_WEIGHTS_F32};
        attn_gpt *m;
        if (attn_gpt_load_with(ctx, argv[1], &o, &m)) {
            fprintf(stderr, "%s\n", attn_ctx_last_error(ctx));
            return 1;
        }
        const int64_t V = attn_gpt_get_config(m)->vocab_size;
        int32_t *ids = malloc((size_t)(T + nnew) * sizeof *ids);
        float *lg = malloc((size_t)V * sizeof *lg);
        double pc[100], pw[100], dc[100], dw[100];
        attn_gpt_cache *c;
        if (!ids || !lg || attn_gpt_cache_create(ctx, m, 1, T + nnew, &c)) return 1;
        for (int i = 0; i < T + nnew; i++)
            ids[i] = (int32_t)(((int64_t)i * 7919) % V);
        for (int r = -1; r < reps; r++) { /* r = -1 warms up */
            attn_gpt_cache_reset(c);
            double c0 = now(CLOCK_PROCESS_CPUTIME_ID), w0 = now(CLOCK_MONOTONIC);
            if (attn_gpt_forward(ctx, m, c, T, ids, 1, lg)) return 1;
            double c1 = now(CLOCK_PROCESS_CPUTIME_ID), w1 = now(CLOCK_MONOTONIC);
            for (int t = 0; t < nnew; t++)
                if (attn_gpt_forward(ctx, m, c, 1, ids + T + t, 1, lg)) return 1;
            double c2 = now(CLOCK_PROCESS_CPUTIME_ID), w2 = now(CLOCK_MONOTONIC);
            if (r >= 0) pc[r] = c1 - c0, pw[r] = w1 - w0, dc[r] = c2 - c1, dw[r] = w2 - w1;
        }
        const double v[4] = {median(pc, reps) * 1e3, median(pw, reps) * 1e3,
                             nnew / median(dc, reps), nnew / median(dw, reps)};
        printf("%-5s %14.1f %14.1f %16.1f %16.1f", bf ? "bf16" : "f32", v[0], v[1], v[2], v[3]);
        if (bf)
            printf("   (bf16/f32: prefill %.2fx faster, decode %.2fx faster, CPU time)",
                   base[0] / v[0], v[2] / base[2]);
        else
            for (int i = 0; i < 4; i++)
                base[i] = v[i];
        printf("\n");
        attn_gpt_cache_free(c);
        attn_gpt_free(m);
        free(ids), free(lg);
    }
    attn_ctx_free(ctx);
    return 0;
}

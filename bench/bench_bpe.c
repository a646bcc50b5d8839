/* Timer for bench/bench_bpe.py: encode one file with the byte-level BPE
 * tokenizer of a model directory, reps times, after one warm-up.
 *   bench_bpe DIR FILE REPS [lines]
 * "lines": each line (without its '\n') is one text, encoded in turn.
 * Prints one JSON line: the id count, a checksum of the ids (sum of
 * id * (position + 1) modulo 2^61-1, compared with Hugging Face's by the
 * script), and per run the wall-clock and process CPU seconds. */
#include <attn/attn.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(clockid_t c) {
    struct timespec ts;
    clock_gettime(c, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: bench_bpe DIR FILE REPS [lines]\n");
        return 2;
    }
    int reps = atoi(argv[3]);
    FILE *f = fopen(argv[2], "rb");
    if (!f || reps < 1) {
        fprintf(stderr, "bench_bpe: cannot open %s (or bad REPS)\n", argv[2]);
        return 2;
    }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)len + 1);
    if (!text || fread(text, 1, (size_t)len, f) != (size_t)len) return 1;
    fclose(f);
    attn_ctx *ctx;
    attn_bpe *t;
    if (attn_ctx_create(&ctx, 1) || attn_bpe_load_dir(ctx, argv[1], &t)) {
        fprintf(stderr, "bench_bpe: %s\n", attn_ctx_last_error(ctx));
        return 1;
    }
    int lines = argc == 5;
    int32_t *ids = malloc(((size_t)len + 1) * sizeof *ids); /* at most one id per byte */
    int n = 0;
    printf("{\"bytes\": %ld, \"runs\": [", len);
    for (int r = 0; r <= reps; r++) {
        double w0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_PROCESS_CPUTIME_ID);
        n = 0;
        for (long a = 0; a <= len;) {
            long b = len;
            if (lines) {
                b = a;
                while (b < len && text[b] != '\n')
                    b++;
            }
            int m = 0;
            if (attn_bpe_encode(ctx, t, text + a, (size_t)(b - a), 0, ids + n, (int)(len + 1 - n),
                                &m)) {
                fprintf(stderr, "bench_bpe: %s\n", attn_ctx_last_error(ctx));
                return 1;
            }
            n += m;
            a = b + 1;
        }
        double w1 = now(CLOCK_MONOTONIC), c1 = now(CLOCK_PROCESS_CPUTIME_ID);
        if (r) printf("%s[%.6f, %.6f]", r > 1 ? ", " : "", w1 - w0, c1 - c0);
    }
    const uint64_t P = (1ull << 61) - 1;
    uint64_t sum = 0;
    for (int i = 0; i < n; i++)
        sum = (sum + (uint64_t)ids[i] * (uint64_t)(i + 1) % P) % P;
    printf("], \"ids\": %d, \"checksum\": %llu}\n", n, (unsigned long long)sum);
    free(ids);
    free(text);
    attn_bpe_free(t);
    attn_ctx_free(ctx);
    return 0;
}

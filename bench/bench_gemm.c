/* GEMM candidates on the project's own shapes, side by side in one run:
 * y[M, N] = x[M, K] W[N, K]^T (a Linear layer, row-major, PyTorch's weight
 * layout), for the BERT / all-MiniLM-L6-v2 projections and feed-forward
 * layers and the MHA layer at E = 768, at M = 16..512 tokens.
 *
 * Each library is loaded with dlopen (RTLD_LOCAL, so OpenBLAS's and BLIS's
 * cblas_sgemm do not clash): OpenBLAS as installed (it reads
 * OPENBLAS_CORETYPE from the environment, as a user's process would),
 * BLIS, oneDNN's dnnl_sgemm. A library that is not installed is reported
 * as absent. GFLOP/s are the best of `reps` timed calls after a warm-up
 * and % of the fp32 FMA peak of the best kernel family this CPU has
 * (attn_arch_peak_probe), measured first.
 *
 *   bench_gemm [--threads N] [--reps R]
 */
#include <attn/attn.h>

#include <dlfcn.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef void (*cblas_sgemm_fn)(int, int, int, int, int, int, float, const float *, int,
                               const float *, int, float, float *, int);
typedef void (*bli_sgemm_fn)(int, int, int64_t, int64_t, int64_t, const float *, const float *,
                             int64_t, int64_t, const float *, int64_t, int64_t, const float *,
                             float *, int64_t, int64_t);
typedef int (*dnnl_sgemm_fn)(char, char, int64_t, int64_t, int64_t, float, const float *, int64_t,
                             const float *, int64_t, float, float *, int64_t);

enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112 };

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct lib {
    const char *name;
    void *h;
    cblas_sgemm_fn cblas;
    bli_sgemm_fn bli; /* BLIS's own API: its cblas_sgemm would call whichever sgemm_ the
                       * process resolved first (OpenBLAS's, through libattn) */
    dnnl_sgemm_fn dnnl;
    const char *(*corename)(void);
} lib;

static void run(const lib *L, int M, int N, int K, const float *x, const float *w, float *y) {
    static const float one = 1.0f, zero = 0.0f;
    if (L->cblas)
        L->cblas(ROW_MAJOR, NO_TRANS, TRANS, M, N, K, 1.0f, x, K, w, K, 0.0f, y, N);
    else if (L->bli) /* BLIS_NO_TRANSPOSE = 0, BLIS_TRANSPOSE = 8; row and column strides */
        L->bli(0, 8, M, N, K, &one, x, K, 1, w, K, 1, &zero, y, N, 1);
    else
        L->dnnl('N', 'T', M, N, K, 1.0f, x, K, w, K, 0.0f, y, N);
}

static double peak_gflops(const char *arch, int threads) {
    double best = 0;
    for (int t = 0; t < 10; t++) {
        double flops = 0, t0 = now_s();
#pragma omp parallel num_threads(threads) reduction(+ : flops)
        flops += attn_arch_peak_probe(arch, 2000000);
        double g = flops / (now_s() - t0) * 1e-9;
        if (g > best) best = g;
    }
    return best;
}

int main(int argc, char **argv) {
    int threads = 1, reps = 20;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
    }
    if (threads < 1 || reps < 1) return 2;
    lib libs[3] = {{.name = "openblas"}, {.name = "blis"}, {.name = "onednn"}};
    const char *files[3] = {"libopenblas.so.0", "libblis.so.4", "libdnnl.so.2"};
    for (int i = 0; i < 3; i++) {
        libs[i].h = dlopen(files[i], RTLD_NOW | RTLD_LOCAL);
        if (!libs[i].h) continue;
        if (i == 0) libs[i].cblas = (cblas_sgemm_fn)dlsym(libs[i].h, "cblas_sgemm");
        if (i == 1) libs[i].bli = (bli_sgemm_fn)dlsym(libs[i].h, "bli_sgemm");
        if (i == 2) libs[i].dnnl = (dnnl_sgemm_fn)dlsym(libs[i].h, "dnnl_sgemm");
        if (i == 0) {
            libs[i].corename = (const char *(*)(void))dlsym(libs[i].h, "openblas_get_corename");
            void (*set)(int) = (void (*)(int))dlsym(libs[i].h, "openblas_set_num_threads");
            if (set) set(threads);
        }
        if (i == 1) {
            void (*set)(int64_t) =
                (void (*)(int64_t))dlsym(libs[i].h, "bli_thread_set_num_threads");
            if (set) set(threads);
        }
    }
    omp_set_num_threads(threads); /* oneDNN's OpenMP team */
    const char *best = "scalar";
    for (int i = 0; attn_arch_available(i); i++)
        best = attn_arch_available(i);
    double pk = peak_gflops(best, threads);
    const char *ct = getenv("OPENBLAS_CORETYPE");
    printf("threads %d; fp32 FMA peak (%s) %.1f GFLOP/s; OpenBLAS kernels: %s "
           "(OPENBLAS_CORETYPE=%s)\n",
           threads, best, pk, libs[0].corename ? libs[0].corename() : "-", ct ? ct : "unset");
    static const int shapes[][2] = {
        {1152, 384}, {384, 384}, {1536, 384}, {384, 1536}, /* all-MiniLM-L6-v2 */
        {2304, 768}, {768, 768}, {3072, 768}, {768, 3072}, /* BERT-base, MHA E=768 */
    };
    static const int Ms[] = {16, 128, 256, 512};
    printf("%5s %5s %5s", "M", "N", "K");
    for (int i = 0; i < 3; i++)
        printf(" %16s", libs[i].name);
    printf("   (GFLOP/s, %% of peak)\n");
    float *x = malloc(512 * 3072 * sizeof *x), *w = malloc(3072 * 3072 * sizeof *w);
    float *y = malloc(512 * 3072 * sizeof *y);
    for (int64_t i = 0; i < 512 * 3072; i++)
        x[i] = (float)((i * 7919) % 1000) * 1e-3f - 0.5f;
    for (int64_t i = 0; i < 3072 * 3072; i++)
        w[i] = (float)((i * 104729) % 1000) * 1e-3f - 0.5f;
    double lsum[3] = {0}; /* sum of log ratios to peak, for a geometric mean */
    int ncase = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (size_t m = 0; m < sizeof Ms / sizeof Ms[0]; m++) {
            int M = Ms[m], N = shapes[s][0], K = shapes[s][1];
            printf("%5d %5d %5d", M, N, K);
            for (int i = 0; i < 3; i++) {
                if (!libs[i].cblas && !libs[i].bli && !libs[i].dnnl) {
                    printf(" %16s", "absent");
                    continue;
                }
                run(&libs[i], M, N, K, x, w, y);
                double bt = 1e30;
                for (int r = 0; r < reps; r++) {
                    double t0 = now_s();
                    run(&libs[i], M, N, K, x, w, y);
                    double dt = now_s() - t0;
                    if (dt < bt) bt = dt;
                }
                double g = 2.0 * M * N * K / bt * 1e-9;
                lsum[i] += __builtin_log(g / pk);
                printf(" %8.1f (%4.0f%%)", g, 100.0 * g / pk);
            }
            printf("\n");
            ncase++;
        }
    printf("%17s", "geomean % peak");
    for (int i = 0; i < 3; i++)
        printf(" %16.0f%%", 100.0 * __builtin_exp(lsum[i] / ncase));
    printf("\n");
    free(x), free(w), free(y);
    return 0;
}

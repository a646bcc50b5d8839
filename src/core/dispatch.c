/* Kernel families: which ones this build has, which ones the CPU runs (by
 * its feature flags, CPUID and XGETBV through the compiler's builtins, never
 * by a model number), and the process default: ATTN_ARCH if set, else the
 * best. Each family's descriptor is filled once, the first time it is
 * asked for. A context holds the family its drivers read
 * (attn_ctx_set_arch changes it). */
#include "core/internal.h"
#include "kernels/arch.h"

#include <stdlib.h>
#include <string.h>

typedef struct family {
    const char *name;
    void (*init)(attn__arch *a);
    int (*cpu_ok)(void);
} family;

static int cpu_any(void) {
    return 1;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
static int cpu_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
static int cpu_avx512(void) {
    __builtin_cpu_init(); /* the builtins check XGETBV: the OS saves zmm state */
    return cpu_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
}
#endif

/* Worst to best: the default is the last one the CPU runs. */
static const family g_families[] = {
    {"scalar", attn__arch_init_scalar, cpu_any},
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    {"avx2", attn__arch_init_avx2, cpu_avx2},
    {"avx512", attn__arch_init_avx512, cpu_avx512},
#endif
};
enum { NFAM = sizeof g_families / sizeof g_families[0] };

static attn__arch g_arch[NFAM];
static int g_ready[NFAM];
static int g_default = -1; /* index + 1 once decided; 0 = ATTN_ARCH invalid */

/* Benign races below: every thread computes the same values. */
static const attn__arch *arch_at(int i) {
    if (!__atomic_load_n(&g_ready[i], __ATOMIC_ACQUIRE)) {
        attn__arch a;
        memset(&a, 0, sizeof a);
        g_families[i].init(&a);
        g_arch[i] = a;
        __atomic_store_n(&g_ready[i], 1, __ATOMIC_RELEASE);
    }
    return &g_arch[i];
}

static int find(const char *name) {
    for (int i = 0; i < NFAM; i++)
        if (strcmp(g_families[i].name, name) == 0) return i;
    return -1;
}

const attn__arch *attn__arch_find(const char *name, attn_status *why) {
    int i = name ? find(name) : -1;
    if (i < 0) {
        *why = ATTN_E_ARG;
        return NULL;
    }
    if (!g_families[i].cpu_ok()) {
        *why = ATTN_E_UNSUPPORTED;
        return NULL;
    }
    return arch_at(i);
}

static int decide_default(void) {
    const char *e = getenv("ATTN_ARCH");
    if (e && *e) {
        int i = find(e);
        return i >= 0 && g_families[i].cpu_ok() ? i + 1 : 0;
    }
    int best = 0;
    for (int i = 0; i < NFAM; i++)
        if (g_families[i].cpu_ok()) best = i;
    return best + 1;
}

const attn__arch *attn__arch_default(void) {
    int d = __atomic_load_n(&g_default, __ATOMIC_ACQUIRE);
    if (d < 0) {
        d = decide_default();
        __atomic_store_n(&g_default, d, __ATOMIC_RELEASE);
    }
    return d ? arch_at(d - 1) : NULL;
}

const attn_nn_kernels *attn__nn_kernels(void) {
    const attn__arch *a = attn__arch_default();
    return a ? &a->nn : &arch_at(0)->nn;
}

attn_status attn__arch_default_status(attn_ctx *ctx) {
    if (attn__arch_default()) return ATTN_OK;
    const char *e = getenv("ATTN_ARCH");
    char names[128] = "";
    for (int i = 0; i < NFAM; i++) {
        strncat(names, i ? ", " : "", sizeof names - strlen(names) - 1);
        strncat(names, g_families[i].name, sizeof names - strlen(names) - 1);
    }
    int i = find(e);
    if (i < 0)
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "ATTN_ARCH=%s: unknown kernel family (this build has %s)", e, names);
    return attn_ctx_fail(ctx, ATTN_E_UNSUPPORTED, "ATTN_ARCH=%s: this CPU cannot run it", e);
}

const char *attn_arch_name(void) {
    const attn__arch *a = attn__arch_default();
    return a ? a->name : NULL;
}

const char *attn_arch_available(int i) {
    for (int k = 0; k < NFAM; k++)
        if (g_families[k].cpu_ok() && i-- == 0) return g_families[k].name;
    return NULL;
}

double attn_arch_peak_probe(const char *name, int64_t iters) {
    attn_status why;
    const attn__arch *a = attn__arch_find(name, &why);
    if (!a || iters < 0) return 0.0;
    float sink = 0.0f;
    double flops = a->peak_fma(iters, &sink);
    /* keep the chains' result alive without a side effect anyone sees */
    volatile float keep = sink;
    (void)keep;
    return flops;
}

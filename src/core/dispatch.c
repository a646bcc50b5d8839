/* CPU detection and kernel selection: decided once per process.
 * ATTN_ARCH=scalar|avx2 overrides (avx2 only where the CPU has it). */
#include "core/internal.h"
#include "kernels/kernels.h"

#include <stdlib.h>
#include <string.h>

static const attn_kernels *g_kernels;

static int cpu_has_avx2_fma(void) {
#if defined(ATTN_HAVE_AVX2_BUILD) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

static const attn_kernels *select_kernels(void) {
    const char *e = getenv("ATTN_ARCH");
    int avx2 = cpu_has_avx2_fma();
    if (e && strcmp(e, "scalar") == 0) return &attn__kernels_scalar;
#ifdef ATTN_HAVE_AVX2_BUILD
    if (avx2) return &attn__kernels_avx2;
#endif
    (void)avx2;
    return &attn__kernels_scalar;
}

const attn_kernels *attn__kernels(void) {
    /* Benign race: every thread computes the same pointer. */
    const attn_kernels *k = __atomic_load_n(&g_kernels, __ATOMIC_ACQUIRE);
    if (!k) {
        k = select_kernels();
        __atomic_store_n(&g_kernels, k, __ATOMIC_RELEASE);
    }
    return k;
}

const char *attn_arch_name(void) { return attn__kernels()->name; }

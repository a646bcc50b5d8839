/* CPU detection and kernel selection: one decision per process, shared by
 * every kernel table (attention forward, backward, nn element-wise ops).
 * ATTN_ARCH=scalar|avx2 overrides (avx2 only where the CPU has it). */
#include "core/internal.h"
#include "kernels/kernels.h"
#include "kernels/kernels_bwd.h"
#include "kernels/nn_kernels.h"

#include <stdlib.h>
#include <string.h>

enum { ISA_UNSET = 0, ISA_SCALAR, ISA_AVX2 };

static int g_isa;

static int cpu_has_avx2_fma(void) {
#if defined(ATTN_HAVE_AVX2_BUILD) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

static int select_isa(void) {
    const char *e = getenv("ATTN_ARCH");
    if (e && strcmp(e, "scalar") == 0) return ISA_SCALAR;
    return cpu_has_avx2_fma() ? ISA_AVX2 : ISA_SCALAR;
}

static int isa(void) {
    /* Benign race: every thread computes the same value. */
    int v = __atomic_load_n(&g_isa, __ATOMIC_ACQUIRE);
    if (v == ISA_UNSET) {
        v = select_isa();
        __atomic_store_n(&g_isa, v, __ATOMIC_RELEASE);
    }
    return v;
}

const attn_kernels *attn__kernels(void) {
#ifdef ATTN_HAVE_AVX2_BUILD
    if (isa() == ISA_AVX2) return &attn__kernels_avx2;
#endif
    return &attn__kernels_scalar;
}

const attn_bwd_kernels *attn__bwd_kernels(void) {
#ifdef ATTN_HAVE_AVX2_BUILD
    if (isa() == ISA_AVX2) return &attn__bwd_kernels_avx2;
#endif
    return &attn__bwd_kernels_scalar;
}

const attn_nn_kernels *attn__nn_kernels(void) {
#ifdef ATTN_HAVE_AVX2_BUILD
    if (isa() == ISA_AVX2) return &attn__nn_kernels_avx2;
#endif
    return &attn__nn_kernels_scalar;
}

const char *attn_arch_name(void) { return attn__kernels()->name; }

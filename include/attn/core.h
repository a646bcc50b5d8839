/* attn/core.h: status codes, the context, tensor views.
 * Users include <attn/attn.h>, which includes this file. */
#ifndef ATTN_CORE_H
#define ATTN_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define ATTN_NODISCARD __attribute__((warn_unused_result))
#else
#define ATTN_NODISCARD
#endif

#define ATTN_VERSION_MAJOR 0
#define ATTN_VERSION_MINOR 1
#define ATTN_VERSION_PATCH 0
#define ATTN_VERSION_STRING "0.1.0"

/* A closed set of result codes. Every public function that can fail returns
 * one; the context that was passed keeps a message for the last failure.
 * The same condition gives the same code in every function: a caller's
 * buffer too small for the result is ATTN_E_ARG (the function reports the
 * size it needs where it can); a negative or overflowing size is
 * ATTN_E_SHAPE; more than ATTN_MAX_DIMS dims is ATTN_E_UNSUPPORTED. */
typedef enum attn_status {
    ATTN_OK = 0,
    ATTN_E_ARG = -1,         /* an argument value is invalid (NaN scale, bad window, ...);
                              * also a caller's buffer too small for the result */
    ATTN_E_SHAPE = -2,       /* tensor ranks or sizes disagree, or a size is negative */
    ATTN_E_LAYOUT = -3,      /* a view's last stride is not 1, or strides are invalid */
    ATTN_E_NOMEM = -4,       /* an allocation failed */
    ATTN_E_IO = -5,          /* a file could not be opened, read or written */
    ATTN_E_FORMAT = -6,      /* a file is corrupt or not of the expected format */
    ATTN_E_NOTFOUND = -7,    /* a named tensor, file or key does not exist */
    ATTN_E_DTYPE = -8,       /* a tensor has an unsupported or unexpected dtype */
    ATTN_E_UNSUPPORTED = -9, /* a valid request this build cannot serve */
    ATTN_E_BUSY = -10,       /* the context is in use by another thread at this moment
                              * (nothing is written to it, not even a message) */
} attn_status;

/* A static, human-readable name for a status ("ATTN_E_SHAPE: shape mismatch"). */
const char *attn_status_str(attn_status s);

/* Element types of tensor views and tensor files. BOOL is one byte, 0 or 1. */
typedef enum attn_dtype {
    ATTN_F32 = 0,
    ATTN_F64,
    ATTN_F16,
    ATTN_BF16,
    ATTN_I32,
    ATTN_I64,
    ATTN_U8,
    ATTN_BOOL,
} attn_dtype;

/* Size in bytes of one element of dtype t (0 for an unknown value). */
size_t attn_dtype_size(attn_dtype t);
/* Safetensors name of t ("F32", "BOOL", ...), or NULL. */
const char *attn_dtype_name(attn_dtype t);

#define ATTN_MAX_DIMS 4

/* A strided view of memory the caller owns. Shapes and strides are counted in
 * elements, outermost first (canonical [B, H, T, D]). The last dimension must
 * be contiguous (stride 1) wherever a function reads or writes it; stride 0
 * broadcasts. A view with data == NULL is "absent" where a tensor is optional. */
typedef struct attn_tensor {
    void *data;
    attn_dtype dtype;
    int ndim;
    int64_t shape[ATTN_MAX_DIMS];
    int64_t stride[ATTN_MAX_DIMS];
} attn_tensor;

/* A contiguous row-major view of `ndim` dims (1..4) over data. A stride
 * whose product overflows int64 saturates to INT64_MAX (such a view cannot
 * address memory, and every op's shape checks refuse it). */
attn_tensor attn_tensor_make(void *data, attn_dtype dtype, int ndim, const int64_t *shape);
/* Shorthand: contiguous float32 [d0, d1, d2, d3]. */
attn_tensor attn_tensor_f32_4d(float *data, int64_t d0, int64_t d1, int64_t d2, int64_t d3);
/* Number of elements (product of the shape): 0 if any dim is 0, -1 if a
 * dim is negative or the product overflows int64. */
int64_t attn_tensor_numel(const attn_tensor *t);
/* The shape as text, "[2, 3, 4]" ("[]" for 0 dims), the form every message
 * uses. Writes at most n bytes to buf, NUL-terminated (buf may be NULL when
 * n is 0); returns the length of the whole text without the NUL, as snprintf
 * does, so a return value >= n means buf holds a truncated text. */
size_t attn_tensor_shape_str(const attn_tensor *t, char *buf, size_t n);

/* The context: owns the thread count, per-thread workspace and the last error
 * message. Contexts are independent; one context must not be used by two
 * threads at once. attn_sdpa_forward, attn_sdpa_backward and attn_sdpa_probs
 * (and so everything that attends through them) detect such use cheaply and
 * return ATTN_E_BUSY to the second thread, writing nothing to the context
 * (its message belongs to the first); other functions do not check. The library keeps no
 * process-wide state of its own beyond the kernel family chosen once per process (attn_arch_name).
 * The projection and feed-forward GEMMs of nn/ and models/ (attn_mha_*, attn_bert_*, attn_recall_*)
 * run oneDNN on the calling thread's OpenMP team, sized to the context's thread count for the call:
 * the calling thread's omp_get_max_threads() is set and then restored, so a program's own OpenMP
 * setting is unchanged after every call. */
typedef struct attn_ctx attn_ctx;

/* The largest thread count a context takes: 16 x the cores (at least 16,
 * at most 4096). More is refused rather than left to OpenMP's runtime,
 * which ends the process when it cannot create a team. */
int attn_ctx_max_threads(void);
/* Create a context running `nthreads` threads; 0 means ATTN_NUM_THREADS from
 * the environment (clamped to attn_ctx_max_threads), else every core; it uses the default kernel
 * family (attn_arch_name). Returns ATTN_OK, ATTN_E_ARG (out NULL, nthreads < 0 or above
 * attn_ctx_max_threads; *out = NULL), ATTN_E_NOMEM (*out = NULL), or, when ATTN_ARCH names a family
 * this build lacks (ATTN_E_ARG) or the CPU cannot run (ATTN_E_UNSUPPORTED), that status with *out
 * set to a context that only attn_ctx_last_error (the message) and attn_ctx_free accept, as
 * sqlite3_open does. */
ATTN_NODISCARD attn_status attn_ctx_create(attn_ctx **out, int nthreads);
/* Free a context and its workspace. attn_ctx_free(NULL) is a no-op. */
void attn_ctx_free(attn_ctx *ctx);
/* Threads the context runs (>= 1; 1 for a NULL ctx). */
int attn_ctx_threads(const attn_ctx *ctx);
/* Change the thread count (0 = default as in attn_ctx_create). Returns
 * ATTN_OK, or ATTN_E_ARG (ctx NULL, or nthreads < 0 or above
 * attn_ctx_max_threads: the count is kept). */
ATTN_NODISCARD attn_status attn_ctx_set_threads(attn_ctx *ctx, int nthreads);
/* The message of the last failure on this context ("" if none, or if ctx is
 * NULL). The pointer stays valid until the next call that uses ctx. */
const char *attn_ctx_last_error(const attn_ctx *ctx);
/* Record a failure message on ctx and return s (for layered callers, e.g. the
 * CLI or the nn/ and models/ layers). printf-style; a NULL ctx just returns
 * s. Not ATTN_NODISCARD: it is the status being returned, not a result. */
attn_status attn_ctx_fail(attn_ctx *ctx, attn_status s, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Kernel families ("scalar", "avx2"): the same results within the tolerance
 * rule, different speed. The process default is the best family the CPU
 * runs (chosen by its feature flags, once), or the one the environment
 * variable ATTN_ARCH names; an ATTN_ARCH this build does not have, or that
 * the CPU cannot run, makes attn_ctx_create fail (ATTN_E_ARG or
 * ATTN_E_UNSUPPORTED) rather than be ignored.
 *
 * The process default's name; NULL when ATTN_ARCH is invalid. */
const char *attn_arch_name(void);
/* The i-th family this build has and this CPU runs (0 is "scalar", the
 * portable reference; the last is the default unless ATTN_ARCH says
 * otherwise); NULL past the last. */
const char *attn_arch_available(int i);
/* The family ctx uses ("scalar", "avx2", ...); NULL for a NULL ctx. */
const char *attn_ctx_arch(const attn_ctx *ctx);
/* Make ctx use family `name` (NULL or "" = the process default). Returns
 * ATTN_OK, ATTN_E_ARG (ctx NULL, or a name this build does not have) or
 * ATTN_E_UNSUPPORTED (the CPU cannot run it); the family is kept on error. */
ATTN_NODISCARD attn_status attn_ctx_set_arch(attn_ctx *ctx, const char *name);
/* The GEMM library and the kernels it picked for this CPU, for reports
 * ("oneDNN 2.6.3 (avx512)"): the projections and feed-forward layers of
 * nn/ and models/ run on it. A static string. */
const char *attn_gemm_name(void);
/* FMA peak probe of family `name` (for benchmarks): `iters` rounds of
 * independent multiply-add chains held in registers with the family's
 * widest instructions (fused where it has FMA). Returns the floating-point
 * operations done, 2 per lane per multiply-add, for the caller to divide by
 * its own timing; 0 for a family it cannot run. Thread-safe. */
double attn_arch_peak_probe(const char *name, int64_t iters);

#ifdef __cplusplus
}
#endif
#endif /* ATTN_CORE_H */

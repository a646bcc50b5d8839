/* The context: thread count, per-thread workspace, last error message. */
/* madvise and MADV_HUGEPAGE: glibc declares them only beyond the
 * _POSIX_C_SOURCE the build sets (without this the advice is compiled out). */
#define _DEFAULT_SOURCE 1

#include "core/internal.h"

#include "kernels/arch.h"
#include <stdatomic.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

const char *attn_status_str(attn_status s) {
    switch (s) {
    case ATTN_OK:
        return "ATTN_OK: success";
    case ATTN_E_ARG:
        return "ATTN_E_ARG: invalid argument";
    case ATTN_E_SHAPE:
        return "ATTN_E_SHAPE: shape mismatch";
    case ATTN_E_LAYOUT:
        return "ATTN_E_LAYOUT: unsupported memory layout";
    case ATTN_E_NOMEM:
        return "ATTN_E_NOMEM: out of memory";
    case ATTN_E_IO:
        return "ATTN_E_IO: input/output error";
    case ATTN_E_FORMAT:
        return "ATTN_E_FORMAT: corrupt or invalid file";
    case ATTN_E_NOTFOUND:
        return "ATTN_E_NOTFOUND: not found";
    case ATTN_E_DTYPE:
        return "ATTN_E_DTYPE: unsupported dtype";
    case ATTN_E_UNSUPPORTED:
        return "ATTN_E_UNSUPPORTED: not supported";
    case ATTN_E_BUSY:
        return "ATTN_E_BUSY: the context is in use by another thread";
    }
    return "unknown attn_status";
}

int attn__ncores(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* More threads than this are refused: OpenMP's runtime ends the process
 * when it cannot create a team (libgomp: "Thread creation failed"), and far
 * more threads than cores only adds scheduling. */
int attn_ctx_max_threads(void) {
    int n = 16 * attn__ncores();
    return n < 16 ? 16 : n > 4096 ? 4096 : n;
}

static int default_threads(void) {
    const char *e = getenv("ATTN_NUM_THREADS");
    if (e && *e) {
        char *end;
        long n = strtol(e, &end, 10);
        if (*end == '\0' && n > 0 && n <= 4096)
            return n > attn_ctx_max_threads() ? attn_ctx_max_threads() : (int)n;
    }
    return attn__ncores();
}

attn_status attn_ctx_create(attn_ctx **out, int nthreads) {
    if (!out) return ATTN_E_ARG;
    *out = NULL;
    if (nthreads < 0 || nthreads > attn_ctx_max_threads()) return ATTN_E_ARG;
    attn_ctx *c = calloc(1, sizeof *c);
    if (!c) return ATTN_E_NOMEM;
    c->nthreads = nthreads ? nthreads : default_threads();
    c->arch = attn__arch_default();
    *out = c;
    /* a bad ATTN_ARCH: *out stays set so the caller can read the message
     * (attn_ctx_last_error) before attn_ctx_free, as with sqlite3_open */
    return c->arch ? ATTN_OK : attn__arch_default_status(c);
}

attn_status attn_ctx_set_arch(attn_ctx *ctx, const char *name) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    if (!name || !*name) {
        if (!attn__arch_default()) return attn__arch_default_status(ctx);
        ctx->arch = attn__arch_default();
        return ATTN_OK;
    }
    attn_status why;
    const attn__arch *a = attn__arch_find(name, &why);
    if (!a) {
        if (why == ATTN_E_UNSUPPORTED)
            return attn_ctx_fail(ctx, why, "kernel family \"%s\": this CPU cannot run it", name);
        return attn_ctx_fail(ctx, why, "unknown kernel family \"%s\"", name);
    }
    ctx->arch = a;
    return ATTN_OK;
}

const char *attn_ctx_arch(const attn_ctx *ctx) {
    return ctx && ctx->arch ? ctx->arch->name : NULL;
}

void attn_ctx_free(attn_ctx *ctx) {
    if (!ctx) return;
    for (int i = 0; i < ctx->ws_count; i++)
        attn__free(ctx->ws[i]);
    free(ctx->ws);
    free(ctx->ws_size);
    free(ctx);
}

int attn_ctx_threads(const attn_ctx *ctx) {
    return ctx ? ctx->nthreads : 1;
}

attn_status attn_ctx_set_threads(attn_ctx *ctx, int nthreads) {
    if (!ctx) return ATTN_E_ARG;
    if (nthreads < 0)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "thread count %d is negative", nthreads);
    if (nthreads > attn_ctx_max_threads())
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "thread count %d is above the maximum %d (16x the cores)", nthreads,
                             attn_ctx_max_threads());
    ctx->nthreads = nthreads ? nthreads : default_threads();
    return ATTN_OK;
}

const char *attn_ctx_last_error(const attn_ctx *ctx) {
    return ctx ? ctx->errmsg : "";
}

void attn__ctx_clear(attn_ctx *ctx) {
    if (ctx) ctx->errmsg[0] = '\0';
}

attn_status attn_ctx_fail(attn_ctx *ctx, attn_status s, const char *fmt, ...) {
    if (ctx) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ctx->errmsg, sizeof ctx->errmsg, fmt, ap);
        va_end(ap);
    }
    return s;
}

void *attn__malloc(size_t bytes) {
    if (bytes == 0) bytes = 64;
    void *p = NULL;
    if (posix_memalign(&p, 64, (bytes + 63) & ~(size_t)63)) return NULL;
    return p;
}

void *attn__malloc_huge(size_t bytes) {
    const size_t huge = (size_t)2 << 20;
    if (bytes < huge) return attn__malloc(bytes);
    const size_t n = (bytes + huge - 1) / huge * huge;
    void *p = aligned_alloc(huge, n);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (p) (void)madvise(p, n, MADV_HUGEPAGE); /* advice only: ignored if unsupported */
#endif
    return p;
}

void attn__free(void *p) {
    free(p);
}

attn_status attn__ws_reserve(attn_ctx *ctx, int n, size_t bytes) {
    if (n > ctx->ws_count) {
        void **ws = realloc(ctx->ws, (size_t)n * sizeof *ws);
        if (!ws) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory for workspace");
        ctx->ws = ws;
        size_t *sz = realloc(ctx->ws_size, (size_t)n * sizeof *sz);
        if (!sz) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory for workspace");
        ctx->ws_size = sz;
        for (int i = ctx->ws_count; i < n; i++) {
            ctx->ws[i] = NULL;
            ctx->ws_size[i] = 0;
        }
        ctx->ws_count = n;
    }
    for (int i = 0; i < n; i++) {
        if (ctx->ws_size[i] >= bytes) continue;
        attn__free(ctx->ws[i]);
        ctx->ws[i] = attn__malloc(bytes);
        ctx->ws_size[i] = ctx->ws[i] ? bytes : 0;
        if (!ctx->ws[i])
            return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory for %zu bytes of workspace",
                                 bytes);
    }
    return ATTN_OK;
}

/* A thread's identity: the address of a thread-local object. */
static _Thread_local char thread_tag;

attn_status attn__ctx_enter(attn_ctx *ctx) {
    uintptr_t me = (uintptr_t)&thread_tag, cur = 0;
    if (atomic_compare_exchange_strong_explicit(&ctx->owner, &cur, me, memory_order_acquire,
                                                memory_order_relaxed)) {
        ctx->depth = 1;
        return ATTN_OK;
    }
    if (cur == me) { /* a public function calling another with the same ctx */
        ctx->depth++;
        return ATTN_OK;
    }
    return ATTN_E_BUSY;
}

void attn__ctx_leave(attn_ctx *ctx) {
    if (--ctx->depth == 0) atomic_store_explicit(&ctx->owner, 0, memory_order_release);
}

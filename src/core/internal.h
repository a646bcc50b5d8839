/* Internal declarations shared by every layer (never installed). */
#ifndef ATTN_INTERNAL_H
#define ATTN_INTERNAL_H

#include <assert.h>
#include <attn/attn.h>
#include <stdint.h>

#define ATTN_MIN(a, b) ((a) < (b) ? (a) : (b))
#define ATTN_MAX(a, b) ((a) > (b) ? (a) : (b))

#define ATTN_ERRMSG_LEN 512

struct attn__arch;

struct attn_ctx {
    int nthreads;
    const struct attn__arch *arch; /* the kernel family the drivers use */
    char errmsg[ATTN_ERRMSG_LEN];
    /* per-thread scratch, grown on demand outside parallel regions */
    void **ws;
    size_t *ws_size;
    int ws_count;
    /* the thread inside an sdpa entry point (0: none) and its nesting depth */
    _Atomic uintptr_t owner;
    int depth;
};

/* ATTN_OK if the process default kernel family (ATTN_ARCH) is valid, else
 * the error, with a message on ctx naming the bad value (core/dispatch.c). */
attn_status attn__arch_default_status(attn_ctx *ctx);

/* Concurrent use of one context (forbidden by core.h) detected cheaply at
 * the entry points that use its workspace (attn_sdpa_forward, _backward,
 * _probs): enter returns ATTN_E_BUSY, writing nothing to ctx, while another
 * thread is inside; the same thread may nest (attn_mha_forward ->
 * attn_sdpa_forward). Every ATTN_OK enter is paired with a leave. */
attn_status attn__ctx_enter(attn_ctx *ctx);
void attn__ctx_leave(attn_ctx *ctx);

/* Clear the error message at the start of a public call. */
void attn__ctx_clear(attn_ctx *ctx);

/* Make sure each of the first n threads has `bytes` of 64-byte aligned
 * scratch; call before a parallel region. Returns ATTN_E_NOMEM on failure. */
attn_status attn__ws_reserve(attn_ctx *ctx, int n, size_t bytes);
/* Thread ith's scratch (valid after attn__ws_reserve). */
static inline void *attn__ws_get(attn_ctx *ctx, int ith) {
    return ctx->ws[ith];
}

/* 64-byte aligned allocation; attn__free(NULL) is a no-op. */
void *attn__malloc(size_t bytes);
/* For big buffers that are streamed (a KV-cache pool, a decoder's weights):
 * from 2 MiB up, 2 MiB aligned and advised to use huge pages where the
 * kernel offers them (fewer TLB misses; measured 2-17% on a decode step);
 * smaller ones are attn__malloc's. Freed by attn__free. */
void *attn__malloc_huge(size_t bytes);
void attn__free(void *p);

/* Number of cores visible to this process. */
int attn__ncores(void);

/* Round up to a multiple of 16 floats (64 bytes). */
static inline size_t attn__round16(size_t n) {
    return (n + 15) & ~(size_t)15;
}

/* Dropout: keep(b,h,i,j) as a pure function of (seed, b, h, i, j). A
 * counter-based generator: the coordinates are folded into one 64-bit
 * counter and mixed with a bijective finaliser (splitmix64), so every element
 * gets an independent-looking 32-bit draw whatever the thread schedule. */
static inline uint32_t attn__rng_u32(uint64_t seed, uint64_t b, uint64_t h, uint64_t i,
                                     uint64_t j) {
    uint64_t x = seed ^ 0x9e3779b97f4a7c15ull;
    x += b * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 31)) * 0x94d049bb133111ebull;
    x += h * 0x9e3779b97f4a7c15ull + i * 0xd6e8feb86659fd93ull;
    x = (x ^ (x >> 29)) * 0xbf58476d1ce4e5b9ull;
    x += j * 0x94d049bb133111ebull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    x ^= x >> 31;
    return (uint32_t)(x >> 32);
}
/* Threshold for a drop probability p in [0,1): keep when u32 >= threshold. */
static inline uint32_t attn__dropout_threshold(float p) {
    double t = (double)p * 4294967296.0;
    return t >= 4294967295.0 ? 0xffffffffu : (uint32_t)t;
}

#endif /* ATTN_INTERNAL_H */

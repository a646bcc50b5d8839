/* Internal pieces of libattn_mpi shared by the forward and the backward.
 * libattn_mpi uses libattn's public API only (include/attn/). */
#ifndef ATTN_MPI_RING_H
#define ATTN_MPI_RING_H

#include <attn/mpi.h>

#include <stdint.h>

/* One call's ring: a private duplicate of the caller's communicator (errors
 * return instead of aborting), its size and this rank's place. */
typedef struct ring {
    attn_ctx *ctx;
    MPI_Comm comm;
    int P, rank, left, right;
    attn_ring_layout layout;
    int64_t T, S;         /* whole sequence */
    int64_t qs[2], ql[2]; /* this rank's query chunks (global start, length) */
    int64_t B, H, Hkv, D, Dv;
    int64_t kmax;       /* largest key row count of any rank */
    MPI_Request req[4]; /* RING_KV_SEND, RING_KV_RECV, RING_DKV_SEND, RING_DKV_RECV */
    attn_ring_stats st;
    double t0;
} ring;

/* A chunk pair's problem: the rows of a query block that see any key of a
 * key chunk, the keys any of them sees, and the options that express the
 * visible band in local coordinates (top-left alignment, window). */
typedef struct ring_pair {
    int64_t i0, j0; /* first row / key used, relative to the block / chunk */
    int64_t tq, sk; /* rows / keys used */
    int window;     /* 0: no structural mask inside the pair */
    int64_t wl, wr; /* window sides (-1 = unbounded) */
} ring_pair;

/* Set up r (collective): check MPI, the layout, shapes and that every rank
 * agrees; on failure every rank returns the same status, with the first
 * failing rank's message. extra_check (may be NULL) adds local checks. */
attn_status attn__ring_begin(ring *r, attn_ctx *ctx, MPI_Comm comm, attn_ring_layout layout,
                             const attn_sdpa_args *a, const attn_sdpa_grads *g);
void attn__ring_end(ring *r);

/* Make every rank return the same status: the lowest failing rank's status
 * and message become every rank's. */
attn_status attn__ring_agree(ring *r, attn_status st);

/* The band of query rows [qa, qa + tq) against keys [ka, ka + sk) (global
 * positions) under a's causal / window / alignment. Returns 0 when no row
 * sees any key, else 1 with *p filled. */
int attn__ring_pair(const ring *r, const attn_sdpa_args *a, int64_t qa, int64_t tq, int64_t ka,
                    int64_t sk, ring_pair *p);

/* The options of one chunk pair: a's scale and softcap, top-left alignment,
 * p's window; kv_len (into kvl, [B]) shifted to the keys' first position. */
attn_sdpa_args attn__ring_pair_args(const ring *r, const attn_sdpa_args *a, const ring_pair *p,
                                    int64_t kpos, int32_t *kvl);

/* Views: rows [r0, r0 + n) of dim 2; columns [c0, c0 + n) of dim 3. */
attn_tensor attn__ring_rows(attn_tensor t, int64_t r0, int64_t n);
attn_tensor attn__ring_cols(attn_tensor t, int64_t c0, int64_t n);
/* Mask rows: a row dim of 1 broadcasts and is not moved. */
attn_tensor attn__ring_mask(attn_tensor m, int64_t r0, int64_t n, int64_t c0, int64_t nc);

/* Key chunks of rank src, and its row count. */
void attn__ring_kchunks(const ring *r, int src, int64_t ks[2], int64_t kl[2]);
int64_t attn__ring_krows(const ring *r, int src);

/* K/V of Sr rows packed [B][Hkv][Sr][D] then [B][Hkv][Sr][Dv]; the views. */
attn_tensor attn__ring_kview(const ring *r, float *buf, int64_t Sr, int64_t w, int second);

/* Non-blocking transfer of n floats to the right / from the left in
 * request slot `slot` (also the message tag); ring_wait completes one slot
 * (the time blocked is counted as wait). */
enum { RING_KV_SEND = 0, RING_KV_RECV, RING_DKV_SEND, RING_DKV_RECV };
attn_status attn__ring_isend(ring *r, int slot, const float *buf, int64_t n);
attn_status attn__ring_irecv(ring *r, int slot, float *buf, int64_t n);
attn_status attn__ring_wait(ring *r, int slot);
/* Let MPI progress the transfers in flight (between compute blocks): Open
 * MPI moves large messages only inside MPI calls. */
void attn__ring_poke(ring *r);

/* attn_ring_rows for arguments already checked (an error gives no rows) */
static inline void ring_rows_of(attn_ring_layout l, int P, int rank, int64_t n, int64_t st[2],
                                int64_t len[2]) {
    if (attn_ring_rows(l, P, rank, n, st, len)) st[0] = st[1] = len[0] = len[1] = 0;
}

double attn__ring_now(void);
double attn__ring_cpu(void); /* process CPU time, s */
/* Query rows per compute block (a function of the sizes only, so the
 * backward's summation order is fixed for a fixed P). */
int64_t attn__ring_block(const ring *r);

/* One (query block, key chunk) pair being visited: its arguments b with
 * q, k, v and the mask sliced (out and lse left to the visitor), the
 * pair's first query row in the rank's buffers (q0), its first key row in
 * the chunk buffer (kloc) and that key's position in the sequence (kpos). */
typedef struct ring_visit {
    const attn_sdpa_args *a;
    const ring_pair *p;
    attn_sdpa_args *b;
    int64_t q0, kloc, kpos;
} ring_visit;
typedef attn_status (*ring_pair_fn)(ring *r, const ring_visit *v, void *u);

/* Call fn for every pair of the rank's query blocks (attn__ring_block rows)
 * with the key chunks of rank src (kv: the chunk's packed [K | V]), letting
 * MPI progress after each; stops at the first error. The forward and the
 * backward both walk the pairs through it. */
attn_status attn__ring_each_pair(ring *r, const attn_sdpa_args *a, int src, float *kv, int32_t *kvl,
                                 ring_pair_fn fn, void *u);

#endif /* ATTN_MPI_RING_H */

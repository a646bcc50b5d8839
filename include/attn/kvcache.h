/* attn/kvcache.h: a paged key/value cache for decoding, and attention
 * through it. Users include <attn/attn.h>, which includes this file.
 *
 * The cache holds the keys and values of many sequences in one pool of
 * fixed-size blocks (as vLLM's PagedAttention does): a sequence owns a list
 * of blocks (its block table), grows by taking free blocks (nothing is ever
 * copied or moved) and gives them back when freed, so sequences of any
 * lengths share the pool. A block holds block_size positions of every
 * key/value head (the pools are K [Hkv][num_blocks][block_size][D] and V
 * [Hkv][num_blocks][block_size][Dv], head-major) in the cache's storage type (F32, F16 or BF16; F16/BF16 halve the memory and the
 * bytes read per decoded token). Rows are converted from float32 when
 * written (round to nearest even) and back to float32 where attention reads
 * them: in registers in the decode kernel (AVX-512 and AVX2: vcvtph2ps for
 * F16, a 16-bit shift for BF16; the scalar kernel converts in C), and for
 * prefill as each key block is gathered into the
 * thread's scratch.
 *
 * Precision: attention through an F16/BF16 cache is attention on the
 * rounded keys and values (checked against the float64 oracle on them with
 * the tolerance rule of the fp32 path). Against the unrounded fp32 oracle,
 * with u the unit roundoff of the storage (2^-11 for F16, 2^-8 for BF16), for
 * each output row
 *   |out - out_fp32| <= u * max_j |v_j| + 2 * delta * max_j |v_j|  (+ fp32 error)
 *   delta = u * scale * max_j sum_d |q_d k_jd|    (the largest score change)
 * (a score moved by at most delta moves each probability by a factor within
 * exp(+-2 delta)); lse moves by at most delta. tests/test_kvcache.c checks it. */
#ifndef ATTN_KVCACHE_H
#define ATTN_KVCACHE_H

#include "core.h"
#include "sdpa.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct attn_kvcache attn_kvcache;

typedef struct attn_kvcache_config {
    int64_t Hkv;        /* key/value heads, >= 1 */
    int64_t D, Dv;      /* key and value head dims, in [1, 2^16]; Dv 0 means D */
    int64_t block_size; /* positions per block, in [1, 2^16] (16 or 32 typical) */
    int64_t num_blocks; /* blocks in the pool, >= 1 (all memory is allocated at creation) */
    attn_dtype dtype;   /* storage: ATTN_F32, ATTN_F16 or ATTN_BF16 */
    int64_t max_seqs;   /* live sequences at most, >= 1 */
} attn_kvcache_config;

/* Create a cache (the pool is allocated now). Returns ATTN_OK, ATTN_E_ARG
 * (a field out of range, named), ATTN_E_DTYPE, ATTN_E_NOMEM. *out is NULL on
 * failure. */
ATTN_NODISCARD attn_status attn_kvcache_create(attn_ctx *ctx, const attn_kvcache_config *cfg,
                                               attn_kvcache **out);
/* Free a cache; NULL is a no-op. */
void attn_kvcache_free(attn_kvcache *c);

/* Start an empty sequence; *seq gets its id (in [0, max_seqs), ids of
 * freed sequences are reused). ATTN_E_NOMEM when max_seqs are live. */
ATTN_NODISCARD attn_status attn_kvcache_seq_new(attn_ctx *ctx, attn_kvcache *c, int32_t *seq);
/* End a sequence: its blocks return to the pool. ATTN_E_ARG if seq is not live. */
ATTN_NODISCARD attn_status attn_kvcache_seq_free(attn_ctx *ctx, attn_kvcache *c, int32_t seq);
/* Positions a live sequence holds (-1 if seq is not a live sequence). */
int64_t attn_kvcache_seq_len(const attn_kvcache *c, int32_t seq);
/* Blocks not owned by any sequence. */
int64_t attn_kvcache_free_blocks(const attn_kvcache *c);

/* Append n positions to sequence seq: k F32 [Hkv, n, D], v F32 [Hkv, n, Dv]
 * (last stride 1, any other strides), converted to the storage type. With
 * rope (may be NULL; rope->rot_dim 0 is off) the keys are stored rotated, at
 * positions len + rope->k_pos + t for t < n (len: the sequence's length
 * before; k_pos_b, q_pos and k_rotated are not used), as attn_kvcache_attend
 * expects. All or nothing: ATTN_E_NOMEM ("cache full") when the pool lacks
 * the blocks, and then nothing is written. Returns ATTN_OK, ATTN_E_ARG,
 * ATTN_E_SHAPE, ATTN_E_DTYPE, ATTN_E_LAYOUT, ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_kvcache_append(attn_ctx *ctx, attn_kvcache *c, int32_t seq,
                                               attn_tensor k, attn_tensor v,
                                               const attn_rope *rope);

/* Attention of new queries against the cache. */
typedef struct attn_kvcache_attend_args {
    attn_tensor q;       /* F32 [B, H, T, D]: the T newest positions of each sequence
                          * (already appended), H % Hkv == 0 */
    attn_tensor out;     /* F32 [B, H, T, Dv] written */
    attn_tensor lse;     /* optional F32 [B, H, T] written */
    const int32_t *seqs; /* [B] live sequence ids, each with length >= T */
    float scale;         /* 0 means 1/sqrt(D) */
    int causal;          /* nonzero: query t of sequence b (length L_b) sees keys
                          * j <= L_b - T + t (bottom-right); else all L_b keys */
    attn_rope rope;      /* optional: rotates q only, query t at position
                          * L_b - T + t + rope.q_pos; the keys must have been
                          * stored rotated (attn_kvcache_append with the same
                          * rope), so rope.k_rotated must be set */
} attn_kvcache_attend_args;

/* out = softmax(scale q K^T) V over each sequence's cached keys. Short
 * queries (T * H/Hkv <= 16: decoding, a few tokens per sequence) run the
 * decode kernel: the keys of each (sequence, kv head) are split into
 * chunks run in parallel, all H/Hkv query heads of the group read each K/V
 * row once, and the partial (out, lse) are merged exactly as
 * attn_sdpa_merge does; longer ones (prefill) run the tiled forward with K
 * and V gathered block by block through the block table. Results do not
 * depend on the thread count. Returns ATTN_OK, ATTN_E_ARG (seqs NULL, a
 * sequence not live or shorter than T, rope without k_rotated, ...),
 * ATTN_E_SHAPE, ATTN_E_DTYPE, ATTN_E_LAYOUT, ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_kvcache_attend(attn_ctx *ctx, const attn_kvcache *c,
                                               const attn_kvcache_attend_args *a);

/* Copy sequence seq's positions [0, n) out as float32: k [Hkv, n, D],
 * v [Hkv, n, Dv] (either may be absent: data NULL), n <= its length (for
 * tests and inspection). Returns ATTN_OK, ATTN_E_ARG, ATTN_E_SHAPE,
 * ATTN_E_DTYPE, ATTN_E_LAYOUT. */
ATTN_NODISCARD attn_status attn_kvcache_read(attn_ctx *ctx, const attn_kvcache *c, int32_t seq,
                                             attn_tensor k, attn_tensor v);

#ifdef __cplusplus
}
#endif
#endif /* ATTN_KVCACHE_H */

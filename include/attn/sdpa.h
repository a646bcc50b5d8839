/* attn/sdpa.h: scaled dot-product attention, forward and backward.
 * Users include <attn/attn.h>, which includes this file. */
#ifndef ATTN_SDPA_H
#define ATTN_SDPA_H

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How query i lines up with key positions when T != S:
 * top-left      p(i) = i           (PyTorch is_causal)
 * bottom-right  p(i) = i + S - T   (FlashAttention, KV caches) */
typedef enum attn_align {
    ATTN_ALIGN_TOP_LEFT = 0,
    ATTN_ALIGN_BOTTOM_RIGHT = 1,
} attn_align;

/* A block-sparse layout: which (query block, key block) pairs are computed.
 * Query i and key j can see each other only if
 *   blocks[(hl*nqb + i/bq)*nkb + j/bk] != 0,  hl = per_head ? h : 0
 * (besides every other rule of attn_sdpa_args). Pairs outside the layout
 * cost nothing: their keys are never read; a block fully inside the layout
 * and the other rules evaluates no mask. nqb = ceil(T / bq),
 * nkb = ceil(S / bk). attn_sdpa_layout_build fills common patterns. */
typedef struct attn_sdpa_layout {
    const uint8_t *blocks; /* [per_head ? H : 1][nqb][nkb], nonzero = computed */
    int64_t bq, bk;        /* block size in query rows and in keys, >= 1 */
    int64_t nqb, nkb;      /* blocks along T and S (must be ceil(T/bq), ceil(S/bk)) */
    int per_head;          /* nonzero: one layout per query head, else one for all */
} attn_sdpa_layout;

/* Common block-sparse patterns for attn_sdpa_layout_build, combined as a
 * union, at block granularity. The diagonal key block of query block qb is
 * d(qb) = (qb * bq) / bk, the key block holding the position of its first
 * row (top-left alignment). Zero-initialised: nothing (an empty layout). */
typedef struct attn_sdpa_layout_spec {
    int use_window;   /* nonzero: a local band (Longformer's sliding window):
                       * key blocks kb with |kb - d(qb)| <= window */
    int64_t window;   /* the band's half-width in blocks, >= 0 */
    int64_t dilation; /* >= 2: the band keeps every dilation-th block from the
                       * diagonal (a dilated window); 0 or 1: contiguous */
    int64_t global;   /* the first `global` key blocks are seen by every query
                       * block, and the first `global` query blocks see every key
                       * block (global tokens, Longformer / BigBird, whole
                       * blocks: for single tokens use attn_sdpa_args'
                       * global_tokens, which composes with any layout) */
    int64_t random;   /* each query block also sees this many other key blocks
                       * drawn uniformly without replacement (BigBird), by seed */
    uint64_t seed;
    int64_t stride; /* > 0: also key blocks kb <= d(qb) with
                     * (d(qb) - kb) % stride == stride - 1 (the "summary"
                     * columns of the Sparse Transformer's fixed pattern) */
    int causal;     /* nonzero: drop every key block after d(qb) */
} attn_sdpa_layout_spec;

/* Fill blocks [ceil(T/bq)][ceil(S/bk)] (one head's layout; copy it per head
 * for attn_sdpa_layout.per_head) with the union of the spec's patterns: 1 =
 * computed. Deterministic for a given spec (the random blocks come from
 * spec->seed). Returns ATTN_OK, ATTN_E_ARG (a NULL pointer, bq or bk < 1,
 * T or S < 0, a negative window, dilation, global, random or stride). */
ATTN_NODISCARD attn_status attn_sdpa_layout_build(attn_ctx *ctx, const attn_sdpa_layout_spec *spec,
                                                  int64_t T, int64_t S, int64_t bq, int64_t bk,
                                                  uint8_t *blocks);

/* Rotary position embedding (RoPE, Su et al.), an option of attention:
 * q and k are rotated inside the kernels as their tiles are packed (no
 * rotated copy of Q or K is made), in the forward, the backward (dq and dk
 * are rotated back by the transposed rotation) and attn_sdpa_probs; the
 * oracle applies it on its own. Pair i (i < rot_dim/2) of a head's first
 * rot_dim dims, (x_a, x_b), is rotated by the angle pos * inv_freq[i]:
 *   x_a' = x_a cos - x_b sin,   x_b' = x_b cos + x_a sin
 * with (a, b) = (i, i + rot_dim/2) for ATTN_ROPE_HALF (rotate_half: Hugging
 * Face Llama, GPT-NeoX) or (2i, 2i + 1) for ATTN_ROPE_INTERLEAVED (GPT-J);
 * dims from rot_dim on are left alone (partial rotary). Angles are computed
 * in float64, the rotation rounds once to float.
 * Positions: query row i of batch b sits at q_pos + q_pos_b[b] + i, key j at
 * k_pos + k_pos_b[b] + j (each array optional). A KV cache whose keys were
 * rotated when written (attn_rope_apply) sets k_rotated: only q is rotated,
 * at its own positions (q_pos = the cache length before the new tokens).
 * Zero-initialised: off. */
typedef enum attn_rope_style {
    ATTN_ROPE_HALF = 0,        /* pairs (i, i + rot_dim/2): rotate_half */
    ATTN_ROPE_INTERLEAVED = 1, /* pairs (2i, 2i + 1) */
} attn_rope_style;

typedef struct attn_rope {
    int64_t rot_dim;       /* 0: off; else even, in [2, D] */
    double theta;          /* base: inv_freq[i] = theta^(-2i/rot_dim); finite and > 0
                            * unless inv_freq is given (then unused) */
    attn_rope_style style;
    const float *inv_freq; /* optional [rot_dim/2] finite frequencies, replacing theta's
                            * (scaled ones: attn_rope_inv_freq) */
    int64_t q_pos, k_pos;  /* positions of query row 0 and key 0, |pos| < 2^40 */
    const int32_t *q_pos_b, *k_pos_b; /* optional [B]: added per batch */
    int k_rotated;         /* nonzero: k is stored rotated already; rotate q only */
} attn_rope;

/* Frequency scaling of RoPE, as Hugging Face's config.rope_scaling. */
typedef enum attn_rope_scaling_type {
    ATTN_ROPE_SCALING_NONE = 0,
    ATTN_ROPE_SCALING_LINEAR = 1, /* inv_freq / factor (positions interpolated) */
    ATTN_ROPE_SCALING_LLAMA3 = 2, /* Llama 3.1: low frequencies / factor, high kept,
                                   * a smooth blend between */
} attn_rope_scaling_type;

typedef struct attn_rope_scaling {
    attn_rope_scaling_type type;
    double factor;                          /* > 0 (LINEAR, LLAMA3) */
    double low_freq_factor;                 /* LLAMA3: > 0 */
    double high_freq_factor;                /* LLAMA3: > low_freq_factor */
    double original_max_position_embeddings; /* LLAMA3: > 0 */
} attn_rope_scaling;

/* inv_freq[i] = theta^(-2i/rot_dim) for i < rot_dim/2, then scaled by sc
 * (NULL or NONE: unscaled), computed in float64 and rounded to float: the
 * table for attn_rope.inv_freq. Returns ATTN_OK, ATTN_E_ARG (rot_dim odd or
 * < 2, theta not finite and > 0, a bad scaling field, NULL inv_freq). */
ATTN_NODISCARD attn_status attn_rope_inv_freq(attn_ctx *ctx, int64_t rot_dim, double theta,
                                              const attn_rope_scaling *sc, float *inv_freq);

/* Rotate x in place: x is F32 [B, H, T, D] (last stride 1), row t of batch b
 * at position r->k_pos + r->k_pos_b[b] + t (the key convention of attn_rope;
 * r->k_rotated and q_pos are ignored). For writing rotated keys into a KV
 * cache. Returns ATTN_OK, ATTN_E_ARG (r NULL, rot_dim off or bad, as
 * attn_sdpa_forward validates it), ATTN_E_DTYPE, ATTN_E_SHAPE,
 * ATTN_E_LAYOUT. */
ATTN_NODISCARD attn_status attn_rope_apply(attn_ctx *ctx, const attn_rope *r, attn_tensor x);

/* Everything one attention call needs. Valid when zero-initialised, apart
 * from the required q, k, v and out views.
 *
 * Score of query i against key j, in this order:
 *   s = scale * dot(q_i, k_j)
 *   if softcap > 0: s = softcap * tanh(s / softcap)
 *   s += mask[b,h,i,j] (float mask) - alibi_slopes[h] * |p(i) - j|
 * and s = -inf (exactly) where the key is masked: j > p(i) under causal,
 * outside [p(i) - window_left, p(i) + window_right] under a window,
 * j >= kv_len[b], mask[b,h,i,j] == 0 for a boolean keep-mask, or
 * key_padding_mask[b,j] != 0 (a padding key), or (i, j) outside the
 * block-sparse layout; global tokens lift the window and the layout (below).
 * A query row with no visible key gives out = 0, lse = -inf.
 *
 * Global tokens (Longformer's global attention, token by token): the
 * optional global_tokens marks positions in key coordinates. Key j is global
 * when global_tokens[b, j] != 0; query i is global when its position p(i) is
 * in [0, S) and global_tokens[b, p(i)] != 0 (in self-attention, T == S, the
 * same token as query and as key). A global key is seen by every query and
 * a global query sees every key, whatever the window and the layout say:
 * those two are sparsity patterns, and global tokens are the exceptions
 * Longformer and BigBird add to them. The rules that say a key is not
 * there or not allowed hold for global tokens too: causal (a global token
 * of a decoder must not see the future), kv_len and key_padding_mask (a
 * key that does not exist; Hugging Face's Longformer masks padding for its
 * global queries as well), the boolean mask and a float mask's -inf (the
 * caller's explicit word). In full:
 *   visible(i, j) = !(causal && j > p(i)) && j < kv_len[b] && bool_mask
 *                   && !key_padding_mask[b, j]
 *                   && (global(i) || global(j) || (in_window && in_layout))
 * with in_window = 1 without a window and in_layout = 1 without a layout.
 * Window (w, w), global tokens and no layout is Longformer's attention
 * exactly (a global key inside a query's window counts once). Global tokens
 * without a window or layout change nothing (every key is seen anyway).
 * Cost: tiles that no row of a query strip sees are skipped, so a
 * Longformer pattern costs about T * (window + globals) + globals * S. */
typedef struct attn_sdpa_args {
    attn_tensor q;   /* F32 [B, H,   T, D ]  */
    attn_tensor k;   /* F32 [B, Hkv, S, D ]  H % Hkv == 0 (MHA, GQA, MQA) */
    attn_tensor v;   /* F32 [B, Hkv, S, Dv]  */
    attn_tensor out; /* F32 [B, H,   T, Dv]  written */
    attn_tensor lse; /* F32 [B, H, T] natural-log sum of exp; optional on
                      * forward (written when data != NULL), required on
                      * backward (read) */

    float scale;      /* 0 means 1/sqrt(D), the default (unlike PyTorch, where scale=0.0
                       * gives uniform attention: pass a tiny scale for that); NaN or
                       * Inf is ATTN_E_ARG */
    float softcap;    /* > 0 enables tanh capping; 0 off; < 0 or NaN is ATTN_E_ARG */
    int causal;       /* nonzero: mask j > p(i) */
    attn_align align; /* alignment of queries to keys */
    int window;       /* nonzero: apply window_left / window_right */
    int64_t window_left, window_right; /* -1 = unbounded on that side; < -1 is ATTN_E_ARG;
                                        * any side >= S + T (up to INT64_MAX) is the
                                        * same as -1 */

    const int32_t *kv_len;          /* optional [B]: keys j >= kv_len[b] are masked;
                                     * each in [0, S] (else ATTN_E_ARG); keys beyond
                                     * kv_len[b] are never read */
    attn_tensor mask;               /* optional (PyTorch SDPA's attn_mask); F32 additive
                                     * bias or BOOL/U8 keep-mask (nonzero = attend), shape
                                     * [B|1, H|1, T|1, S] with dims aligned on the right
                                     * as PyTorch broadcasts: [S], [T|1, S],
                                     * [H|1, T|1, S] too (the padding mask [B,1,1,S]
                                     * needs no expand); a dim of size 1 broadcasts
                                     * (its stride is ignored), nothing is copied */
    attn_tensor key_padding_mask;   /* optional BOOL/U8 [B|1, S] or [S]: nonzero =
                                     * key j of batch b is padding and ignored, the
                                     * meaning of nn.MultiheadAttention's
                                     * key_padding_mask (the opposite of a boolean
                                     * mask). Any pattern (left padding too, which
                                     * kv_len cannot express); combines with every
                                     * other mask. */
    const float *alibi_slopes;      /* optional [H] */
    const attn_sdpa_layout *layout; /* optional block-sparse layout (see above) */

    float dropout_p; /* probability of dropping an attention probability,
                      * in [0, 1); 0 = off. Kept ones are scaled 1/(1-p). */
    uint64_t seed;   /* dropout: keep(b,h,i,j) is a pure function of
                      * (seed, b, h, i, j), so results do not depend on
                      * threading and the backward regenerates the mask. */

    attn_rope rope; /* rotary position embedding of q and k (see attn_rope); the
                     * score's q_i and k_j are then the rotated rows */

    attn_tensor global_tokens; /* optional BOOL/U8 [B|1, S] or [S] (Hugging Face's
                                * global_attention_mask, one flag per token):
                                * nonzero = the token at key position j is global,
                                * seen by every query and seeing every key through
                                * the window and the layout (see "Global tokens"
                                * above). Rows of a [B, S] tensor may differ. */
} attn_sdpa_args;

/* Scaled dot-product attention, forward.
 * q: [B,H,T,D]  k: [B,Hkv,S,D]  v: [B,Hkv,S,Dv]  ->  out: [B,H,T,Dv], lse: [B,H,T]
 * Views are borrowed; nothing is kept after return. Nothing of size T x S is
 * allocated. Results are bitwise identical for any thread count.
 * NaN/Inf policy: inputs are not scanned. A non-finite value in q_i, or in a
 * k/v row that query i sees, makes row i of out NaN/Inf as IEEE arithmetic
 * dictates; keys beyond kv_len[b] are never read. Masked keys inside a
 * partially masked tile may still be read, so a non-finite value there can
 * also reach rows that do not see it (as in PyTorch and FlashAttention).
 * Aliasing: out and lse may not share memory with any input (q, k, v, the
 * masks, alibi_slopes, kv_len) or with each other, ATTN_E_ARG, except out
 * == q exactly (the same data and strides, D == Dv), which computes in
 * place. attn_sdpa_backward: no gradient may share memory with anything it
 * reads (q, k, v, out, lse, dout, the masks), ATTN_E_ARG; gradients are not
 * checked against each other (dq, dk, dv may interleave in one buffer).
 * Size limits (ATTN_E_SHAPE, "too large", whatever other dims are 0):
 * T, S < 2^31; D, Dv <= 2^20; B*H and B*Hkv <= 2^31 - 1; each of q, k, v,
 * out has fewer than 2^60 elements counting an empty T or S as 1.
 * Returns ATTN_OK, ATTN_E_SHAPE, ATTN_E_LAYOUT (last stride != 1),
 * ATTN_E_DTYPE, ATTN_E_ARG, ATTN_E_NOMEM, ATTN_E_BUSY (ctx in use by
 * another thread; also attn_sdpa_backward and attn_sdpa_probs, see core.h). */
ATTN_NODISCARD attn_status attn_sdpa_forward(attn_ctx *ctx, const attn_sdpa_args *a);

/* Gradients for attn_sdpa_backward. dq, dk, dv are overwritten. */
typedef struct attn_sdpa_grads {
    attn_tensor dout;  /* F32 [B, H,   T, Dv]  in */
    attn_tensor dq;    /* F32 [B, H,   T, D ]  out */
    attn_tensor dk;    /* F32 [B, Hkv, S, D ]  out (summed over each key/value group) */
    attn_tensor dv;    /* F32 [B, Hkv, S, Dv]  out */
    attn_tensor dmask; /* optional F32, same shape as a float mask: its
                        * gradient, summed over broadcast dims */
} attn_sdpa_grads;

/* Scaled dot-product attention, backward. `a` is the forward's arguments with
 * out and lse as the forward wrote them (same options, same dropout seed).
 * Probabilities are recomputed tile by tile from lse; nothing of size T x S is
 * allocated. Deterministic: same inputs give bitwise-equal gradients for any
 * thread count (no atomics). Rows with no visible key get zero gradients;
 * keys beyond kv_len[b] get zero dk and dv. NaN/Inf: as in the forward, a
 * non-finite value in row i's inputs makes dq_i and the dk, dv of the keys
 * row i sees non-finite (and may reach masked keys of the same tile).
 * Returns ATTN_OK, ATTN_E_SHAPE, ATTN_E_LAYOUT, ATTN_E_DTYPE, ATTN_E_ARG,
 * ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_sdpa_backward(attn_ctx *ctx, const attn_sdpa_args *a,
                                              const attn_sdpa_grads *g);

/* Attention probabilities of rows [i0, i0 + rows) of head (b, h), rebuilt
 * from the forward's lse (the numbers attn_sdpa_forward normalised, not a
 * second implementation):
 *   probs[r, j] = exp(s(b, h, i0 + r, j) - lse[b, h, i0 + r])
 * times the dropout factor of (b, h, i0 + r, j) when a->dropout_p > 0 (the
 * weights the forward multiplied V by), with s the score defined above;
 * masked keys and rows with no visible key (lse = -inf) give 0.
 * a: the forward's arguments, with lse as the forward wrote it; out is not
 * read and may be absent. probs: F32 [rows, S], last stride 1, rows apart
 * by at least S; rows = 0 is a no-op. Memory: one strip of queries and one
 * key block per thread. Returns ATTN_OK, ATTN_E_ARG ((b, h) or the rows
 * out of range, lse missing, or as attn_sdpa_forward), ATTN_E_SHAPE,
 * ATTN_E_LAYOUT, ATTN_E_DTYPE, ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_sdpa_probs(attn_ctx *ctx, const attn_sdpa_args *a, int64_t b,
                                           int64_t h, int64_t i0, attn_tensor probs);

/* Merge n partial results computed over disjoint sets of keys (split-KV
 * decoding, ring attention) into the result over their union, exactly:
 *   lse = log sum_k exp(lses[k]),   out = sum_k exp(lses[k] - lse) outs[k]
 * outs[k]: F32 [B,H,T,Dv] and lses[k]: F32 [B,H,T], as attn_sdpa_forward
 * writes them (a part whose row saw no key has lse = -inf and out = 0).
 * out, lse: the same shapes; each may be the very view of one part
 * (in-place accumulation: every part's row is read before it is written);
 * other overlaps are undefined. Rows no part saw get out = 0, lse = -inf.
 * Computed in float64, parts in index order: the same result for any
 * thread count. Returns ATTN_OK, ATTN_E_ARG (n < 1, NULL arrays or data),
 * ATTN_E_SHAPE, ATTN_E_LAYOUT, ATTN_E_DTYPE, ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_sdpa_merge(attn_ctx *ctx, int n, const attn_tensor *outs,
                                           const attn_tensor *lses, attn_tensor out,
                                           attn_tensor lse);

/* The float64 oracle: naive, materialised scores, the same semantics.
 * For tests and `--ref`; slow and O(T*S) memory. Inputs are F32 views as
 * above; results are written as F32 (out, lse; dq, dk, dv, dmask). They
 * validate exactly as attn_sdpa_forward / attn_sdpa_backward and return the
 * same statuses. */
ATTN_NODISCARD attn_status attn_sdpa_forward_ref(attn_ctx *ctx, const attn_sdpa_args *a);
ATTN_NODISCARD attn_status attn_sdpa_backward_ref(attn_ctx *ctx, const attn_sdpa_args *a,
                                                  const attn_sdpa_grads *g);

/* Forward FLOPs by the FlashAttention convention, 2*(D+Dv) per unmasked
 * (query, key) pair, counting only the structural masks (causal, window,
 * kv_len, the block-sparse layout and global tokens; not the boolean and
 * key-padding masks). The backward is 2.5x this. 0 for arguments attn_sdpa_forward
 * would reject (no status: a pure function of the arguments). */
double attn_sdpa_flops(const attn_sdpa_args *a);

#ifdef __cplusplus
}
#endif
#endif /* ATTN_SDPA_H */

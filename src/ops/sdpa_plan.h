/* A validated attention problem: every argument checked once at the API
 * boundary, then resolved into plain numbers the drivers and the oracle share. */
#ifndef ATTN_SDPA_PLAN_H
#define ATTN_SDPA_PLAN_H

#include "core/internal.h"
#include "kernels/rope.h"

enum { ATTN__MASK_NONE = 0, ATTN__MASK_FLOAT, ATTN__MASK_BOOL };

/* Keys and values read through a paged KV cache's block table instead of
 * the k and v views (the forward only: attn_kvcache_attend's prefill). Row
 * j of kv head hk: pool + ((hk * nblocks + tab[j / bs]) * bs + j % bs) * D
 * elements of dt (kernels/decode.h's ATTN__KV_*). */
typedef struct attn__paged {
    const void *kpool, *vpool;
    const int32_t *tab;
    int64_t bs, nblocks;
    int dt;
} attn__paged;

typedef struct attn__sdpa_plan {
    int64_t B, H, Hkv, T, S, D, Dv, group; /* group = H / Hkv */
    float scale, softcap;
    int64_t shift; /* p(i) = i + shift */
    int causal, window;
    int64_t wl, wr;
    const int32_t *kv_len;
    int mask_kind;
    const void *mask;
    int64_t msb, msh, mst; /* mask strides (0 on broadcast dims) */
    const uint8_t *kpm;    /* key_padding_mask [B|1, S], nonzero = padding (ignored) */
    int64_t kpb;           /* its batch stride (0 when broadcast) */
    const float *alibi;
    const uint8_t *gtok;           /* global_tokens [B|1, S], nonzero = global; NULL if none */
    int64_t gtb;                   /* its batch stride (0 when broadcast) */
    const struct attn__glob *glob; /* gtok's index (ops/sdpa_mask.h), set by the
                                    * drivers before any strip is classified */
    const uint8_t *lay;          /* block layout, NULL if none: lay[h*lhs + qb*lnkb + kb] */
    int64_t lbq, lbk, lnkb, lhs; /* block sizes, key blocks, head stride (0: shared) */
    float dropout_p;
    uint32_t drop_thr;
    uint64_t seed;
    int rope;        /* rotary embedding on (q rotated) */
    int rope_k;      /* k rotated too (not stored rotated) */
    attn__rope_spec rs;
    int64_t rqpos, rkpos;             /* positions of query row 0 and key 0 */
    const int32_t *rqpos_b, *rkpos_b; /* per batch, added (optional) */
    const attn__paged *pg; /* NULL: k and v are the views */
    const float *q, *k, *v;
    float *out, *lse;
    int64_t qs[4], ks[4], vs[4], os[4], ls[3];
} attn__sdpa_plan;

/* What attn__sdpa_plan_make requires beyond q, k, v and out. */
enum {
    ATTN__PLAN_NEED_LSE = 1, /* lse must be present (backward, probs) */
    ATTN__PLAN_NO_OUT = 2,   /* out is not used: may be absent (probs) */
};

/* Validate a and fill p. flags: ATTN__PLAN_*. Returns ATTN_OK or an error
 * with a message on ctx. */
attn_status attn__sdpa_plan_make(attn_ctx *ctx, const attn_sdpa_args *a, int flags,
                                 attn__sdpa_plan *p);

/* 1 if views x and y can touch a common byte (their address ranges meet). */
int attn__views_overlap(const attn_tensor *x, const attn_tensor *y);
/* The input views of a (q, k, v, mask, key_padding_mask, global_tokens,
 * alibi_slopes, kv_len and the rope tables as views) into in[0..ATTN__SDPA_NIN) with their
 * names; returns the count. */
#define ATTN__SDPA_NIN 11
int attn__sdpa_inputs(const attn_sdpa_args *a, const attn__sdpa_plan *p, attn_tensor *in,
                      const char **names);

/* One row of attn_sdpa_merge (ops/sdpa_merge.c): parts k < n with lse
 * lses[k] and output row outs[k] [Dv] merged in float64, in part order,
 * into o [Dv] and *l. w: n doubles, acc: Dv doubles of scratch. */
void attn__merge_row(int n, const float *lses, const float *const *outs, int64_t Dv, double *w,
                     double *acc, float *o, float *l);

/* Run the tiled forward on a validated plan (ops/sdpa_fwd.c), e.g. one
 * whose keys come through a paged cache (p->pg). */
attn_status attn__sdpa_forward_plan(attn_ctx *ctx, const attn__sdpa_plan *p);

/* RoPE positions of query row 0 and key 0 of batch b. */
static inline int64_t attn__rope_qpos(const attn__sdpa_plan *p, int64_t b) {
    return p->rqpos + (p->rqpos_b ? p->rqpos_b[b] : 0);
}
static inline int64_t attn__rope_kpos(const attn__sdpa_plan *p, int64_t b) {
    return p->rkpos + (p->rkpos_b ? p->rkpos_b[b] : 0);
}

/* Validate a RoPE option for heads of D dims and B batches (names its
 * fields in errors) and fill p's rope fields. */
attn_status attn__rope_plan(attn_ctx *ctx, const attn_rope *r, int64_t B, int64_t D,
                            attn__sdpa_plan *p);

/* Dropout keep-and-scale factor of element (b,h,i,j): 0 or 1/(1-p). The
 * definition of the dropout stream, shared by the fast path and the oracle
 * (like attn__rng_u32). */
static inline float attn__dropout_factor(const attn__sdpa_plan *p, int64_t b, int64_t h, int64_t i,
                                         int64_t j) {
    uint32_t u = attn__rng_u32(p->seed, (uint64_t)b, (uint64_t)h, (uint64_t)i, (uint64_t)j);
    return u >= p->drop_thr ? 1.0f / (1.0f - p->dropout_p) : 0.0f;
}

#endif /* ATTN_SDPA_PLAN_H */

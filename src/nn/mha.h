/* Internals of the multi-head attention layer shared by its files. */
#ifndef ATTN_NN_MHA_H
#define ATTN_NN_MHA_H

#include "nn/attention.h"

/* How keys and values reach the layer (chosen per forward from the args). */
enum {
    ATTN__MHA_SELF = 0, /* x_k absent: q, k, v from x_q; one GEMM into [B*T, E+2KV] */
    ATTN__MHA_KV,       /* x_k only: k, v from x_k; one GEMM into [B*S, 2KV] */
    ATTN__MHA_SPLIT,    /* x_k and x_v: two GEMMs into the halves of [B*S, 2KV] */
};

struct attn_mha {
    attn_mha_config cfg; /* defaults resolved */
    attn__heads heads;   /* the attention's geometry and options, from cfg */
    int64_t E, H, Hkv, Dh, KV, kdim, vdim;
    /* Parameters. w_in holds Wq [E,E], Wk [KV,kdim], Wv [KV,vdim] back to back,
     * so in the self-attention case it is one [E+2KV, E] matrix (PyTorch's
     * in_proj_weight) and with kdim == vdim Wk|Wv is one [2KV, kdim] matrix. */
    float *w_in, *b_in, *w_out, *b_out;
    float *gw_in, *gb_in, *gw_out, *gb_out;
    attn_param params[8];
    int nparams;

    /* Saved by the forward for the backward (valid when saved != 0):
     * p1: [B*T, ld1] with q at column 0 (and, in SELF mode, k at E, v at E+KV);
     * p2: [B*S, 2KV] with k at column 0 and v at KV (KV and SPLIT modes);
     * o:  [B*T, E] attention output before out_proj, [B,T,H,Dh];
     * lse: [B, H, T]. */
    int saved, mode;
    int64_t B, T, S, ld1;
    float *p1, *p2, *o, *lse;
    size_t cap1, cap2, capo, caplse;
    /* backward scratch, same layouts as p1, p2, o */
    float *dp1, *dp2, *dout;
    size_t capd1, capd2, capdo;
};

/* The attention of the saved forward: q, k, v, o and lse in the saved
 * buffers, masks and dropout from a (nn/attention.h builds the views). */
void attn__mha_attend_args(const attn_mha *m, const attn_mha_args *a, attn__attend_args *at);
/* The same as attn_sdpa_forward arguments. */
void attn__mha_sdpa_args(const attn_mha *m, const attn_mha_args *a, attn_sdpa_args *s);

/* Write a->attn_weights from the saved q, k and lse, one head at a time. */
attn_status attn__mha_weights(attn_ctx *ctx, attn_mha *m, const attn_mha_args *a);

#endif /* ATTN_NN_MHA_H */

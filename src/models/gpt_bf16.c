/* A decoder's weights stored as bfloat16 (ATTN_GPT_WEIGHTS_BF16). Decoding
 * one token reads every weight matrix once, so halving their bytes nearly
 * halves the step on a machine whose memory bandwidth is the limit; the
 * products widen the bf16 values to fp32 in registers and sum in fp32 with
 * fp32 activations (nn/gemm.c), so the only new error is the rounding of
 * the weights themselves (relative 2^-9 each).
 *
 * The file is loaded in fp32 as always (gpt2_load.c), then the matrices
 * are rounded into a bfloat16 arena and the small tensors (positions, norms,
 * biases, RoPE frequencies) moved to a fresh, smaller fp32 arena; the load
 * holds both for a moment. A BF16 file's values come back unchanged (its
 * fp32 spelling rounds to itself).
 *
 * Both arenas of a decoder's weights come from attn__malloc_huge:
 * a decode step streams every weight once, and on 4 KiB pages the bf16
 * step measured 1.4x faster than fp32 where the kernels alone were 1.8x;
 * on huge pages it is 2x (docs/PERFORMANCE.md). */
#include "kernels/half.h"
#include "models/gpt2.h"

#include <stdlib.h>
#include <string.h>

typedef struct small_t {
    float **p;
    size_t n;
} small_t;

typedef struct mat_t {
    float **src;
    uint16_t **dst;
    size_t n;
} mat_t;

static void round_bf16(const float *x, uint16_t *y, size_t n) {
    for (size_t i = 0; i < n; i++)
        y[i] = attn__f2bf(x[i]);
}

attn_status attn__gpt_to_bf16(attn_ctx *ctx, attn_gpt *m) {
    if (m->weights == ATTN_GPT_WEIGHTS_BF16) return ATTN_OK;
    const attn_gpt_config *c = &m->cfg;
    const int llama = c->arch == ATTN_GPT_ARCH_LLAMA;
    const size_t E = (size_t)c->n_embd, I = (size_t)c->n_inner, V = (size_t)c->vocab_size;
    const size_t Dh = E / (size_t)c->n_head, KV = (size_t)c->n_kv_head * Dh;
    const size_t I1 = llama ? 2 * I : I, QKV = E + 2 * KV, L = (size_t)c->n_layer;
    const int tied = m->head == m->wte;
    const size_t nmat = 2 + 4 * L, nsmall = 4 + 8 * L;
    mat_t *mat = calloc(nmat, sizeof *mat);
    small_t *sm = calloc(nsmall, sizeof *sm);
    size_t nm = 0, ns = 0;
    if (!mat || !sm) {
        free(mat), free(sm);
        return attn_ctx_fail(ctx, ATTN_E_NOMEM, "cannot convert the weights to bf16");
    }
#define MAT(s, d, cnt) (mat[nm++] = (mat_t){&(s), &(d), (cnt)})
#define SMALL(s, cnt) ((s) ? (void)(sm[ns++] = (small_t){&(s), (cnt)}) : (void)0)
    MAT(m->wte, m->wte_bf, V * E);
    if (!tied) MAT(m->head, m->head_bf, V * E);
    SMALL(m->wpe, (size_t)c->n_positions * E);
    SMALL(m->lnf_g, E);
    SMALL(m->lnf_b, E);
    SMALL(m->inv_freq, Dh);
    for (size_t l = 0; l < L; l++) {
        attn__gpt_layer *w = &m->layers[l];
        MAT(w->wqkv, w->wqkv_bf, QKV * E);
        MAT(w->wo, w->wo_bf, E * E);
        MAT(w->w1, w->w1_bf, I1 * E);
        MAT(w->w2, w->w2_bf, E * I);
        SMALL(w->ln1_g, E);
        SMALL(w->ln1_b, E);
        SMALL(w->bqkv, QKV);
        SMALL(w->bo, E);
        SMALL(w->ln2_g, E);
        SMALL(w->ln2_b, E);
        SMALL(w->b1, I1);
        SMALL(w->b2, E);
    }
#undef MAT
#undef SMALL
    size_t nb = 0, nf = 0;
    for (size_t i = 0; i < nm; i++)
        nb += mat[i].n;
    for (size_t i = 0; i < ns; i++)
        nf += sm[i].n;
    uint16_t *barena = attn__malloc_huge(nb * sizeof(uint16_t));
    float *arena = attn__malloc_huge(nf * sizeof(float));
    if (!barena || !arena) {
        attn__free(barena), attn__free(arena);
        free(mat), free(sm);
        return attn_ctx_fail(ctx, ATTN_E_NOMEM, "cannot allocate %zu MB of bf16 decoder weights",
                             nb * sizeof(uint16_t) >> 20);
    }
    uint16_t *q = barena;
    for (size_t i = 0; i < nm; i++) {
        round_bf16(*mat[i].src, q, mat[i].n);
        *mat[i].dst = q, *mat[i].src = NULL;
        q += mat[i].n;
    }
    float *p = arena;
    for (size_t i = 0; i < ns; i++) {
        memcpy(p, *sm[i].p, sm[i].n * sizeof(float));
        *sm[i].p = p;
        p += sm[i].n;
    }
    if (tied) m->head_bf = m->wte_bf;
    m->head = NULL;
    attn__free(m->arena);
    m->arena = arena, m->barena = barena;
    m->weights = ATTN_GPT_WEIGHTS_BF16;
    free(mat), free(sm);
    return ATTN_OK;
}

attn_gpt_weights attn_gpt_get_weights(const attn_gpt *m) {
    return m ? m->weights : ATTN_GPT_WEIGHTS_F32;
}

/* Batched generation: several prompts of different lengths decoded
 * together, each stopping on its own. The keys and values live in paged KV
 * caches (attn_kvcache, one per layer, the same sequence ids in each), so
 * sequences of any lengths share one pool and grow without copying; a step
 * runs every unfinished sequence's newest token as one row of the same
 * products, and attention reads each sequence through its block table (the
 * decode kernel). Prompts are prefilled one at a time (the tiled forward
 * over the cache). */
#include "kernels/half.h"
#include "models/gpt2.h"
#include "nn/block.h"

#include <stdlib.h>
#include <string.h>

typedef struct batch_run {
    const attn_gpt *m;
    attn_kvcache **kv; /* [n_layer] */
    int32_t *sid;      /* [n] sequence id of prompt i (the same in every cache) */
    float *x, *qkv, *o, *h;
} batch_run;

/* A view over token-major rows: dims outermost first, strides given. */
static attn_tensor view(float *data, int ndim, const int64_t *shape, const int64_t *stride) {
    attn_tensor t = attn_tensor_make(data, ATTN_F32, ndim, shape);
    memcpy(t.stride, stride, (size_t)ndim * sizeof *stride);
    return t;
}

/* Run Bq sequences (ids sel[0..Bq)) of T new tokens each (rows b*T + t of x,
 * token ids ids[b*T + t] at position pos[b] + t) through every layer,
 * appending their keys and values, and leave the next-token logits of each
 * sequence's last row in lg [Bq, V]. */
static attn_status run(attn_ctx *ctx, batch_run *R, int64_t Bq, int64_t T, const int32_t *sel,
                       const int32_t *ids, const int64_t *pos, float *lg) {
    const attn_gpt *m = R->m;
    const attn_gpt_config *cf = &m->cfg;
    const int64_t E = cf->n_embd, H = cf->n_head, Hkv = cf->n_kv_head, Dh = E / H, KV = Hkv * Dh;
    const int64_t ld = E + 2 * KV, N = Bq * T, V = cf->vocab_size;
    for (int64_t r = 0; r < N; r++) {
        const float *we = m->wte ? m->wte + (int64_t)ids[r] * E : NULL;
        const uint16_t *wb = m->wte_bf ? m->wte_bf + (int64_t)ids[r] * E : NULL;
        const float *pe = m->wpe ? m->wpe + (pos[r / T] + r % T) * E : NULL;
        for (int64_t k = 0; k < E; k++) {
            const float v = we ? we[k] : attn__bf2f(wb[k]);
            R->x[r * E + k] = pe ? v + pe[k] : v;
        }
    }
    float *y = R->qkv; /* q | k | v are spent after attention: the branch output */
    for (int64_t l = 0; l < cf->n_layer; l++) {
        const attn__layer L = attn__gpt_layer_view(m, l);
        attn__gpt_norm_rows(ctx, m, l, 1, N, R->x, R->o);
        attn__linear_forward_w(ctx, R->o, E, N, E, L.attn.w_qkv, L.attn.w_qkv_bf, L.attn.b_qkv, ld,
                               R->qkv, ld);
        for (int64_t b = 0; b < Bq; b++) {
            float *row = R->qkv + b * T * ld;
            const int64_t sh[3] = {Hkv, T, Dh}, st[3] = {Dh, ld, 1};
            attn_rope rk = L.attn.heads.rope; /* keys stored rotated at len + t */
            rk.q_pos = rk.k_pos = 0;
            attn_status s =
                attn_kvcache_append(ctx, R->kv[l], R->sid[sel[b]], view(row + E, 3, sh, st),
                                    view(row + E + KV, 3, sh, st), rk.rot_dim ? &rk : NULL);
            if (s) return s;
        }
        attn_kvcache_attend_args a;
        memset(&a, 0, sizeof a);
        const int64_t qs[4] = {Bq, H, T, Dh}, qst[4] = {T * ld, Dh, ld, 1},
                      ost[4] = {T * E, Dh, E, 1};
        a.q = view(R->qkv, 4, qs, qst);
        a.out = view(R->o, 4, qs, ost);
        int32_t seqs[64];
        int32_t *sq = Bq <= 64 ? seqs : malloc((size_t)Bq * sizeof *sq);
        if (!sq) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory");
        for (int64_t b = 0; b < Bq; b++)
            sq[b] = R->sid[sel[b]];
        a.seqs = sq;
        a.scale = L.attn.heads.scale;
        a.causal = 1;
        a.rope = L.attn.heads.rope;
        a.rope.q_pos = a.rope.k_pos = 0;
        a.rope.k_rotated = a.rope.rot_dim != 0;
        attn_status s = attn_kvcache_attend(ctx, R->kv[l], &a);
        if (sq != seqs) free(sq);
        if (s) return s;
        attn__mha_block_out(ctx, &L.attn, N, R->o, y);
        attn__residual_add(ctx, N, E, R->x, y);
        attn__gpt_norm_rows(ctx, m, l, 2, N, R->x, R->o);
        attn__gpt_mlp(ctx, m, l, N, R->o, R->h, y);
        attn__residual_add(ctx, N, E, R->x, y);
    }
    for (int64_t b = 0; b < Bq; b++) /* each sequence's last row */
        memcpy(R->qkv + b * E, R->x + (b * T + T - 1) * E, (size_t)E * sizeof(float));
    attn__gpt_norm_rows(ctx, m, 0, 0, Bq, R->qkv, R->o);
    attn__linear_forward_w(ctx, R->o, E, Bq, E, m->head, m->head_bf, NULL, V, lg, V);
    return ATTN_OK;
}

attn_status attn_gpt_generate_batch(attn_ctx *ctx, const attn_gpt *m, int64_t n,
                                    const int32_t *const *prompts, const int64_t *lens,
                                    const attn_gen_params *p, int32_t *const *out, int64_t *n_out) {
    attn__ctx_clear(ctx);
    if (!m || !prompts || !lens || !p || !out || !n_out)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "a NULL argument");
    if (n < 1 || n > (1 << 20))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "%lld prompts, need 1 .. 2^20", (long long)n);
    const char *why = attn__gen_bad_params(p);
    if (why) return attn_ctx_fail(ctx, ATTN_E_ARG, "generation parameters: %s", why);
    const attn_gpt_config *cf = &m->cfg;
    const int64_t P = cf->n_positions, V = cf->vocab_size, new = p->max_new_tokens;
    int64_t Tmax = 0, blocks = 0;
    enum { BLOCK = 16 };
    for (int64_t i = 0; i < n; i++) {
        n_out[i] = 0;
        if (!prompts[i] || lens[i] < 1 || lens[i] > P)
            return attn_ctx_fail(ctx, ATTN_E_ARG,
                                 "prompt %lld: %lld tokens, must be in [1, n_positions = %lld]",
                                 (long long)i, (long long)lens[i], (long long)P);
        if (new > P - lens[i] + 1)
            return attn_ctx_fail(ctx, ATTN_E_ARG,
                                 "prompt %lld: %lld tokens + %lld new tokens exceed the model's "
                                 "position table (n_positions = %lld)",
                                 (long long)i, (long long)lens[i], (long long)new, (long long)P);
        for (int64_t t = 0; t < lens[i]; t++)
            if (prompts[i][t] < 0 || prompts[i][t] >= V)
                return attn_ctx_fail(ctx, ATTN_E_ARG,
                                     "prompt %lld, token %lld: id %d is outside [0, vocab_size = "
                                     "%lld)",
                                     (long long)i, (long long)t, prompts[i][t], (long long)V);
        Tmax = ATTN_MAX(Tmax, lens[i]);
        blocks += (lens[i] + new + BLOCK - 1) / BLOCK;
    }
    if (p->eos_id >= V)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "eos_id %d is outside [0, vocab_size = %lld)",
                             p->eos_id, (long long)V);
    if (new == 0) return ATTN_OK;
    const int64_t E = cf->n_embd, Dh = E / cf->n_head, KV = cf->n_kv_head * Dh;
    const int64_t I1 = cf->n_inner * (cf->arch == ATTN_GPT_ARCH_LLAMA ? 2 : 1);
    const size_t rows = (size_t)ATTN_MAX(Tmax, n);
    batch_run R;
    memset(&R, 0, sizeof R);
    R.m = m;
    R.kv = calloc((size_t)cf->n_layer, sizeof *R.kv);
    R.sid = malloc((size_t)n * sizeof *R.sid);
    R.x = attn__malloc(rows * (size_t)E * sizeof(float));
    R.qkv = attn__malloc(rows * (size_t)(E + 2 * KV) * sizeof(float));
    R.o = attn__malloc(rows * (size_t)E * sizeof(float));
    R.h = attn__malloc(rows * (size_t)I1 * sizeof(float));
    float *lg = malloc((size_t)n * (size_t)V * sizeof *lg);
    int32_t *idx = malloc((size_t)V * sizeof *idx), *sel = malloc((size_t)n * sizeof *sel);
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    int64_t *pos = malloc((size_t)n * sizeof *pos);
    uint64_t *rng = malloc((size_t)n * sizeof *rng);
    attn_status st = ATTN_OK;
    if (!R.kv || !R.sid || !R.x || !R.qkv || !R.o || !R.h || !lg || !idx || !sel || !ids || !pos ||
        !rng)
        st = attn_ctx_fail(ctx, ATTN_E_NOMEM, "cannot allocate batched generation of %lld prompts",
                           (long long)n);
    const attn_kvcache_config kc = {cf->n_kv_head, Dh, 0, BLOCK, blocks, ATTN_F32, n};
    for (int64_t l = 0; !st && l < cf->n_layer; l++) {
        st = attn_kvcache_create(ctx, &kc, &R.kv[l]);
        for (int64_t i = 0; !st && i < n; i++) {
            int32_t s;
            st = attn_kvcache_seq_new(ctx, R.kv[l], &s);
            if (!st && l == 0) R.sid[i] = s;
            if (!st && s != R.sid[i])
                st = attn_ctx_fail(ctx, ATTN_E_ARG, "KV caches disagree on sequence ids");
        }
    }
    /* prefill each prompt alone, then choose its first token */
    for (int64_t i = 0; !st && i < n; i++) {
        const int32_t one = (int32_t)i;
        const int64_t zero = 0;
        st = run(ctx, &R, 1, lens[i], &one, prompts[i], &zero, lg + i * V);
        rng[i] = p->seed;
    }
    int64_t active = 0;
    for (int64_t i = 0; !st && i < n; i++) {
        const int32_t id = attn_gen_sample(lg + i * V, V, p, &rng[i], idx);
        if (id < 0) {
            st = attn_ctx_fail(ctx, ATTN_E_NOMEM, "sampling: out of memory");
            break;
        }
        out[i][0] = id, n_out[i] = 1;
        if (id != p->eos_id && new > 1) sel[active++] = (int32_t)i;
    }
    /* one step for every unfinished sequence at a time */
    while (!st && active > 0) {
        for (int64_t b = 0; b < active; b++) {
            const int64_t i = sel[b];
            ids[b] = out[i][n_out[i] - 1];
            pos[b] = lens[i] + n_out[i] - 1;
        }
        st = run(ctx, &R, active, 1, sel, ids, pos, lg);
        int64_t still = 0;
        for (int64_t b = 0; !st && b < active; b++) {
            const int64_t i = sel[b];
            const int32_t id = attn_gen_sample(lg + b * V, V, p, &rng[i], idx);
            if (id < 0) {
                st = attn_ctx_fail(ctx, ATTN_E_NOMEM, "sampling: out of memory");
                break;
            }
            out[i][n_out[i]++] = id;
            if (id != p->eos_id && n_out[i] < new) sel[still++] = (int32_t)i;
        }
        active = still;
    }
    for (int64_t l = 0; R.kv && l < cf->n_layer; l++)
        attn_kvcache_free(R.kv[l]);
    free(R.kv), free(R.sid);
    attn__free(R.x), attn__free(R.qkv), attn__free(R.o), attn__free(R.h);
    free(lg), free(idx), free(sel), free(ids), free(pos), free(rng);
    return st;
}

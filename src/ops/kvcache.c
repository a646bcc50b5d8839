/* The paged KV cache (include/attn/kvcache.h) and attention through it.
 *
 * Pool: K [Hkv][num_blocks][bs][D] and V [Hkv][num_blocks][bs][Dv], head-major so
 * that a sequence's blocks taken in order from a fresh pool are adjacent per head
 * (one stream per head; adjacent blocks are also walked as one run);
 * in the storage type; a free list of block ids; per sequence a block table
 * (position j lives in block tab[j / bs] at row j % bs), grown by appending
 * ids, never by moving rows.
 *
 * Decode (T * group <= ATTN__DEC_MAXR): a task is (sequence, kv head, key
 * chunk); its query rows are every head of the kv head's group times the T
 * new tokens, so each K/V row is read once per group. Chunks are a fixed
 * number of blocks (not a function of the thread count); a task walks its
 * chunk block by block with the family's decode kernel (kernels/decode.h)
 * and leaves a partial (out, lse); the partials of a (sequence, kv head) are
 * merged in chunk order by attn__merge_row, attn_sdpa_merge's arithmetic.
 * So results do not depend on the thread count.
 * Prefill: the tiled forward (ops/sdpa_fwd.c) with K/V gathered block by
 * block through the table (attn__paged), one sequence at a time. */
#include "kernels/arch.h"
#include "kernels/half.h"
#include "ops/sdpa_plan.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

typedef struct kv_seq {
    int live;
    int64_t len, nb, cap; /* positions, blocks held, table capacity */
    int32_t *tab;
} kv_seq;

struct attn_kvcache {
    int64_t Hkv, D, Dv, bs, nblocks, max_seqs;
    attn_dtype dtype;
    int dt;     /* ATTN__KV_* */
    size_t esz; /* bytes per element */
    void *kpool, *vpool;
    int32_t *freeb; /* free block ids, a stack */
    int64_t nfree;
    kv_seq *seqs;
};

#define LIM16 ((int64_t)1 << 16)

attn_status attn_kvcache_create(attn_ctx *ctx, const attn_kvcache_config *cfg,
                                attn_kvcache **out) {
    attn__ctx_clear(ctx);
    if (!out) return attn_ctx_fail(ctx, ATTN_E_ARG, "out is NULL");
    *out = NULL;
    if (!cfg) return attn_ctx_fail(ctx, ATTN_E_ARG, "config is NULL");
    const int64_t Dv = cfg->Dv ? cfg->Dv : cfg->D;
    if (cfg->Hkv < 1 || cfg->Hkv > LIM16)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "Hkv = %lld: must be in [1, 2^16]",
                             (long long)cfg->Hkv);
    if (cfg->D < 1 || cfg->D > LIM16 || Dv < 1 || Dv > LIM16)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "D = %lld, Dv = %lld: must be in [1, 2^16]",
                             (long long)cfg->D, (long long)cfg->Dv);
    if (cfg->block_size < 1 || cfg->block_size > LIM16)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "block_size = %lld: must be in [1, 2^16]",
                             (long long)cfg->block_size);
    if (cfg->num_blocks < 1 || cfg->num_blocks > INT32_MAX)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "num_blocks = %lld: must be in [1, 2^31)",
                             (long long)cfg->num_blocks);
    if (cfg->max_seqs < 1 || cfg->max_seqs > INT32_MAX)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "max_seqs = %lld: must be in [1, 2^31)",
                             (long long)cfg->max_seqs);
    int dt;
    if (cfg->dtype == ATTN_F32)
        dt = ATTN__KV_F32;
    else if (cfg->dtype == ATTN_F16)
        dt = ATTN__KV_F16;
    else if (cfg->dtype == ATTN_BF16)
        dt = ATTN__KV_BF16;
    else
        return attn_ctx_fail(ctx, ATTN_E_DTYPE, "dtype: the cache stores F32, F16 or BF16");
    const size_t esz = dt == ATTN__KV_F32 ? 4 : 2;
    /* bytes of each pool, checked for overflow */
    uint64_t kb, vb;
    if (__builtin_mul_overflow((uint64_t)cfg->num_blocks, (uint64_t)(cfg->Hkv * cfg->block_size),
                               &kb) ||
        __builtin_mul_overflow(kb, (uint64_t)cfg->D * esz, &vb) || vb > ((uint64_t)1 << 50))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "cache too large (num_blocks x Hkv x block_size x D)");
    const size_t kbytes = (size_t)vb;
    const size_t vbytes = (size_t)kb * (size_t)Dv * esz;
    attn_kvcache *c = calloc(1, sizeof *c);
    if (!c) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory");
    c->Hkv = cfg->Hkv, c->D = cfg->D, c->Dv = Dv, c->bs = cfg->block_size;
    c->nblocks = cfg->num_blocks, c->max_seqs = cfg->max_seqs;
    c->dtype = cfg->dtype, c->dt = dt, c->esz = esz;
    c->kpool = attn__malloc_huge(kbytes); /* streamed by decode: huge pages */
    c->vpool = attn__malloc_huge(vbytes);
    c->freeb = malloc((size_t)c->nblocks * sizeof *c->freeb);
    c->seqs = calloc((size_t)c->max_seqs, sizeof *c->seqs);
    if (!c->kpool || !c->vpool || !c->freeb || !c->seqs) {
        attn_kvcache_free(c);
        return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory for a cache of %zu + %zu bytes",
                             kbytes, vbytes);
    }
    for (int64_t i = 0; i < c->nblocks; i++) /* popped from the end: block 0 first */
        c->freeb[i] = (int32_t)(c->nblocks - 1 - i);
    c->nfree = c->nblocks;
    *out = c;
    return ATTN_OK;
}

void attn_kvcache_free(attn_kvcache *c) {
    if (!c) return;
    if (c->seqs)
        for (int64_t s = 0; s < c->max_seqs; s++)
            free(c->seqs[s].tab);
    free(c->seqs);
    free(c->freeb);
    attn__free(c->kpool);
    attn__free(c->vpool);
    free(c);
}

static int seq_ok(const attn_kvcache *c, int32_t seq) {
    return c && seq >= 0 && seq < c->max_seqs && c->seqs[seq].live;
}

attn_status attn_kvcache_seq_new(attn_ctx *ctx, attn_kvcache *c, int32_t *seq) {
    attn__ctx_clear(ctx);
    if (!c || !seq) return attn_ctx_fail(ctx, ATTN_E_ARG, "cache or seq is NULL");
    for (int64_t s = 0; s < c->max_seqs; s++)
        if (!c->seqs[s].live) {
            kv_seq *q = &c->seqs[s];
            q->live = 1;
            q->len = q->nb = 0;
            *seq = (int32_t)s;
            return ATTN_OK;
        }
    return attn_ctx_fail(ctx, ATTN_E_NOMEM, "all %lld sequences of the cache are live",
                         (long long)c->max_seqs);
}

attn_status attn_kvcache_seq_free(attn_ctx *ctx, attn_kvcache *c, int32_t seq) {
    attn__ctx_clear(ctx);
    if (!seq_ok(c, seq))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "seq %d is not a live sequence of the cache",
                             (int)seq);
    kv_seq *q = &c->seqs[seq];
    for (int64_t i = q->nb - 1; i >= 0; i--)
        c->freeb[c->nfree++] = q->tab[i];
    q->live = 0;
    q->len = q->nb = 0;
    return ATTN_OK;
}

int64_t attn_kvcache_seq_len(const attn_kvcache *c, int32_t seq) {
    return seq_ok(c, seq) ? c->seqs[seq].len : -1;
}

int64_t attn_kvcache_free_blocks(const attn_kvcache *c) {
    return c ? c->nfree : 0;
}

/* Address of element 0 of row j (position) of kv head hk in a pool of W-wide rows. */
static inline char *row_at(const attn_kvcache *c, const kv_seq *q, const void *pool, int64_t W,
                           int64_t hk, int64_t j) {
    const int64_t blk = q->tab[j / c->bs];
    return (char *)pool + (size_t)(((hk * c->nblocks + blk) * c->bs + j % c->bs) * W) * c->esz;
}

static void store_row(const attn_kvcache *c, const float *x, int64_t W, char *dst) {
    if (c->dt == ATTN__KV_F32) {
        memcpy(dst, x, (size_t)W * 4);
    } else if (c->dt == ATTN__KV_F16) {
        for (int64_t i = 0; i < W; i++)
            ((uint16_t *)dst)[i] = attn__f2h(x[i]);
    } else {
        for (int64_t i = 0; i < W; i++)
            ((uint16_t *)dst)[i] = attn__f2bf(x[i]);
    }
}

static void load_row(const attn_kvcache *c, const char *src, int64_t W, float *x) {
    if (c->dt == ATTN__KV_F32) {
        memcpy(x, src, (size_t)W * 4);
    } else if (c->dt == ATTN__KV_F16) {
        for (int64_t i = 0; i < W; i++)
            x[i] = attn__h2f(((const uint16_t *)src)[i]);
    } else {
        for (int64_t i = 0; i < W; i++)
            x[i] = attn__bf2f(((const uint16_t *)src)[i]);
    }
}

/* An F32 [Hkv, n, W] view with last stride 1. */
static attn_status check_rows(attn_ctx *ctx, const char *name, const attn_tensor *t, int64_t Hkv,
                              int64_t n, int64_t W, int need_n) {
    if (!t->data) return attn_ctx_fail(ctx, ATTN_E_ARG, "%s: missing (data is NULL)", name);
    if (t->dtype != ATTN_F32) return attn_ctx_fail(ctx, ATTN_E_DTYPE, "%s: dtype must be F32", name);
    if (t->ndim != 3 || t->shape[0] != Hkv || t->shape[2] != W || t->shape[1] < 0 ||
        (need_n && t->shape[1] != n))
        return attn_ctx_fail(ctx, ATTN_E_SHAPE, "%s: must be [Hkv=%lld, n, %lld]%s", name,
                             (long long)Hkv, (long long)W, need_n ? " with k's n" : "");
    if (t->stride[2] != 1 && W > 1)
        return attn_ctx_fail(ctx, ATTN_E_LAYOUT, "%s: last stride must be 1", name);
    return ATTN_OK;
}

attn_status attn_kvcache_append(attn_ctx *ctx, attn_kvcache *c, int32_t seq, attn_tensor k,
                                attn_tensor v, const attn_rope *rope) {
    attn__ctx_clear(ctx);
    if (!c) return attn_ctx_fail(ctx, ATTN_E_ARG, "cache is NULL");
    if (!seq_ok(c, seq))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "seq %d is not a live sequence of the cache",
                             (int)seq);
    attn_status st;
    if ((st = check_rows(ctx, "k", &k, c->Hkv, 0, c->D, 0))) return st;
    const int64_t n = k.shape[1];
    if ((st = check_rows(ctx, "v", &v, c->Hkv, n, c->Dv, 1))) return st;
    attn__sdpa_plan rp;
    memset(&rp, 0, sizeof rp);
    if (rope && (st = attn__rope_plan(ctx, rope, 1, c->D, &rp))) return st;
    kv_seq *q = &c->seqs[seq];
    if (n > INT32_MAX - q->len)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "sequence would exceed 2^31 - 1 positions");
    const int64_t need = (q->len + n + c->bs - 1) / c->bs - q->nb;
    if (need > c->nfree)
        return attn_ctx_fail(ctx, ATTN_E_NOMEM,
                             "cache full: %lld more blocks needed, %lld free (of %lld)",
                             (long long)need, (long long)c->nfree, (long long)c->nblocks);
    if (q->nb + need > q->cap) {
        int64_t cap = ATTN_MAX(q->nb + need, 2 * q->cap);
        int32_t *t = realloc(q->tab, (size_t)cap * sizeof *t);
        if (!t) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory for a block table");
        q->tab = t, q->cap = cap;
    }
    float *tmp = NULL;
    double *rt = NULL;
    if (rp.rope) {
        tmp = malloc((size_t)c->D * sizeof *tmp);
        rt = malloc(attn__rope_tmp_doubles(rp.rs.rot) * sizeof *rt);
        if (!tmp || !rt) {
            free(tmp), free(rt);
            return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory");
        }
    }
    for (int64_t i = 0; i < need; i++)
        q->tab[q->nb++] = c->freeb[--c->nfree];
    for (int64_t hk = 0; hk < c->Hkv; hk++)
        for (int64_t t = 0; t < n; t++) {
            const int64_t j = q->len + t;
            const float *kr = (const float *)k.data + hk * k.stride[0] + t * k.stride[1];
            const float *vr = (const float *)v.data + hk * v.stride[0] + t * v.stride[1];
            if (rp.rope) {
                attn__rope_rows(&rp.rs, kr, 0, tmp, 0, 1, (int)c->D, rope->k_pos + j, 0, rt);
                kr = tmp;
            }
            store_row(c, kr, c->D, row_at(c, q, c->kpool, c->D, hk, j));
            store_row(c, vr, c->Dv, row_at(c, q, c->vpool, c->Dv, hk, j));
        }
    q->len += n;
    free(tmp), free(rt);
    return ATTN_OK;
}

attn_status attn_kvcache_read(attn_ctx *ctx, const attn_kvcache *c, int32_t seq, attn_tensor k,
                              attn_tensor v) {
    attn__ctx_clear(ctx);
    if (!c) return attn_ctx_fail(ctx, ATTN_E_ARG, "cache is NULL");
    if (!seq_ok(c, seq))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "seq %d is not a live sequence of the cache",
                             (int)seq);
    const kv_seq *q = &c->seqs[seq];
    attn_status st;
    int64_t n = -1;
    if (k.data) {
        if ((st = check_rows(ctx, "k", &k, c->Hkv, 0, c->D, 0))) return st;
        n = k.shape[1];
    }
    if (v.data) {
        if ((st = check_rows(ctx, "v", &v, c->Hkv, n, c->Dv, n >= 0))) return st;
        n = v.shape[1];
    }
    if (n > q->len)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "read of %lld positions: the sequence holds %lld",
                             (long long)n, (long long)q->len);
    for (int64_t hk = 0; hk < c->Hkv; hk++)
        for (int64_t t = 0; t < n; t++) {
            if (k.data)
                load_row(c, row_at(c, q, c->kpool, c->D, hk, t), c->D,
                         (float *)k.data + hk * k.stride[0] + t * k.stride[1]);
            if (v.data)
                load_row(c, row_at(c, q, c->vpool, c->Dv, hk, t), c->Dv,
                         (float *)v.data + hk * v.stride[0] + t * v.stride[1]);
        }
    return ATTN_OK;
}

/* ---- attention ----------------------------------------------------------- */

/* Keys per decode kernel call at most (the score scratch is about R x
 * this): a call streams its run's K, then its V, so longer runs mean fewer
 * switches between the two streams (a whole chunk; in fp32 1024-key runs
 * streamed at 85% of the 512-bit probe against 80% at 256,
 * docs/PERFORMANCE.md). */
#define DEC_RUN 2048

typedef struct dec_call {
    const attn_kvcache *c;
    const attn_decode_kernels *kn;
    const attn__sdpa_plan *rp; /* rope of q (rp->rope), else off */
    const attn_kvcache_attend_args *a;
    int64_t B, H, T, G, R; /* G = H / Hkv, R = G * T rows per task */
    float scale;
    int64_t chunk;      /* keys per chunk (a multiple of bs) */
    int64_t *task0;     /* [B*Hkv + 1] first task of each (b, hk) */
    float *part;        /* per task: R rows of (Dv out, then lse) */
} dec_call;

/* Keys query row t of sequence b sees: [0, hi) */
static inline int64_t row_hi(const dec_call *dc, int64_t len, int64_t t) {
    return dc->a->causal ? len - dc->T + t + 1 : len;
}

static void dec_task(const dec_call *dc, int64_t b, int64_t hk, int64_t ci, float *ws) {
    const attn_kvcache *c = dc->c;
    const attn_kvcache_attend_args *a = dc->a;
    const kv_seq *q = &c->seqs[a->seqs[b]];
    const int64_t D = c->D, Dv = c->Dv, R = dc->R, T = dc->T, len = q->len;
    float *qr = ws;                                       /* [R][D] */
    float *acc = qr + attn__round16((size_t)(R * D));     /* [R][Dv] */
    float *m = acc + attn__round16((size_t)(R * Dv));     /* [R] */
    float *l = m + ATTN__DEC_MAXR;                        /* [R] */
    float *s = l + ATTN__DEC_MAXR;                        /* [R][run] */
    double *rt = (double *)(s + attn__round16((size_t)ATTN__DEC_SCRATCH(R, DEC_RUN)));
    int lim[ATTN__DEC_MAXR];
    /* rows: head h = hk*G + g, token t -> r = g*T + t */
    for (int64_t g = 0; g < dc->G; g++) {
        const int64_t h = hk * dc->G + g;
        for (int64_t t = 0; t < T; t++) {
            const float *src = (const float *)a->q.data + b * a->q.stride[0] +
                               h * a->q.stride[1] + t * a->q.stride[2];
            float *dst = qr + (g * T + t) * D;
            if (dc->rp->rope)
                attn__rope_rows(&dc->rp->rs, src, 0, dst, 0, 1, (int)D,
                                attn__rope_qpos(dc->rp, b) + len - T + t, 0, rt);
            else
                memcpy(dst, src, (size_t)D * sizeof(float));
            for (int64_t d = 0; d < D; d++)
                dst[d] *= dc->scale;
        }
    }
    for (int64_t r = 0; r < R; r++)
        m[r] = -INFINITY, l[r] = 0.0f;
    memset(acc, 0, (size_t)(R * Dv) * sizeof(float));
    const int64_t k0 = ci * dc->chunk, k1 = ATTN_MIN(len, k0 + dc->chunk);
    for (int64_t j0 = k0, j1; j0 < k1; j0 = j1) {
        /* a run: this block and the next ones adjacent in the pool, up to
         * DEC_RUN keys (one kernel call: its keys, then its values) */
        j1 = ATTN_MIN(ATTN_MIN(k1, (j0 / c->bs + 1) * c->bs), j0 + DEC_RUN);
        while (j1 < k1 && j1 - j0 < DEC_RUN && q->tab[j1 / c->bs] == q->tab[j1 / c->bs - 1] + 1)
            j1 = ATTN_MIN(ATTN_MIN(k1, j1 + c->bs), j0 + DEC_RUN);
        int any = 0;
        for (int64_t r = 0; r < R; r++) {
            int64_t hi = row_hi(dc, len, r % T);
            lim[r] = (int)ATTN_MAX(0, ATTN_MIN(j1, hi) - j0);
            any |= lim[r] > 0;
        }
        if (!any) continue;
        const char *kp = row_at(c, q, c->kpool, D, hk, j0);
        const char *vp = row_at(c, q, c->vpool, Dv, hk, j0);
        dc->kn->attend(qr, (int)R, (int)D, kp, D, vp, Dv, (int)Dv, c->dt, (int)(j1 - j0), lim, m, l,
                       acc, s);
    }
    float *pt = dc->part + (size_t)(dc->task0[b * c->Hkv + hk] + ci) * (size_t)(R * (Dv + 1));
    for (int64_t r = 0; r < R; r++) {
        float *o = pt + r * (Dv + 1);
        if (m[r] == -INFINITY) {
            memset(o, 0, (size_t)Dv * sizeof(float));
            o[Dv] = -INFINITY;
        } else {
            const float inv = 1.0f / l[r];
            for (int64_t cc = 0; cc < Dv; cc++)
                o[cc] = acc[r * Dv + cc] * inv;
            o[Dv] = m[r] + logf(l[r]);
        }
    }
}

static attn_status attend_decode(attn_ctx *ctx, const attn_kvcache *c,
                                 const attn_kvcache_attend_args *a, const attn__sdpa_plan *rp,
                                 int64_t B, int64_t H, int64_t T, float scale) {
    dec_call dc = {c, &ctx->arch->dec, rp, a, B, H, T, H / c->Hkv, (H / c->Hkv) * T, scale, 0,
                   NULL, NULL};
    /* chunks of whole blocks, about 2048 keys: enough tasks for any thread
     * count at long contexts, few partials at short ones (each task and
     * each partial's merge costs about a microsecond: 1024-key chunks were
     * 1-4% slower per step in F16, docs/PERFORMANCE.md) */
    dc.chunk = ATTN_MAX(1, 2048 / c->bs) * c->bs;
    const int64_t npair = B * c->Hkv;
    dc.task0 = malloc((size_t)(npair + 1) * sizeof *dc.task0);
    if (!dc.task0) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory");
    dc.task0[0] = 0;
    int64_t maxch = 1;
    for (int64_t p = 0; p < npair; p++) {
        const int64_t len = c->seqs[a->seqs[p / c->Hkv]].len;
        const int64_t nch = ATTN_MAX(1, (len + dc.chunk - 1) / dc.chunk);
        dc.task0[p + 1] = dc.task0[p] + nch;
        maxch = ATTN_MAX(maxch, nch);
    }
    const int64_t ntask = dc.task0[npair];
    const size_t pf = (size_t)(dc.R * (c->Dv + 1));
    dc.part = malloc((size_t)ntask * pf * sizeof(float));
    int64_t *tb = malloc((size_t)ntask * 3 * sizeof *tb);
    if (!dc.part || !tb) {
        free(dc.task0), free(dc.part), free(tb);
        return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory for %lld partial results",
                             (long long)ntask);
    }
    for (int64_t p = 0, t = 0; p < npair; p++)
        for (int64_t ci = 0; ci < dc.task0[p + 1] - dc.task0[p]; ci++, t++)
            tb[3 * t] = p / c->Hkv, tb[3 * t + 1] = p % c->Hkv, tb[3 * t + 2] = ci;
    const size_t wsb =
        (attn__round16((size_t)(dc.R * c->D)) + attn__round16((size_t)(dc.R * c->Dv)) +
         2 * ATTN__DEC_MAXR + attn__round16((size_t)ATTN__DEC_SCRATCH(dc.R, DEC_RUN)) +
         attn__round16(2 * attn__rope_tmp_doubles(rp->rope ? rp->rs.rot : 2))) *
        sizeof(float);
    const int nth = (int)ATTN_MAX(1, ATTN_MIN((int64_t)ctx->nthreads, ntask));
    attn_status st = attn__ws_reserve(ctx, nth, wsb);
    if (st) {
        free(dc.task0), free(dc.part), free(tb);
        return st;
    }
    if (nth == 1) {
        for (int64_t t = 0; t < ntask; t++)
            dec_task(&dc, tb[3 * t], tb[3 * t + 1], tb[3 * t + 2], attn__ws_get(ctx, 0));
    } else {
#pragma omp parallel for num_threads(nth) schedule(dynamic, 1)
        for (int64_t t = 0; t < ntask; t++)
            dec_task(&dc, tb[3 * t], tb[3 * t + 1], tb[3 * t + 2],
                     attn__ws_get(ctx, omp_get_thread_num()));
    }
    /* merge each row's chunks in order (attn_sdpa_merge's arithmetic) */
    double *w = malloc((size_t)maxch * sizeof *w + (size_t)c->Dv * sizeof(double));
    float *lv = malloc((size_t)maxch * sizeof *lv);
    const float **ov = malloc((size_t)maxch * sizeof *ov);
    if (!w || !lv || !ov) {
        free(w), free(lv), free(ov), free(dc.task0), free(dc.part), free(tb);
        return attn_ctx_fail(ctx, ATTN_E_NOMEM, "out of memory");
    }
    for (int64_t p = 0; p < npair; p++) {
        const int64_t b = p / c->Hkv, hk = p % c->Hkv, n = dc.task0[p + 1] - dc.task0[p];
        for (int64_t r = 0; r < dc.R; r++) {
            const int64_t h = hk * dc.G + r / T, t = r % T;
            for (int64_t k = 0; k < n; k++) {
                const float *o = dc.part + (size_t)(dc.task0[p] + k) * pf + r * (c->Dv + 1);
                ov[k] = o, lv[k] = o[c->Dv];
            }
            float *out = (float *)a->out.data + b * a->out.stride[0] + h * a->out.stride[1] +
                         t * a->out.stride[2];
            float lse;
            attn__merge_row((int)n, lv, ov, c->Dv, w, w + maxch, out, &lse);
            if (a->lse.data)
                ((float *)a->lse.data)[b * a->lse.stride[0] + h * a->lse.stride[1] +
                                       t * a->lse.stride[2]] = lse;
        }
    }
    free(w), free(lv), free(ov), free(dc.task0), free(dc.part), free(tb);
    return ATTN_OK;
}

/* Prefill: the tiled forward per sequence, K/V gathered through its table. */
static attn_status attend_prefill(attn_ctx *ctx, const attn_kvcache *c,
                                  const attn_kvcache_attend_args *a, int64_t B, int64_t H,
                                  int64_t T) {
    for (int64_t b = 0; b < B; b++) {
        const kv_seq *q = &c->seqs[a->seqs[b]];
        attn_sdpa_args s;
        memset(&s, 0, sizeof s);
        s.q = a->q, s.out = a->out, s.lse = a->lse;
        s.q.data = (float *)a->q.data + b * a->q.stride[0];
        s.out.data = (float *)a->out.data + b * a->out.stride[0];
        s.q.shape[0] = s.out.shape[0] = 1;
        if (a->lse.data) {
            s.lse.data = (float *)a->lse.data + b * a->lse.stride[0];
            s.lse.shape[0] = 1;
        }
        /* k and v views only carry the shapes (never read: the plan's pg is) */
        const int64_t ks[4] = {1, c->Hkv, q->len, c->D}, vs[4] = {1, c->Hkv, q->len, c->Dv};
        s.k = attn_tensor_make(c->kpool, ATTN_F32, 4, ks);
        s.v = attn_tensor_make(c->vpool, ATTN_F32, 4, vs);
        for (int d = 0; d < 3; d++)
            s.k.stride[d] = s.v.stride[d] = 0;
        s.scale = a->scale;
        s.causal = a->causal;
        s.align = ATTN_ALIGN_BOTTOM_RIGHT;
        s.rope = a->rope;
        if (a->rope.rot_dim) {
            s.rope.q_pos = a->rope.q_pos + (a->rope.q_pos_b ? a->rope.q_pos_b[b] : 0) + q->len - T;
            s.rope.q_pos_b = NULL;
            s.rope.k_pos_b = NULL;
        }
        attn__sdpa_plan p;
        attn_status st = attn__sdpa_plan_make(ctx, &s, 0, &p);
        if (st) return st;
        attn__paged pg = {c->kpool, c->vpool, q->tab, c->bs, c->nblocks, c->dt};
        p.pg = &pg;
        if ((st = attn__sdpa_forward_plan(ctx, &p))) return st;
    }
    return ATTN_OK;
}

static attn_status kv_attend(attn_ctx *ctx, const attn_kvcache *c,
                             const attn_kvcache_attend_args *a) {
    attn__ctx_clear(ctx);
    if (!c || !a) return attn_ctx_fail(ctx, ATTN_E_ARG, "cache or args is NULL");
    const attn_tensor *q = &a->q, *o = &a->out;
    if (!q->data || !o->data)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "q and out are required (data is NULL)");
    if (q->dtype != ATTN_F32 || o->dtype != ATTN_F32)
        return attn_ctx_fail(ctx, ATTN_E_DTYPE, "q and out: dtype must be F32");
    if (q->ndim != 4 || o->ndim != 4)
        return attn_ctx_fail(ctx, ATTN_E_SHAPE, "q and out must have 4 dims [B, H, T, D]");
    const int64_t B = q->shape[0], H = q->shape[1], T = q->shape[2];
    if (B < 1 || H < 1 || T < 1 || q->shape[3] != c->D)
        return attn_ctx_fail(ctx, ATTN_E_SHAPE,
                             "q: must be [B >= 1, H >= 1, T >= 1, D = %lld], got [%lld, %lld, "
                             "%lld, %lld]",
                             (long long)c->D, (long long)B, (long long)H, (long long)T,
                             (long long)q->shape[3]);
    if (H % c->Hkv)
        return attn_ctx_fail(ctx, ATTN_E_SHAPE, "H = %lld is not a multiple of the cache's Hkv = %lld",
                             (long long)H, (long long)c->Hkv);
    if (o->shape[0] != B || o->shape[1] != H || o->shape[2] != T || o->shape[3] != c->Dv)
        return attn_ctx_fail(ctx, ATTN_E_SHAPE, "out: must be [%lld, %lld, %lld, %lld]",
                             (long long)B, (long long)H, (long long)T, (long long)c->Dv);
    if (q->stride[3] != 1 || o->stride[3] != 1)
        return attn_ctx_fail(ctx, ATTN_E_LAYOUT, "q, out: last stride must be 1");
    if (a->lse.data) {
        const attn_tensor *l = &a->lse;
        if (l->dtype != ATTN_F32) return attn_ctx_fail(ctx, ATTN_E_DTYPE, "lse: dtype must be F32");
        if (l->ndim != 3 || l->shape[0] != B || l->shape[1] != H || l->shape[2] != T)
            return attn_ctx_fail(ctx, ATTN_E_SHAPE, "lse: must be [%lld, %lld, %lld]",
                                 (long long)B, (long long)H, (long long)T);
    }
    if (!a->seqs) return attn_ctx_fail(ctx, ATTN_E_ARG, "seqs is NULL");
    for (int64_t b = 0; b < B; b++) {
        if (!seq_ok(c, a->seqs[b]))
            return attn_ctx_fail(ctx, ATTN_E_ARG, "seqs[%lld] = %d is not a live sequence",
                                 (long long)b, (int)a->seqs[b]);
        if (c->seqs[a->seqs[b]].len < T)
            return attn_ctx_fail(ctx, ATTN_E_ARG,
                                 "seqs[%lld] holds %lld positions, fewer than T = %lld (append "
                                 "the new tokens' keys first)",
                                 (long long)b, (long long)c->seqs[a->seqs[b]].len, (long long)T);
    }
    if (!isfinite(a->scale)) return attn_ctx_fail(ctx, ATTN_E_ARG, "scale must be finite");
    const float scale = a->scale != 0.0f ? a->scale : (float)(1.0 / sqrt((double)c->D));
    attn__sdpa_plan rp;
    memset(&rp, 0, sizeof rp);
    attn_status st = attn__rope_plan(ctx, &a->rope, B, c->D, &rp);
    if (st) return st;
    if (rp.rope && !a->rope.k_rotated)
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "rope.k_rotated must be set: the cache's keys are stored rotated "
                             "(attn_kvcache_append with the rope)");
    if ((H / c->Hkv) * T <= ATTN__DEC_MAXR)
        return attend_decode(ctx, c, a, &rp, B, H, T, scale);
    return attend_prefill(ctx, c, a, B, H, T);
}

attn_status attn_kvcache_attend(attn_ctx *ctx, const attn_kvcache *c,
                                const attn_kvcache_attend_args *a) {
    if (!ctx) return ATTN_E_ARG;
    if (attn__ctx_enter(ctx)) return ATTN_E_BUSY;
    attn_status st = kv_attend(ctx, c, a);
    attn__ctx_leave(ctx);
    return st;
}

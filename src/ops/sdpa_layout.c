/* Block-sparse layout patterns (attn_sdpa_layout_build): local bands,
 * dilated bands, global blocks, BigBird's random blocks and the Sparse
 * Transformer's strided columns, at block granularity. The kernels only
 * read the resulting block table (ops/sdpa_mask). */
#include "core/internal.h"

#include <string.h>

attn_status attn_sdpa_layout_build(attn_ctx *ctx, const attn_sdpa_layout_spec *sp, int64_t T,
                                   int64_t S, int64_t bq, int64_t bk, uint8_t *blocks) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    if (!sp || !blocks) return attn_ctx_fail(ctx, ATTN_E_ARG, "layout: spec or blocks is NULL");
    if (bq < 1 || bk < 1 || T < 0 || S < 0)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "layout: need bq, bk >= 1 and T, S >= 0");
    if (sp->window < 0 || sp->dilation < 0 || sp->global < 0 || sp->random < 0 || sp->stride < 0)
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "layout: window, dilation, global, random and stride must be >= 0");
    const int64_t nq = (T + bq - 1) / bq, nk = (S + bk - 1) / bk;
    memset(blocks, 0, (size_t)(nq * nk));
    for (int64_t qb = 0; qb < nq; qb++) {
        uint8_t *row = blocks + qb * nk;
        const int64_t d = ATTN_MIN(nk - 1, qb * bq / bk); /* diagonal key block */
        const int64_t last = sp->causal ? d : nk - 1;
        if (sp->use_window) {
            const int64_t step = sp->dilation >= 2 ? sp->dilation : 1;
            for (int64_t off = -sp->window; off <= sp->window; off++)
                if (off % step == 0 && d + off >= 0 && d + off <= last) row[d + off] = 1;
        }
        for (int64_t kb = 0; kb <= last; kb++) {
            if (kb < sp->global || qb < sp->global) row[kb] = 1;
            if (sp->stride > 0 && kb <= d && (d - kb) % sp->stride == sp->stride - 1) row[kb] = 1;
        }
        /* BigBird's random blocks: a seeded draw per query block (rejection
         * of blocks already on, so exactly min(random, free) new ones) */
        int64_t free = 0;
        for (int64_t kb = 0; kb <= last; kb++)
            free += !row[kb];
        int64_t want = ATTN_MIN(sp->random, free);
        for (uint64_t draw = 0; want > 0; draw++) {
            uint32_t u = attn__rng_u32(sp->seed, 0x6b, (uint64_t)qb, draw, 0);
            int64_t kb = (int64_t)(((uint64_t)u * (uint64_t)(last + 1)) >> 32);
            if (!row[kb]) row[kb] = 1, want--;
        }
    }
    return ATTN_OK;
}

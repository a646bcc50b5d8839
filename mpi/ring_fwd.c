/* Ring attention, forward. At step s (0 <= s < P) rank r holds the K/V
 * chunk of rank src = r - s (mod P): it posts the receive of the next chunk
 * from the left and the send of this one to the right, attends its query
 * rows to the chunk in hand (in row blocks, letting MPI progress the
 * transfers between them), merges each block's partial (out, lse) into its
 * result with attn_sdpa_merge, and only then waits for the transfers. */
#include "ring.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* One pair into the rank's result: its partial (out, lse) merged in. */
typedef struct fwd_bufs {
    float *pout, *plse;
} fwd_bufs;

static attn_status attend_pair(ring *r, const ring_visit *v, void *u) {
    const fwd_bufs *w = u;
    attn_sdpa_args *b = v->b;
    const int64_t tq = v->p->tq, ls[3] = {r->B, r->H, tq};
    b->out = attn_tensor_f32_4d(w->pout, r->B, r->H, tq, r->Dv);
    b->lse = attn_tensor_make(w->plse, ATTN_F32, 3, ls);
    attn_status st = attn_sdpa_forward(r->ctx, b);
    if (st) return st;
    attn_tensor outs[2] = {attn__ring_rows(v->a->out, v->q0, tq), b->out};
    attn_tensor lses[2] = {attn__ring_rows(v->a->lse, v->q0, tq), b->lse};
    return attn_sdpa_merge(r->ctx, 2, outs, lses, outs[0], lses[0]);
}

attn_status attn_ring_forward(attn_ctx *ctx, MPI_Comm comm, attn_ring_layout layout,
                              const attn_sdpa_args *a, attn_ring_stats *stats) {
    ring r;
    attn_status st = attn__ring_begin(&r, ctx, comm, layout, a, NULL);
    if (st) {
        if (stats) memset(stats, 0, sizeof *stats);
        return st;
    }
    const int64_t B = r.B, H = r.H, Dv = r.Dv, Tr = r.ql[0] + r.ql[1];
    const int64_t row = B * r.Hkv * (r.D + r.Dv), blk = attn__ring_block(&r);
    float *kv[2] = {malloc(sizeof(float) * (size_t)(row * r.kmax + 1)),
                    malloc(sizeof(float) * (size_t)(row * r.kmax + 1))};
    float *pout = malloc(sizeof(float) * (size_t)(B * H * blk * Dv + 1));
    float *plse = malloc(sizeof(float) * (size_t)(B * H * blk + 1));
    float *own_lse = a->lse.data ? NULL : malloc(sizeof(float) * (size_t)(B * H * Tr + 1));
    int32_t *kvl = malloc(sizeof(int32_t) * (size_t)(B + 1));
    if (!kv[0] || !kv[1] || !pout || !plse || !kvl || (!a->lse.data && !own_lse))
        st = attn_ctx_fail(ctx, ATTN_E_NOMEM, "ring attention: out of memory for the buffers");
    st = attn__ring_agree(&r, st);
    if (!st) {
        double c0 = attn__ring_cpu();
        attn_sdpa_args b = *a; /* the result accumulates in out and lse */
        if (!a->lse.data) {
            int64_t ls[3] = {B, H, Tr};
            b.lse = attn_tensor_make(own_lse, ATTN_F32, 3, ls);
        }
        /* pack the rank's own K/V; start from "no key seen": out 0, lse -inf */
        int64_t Sr = a->k.shape[2];
        attn_tensor K = attn__ring_kview(&r, kv[0], Sr, r.D, 0);
        attn_tensor V = attn__ring_kview(&r, kv[0], Sr, r.Dv, 1);
        for (int64_t x = 0; x < B; x++)
            for (int64_t h = 0; h < r.Hkv; h++)
                for (int64_t j = 0; j < Sr; j++) {
                    memcpy((float *)K.data + (x * r.Hkv + h) * Sr * r.D + j * r.D,
                           (const float *)a->k.data + x * a->k.stride[0] + h * a->k.stride[1] +
                               j * a->k.stride[2],
                           sizeof(float) * (size_t)r.D);
                    memcpy((float *)V.data + (x * r.Hkv + h) * Sr * Dv + j * Dv,
                           (const float *)a->v.data + x * a->v.stride[0] + h * a->v.stride[1] +
                               j * a->v.stride[2],
                           sizeof(float) * (size_t)Dv);
                }
        for (int64_t x = 0; x < B; x++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t i = 0; i < Tr; i++) {
                    float *o = (float *)b.out.data + x * b.out.stride[0] + h * b.out.stride[1] +
                               i * b.out.stride[2];
                    memset(o, 0, sizeof(float) * (size_t)Dv);
                    ((float *)b.lse
                         .data)[x * b.lse.stride[0] + h * b.lse.stride[1] + i * b.lse.stride[2]] =
                        -INFINITY;
                }
        r.st.work_cpu_s += attn__ring_cpu() - c0;
        attn_status cst = ATTN_OK; /* a compute failure: keep the ring going, report at the end */
        int cur = 0;
        for (int s = 0; s < r.P && !st; s++) {
            int src = (r.rank - s + r.P) % r.P, nxt = (src + r.P - 1) % r.P;
            if (s < r.P - 1 && ((st = attn__ring_irecv(&r, RING_KV_RECV, kv[cur ^ 1],
                                                       row * attn__ring_krows(&r, nxt))) ||
                                (st = attn__ring_isend(&r, RING_KV_SEND, kv[cur],
                                                       row * attn__ring_krows(&r, src)))))
                break;
            double t = attn__ring_now(), c1 = attn__ring_cpu();
            if (!cst)
                cst = attn__ring_each_pair(&r, &b, src, kv[cur], kvl, attend_pair,
                                           &(fwd_bufs){pout, plse});
            r.st.compute_s += attn__ring_now() - t;
            r.st.work_cpu_s += attn__ring_cpu() - c1;
            if ((st = attn__ring_wait(&r, RING_KV_RECV)) ||
                (st = attn__ring_wait(&r, RING_KV_SEND)))
                break;
            cur ^= 1;
        }
        if (!st) st = attn__ring_agree(&r, cst);
    }
    free(kv[0]), free(kv[1]), free(pout), free(plse), free(own_lse), free(kvl);
    attn__ring_end(&r);
    if (stats) *stats = r.st;
    return st;
}

/* Ring attention, backward. The K/V chunks travel as in the forward; with
 * each goes the sum of its dk, dv over the ranks it has visited. At step s
 * rank r holds the chunk of src = r - s (mod P): it computes the chunk
 * pairs' gradients with attn_sdpa_backward from the forward's global out and
 * lse (so P = exp(s - lse) and D_i = rowsum(dO_i ∘ out_i) are those of the
 * whole row), adds dq into its own rows, and adds its dk, dv to the sum the
 * left neighbour sent (received during the compute), then sends the sum on.
 * After P steps the sums have visited every rank; one more hop brings each
 * back to its owner. Summation order is fixed by P and the sizes (the
 * incoming sum, then this rank's blocks in row order), so the result is
 * bitwise reproducible, as attn_sdpa_backward is for a fixed thread count. */
#include "ring.h"

#include <stdlib.h>
#include <string.h>

static void add(float *dst, const float *src, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        dst[i] += src[i];
}

/* dst[b,h,rows..] += src (contiguous [B,H,n,w]) for a strided 4-D view */
static void add_rows(const attn_tensor *dst, int64_t r0, const float *src, int64_t B, int64_t H,
                     int64_t n, int64_t w) {
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < n; i++)
                add((float *)dst->data + b * dst->stride[0] + h * dst->stride[1] +
                        (r0 + i) * dst->stride[2],
                    src + ((b * H + h) * n + i) * w, w);
}

static void zero4(const attn_tensor *t) {
    for (int64_t b = 0; b < t->shape[0]; b++)
        for (int64_t h = 0; h < t->shape[1]; h++)
            for (int64_t i = 0; i < t->shape[2]; i++)
                memset((float *)t->data + b * t->stride[0] + h * t->stride[1] + i * t->stride[2], 0,
                       sizeof(float) * (size_t)t->shape[3]);
}

typedef struct bwd_bufs {
    float *tdq, *tdk, *tdv; /* one pair's gradients, contiguous */
    int32_t *kvl;
} bwd_bufs;

/* One pair's gradients: dq added into g->dq, dk and dv into the chunk's
 * packed [dK | dV] (zeroed by the caller). */
typedef struct bwd_visit {
    const attn_sdpa_grads *g;
    attn_tensor dK, dV;
    bwd_bufs *w;
} bwd_visit;

static attn_status grad_pair(ring *r, const ring_visit *v, void *u) {
    const bwd_visit *x = u;
    const attn_sdpa_grads *g = x->g;
    bwd_bufs *w = x->w;
    const int64_t tq = v->p->tq, sk = v->p->sk, q0 = v->q0;
    attn_sdpa_args *b = v->b;
    b->out = attn__ring_rows(v->a->out, q0, tq);
    b->lse = attn__ring_rows(v->a->lse, q0, tq);
    attn_sdpa_grads gp;
    memset(&gp, 0, sizeof gp);
    gp.dout = attn__ring_rows(g->dout, q0, tq);
    gp.dq = attn_tensor_f32_4d(w->tdq, r->B, r->H, tq, r->D);
    gp.dk = attn_tensor_f32_4d(w->tdk, r->B, r->Hkv, sk, r->D);
    gp.dv = attn_tensor_f32_4d(w->tdv, r->B, r->Hkv, sk, r->Dv);
    /* each (row, key) is in one pair only: the library writes its part of
     * dmask, the rest stays as zeroed */
    gp.dmask = attn__ring_mask(g->dmask, q0, tq, v->kpos, sk);
    attn_status st = attn_sdpa_backward(r->ctx, b, &gp);
    if (st) return st;
    add_rows(&g->dq, q0, w->tdq, r->B, r->H, tq, r->D);
    add_rows(&x->dK, v->kloc, w->tdk, r->B, r->Hkv, sk, r->D);
    add_rows(&x->dV, v->kloc, w->tdv, r->B, r->Hkv, sk, r->Dv);
    return ATTN_OK;
}

/* Gradients of every (query block, key chunk of src) pair. */
static attn_status grad_chunk(ring *r, const attn_sdpa_args *a, const attn_sdpa_grads *g, int src,
                              float *kv, float *dkv, bwd_bufs *w) {
    int64_t ks[2], kl[2];
    attn__ring_kchunks(r, src, ks, kl);
    const int64_t Sr = kl[0] + kl[1];
    bwd_visit x = {g, attn__ring_kview(r, dkv, Sr, r->D, 0), attn__ring_kview(r, dkv, Sr, r->Dv, 1),
                   w};
    return attn__ring_each_pair(r, a, src, kv, w->kvl, grad_pair, &x);
}

attn_status attn_ring_backward(attn_ctx *ctx, MPI_Comm comm, attn_ring_layout layout,
                               const attn_sdpa_args *a, const attn_sdpa_grads *g,
                               attn_ring_stats *stats) {
    ring r;
    attn_status st;
    if (!g) {
        if (stats) memset(stats, 0, sizeof *stats);
        return ctx ? attn_ctx_fail(ctx, ATTN_E_ARG, "ring backward: gradients are NULL")
                   : ATTN_E_ARG;
    }
    if ((st = attn__ring_begin(&r, ctx, comm, layout, a, g))) {
        if (stats) memset(stats, 0, sizeof *stats);
        return st;
    }
    const int64_t B = r.B, H = r.H, blk = attn__ring_block(&r);
    const int64_t row = B * r.Hkv * (r.D + r.Dv), n = row * r.kmax + 1;
    float *kv[2] = {malloc(sizeof(float) * (size_t)n), malloc(sizeof(float) * (size_t)n)};
    float *din = malloc(sizeof(float) * (size_t)n), *dsend = malloc(sizeof(float) * (size_t)n);
    float *dmine = malloc(sizeof(float) * (size_t)n);
    bwd_bufs w = {malloc(sizeof(float) * (size_t)(B * H * blk * r.D + 1)),
                  malloc(sizeof(float) * (size_t)(B * r.Hkv * r.kmax * r.D + 1)),
                  malloc(sizeof(float) * (size_t)(B * r.Hkv * r.kmax * r.Dv + 1)),
                  malloc(sizeof(int32_t) * (size_t)(B + 1))};
    if (!kv[0] || !kv[1] || !din || !dsend || !dmine || !w.tdq || !w.tdk || !w.tdv || !w.kvl)
        st = attn_ctx_fail(ctx, ATTN_E_NOMEM, "ring backward: out of memory for the buffers");
    st = attn__ring_agree(&r, st);
    if (!st) {
        double c0 = attn__ring_cpu();
        int64_t Sr = a->k.shape[2];
        attn_tensor K = attn__ring_kview(&r, kv[0], Sr, r.D, 0);
        attn_tensor V = attn__ring_kview(&r, kv[0], Sr, r.Dv, 1);
        for (int64_t x = 0; x < B; x++)
            for (int64_t h = 0; h < r.Hkv; h++)
                for (int64_t j = 0; j < Sr; j++) {
                    memcpy((float *)K.data + ((x * r.Hkv + h) * Sr + j) * r.D,
                           (const float *)a->k.data + x * a->k.stride[0] + h * a->k.stride[1] +
                               j * a->k.stride[2],
                           sizeof(float) * (size_t)r.D);
                    memcpy((float *)V.data + ((x * r.Hkv + h) * Sr + j) * r.Dv,
                           (const float *)a->v.data + x * a->v.stride[0] + h * a->v.stride[1] +
                               j * a->v.stride[2],
                           sizeof(float) * (size_t)r.Dv);
                }
        zero4(&g->dq);
        if (g->dmask.data) zero4(&g->dmask);
        r.st.work_cpu_s += attn__ring_cpu() - c0;
        attn_status cst = ATTN_OK;
        int cur = 0;
        for (int s = 0; s < r.P && !st; s++) {
            int src = (r.rank - s + r.P) % r.P, nxt = (src + r.P - 1) % r.P;
            int64_t nsrc = row * attn__ring_krows(&r, src);
            if (s < r.P - 1 && ((st = attn__ring_irecv(&r, RING_KV_RECV, kv[cur ^ 1],
                                                       row * attn__ring_krows(&r, nxt))) ||
                                (st = attn__ring_isend(&r, RING_KV_SEND, kv[cur], nsrc))))
                break;
            /* the left neighbour's sum for this chunk, sent after its step s-1 */
            if (s > 0 && (st = attn__ring_irecv(&r, RING_DKV_RECV, din, nsrc))) break;
            double t = attn__ring_now(), c1 = attn__ring_cpu();
            memset(dmine, 0, sizeof(float) * (size_t)nsrc);
            if (!cst) cst = grad_chunk(&r, a, g, src, kv[cur], dmine, &w);
            r.st.compute_s += attn__ring_now() - t;
            r.st.work_cpu_s += attn__ring_cpu() - c1;
            if ((s > 0 && (st = attn__ring_wait(&r, RING_DKV_RECV))) ||
                (st = attn__ring_wait(&r, RING_DKV_SEND)))
                break;
            if (s > 0) {
                memcpy(dsend, din, sizeof(float) * (size_t)nsrc);
                add(dsend, dmine, nsrc);
            } else {
                memcpy(dsend, dmine, sizeof(float) * (size_t)nsrc);
            }
            if (r.P > 1 && (st = attn__ring_isend(&r, RING_DKV_SEND, dsend, nsrc))) break;
            if ((st = attn__ring_wait(&r, RING_KV_RECV)) ||
                (st = attn__ring_wait(&r, RING_KV_SEND)))
                break;
            cur ^= 1;
        }
        /* the last hop: the left sends this rank's own chunk, complete */
        const float *fin = dsend;
        if (!st && r.P > 1) {
            if (!(st = attn__ring_irecv(&r, RING_DKV_RECV, din, row * Sr)) &&
                !(st = attn__ring_wait(&r, RING_DKV_RECV)))
                st = attn__ring_wait(&r, RING_DKV_SEND);
            fin = din;
        }
        if (!st) st = attn__ring_agree(&r, cst);
        if (!st) {
            for (int64_t x = 0; x < B; x++)
                for (int64_t h = 0; h < r.Hkv; h++)
                    for (int64_t j = 0; j < Sr; j++) {
                        memcpy((float *)g->dk.data + x * g->dk.stride[0] + h * g->dk.stride[1] +
                                   j * g->dk.stride[2],
                               fin + ((x * r.Hkv + h) * Sr + j) * r.D, sizeof(float) * (size_t)r.D);
                        memcpy((float *)g->dv.data + x * g->dv.stride[0] + h * g->dv.stride[1] +
                                   j * g->dv.stride[2],
                               fin + B * r.Hkv * Sr * r.D + ((x * r.Hkv + h) * Sr + j) * r.Dv,
                               sizeof(float) * (size_t)r.Dv);
                    }
        }
    }
    free(kv[0]), free(kv[1]), free(din), free(dsend), free(dmine);
    free(w.tdq), free(w.tdk), free(w.tdv), free(w.kvl);
    attn__ring_end(&r);
    if (stats) *stats = r.st;
    return st;
}

/* Ring attention: what the forward and the backward share. The layout of
 * rows over ranks, the collective checks (every rank returns the same
 * status, with the first failing rank's message), the band of one chunk
 * pair expressed with the library's own options, and the transfers.
 *
 * A chunk pair (query rows [qa, qa+tq), keys [ka, ka+sk), global positions)
 * sees key j from query i iff (causal)  j <= p(i)  and (window)
 * p(i) - L <= j <= p(i) + R, with p(i) = i + off (off = S - T bottom-right,
 * else 0). In local coordinates i' = i - qa, j' = j - ka the visible set is
 * the band lo <= j' - i' <= hi with d = qa + off - ka: hi = d (causal),
 * hi = min(hi, d + R), lo = d - L. libattn expresses a band that contains
 * the diagonal (lo <= 0 <= hi) as a top-left window (L' = -lo, R' = hi).
 * Any other band is moved onto the diagonal by dropping the rows that see
 * nothing (hi < 0: rows i' < -hi) or the keys nobody sees (lo > 0: keys
 * j' < lo); both cannot happen at once (that band is empty). So no pair ever
 * needs a materialised mask, and pairs wholly visible run with no mask. */
#include "ring.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NO_LO INT64_MIN
#define NO_HI INT64_MAX

double attn__ring_now(void) {
    return MPI_Wtime();
}

double attn__ring_cpu(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

attn_status attn_ring_rows(attn_ring_layout layout, int nranks, int rank, int64_t n,
                           int64_t start[2], int64_t len[2]) {
    if ((layout != ATTN_RING_CONTIGUOUS && layout != ATTN_RING_ZIGZAG) || nranks < 1 || rank < 0 ||
        rank >= nranks || n < 0 || !start || !len)
        return ATTN_E_ARG;
    int64_t m = layout == ATTN_RING_ZIGZAG ? 2 * (int64_t)nranks : nranks;
    int64_t c[2] = {rank, layout == ATTN_RING_ZIGZAG ? m - 1 - rank : -1};
    for (int k = 0; k < 2; k++) {
        if (c[k] < 0) {
            start[k] = n, len[k] = 0;
            continue;
        }
        /* floor(c*n/m) without overflow: n = qm + r */
        int64_t q = n / m, rem = n % m;
        int64_t a = c[k] * q + c[k] * rem / m, b = (c[k] + 1) * q + (c[k] + 1) * rem / m;
        start[k] = a, len[k] = b - a;
    }
    return ATTN_OK;
}

void attn__ring_kchunks(const ring *r, int src, int64_t ks[2], int64_t kl[2]) {
    ring_rows_of(r->layout, r->P, src, r->S, ks, kl);
}

int64_t attn__ring_krows(const ring *r, int src) {
    int64_t ks[2], kl[2];
    attn__ring_kchunks(r, src, ks, kl);
    return kl[0] + kl[1];
}

/* ---- views ---------------------------------------------------------------- */

attn_tensor attn__ring_rows(attn_tensor t, int64_t r0, int64_t n) {
    t.data = (char *)t.data + r0 * t.stride[2] * (int64_t)attn_dtype_size(t.dtype);
    t.shape[2] = n;
    return t;
}

attn_tensor attn__ring_cols(attn_tensor t, int64_t c0, int64_t n) {
    t.data = (char *)t.data + c0 * t.stride[3] * (int64_t)attn_dtype_size(t.dtype);
    t.shape[3] = n;
    return t;
}

attn_tensor attn__ring_mask(attn_tensor m, int64_t r0, int64_t n, int64_t c0, int64_t nc) {
    if (!m.data) return m;
    if (m.shape[2] != 1) m = attn__ring_rows(m, r0, n);
    return attn__ring_cols(m, c0, nc);
}

attn_tensor attn__ring_kview(const ring *r, float *buf, int64_t Sr, int64_t w, int second) {
    if (second) buf += r->B * r->Hkv * Sr * r->D;
    return attn_tensor_f32_4d(buf, r->B, r->Hkv, Sr, w);
}

/* ---- one chunk pair ------------------------------------------------------- */

int attn__ring_pair(const ring *r, const attn_sdpa_args *a, int64_t qa, int64_t tq, int64_t ka,
                    int64_t sk, ring_pair *p) {
    if (tq <= 0 || sk <= 0) return 0;
    int64_t off = a->align == ATTN_ALIGN_BOTTOM_RIGHT ? r->S - r->T : 0;
    int64_t d = qa + off - ka, lo = NO_LO, hi = NO_HI;
    if (a->causal) hi = d;
    if (a->window && a->window_right >= 0 && d + a->window_right < hi) hi = d + a->window_right;
    if (a->window && a->window_left >= 0) lo = d - a->window_left;
    /* j' - i' spans [-(tq-1), sk-1]: a bound outside it binds nothing */
    if (hi != NO_HI && hi >= sk - 1) hi = NO_HI;
    if (lo != NO_LO && lo <= -(tq - 1)) lo = NO_LO;
    if (hi != NO_HI && hi < -(tq - 1)) return 0;
    if (lo != NO_LO && lo > sk - 1) return 0;
    if (lo != NO_LO && hi != NO_HI && lo > hi) return 0;
    p->i0 = 0, p->j0 = 0;
    if (hi != NO_HI && hi < 0) { /* rows i' < -hi see no key here */
        p->i0 = -hi;
        if (lo != NO_LO) lo -= hi;
        hi = 0;
    } else if (lo != NO_LO && lo > 0) { /* keys j' < lo are seen by no row */
        p->j0 = lo;
        if (hi != NO_HI) hi -= lo;
        lo = 0;
    }
    p->tq = tq - p->i0, p->sk = sk - p->j0;
    p->window = lo != NO_LO || hi != NO_HI;
    p->wl = lo == NO_LO ? -1 : -lo;
    p->wr = hi == NO_HI ? -1 : hi;
    return 1;
}

attn_sdpa_args attn__ring_pair_args(const ring *r, const attn_sdpa_args *a, const ring_pair *p,
                                    int64_t kpos, int32_t *kvl) {
    attn_sdpa_args b;
    memset(&b, 0, sizeof b);
    b.scale = a->scale;
    b.softcap = a->softcap;
    b.align = ATTN_ALIGN_TOP_LEFT;
    b.window = p->window;
    b.window_left = p->wl;
    b.window_right = p->wr;
    if (a->kv_len) {
        for (int64_t i = 0; i < r->B; i++) {
            int64_t n = (int64_t)a->kv_len[i] - kpos;
            kvl[i] = (int32_t)(n < 0 ? 0 : n > p->sk ? p->sk : n);
        }
        b.kv_len = kvl;
    }
    return b;
}

/* ---- transfers ------------------------------------------------------------ */

static attn_status mpi_fail(ring *r, int rc, const char *what) {
    char s[MPI_MAX_ERROR_STRING];
    int n = 0;
    if (MPI_Error_string(rc, s, &n) != MPI_SUCCESS) snprintf(s, sizeof s, "error %d", rc);
    return attn_ctx_fail(r->ctx, ATTN_E_IO, "ring attention: %s failed on rank %d: %s", what,
                         r->rank, s);
}

attn_status attn__ring_isend(ring *r, int slot, const float *buf, int64_t n) {
    int rc = MPI_Isend(buf, (int)n, MPI_FLOAT, r->right, slot, r->comm, &r->req[slot]);
    if (rc != MPI_SUCCESS) return mpi_fail(r, rc, "MPI_Isend");
    r->st.bytes_sent += n * (int64_t)sizeof(float);
    return ATTN_OK;
}

attn_status attn__ring_irecv(ring *r, int slot, float *buf, int64_t n) {
    /* a receive is matched by the sender's slot: RING_KV_SEND pairs with
     * RING_KV_RECV, RING_DKV_SEND with RING_DKV_RECV */
    int tag = slot == RING_KV_RECV ? RING_KV_SEND : RING_DKV_SEND;
    int rc = MPI_Irecv(buf, (int)n, MPI_FLOAT, r->left, tag, r->comm, &r->req[slot]);
    return rc == MPI_SUCCESS ? ATTN_OK : mpi_fail(r, rc, "MPI_Irecv");
}

attn_status attn__ring_wait(ring *r, int slot) {
    if (r->req[slot] == MPI_REQUEST_NULL) return ATTN_OK;
    double t = attn__ring_now();
    int rc = MPI_Wait(&r->req[slot], MPI_STATUS_IGNORE);
    r->st.wait_s += attn__ring_now() - t;
    return rc == MPI_SUCCESS ? ATTN_OK : mpi_fail(r, rc, "MPI_Wait");
}

void attn__ring_poke(ring *r) {
    for (int i = 0; i < 4; i++)
        if (r->req[i] != MPI_REQUEST_NULL) {
            int flag;
            (void)MPI_Test(&r->req[i], &flag, MPI_STATUS_IGNORE);
        }
}

/* ---- agreement and checks ------------------------------------------------- */

attn_status attn__ring_agree(ring *r, attn_status st) {
    long long mine[2] = {st != ATTN_OK ? r->rank : r->P, 0}, first[2];
    int rc = MPI_Allreduce(mine, first, 1, MPI_LONG_LONG, MPI_MIN, r->comm);
    if (rc != MPI_SUCCESS) return mpi_fail(r, rc, "MPI_Allreduce");
    if (first[0] == r->P) return ATTN_OK;
    char msg[512];
    int code = st;
    if (first[0] == r->rank) snprintf(msg, sizeof msg, "%s", attn_ctx_last_error(r->ctx));
    rc = MPI_Bcast(msg, sizeof msg, MPI_CHAR, (int)first[0], r->comm);
    if (rc == MPI_SUCCESS) rc = MPI_Bcast(&code, 1, MPI_INT, (int)first[0], r->comm);
    if (rc != MPI_SUCCESS) return mpi_fail(r, rc, "MPI_Bcast");
    msg[sizeof msg - 1] = 0;
    return attn_ctx_fail(r->ctx, (attn_status)code, "rank %lld of %d: %s", first[0], r->P, msg);
}

/* t is F32 with nd dims (4, or 3 for lse: d3 ignored), sizes d0..d3 (-1 = any). */
static attn_status checkn(attn_ctx *ctx, const char *name, const attn_tensor *t, int nd, int64_t d0,
                          int64_t d1, int64_t d2, int64_t d3) {
    if (!t->data) return attn_ctx_fail(ctx, ATTN_E_ARG, "%s: missing (data is NULL)", name);
    if (t->dtype != ATTN_F32)
        return attn_ctx_fail(ctx, ATTN_E_DTYPE, "%s: dtype must be F32", name);
    int64_t want[4] = {d0, d1, d2, d3};
    if (t->ndim != nd)
        return attn_ctx_fail(ctx, ATTN_E_SHAPE, "%s: expected %d dims, got %d", name, nd, t->ndim);
    for (int i = 0; i < nd; i++)
        if (want[i] >= 0 && t->shape[i] != want[i])
            return attn_ctx_fail(ctx, ATTN_E_SHAPE, "%s: dim %d is %lld, expected %lld", name, i,
                                 (long long)t->shape[i], (long long)want[i]);
    if (t->stride[nd - 1] != 1 && t->shape[nd - 1] > 1)
        return attn_ctx_fail(ctx, ATTN_E_LAYOUT, "%s: last stride must be 1", name);
    return ATTN_OK;
}

/* The rank's own inputs: shapes consistent with q, options the ring serves,
 * and the library's own checks of the options on a one-row problem. */
static attn_status check_local(ring *r, const attn_sdpa_args *a, const attn_sdpa_grads *g) {
    attn_ctx *ctx = r->ctx;
    attn_status st;
    if (r->layout != ATTN_RING_CONTIGUOUS && r->layout != ATTN_RING_ZIGZAG)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "ring attention: unknown layout %d", (int)r->layout);
    if (!a) return attn_ctx_fail(ctx, ATTN_E_ARG, "ring attention: arguments are NULL");
    if (a->alibi_slopes)
        return attn_ctx_fail(ctx, ATTN_E_UNSUPPORTED,
                             "ring attention: ALiBi is not supported (its bias depends on the "
                             "absolute positions of query and key)");
    if (a->dropout_p != 0.0f)
        return attn_ctx_fail(ctx, ATTN_E_UNSUPPORTED,
                             "ring attention: dropout is not supported (its mask is a function "
                             "of absolute positions)");
    if (a->q.ndim != 4 || a->k.ndim != 4 || a->v.ndim != 4)
        return attn_ctx_fail(ctx, ATTN_E_SHAPE, "ring attention: q, k, v must be 4-D [B,H,T,D]");
    r->B = a->q.shape[0], r->H = a->q.shape[1], r->D = a->q.shape[3];
    r->Hkv = a->k.shape[1], r->Dv = a->v.shape[3];
    int64_t Tr = a->q.shape[2], Sr = a->k.shape[2];
    if ((st = checkn(ctx, "q", &a->q, 4, -1, -1, -1, -1)) ||
        (st = checkn(ctx, "k", &a->k, 4, r->B, r->Hkv, -1, r->D)) ||
        (st = checkn(ctx, "v", &a->v, 4, r->B, r->Hkv, Sr, -1)) ||
        (st = checkn(ctx, "out", &a->out, 4, r->B, r->H, Tr, r->Dv)))
        return st;
    if (a->lse.data && (st = checkn(ctx, "lse", &a->lse, 3, r->B, r->H, Tr, -1))) return st;
    if (r->Hkv < 1 || r->H % r->Hkv)
        return attn_ctx_fail(ctx, ATTN_E_SHAPE,
                             "ring attention: H = %lld is not a multiple of "
                             "Hkv = %lld",
                             (long long)r->H, (long long)r->Hkv);
    if (a->mask.data) {
        if (a->mask.ndim != 4)
            return attn_ctx_fail(ctx, ATTN_E_SHAPE, "mask: expected 4 dims [B|1,H|1,Tr|1,S]");
        if (a->mask.shape[2] != Tr && a->mask.shape[2] != 1)
            return attn_ctx_fail(ctx, ATTN_E_SHAPE,
                                 "mask: has %lld rows, expected this rank's "
                                 "%lld query rows (or 1)",
                                 (long long)a->mask.shape[2], (long long)Tr);
    }
    if (g) {
        if (!a->lse.data)
            return attn_ctx_fail(ctx, ATTN_E_ARG, "ring backward: lse is required (the forward's)");
        if ((st = checkn(ctx, "dout", &g->dout, 4, r->B, r->H, Tr, r->Dv)) ||
            (st = checkn(ctx, "dq", &g->dq, 4, r->B, r->H, Tr, r->D)) ||
            (st = checkn(ctx, "dk", &g->dk, 4, r->B, r->Hkv, Sr, r->D)) ||
            (st = checkn(ctx, "dv", &g->dv, 4, r->B, r->Hkv, Sr, r->Dv)))
            return st;
        if (g->dmask.data) {
            if (!a->mask.data || a->mask.dtype != ATTN_F32)
                return attn_ctx_fail(ctx, ATTN_E_ARG, "dmask: given without a float mask");
            if (a->mask.shape[2] == 1 && Tr > 1)
                return attn_ctx_fail(ctx, ATTN_E_UNSUPPORTED,
                                     "ring backward: dmask of a mask "
                                     "broadcast over rows is not supported");
            if ((st = checkn(ctx, "dmask", &g->dmask, 4, a->mask.shape[0], a->mask.shape[1],
                             a->mask.shape[2], a->mask.shape[3])))
                return st;
        }
    }
    /* the library's own checks of every option and dtype, on one row */
    if (Tr > 0 && Sr > 0) {
        float o[1024], l[256];
        if (r->B * r->H * r->Dv <= 1024 && r->B * r->H <= 256) {
            attn_sdpa_args b = *a;
            b.q = attn__ring_rows(a->q, 0, 1);
            b.k = attn__ring_rows(a->k, 0, 1);
            b.v = attn__ring_rows(a->v, 0, 1);
            b.out = attn_tensor_f32_4d(o, r->B, r->H, 1, r->Dv);
            int64_t ls[3] = {r->B, r->H, 1};
            b.lse = attn_tensor_make(l, ATTN_F32, 3, ls);
            b.kv_len = NULL;
            b.mask = attn__ring_mask(a->mask, 0, 1, 0, 1);
            if (a->mask.data && a->mask.ndim == 4 && a->mask.shape[3] < 1)
                return attn_ctx_fail(ctx, ATTN_E_SHAPE, "mask: has no key columns");
            if ((st = attn_sdpa_forward(ctx, &b))) return st;
        }
    }
    return ATTN_OK;
}

enum {
    DESC_B,
    DESC_H,
    DESC_HKV,
    DESC_D,
    DESC_DV,
    DESC_CAUSAL,
    DESC_ALIGN,
    DESC_WINDOW,
    DESC_WL,
    DESC_WR,
    DESC_SCALE,
    DESC_SOFTCAP,
    DESC_MASK,
    DESC_MB,
    DESC_MH,
    DESC_MROWS1,
    DESC_KVLEN,
    DESC_KVHASH,
    DESC_LAYOUT,
    DESC_GRADS,
    DESC_DMASK,
    DESC_N
};
static const char *const DESC_NAME[DESC_N] = {"B",           "H",
                                              "Hkv",         "D",
                                              "Dv",          "causal",
                                              "align",       "window",
                                              "window_left", "window_right",
                                              "scale",       "softcap",
                                              "mask dtype",  "mask B",
                                              "mask H",      "mask row broadcast",
                                              "kv_len",      "kv_len values",
                                              "layout",      "backward",
                                              "dmask"};

static void describe(const ring *r, const attn_sdpa_args *a, const attn_sdpa_grads *g,
                     long long *d) {
    uint32_t u;
    d[DESC_B] = r->B, d[DESC_H] = r->H, d[DESC_HKV] = r->Hkv, d[DESC_D] = r->D, d[DESC_DV] = r->Dv;
    d[DESC_CAUSAL] = a->causal != 0, d[DESC_ALIGN] = a->align, d[DESC_WINDOW] = a->window != 0;
    d[DESC_WL] = a->window ? a->window_left : 0, d[DESC_WR] = a->window ? a->window_right : 0;
    memcpy(&u, &a->scale, 4), d[DESC_SCALE] = u;
    memcpy(&u, &a->softcap, 4), d[DESC_SOFTCAP] = u;
    d[DESC_MASK] = a->mask.data ? (long long)a->mask.dtype : -1;
    d[DESC_MB] = a->mask.data ? a->mask.shape[0] : 0;
    d[DESC_MH] = a->mask.data ? a->mask.shape[1] : 0;
    d[DESC_MROWS1] = a->mask.data ? a->mask.shape[2] == 1 : 0;
    d[DESC_KVLEN] = a->kv_len != NULL;
    uint64_t h = 1469598103934665603ull; /* FNV-1a over the values */
    for (int64_t i = 0; a->kv_len && i < r->B; i++)
        h = (h ^ (uint32_t)a->kv_len[i]) * 1099511628211ull;
    d[DESC_KVHASH] = (long long)(h >> 1);
    d[DESC_LAYOUT] = r->layout, d[DESC_GRADS] = g != NULL;
    d[DESC_DMASK] = g && g->dmask.data;
}

attn_status attn__ring_begin(ring *r, attn_ctx *ctx, MPI_Comm comm, attn_ring_layout layout,
                             const attn_sdpa_args *a, const attn_sdpa_grads *g) {
    memset(r, 0, sizeof *r);
    for (int i = 0; i < 4; i++)
        r->req[i] = MPI_REQUEST_NULL;
    r->comm = MPI_COMM_NULL;
    if (!ctx) return ATTN_E_ARG;
    r->ctx = ctx;
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (!init || fin)
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "ring attention: MPI is %s (the caller must call "
                             "MPI_Init first)",
                             fin ? "already finalised" : "not initialised");
    if (comm == MPI_COMM_NULL)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "ring attention: the communicator is MPI_COMM_NULL");
    int rc = MPI_Comm_dup(comm, &r->comm);
    if (rc != MPI_SUCCESS) return mpi_fail(r, rc, "MPI_Comm_dup");
    MPI_Comm_set_errhandler(r->comm, MPI_ERRORS_RETURN);
    MPI_Comm_size(r->comm, &r->P);
    MPI_Comm_rank(r->comm, &r->rank);
    r->left = (r->rank + r->P - 1) % r->P, r->right = (r->rank + 1) % r->P;
    r->layout = layout;
    r->t0 = attn__ring_now();

    attn_status st = check_local(r, a, g);
    /* row counts of every rank give T and S */
    long long mine[2] = {st ? -1 : a->q.shape[2], st ? -1 : a->k.shape[2]};
    long long *all = malloc(sizeof(long long) * 2 * (size_t)r->P);
    if (!all) {
        st = attn_ctx_fail(ctx, ATTN_E_NOMEM, "ring attention: out of memory");
        mine[0] = mine[1] = -1;
    }
    long long tmp[2];
    rc = MPI_Allgather(mine, 2, MPI_LONG_LONG, all ? all : tmp, 2, MPI_LONG_LONG, r->comm);
    if (rc != MPI_SUCCESS) {
        free(all);
        st = mpi_fail(r, rc, "MPI_Allgather");
        attn__ring_end(r);
        return st;
    }
    if (!st) {
        int bad = 0;
        for (int i = 0; i < r->P; i++) {
            if (all[2 * i] < 0) bad = 1;
            r->T += all[2 * i], r->S += all[2 * i + 1];
        }
        int64_t s2[2], l2[2];
        if (bad) {
            /* another rank failed its own checks: the agreement below tells */
        } else if (r->T < r->P || r->S < r->P) {
            st = attn_ctx_fail(ctx, ATTN_E_ARG,
                               "ring attention: %d ranks need at least one query row and one key "
                               "each (T = %lld, S = %lld)",
                               r->P, (long long)r->T, (long long)r->S);
        } else {
            for (int i = 0; i < r->P && !st; i++) {
                ring_rows_of(layout, r->P, i, r->T, s2, l2);
                int64_t tq = l2[0] + l2[1];
                ring_rows_of(layout, r->P, i, r->S, s2, l2);
                int64_t sk = l2[0] + l2[1];
                if (sk > r->kmax) r->kmax = sk;
                if (all[2 * i] != tq || all[2 * i + 1] != sk)
                    st = attn_ctx_fail(ctx, ATTN_E_ARG,
                                       "ring attention: rank %d holds %lld query rows and %lld "
                                       "keys, but its share of T = %lld, S = %lld is %lld and "
                                       "%lld (attn_ring_rows)",
                                       i, all[2 * i], all[2 * i + 1], (long long)r->T,
                                       (long long)r->S, (long long)tq, (long long)sk);
            }
            ring_rows_of(layout, r->P, r->rank, r->T, r->qs, r->ql);
        }
        if (!st && a->kv_len)
            for (int64_t b = 0; b < r->B; b++)
                if (a->kv_len[b] < 0 || a->kv_len[b] > r->S) {
                    st =
                        attn_ctx_fail(ctx, ATTN_E_ARG, "kv_len[%lld] = %d is outside [0, S = %lld]",
                                      (long long)b, (int)a->kv_len[b], (long long)r->S);
                    break;
                }
        if (!st && a->mask.data && a->mask.shape[3] != r->S)
            st = attn_ctx_fail(ctx, ATTN_E_SHAPE, "mask: has %lld key columns, expected S = %lld",
                               (long long)a->mask.shape[3], (long long)r->S);
        if (!st && r->B * r->Hkv * r->kmax * (r->D + r->Dv) > 2147483647LL)
            st = attn_ctx_fail(ctx, ATTN_E_UNSUPPORTED,
                               "ring attention: a K/V chunk of more than "
                               "2^31-1 floats; use more ranks");
    }
    free(all);
    /* the same options and sizes on every rank as on rank 0 */
    long long d[DESC_N], d0[DESC_N];
    memset(d, 0, sizeof d);
    if (!st) describe(r, a, g, d);
    memcpy(d0, d, sizeof d);
    rc = MPI_Bcast(d0, DESC_N, MPI_LONG_LONG, 0, r->comm);
    if (rc != MPI_SUCCESS) {
        st = mpi_fail(r, rc, "MPI_Bcast");
        attn__ring_end(r);
        return st;
    }
    for (int i = 0; i < DESC_N && !st; i++)
        if (d[i] != d0[i])
            st = attn_ctx_fail(ctx, ATTN_E_ARG,
                               "ring attention: %s differs from rank 0's (%lld "
                               "here, %lld on rank 0)",
                               DESC_NAME[i], d[i], d0[i]);
    st = attn__ring_agree(r, st);
    if (st) attn__ring_end(r);
    return st;
}

void attn__ring_end(ring *r) {
    for (int i = 0; i < 4; i++)
        if (r->req[i] != MPI_REQUEST_NULL) {
            MPI_Cancel(&r->req[i]);
            MPI_Request_free(&r->req[i]);
        }
    if (r->comm != MPI_COMM_NULL) MPI_Comm_free(&r->comm);
    r->st.total_s = attn__ring_now() - r->t0;
    r->st.steps = r->P;
}

/* Rows per compute block: a few blocks per chunk, so MPI is called often
 * enough to move the next chunk while this one is computed. */
int64_t attn__ring_block(const ring *r) {
    int64_t m = r->ql[0] > r->ql[1] ? r->ql[0] : r->ql[1];
    int64_t b = (m + 3) / 4;
    return b < 128 ? (m < 128 ? (m > 0 ? m : 1) : 128) : b;
}

attn_status attn__ring_each_pair(ring *r, const attn_sdpa_args *a, int src, float *kv, int32_t *kvl,
                                 ring_pair_fn fn, void *u) {
    int64_t ks[2], kl[2], blk = attn__ring_block(r);
    attn__ring_kchunks(r, src, ks, kl);
    const int64_t Sr = kl[0] + kl[1];
    attn_tensor K = attn__ring_kview(r, kv, Sr, r->D, 0), V = attn__ring_kview(r, kv, Sr, r->Dv, 1);
    attn_status st = ATTN_OK;
    for (int c = 0; c < 2 && !st; c++)
        for (int64_t b0 = 0; b0 < r->ql[c] && !st; b0 += blk) {
            int64_t tq = r->ql[c] - b0 < blk ? r->ql[c] - b0 : blk;
            int64_t qloc = (c ? r->ql[0] : 0) + b0;
            for (int kc = 0; kc < 2 && !st; kc++) {
                ring_pair p;
                if (!attn__ring_pair(r, a, r->qs[c] + b0, tq, ks[kc], kl[kc], &p)) continue;
                ring_visit v = {a, &p, NULL, qloc + p.i0, (kc ? kl[0] : 0) + p.j0, ks[kc] + p.j0};
                attn_sdpa_args b = attn__ring_pair_args(r, a, &p, v.kpos, kvl);
                b.q = attn__ring_rows(a->q, v.q0, p.tq);
                b.k = attn__ring_rows(K, v.kloc, p.sk);
                b.v = attn__ring_rows(V, v.kloc, p.sk);
                b.mask = attn__ring_mask(a->mask, v.q0, p.tq, v.kpos, p.sk);
                v.b = &b;
                st = fn(r, &v, u);
                attn__ring_poke(r);
            }
        }
    return st;
}

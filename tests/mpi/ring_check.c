/* Ring attention against the float64 oracle, run under mpirun by
 * tests/test_ring.sh with 1, 2 and 4 ranks. Every rank builds the same whole
 * problem from the test seed, runs attn_ring_forward / attn_ring_backward on
 * its own rows, and checks them against the oracle on the whole problem
 * with the project's rule (max error <= 2x a plain fp32 implementation's
 * + 1e-6; tests/support/attn_test.h); the backward twice, bitwise. Then the
 * bad inputs: every rank must return the same status. A rank prints
 * "FAIL ..." and the program exits 1 on any failure (mpirun then fails).
 *
 *   ring_check            the cases (MPI_Init inside)
 *   ring_check --no-init  attn_ring_forward without MPI_Init: ATTN_E_ARG */
#include <attn/mpi.h>

/* attn_ring_rows for arguments already checked (an error gives no rows) */
static inline void ring_rows_of(attn_ring_layout l, int P, int rank, int64_t n, int64_t st[2],
                                int64_t len[2]) {
    if (attn_ring_rows(l, P, rank, n, st, len)) st[0] = st[1] = len[0] = len[1] = 0;
}

#include "at_sdpa_bwd.h"
#include "attn_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int P, rank, fails;
static attn_ctx *ctx;

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        fprintf(stderr, "FAIL rank %d: ", rank);                                                   \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fputc('\n', stderr);                                                                       \
        fails++;                                                                                   \
    } while (0)

/* The rank's rows (chunks st/len of dim 2) of a 4-D view, contiguous. */
static int gather(const attn_tensor *full, const int64_t st[2], const int64_t len[2], at_buf *out) {
    int64_t sh[4] = {full->shape[0], full->shape[1], len[0] + len[1], full->shape[3]};
    if (full->shape[2] == 1) sh[2] = 1; /* a broadcast row stays one row */
    if (at_buf_alloc(out, full->dtype, 4, sh, NULL, 0)) return -1;
    size_t es = attn_dtype_size(full->dtype);
    for (int64_t b = 0; b < sh[0]; b++)
        for (int64_t h = 0; h < sh[1]; h++) {
            int64_t r = 0;
            for (int c = 0; c < 2; c++)
                for (int64_t i = 0; i < len[c] && (full->shape[2] != 1 || r == 0); i++, r++) {
                    int64_t src[4] = {b, h, full->shape[2] == 1 ? 0 : st[c] + i, 0};
                    int64_t dst[4] = {b, h, r, 0};
                    memcpy(at_ptr(&out->t, dst), at_ptr(full, src), es * (size_t)sh[3]);
                }
        }
    return 0;
}

static attn_tensor rows(attn_tensor t, int64_t r0, int64_t n) {
    t.data = (char *)t.data + r0 * t.stride[2] * (int64_t)attn_dtype_size(t.dtype);
    t.shape[2] = n;
    return t;
}

/* Check local rows (rank layout) of fast against the whole oracle/naives. */
static void check_rows(const char *what, const char *label, uint64_t seed, const attn_tensor *fast,
                       const attn_tensor *oracle, at_buf *naive, int nn, const int64_t st[2],
                       const int64_t len[2]) {
    int64_t loc = 0;
    for (int c = 0; c < 2; c++) {
        if (!len[c]) continue;
        attn_tensor f = rows(*fast, loc, len[c]), o = rows(*oracle, st[c], len[c]);
        attn_tensor nv[AT_NAIVE_ORDERS];
        const attn_tensor *np[AT_NAIVE_ORDERS];
        for (int k = 0; k < nn; k++)
            nv[k] = rows(naive[k].t, st[c], len[c]), np[k] = &nv[k];
        at_stats s;
        if (!at_check_n(what, label, seed, &f, &o, np, nn, &s))
            FAIL("%s: %s rows [%lld, +%lld)", label, what, (long long)st[c], (long long)len[c]);
        loc += len[c];
    }
}

static attn_tensor lse_view(float *p, int64_t B, int64_t H, int64_t T) {
    int64_t s[3] = {B, H, T};
    return attn_tensor_make(p, ATTN_F32, 3, s);
}

/* lse [B,H,T] as a 4-D [B,H,T,1] view, so rows() and gather() serve it too */
static attn_tensor as4(attn_tensor t) {
    t.ndim = 4, t.shape[3] = 1, t.stride[3] = 1;
    return t;
}

static void run_case(const char *label, at_case c, attn_ring_layout layout, uint64_t id) {
    at_rng r = at_rng_for(id);
    at_sdpa x;
    if (at_sdpa_build(&x, &c, &r)) {
        FAIL("%s: out of memory", label);
        return;
    }
    attn_sdpa_args *a = &x.a;
    int64_t B = c.B, H = c.H, Hkv = c.Hkv ? c.Hkv : c.H, D = c.D, Dv = c.Dv ? c.Dv : c.D;
    int64_t qs[2], ql[2], ks[2], kl[2];
    if (attn_ring_rows(layout, P, rank, c.T, qs, ql) ||
        attn_ring_rows(layout, P, rank, c.S, ks, kl)) {
        FAIL("%s: attn_ring_rows", label);
        return;
    }
    int64_t Tr = ql[0] + ql[1], Sr = kl[0] + kl[1];
    /* whole-problem oracle and plain fp32 references */
    at_buf oo, ol, no[AT_NAIVE_ORDERS], nl[AT_NAIVE_ORDERS], lo, ll;
    at_buf_f32(&oo, B, H, c.T, Dv), at_buf_f32(&ol, B, H, c.T, 1);
    attn_sdpa_args ra = *a;
    ra.out = oo.t, ra.lse = lse_view(ol.mem, B, H, c.T);
    if (attn_sdpa_forward_ref(ctx, &ra)) FAIL("%s: oracle: %s", label, attn_ctx_last_error(ctx));
    for (int k = 0; k < AT_NAIVE_ORDERS; k++) {
        at_buf_f32(&no[k], B, H, c.T, Dv), at_buf_f32(&nl[k], B, H, c.T, 1);
        attn_sdpa_args na = *a;
        na.out = no[k].t, na.lse = lse_view(nl[k].mem, B, H, c.T);
        if (at_naive32_forward_order(ctx, &na, k)) FAIL("%s: naive", label);
    }
    /* the rank's rows */
    at_buf q, k, v, m = {0};
    gather(&a->q, qs, ql, &q), gather(&a->k, ks, kl, &k), gather(&a->v, ks, kl, &v);
    if (a->mask.data) gather(&a->mask, qs, ql, &m);
    at_buf_f32(&lo, B, H, Tr, Dv), at_buf_f32(&ll, B, H, Tr, 1);
    attn_sdpa_args la = *a;
    la.q = q.t, la.k = k.t, la.v = v.t, la.mask = a->mask.data ? m.t : (attn_tensor){0};
    la.out = lo.t, la.lse = lse_view(ll.mem, B, H, Tr);
    attn_ring_stats rs;
    attn_status s = attn_ring_forward(ctx, MPI_COMM_WORLD, layout, &la, &rs);
    if (s) {
        FAIL("%s: attn_ring_forward: %s", label, attn_ctx_last_error(ctx));
    } else {
        check_rows("out", label, r.seed, &lo.t, &oo.t, no, AT_NAIVE_ORDERS, qs, ql);
        attn_tensor l4 = as4(la.lse), o4 = as4(lse_view(ol.mem, B, H, c.T));
        at_buf nl4[AT_NAIVE_ORDERS];
        for (int i = 0; i < AT_NAIVE_ORDERS; i++)
            nl4[i] = nl[i], nl4[i].t = as4(lse_view(nl[i].mem, B, H, c.T));
        check_rows("lse", label, r.seed, &l4, &o4, nl4, AT_NAIVE_ORDERS, qs, ql);
    }

    /* backward: oracle and naive on the whole problem */
    at_grads gr, gn;
    int dm = a->mask.data && a->mask.dtype == ATTN_F32;
    at_grads_alloc(&gr, &ra, AT_BHTD, dm, &r);
    at_grads_alloc(&gn, &ra, AT_BHTD, dm, &r);
    gn.g.dout = gr.g.dout;
    if (attn_sdpa_backward_ref(ctx, &ra, &gr.g))
        FAIL("%s: oracle bwd: %s", label, attn_ctx_last_error(ctx));
    if (at_naive32_backward(ctx, &ra, &gn.g)) FAIL("%s: naive bwd", label);
    at_buf dout, dq[2], dk[2], dv[2], dmk[2] = {{0}, {0}};
    gather(&gr.g.dout, qs, ql, &dout);
    for (int t = 0; t < 2; t++) {
        at_buf_f32(&dq[t], B, H, Tr, D), at_buf_f32(&dk[t], B, Hkv, Sr, D);
        at_buf_f32(&dv[t], B, Hkv, Sr, Dv);
        if (dm) at_buf_alloc(&dmk[t], ATTN_F32, 4, m.t.shape, NULL, 0);
    }
    for (int t = 0; t < 2 && !s; t++) {
        attn_sdpa_grads g = {.dout = dout.t, .dq = dq[t].t, .dk = dk[t].t, .dv = dv[t].t};
        if (dm) g.dmask = dmk[t].t;
        if (attn_ring_backward(ctx, MPI_COMM_WORLD, layout, &la, &g, NULL)) {
            FAIL("%s: attn_ring_backward: %s", label, attn_ctx_last_error(ctx));
            break;
        }
        if (t == 0) {
            check_rows("dq", label, r.seed, &dq[0].t, &gr.g.dq, &gn.dq, 1, qs, ql);
            check_rows("dk", label, r.seed, &dk[0].t, &gr.g.dk, &gn.dk, 1, ks, kl);
            check_rows("dv", label, r.seed, &dv[0].t, &gr.g.dv, &gn.dv, 1, ks, kl);
            if (dm)
                check_rows("dmask", label, r.seed, &dmk[0].t, &gr.g.dmask, &gn.dmask, 1, qs, ql);
        } else if (!at_bitwise_equal("dq", label, &dq[0].t, &dq[1].t) ||
                   !at_bitwise_equal("dk", label, &dk[0].t, &dk[1].t) ||
                   !at_bitwise_equal("dv", label, &dv[0].t, &dv[1].t)) {
            FAIL("%s: backward not reproducible", label);
        }
    }
    if (at_verbose() && rank == 0)
        printf("ok %s (P=%d, %s)\n", label, P,
               layout == ATTN_RING_ZIGZAG ? "zigzag" : "contiguous");
    for (int t = 0; t < 2; t++)
        at_buf_free(&dq[t]), at_buf_free(&dk[t]), at_buf_free(&dv[t]), at_buf_free(&dmk[t]);
    at_buf_free(&dout), at_grads_free(&gr), at_grads_free(&gn);
    at_buf_free(&q), at_buf_free(&k), at_buf_free(&v), at_buf_free(&m);
    at_buf_free(&lo), at_buf_free(&ll), at_buf_free(&oo), at_buf_free(&ol);
    for (int i = 0; i < AT_NAIVE_ORDERS; i++)
        at_buf_free(&no[i]), at_buf_free(&nl[i]);
    at_sdpa_free(&x);
}

/* Bad input: the same status on every rank, out untouched. */
static void expect(const char *label, attn_status got, attn_status want, const char *needle) {
    attn_status all = got;
    if (got != want)
        FAIL("%s: status %d, expected %d (%s)", label, got, want, attn_ctx_last_error(ctx));
    else if (needle && !strstr(attn_ctx_last_error(ctx), needle))
        FAIL("%s: message '%s' lacks '%s'", label, attn_ctx_last_error(ctx), needle);
    (void)all;
}

static void bad_inputs(void) {
    int64_t B = 1, H = 2, T = 8, D = 4;
    int64_t qs[2], ql[2];
    ring_rows_of(ATTN_RING_CONTIGUOUS, P, rank, T, qs, ql);
    int64_t Tr = ql[0] + ql[1];
    float *buf = calloc((size_t)(4 * B * H * (T + 1) * D), sizeof(float));
    float *out = buf + 3 * B * H * (T + 1) * D;
    attn_sdpa_args a = {0};
    a.q = attn_tensor_f32_4d(buf, B, H, Tr, D);
    a.k = attn_tensor_f32_4d(buf + B * H * (T + 1) * D, B, H, Tr, D);
    a.v = attn_tensor_f32_4d(buf + 2 * B * H * (T + 1) * D, B, H, Tr, D);
    a.out = attn_tensor_f32_4d(out, B, H, Tr, D);
    for (int64_t i = 0; i < B * H * Tr * D; i++)
        out[i] = AT_SENTINEL;
    float slopes[2] = {0.5f, 0.25f};
    attn_sdpa_args b = a;
    b.alibi_slopes = slopes;
    expect("alibi", attn_ring_forward(ctx, MPI_COMM_WORLD, ATTN_RING_CONTIGUOUS, &b, NULL),
           ATTN_E_UNSUPPORTED, "ALiBi");
    b = a;
    b.dropout_p = 0.1f;
    expect("dropout", attn_ring_forward(ctx, MPI_COMM_WORLD, ATTN_RING_CONTIGUOUS, &b, NULL),
           ATTN_E_UNSUPPORTED, "dropout");
    b = a;
    b.window = 1, b.window_left = -3, b.window_right = 0;
    expect("window -3", attn_ring_forward(ctx, MPI_COMM_WORLD, ATTN_RING_CONTIGUOUS, &b, NULL),
           ATTN_E_ARG, "window");
    b = a;
    b.scale = NAN;
    expect("scale NaN", attn_ring_forward(ctx, MPI_COMM_WORLD, ATTN_RING_CONTIGUOUS, &b, NULL),
           ATTN_E_ARG, NULL);
    expect("layout 7", attn_ring_forward(ctx, MPI_COMM_WORLD, (attn_ring_layout)7, &a, NULL),
           ATTN_E_ARG, "layout");
    expect("null comm", attn_ring_forward(ctx, MPI_COMM_NULL, ATTN_RING_CONTIGUOUS, &a, NULL),
           ATTN_E_ARG, "MPI_COMM_NULL");
    if (P > 1) {
        /* options that differ between ranks: rank 1's causal */
        b = a;
        b.causal = rank == 1;
        expect("differ", attn_ring_forward(ctx, MPI_COMM_WORLD, ATTN_RING_CONTIGUOUS, &b, NULL),
               ATTN_E_ARG, "rank 1 of");
        /* a rank holding other rows than its share */
        b = a;
        int64_t moved = rank == 0 ? 1 : rank == 1 ? -1 : 0; /* same T, other shares */
        b.q.shape[2] = b.out.shape[2] = Tr + moved;
        expect("share", attn_ring_forward(ctx, MPI_COMM_WORLD, ATTN_RING_CONTIGUOUS, &b, NULL),
               ATTN_E_ARG, "share");
        /* more ranks than rows: rank 0 holds the only row */
        b = a;
        b.q.shape[2] = b.out.shape[2] = b.k.shape[2] = b.v.shape[2] = rank == 0;
        expect("P > T", attn_ring_forward(ctx, MPI_COMM_WORLD, ATTN_RING_CONTIGUOUS, &b, NULL),
               ATTN_E_ARG, "at least one");
        /* one rank's bad shape reaches every rank */
        b = a;
        if (rank == 0) b.v.shape[3] = D + 1;
        expect("shape", attn_ring_forward(ctx, MPI_COMM_WORLD, ATTN_RING_CONTIGUOUS, &b, NULL),
               ATTN_E_SHAPE, "rank 0 of");
    }
    for (int64_t i = 0; i < B * H * Tr * D; i++)
        if (out[i] != AT_SENTINEL) {
            FAIL("bad inputs: out written on a failed call");
            break;
        }
    free(buf);
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--no-init")) {
        attn_ctx *c;
        if (attn_ctx_create(&c, 1)) return 1;
        float z[4] = {0};
        attn_sdpa_args a = {0};
        a.q = a.k = a.v = a.out = attn_tensor_f32_4d(z, 1, 1, 1, 4);
        attn_status s = attn_ring_forward(c, MPI_COMM_WORLD, ATTN_RING_CONTIGUOUS, &a, NULL);
        int ok = s == ATTN_E_ARG && strstr(attn_ctx_last_error(c), "not initialised");
        printf("%s: without MPI_Init: %s\n", ok ? "ok" : "FAIL", attn_ctx_last_error(c));
        attn_ctx_free(c);
        return ok ? 0 : 1;
    }
    MPI_Init(&argc, &argv);
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (attn_ctx_create(&ctx, 1)) {
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    const attn_ring_layout L[2] = {ATTN_RING_CONTIGUOUS, ATTN_RING_ZIGZAG};
    struct {
        const char *label;
        at_case c;
    } cases[] = {
        {"plain", {.B = 2, .H = 2, .T = 37, .S = 37, .D = 16}},
        {"causal GQA Dv",
         {.B = 1, .H = 4, .Hkv = 2, .T = 50, .S = 50, .D = 16, .Dv = 8, .causal = 1}},
        {"causal uneven", {.B = 2, .H = 2, .T = 45, .S = 45, .D = 8, .causal = 1}},
        {"causal bottom-right MQA T<S",
         {.B = 1,
          .H = 3,
          .Hkv = 1,
          .T = 23,
          .S = 61,
          .D = 8,
          .causal = 1,
          .align = ATTN_ALIGN_BOTTOM_RIGHT}},
        {"causal top-left T>S", {.B = 1, .H = 2, .T = 61, .S = 23, .D = 8, .causal = 1}},
        {"window 5,3", {.B = 1, .H = 2, .T = 64, .S = 64, .D = 8, .window = 1, .wl = 5, .wr = 3}},
        {"window 7,-1 causal bottom-right",
         {.B = 1,
          .H = 2,
          .T = 40,
          .S = 70,
          .D = 8,
          .causal = 1,
          .window = 1,
          .wl = 7,
          .wr = -1,
          .align = ATTN_ALIGN_BOTTOM_RIGHT}},
        {"kv_len bool mask",
         {.B = 3,
          .H = 2,
          .T = 33,
          .S = 41,
          .D = 8,
          .kv_len = 1,
          .mask_dtype = ATTN_BOOL,
          .mask_bcast = AT_MASK_BHTS}},
        {"float mask dmask softcap causal",
         {.B = 2,
          .H = 2,
          .T = 36,
          .S = 36,
          .D = 8,
          .causal = 1,
          .mask_dtype = ATTN_F32,
          .mask_bcast = AT_MASK_1HTS,
          .mask_ninf = 0.1f,
          .softcap = 5.0f}},
    };
    uint64_t id = 9100;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int l = 0; l < 2; l++) {
            if (cases[i].c.T < P || cases[i].c.S < P) continue;
            char label[128];
            snprintf(label, sizeof label, "%s, P=%d %s", cases[i].label, P,
                     l ? "zigzag" : "contiguous");
            run_case(label, cases[i].c, L[l], id++);
        }
    bad_inputs();
    int all = 0;
    MPI_Allreduce(&fails, &all, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0)
        printf("%s: ring attention on %d rank(s), %d failure(s)\n", all ? "FAIL" : "ok", P, all);
    attn_ctx_free(ctx);
    MPI_Finalize();
    return all ? 1 : 0;
}

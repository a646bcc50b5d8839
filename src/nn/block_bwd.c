/* Training of the transformer pieces (see block.h, "Training"): forwards
 * that keep their activations, and the backwards beside them.
 *
 * A layer is a chain of residual sub-blocks, each an attention or a
 * feed-forward branch with its LayerNorm:
 *   pre-LN:   x = x + f(LN(x))        (GPT-2, ViT, the decoder layer)
 *   post-LN:  x = LN(x + f(x))        (BERT)
 * so the layer, the decoder layer and any later arrangement are sequences
 * of the two sub-blocks below, run forward in order and backward in
 * reverse. Each backward quotes the forward line it differentiates. */
#include "nn/block.h"

#include <math.h>
#include <string.h>

/* ---- carving one float block into views -------------------------------- */

/* Views start on 64-byte boundaries (the GEMMs like aligned rows). */
static int64_t pad16(int64_t n) {
    return (n + 15) & ~(int64_t)15;
}

typedef struct carver {
    float *mem; /* NULL: only count */
    int64_t used;
} carver;

static float *carve(carver *c, int64_t n) {
    float *p = c->mem ? c->mem + c->used : NULL;
    c->used += pad16(n);
    return p;
}

static int64_t qkv_width(const attn__mha_block *m, int cross) {
    return cross ? m->E : m->E + 2 * m->KV;
}

static void carve_attn(carver *c, const attn__mha_block *m, int64_t B, int64_t T, int64_t S,
                       int cross, attn__attn_act *A) {
    const int64_t N = B * T, E = m->E;
    A->x = carve(c, N * E);
    A->ln_in = carve(c, N * E);
    A->mean = carve(c, N);
    A->rstd = carve(c, N);
    A->qkv = carve(c, N * qkv_width(m, cross));
    A->kv = cross ? carve(c, B * S * 2 * m->KV) : NULL;
    A->o = carve(c, N * E);
    A->lse = carve(c, B * m->heads.H * T);
}

static void carve_ffn(carver *c, const attn__ffn *f, int64_t N, attn__ffn_act *F) {
    memset(F, 0, sizeof *F);
    if (!f->w1) return;
    F->x = carve(c, N * f->E);
    F->ln_in = carve(c, N * f->E);
    F->mean = carve(c, N);
    F->rstd = carve(c, N);
    F->u = carve(c, N * f->I);
    F->a = carve(c, N * f->I);
}

/* Backward scratch of the sub-blocks (they run one at a time). */
static int64_t attn_bwd_floats(const attn__mha_block *m, int64_t B, int64_t T, int64_t S,
                               int cross) {
    const int64_t N = B * T;
    return pad16(N * m->E) * 2 + pad16(N * qkv_width(m, cross)) +
           (cross ? pad16(B * S * 2 * m->KV) : 0);
}

static int64_t ffn_bwd_floats(const attn__ffn *f, int64_t N) {
    return f->w1 ? pad16(N * f->I) + pad16(N * f->E) : 0;
}

static int64_t max64(int64_t a, int64_t b) {
    return a > b ? a : b;
}

/* ---- row-wise pieces ---------------------------------------------------- */

/* y = LN(x) over the rows that are real (every row when all is set), mean
 * and rstd saved; rows left out get mean = rstd = 0 and y untouched. */
static void ln_rows(attn_ctx *ctx, const attn__batch *bt, int all, int64_t E, const float *x,
                    const float *g, const float *b, float eps, float *y, float *mean, float *rstd) {
    const int64_t N = bt->B * bt->T;
#pragma omp parallel for num_threads(attn_ctx_threads(ctx)) schedule(static)
    for (int64_t r = 0; r < N; r++) {
        if (!all && attn__batch_padded(bt, r)) {
            mean[r] = rstd[r] = 0.0f;
            continue;
        }
        attn__layernorm_forward(x + r * E, E, 1, E, g, b, eps, y + r * E, E, mean + r, rstd + r);
    }
}

/* Backward of ln_rows: dx = LN'(dy) over real rows (dx may be dy), zero on
 * padded rows; dg, db accumulated. The parameter sums run first (dx may
 * overwrite dy), threads owning column blocks and adding rows in order, so
 * the sums are the same for any thread count; then the rows, in parallel. */
static void ln_rows_backward(attn_ctx *ctx, const attn__batch *bt, int64_t E, const float *x,
                             const float *g, const float *mean, const float *rstd, const float *dy,
                             float *dx, float *dg, float *db) {
    const int64_t N = bt->B * bt->T, CB = 64, nb = (E + CB - 1) / CB;
    if (dg || db) {
#pragma omp parallel for num_threads(attn_ctx_threads(ctx)) schedule(static)
        for (int64_t cb = 0; cb < nb; cb++) {
            const int64_t c0 = cb * CB, c1 = c0 + CB < E ? c0 + CB : E;
            for (int64_t r = 0; r < N; r++) {
                if (attn__batch_padded(bt, r)) continue;
                const float *xr = x + r * E, *gr = dy + r * E;
                const float m = mean[r], rs = rstd[r];
                if (dg)
#pragma omp simd
                    for (int64_t c = c0; c < c1; c++)
                        dg[c] += gr[c] * ((xr[c] - m) * rs);
                if (db)
#pragma omp simd
                    for (int64_t c = c0; c < c1; c++)
                        db[c] += gr[c];
            }
        }
    }
#pragma omp parallel for num_threads(attn_ctx_threads(ctx)) schedule(static)
    for (int64_t r = 0; r < N; r++) {
        if (attn__batch_padded(bt, r))
            memset(dx + r * E, 0, (size_t)E * sizeof(float));
        else
            attn__layernorm_backward(x + r * E, E, 1, E, g, mean + r, rstd + r, dy + r * E, E,
                                     dx + r * E, E, NULL, NULL);
    }
}

static void copy_rows(attn_ctx *ctx, int64_t n, const float *x, float *y) {
    (void)ctx;
    memcpy(y, x, (size_t)n * sizeof(float));
}

/* x += y over every row. */
static void add_rows(attn_ctx *ctx, int64_t N, int64_t E, float *x, const float *y) {
    attn__residual_add(ctx, N, E, x, y);
}

/* ---- dropout ----------------------------------------------------------- */

/* Sites of a layer's masks: one seed each, from the layer's drop_seed. */
enum { DROP_ATTN = 1, DROP_RESID_ATTN = 2, DROP_RESID_FFN = 3 };

static uint64_t mix64(uint64_t z) { /* splitmix64's finaliser */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t site_seed(uint64_t seed, int site) {
    return mix64(seed + 0x9e3779b97f4a7c15ull * (uint64_t)site);
}

void attn__dropout_rows(attn_ctx *ctx, int64_t n, float p, uint64_t seed, float *x) {
    if (p <= 0.0f) return;
    /* keep when the element's 53-bit uniform is >= p */
    const double pp = (double)p;
    const float inv = (float)(1.0 / (1.0 - pp));
#pragma omp parallel for num_threads(attn_ctx_threads(ctx)) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const double u = (double)(mix64(seed ^ mix64((uint64_t)i + 1)) >> 11) * 0x1p-53;
        x[i] = u >= pp ? x[i] * inv : 0.0f;
    }
}

/* The gradient through y = dropout(y) at a site: dx itself when p is 0,
 * else dx under the same mask, in tmp (n floats). */
static const float *resid_dropout_grad(attn_ctx *ctx, float p, uint64_t seed, int site, int64_t n,
                                       const float *dx, float *tmp) {
    if (p <= 0.0f) return dx;
    memcpy(tmp, dx, (size_t)n * sizeof(float));
    attn__dropout_rows(ctx, n, p, site_seed(seed, site), tmp);
    return tmp;
}

static void zero_padded(const attn__batch *bt, int64_t E, float *dx) {
    if (!bt->len) return;
    for (int64_t r = 0; r < bt->B * bt->T; r++)
        if (attn__batch_padded(bt, r)) memset(dx + r * E, 0, (size_t)E * sizeof(float));
}

/* ---- the attention sub-block -------------------------------------------- */

typedef struct sub_attn {
    const attn__mha_block *m;
    const float *ln_g, *ln_b;
    float eps;
    int pre_ln;
    const attn__enc_states *enc; /* NULL: self-attention */
    attn_tensor mask;
    float attn_pdrop, resid_pdrop; /* pre-LN training (attn__layer) */
    uint64_t drop_seed;
} sub_attn;

static void block_args(const sub_attn *s, const attn__batch *bt, const attn__attn_act *A,
                       attn__mha_block_args *a) {
    memset(a, 0, sizeof *a);
    a->B = bt->B, a->T = bt->T;
    a->x = A->x;
    if (s->enc) {
        a->x_kv = s->enc->x, a->S = s->enc->S, a->kv_len = s->enc->len;
    } else {
        a->kv_len = bt->len;
    }
    a->mask = s->mask;
    a->qkv = A->qkv, a->kv = A->kv, a->o = A->o, a->lse = A->lse;
    a->dropout_p = s->attn_pdrop;
    a->seed = s->attn_pdrop > 0.0f ? site_seed(s->drop_seed, DROP_ATTN) : 0;
}

/* y: scratch [N, E]. */
static attn_status attn_fwd(attn_ctx *ctx, const sub_attn *s, const attn__batch *bt, float *x,
                            const attn__attn_act *A, float *y) {
    const attn__mha_block *m = s->m;
    const int64_t E = m->E, N = bt->B * bt->T;
    attn__mha_block_args a;
    block_args(s, bt, A, &a);
    attn_status st;
    if (s->pre_ln) {
        /* x = x + out(attend(LN(x))) */
        copy_rows(ctx, N * E, x, A->ln_in);
        ln_rows(ctx, bt, 1, E, x, s->ln_g, s->ln_b, s->eps, A->x, A->mean, A->rstd);
        if ((st = attn__mha_block_attend(ctx, m, &a))) return st;
        attn__mha_block_out(ctx, m, N, A->o, y);
        /* y = dropout(y) (resid_pdrop) */
        attn__dropout_rows(ctx, N * E, s->resid_pdrop, site_seed(s->drop_seed, DROP_RESID_ATTN),
                           y);
        add_rows(ctx, N, E, x, y);
        return ATTN_OK;
    }
    /* x = LN(x + out(attend(x))), real rows */
    copy_rows(ctx, N * E, x, A->x);
    if ((st = attn__mha_block_attend(ctx, m, &a))) return st;
    attn__mha_block_out(ctx, m, N, A->o, A->ln_in);
#pragma omp parallel for num_threads(attn_ctx_threads(ctx)) schedule(static)
    for (int64_t r = 0; r < N; r++)
        if (!attn__batch_padded(bt, r))
            for (int64_t c = 0; c < E; c++)
                A->ln_in[r * E + c] += x[r * E + c];
    ln_rows(ctx, bt, 0, E, A->ln_in, s->ln_g, s->ln_b, s->eps, x, A->mean, A->rstd);
    return ATTN_OK;
}

/* dx: dL/d(sub-block output) in, dL/d(input) out. denc accumulates. */
static attn_status attn_bwd(attn_ctx *ctx, const sub_attn *s, const attn__batch *bt,
                            const attn__attn_act *A, float *dx, float *denc,
                            const attn__mha_block_grad *g, float *ln_dg, float *ln_db, float *ws) {
    const attn__mha_block *m = s->m;
    const int64_t E = m->E, KV = m->KV, N = bt->B * bt->T, ld = qkv_width(m, s->enc != NULL);
    carver c = {ws, 0};
    float *d_o = carve(&c, N * E), *dqkv = carve(&c, N * ld), *tmp = carve(&c, N * E);
    float *dkv = s->enc ? carve(&c, bt->B * s->enc->S * 2 * KV) : NULL;
    if (!s->pre_ln) /* x = LN(r): dr = LN'(dx) */
        ln_rows_backward(ctx, bt, E, A->ln_in, s->ln_g, A->mean, A->rstd, dx, dx, ln_dg, ln_db);
    /* y = dropout(y): dy = the same mask on dx (into tmp, free until dproj) */
    const float *dy =
        resid_dropout_grad(ctx, s->resid_pdrop, s->drop_seed, DROP_RESID_ATTN, N * E, dx, tmp);
    /* y = o Wo^T + bo: do = dy Wo, dWo += dy^T o, dbo += sum dy */
    attn__linear_backward(ctx, A->o, E, N, E, m->w_out, E, dy, E, d_o, E, 0, g->w_out, g->b_out, 1);
    /* o = attention(q, k, v) */
    attn__mha_block_args a;
    block_args(s, bt, A, &a);
    attn__attend_args at;
    attn__mha_block_attend_args(m, &a, &at);
    float *dk = s->enc ? dkv : dqkv + E, *dv = s->enc ? dkv + KV : dqkv + E + KV;
    attn_status st = attn__attend_backward(ctx, &m->heads, &at, d_o, dqkv, dk, dv);
    if (st) return st;
    /* q | k | v = x Wqkv^T + bqkv (self), or q = x Wq^T + bq (cross):
     * pre-LN: the projection's input is LN(x), so its gradient goes through
     * tmp and the LayerNorm; post-LN: it adds straight into dx */
    float *dproj = s->pre_ln ? tmp : dx;
    attn__linear_backward(ctx, A->x, E, N, E, m->w_qkv, ld, dqkv, ld, dproj, E, !s->pre_ln,
                          g->w_qkv, g->b_qkv, 1);
    if (s->enc) {
        /* k | v = enc [Wk; Wv]^T + [bk; bv] */
        const int64_t kd = m->kdim ? m->kdim : E, S = s->enc->S;
        attn__linear_backward(ctx, s->enc->x, kd, bt->B * S, kd, m->w_qkv + E * E, 2 * KV, dkv,
                              2 * KV, denc, kd, 1, g->w_qkv ? g->w_qkv + E * E : NULL,
                              g->b_qkv ? g->b_qkv + E : NULL, 1);
    }
    if (s->pre_ln) {
        /* h = LN(x): dx += LN'(dh) */
        ln_rows_backward(ctx, bt, E, A->ln_in, s->ln_g, A->mean, A->rstd, tmp, tmp, ln_dg, ln_db);
        add_rows(ctx, N, E, dx, tmp);
    }
    return ATTN_OK;
}

/* ---- the feed-forward sub-block ----------------------------------------- */

typedef struct sub_ffn {
    const attn__ffn *f;
    const float *ln_g, *ln_b;
    float eps;
    int pre_ln;
    float resid_pdrop; /* pre-LN training (attn__layer) */
    uint64_t drop_seed;
} sub_ffn;

/* u = x W1^T + b1, a = act(u) (real rows; padded rows keep a = u, as
 * attn__ffn_forward), y = a W2^T + b2. */
static void ffn_core(attn_ctx *ctx, const attn__ffn *f, const attn__batch *bt, const float *x,
                     const attn__ffn_act *F, float *y) {
    const int64_t E = f->E, I = f->I, N = bt->B * bt->T;
    attn__linear_forward(ctx, x, E, N, E, f->w1, f->b1, I, F->u, I);
    copy_rows(ctx, N * I, F->u, F->a);
#pragma omp parallel for num_threads(attn_ctx_threads(ctx)) schedule(static)
    for (int64_t r = 0; r < N; r++)
        if (!attn__batch_padded(bt, r)) attn__ffn_activate(f, F->a + r * I, I);
    attn__linear_forward(ctx, F->a, I, N, I, f->w2, f->b2, E, y, E);
}

static void ffn_fwd(attn_ctx *ctx, const sub_ffn *s, const attn__batch *bt, float *x,
                    const attn__ffn_act *F, float *y) {
    const attn__ffn *f = s->f;
    const int64_t E = f->E, N = bt->B * bt->T;
    if (s->pre_ln) {
        /* x = x + ffn(LN(x)) */
        copy_rows(ctx, N * E, x, F->ln_in);
        ln_rows(ctx, bt, 1, E, x, s->ln_g, s->ln_b, s->eps, F->x, F->mean, F->rstd);
        ffn_core(ctx, f, bt, F->x, F, y);
        /* y = dropout(y) (resid_pdrop) */
        attn__dropout_rows(ctx, N * E, s->resid_pdrop, site_seed(s->drop_seed, DROP_RESID_FFN), y);
        add_rows(ctx, N, E, x, y);
        return;
    }
    /* x = LN(x + ffn(x)), real rows */
    copy_rows(ctx, N * E, x, F->x);
    ffn_core(ctx, f, bt, F->x, F, F->ln_in);
#pragma omp parallel for num_threads(attn_ctx_threads(ctx)) schedule(static)
    for (int64_t r = 0; r < N; r++)
        if (!attn__batch_padded(bt, r))
            for (int64_t c = 0; c < E; c++)
                F->ln_in[r * E + c] += x[r * E + c];
    ln_rows(ctx, bt, 0, E, F->ln_in, s->ln_g, s->ln_b, s->eps, x, F->mean, F->rstd);
}

static void ffn_bwd(attn_ctx *ctx, const sub_ffn *s, const attn__batch *bt, const attn__ffn_act *F,
                    float *dx, const attn__ffn_grad *g, float *ln_dg, float *ln_db, float *ws) {
    const attn__ffn *f = s->f;
    const int64_t E = f->E, I = f->I, N = bt->B * bt->T;
    carver c = {ws, 0};
    float *du = carve(&c, N * I), *tmp = carve(&c, N * E);
    if (!s->pre_ln) /* x = LN(r): dr = LN'(dx) */
        ln_rows_backward(ctx, bt, E, F->ln_in, s->ln_g, F->mean, F->rstd, dx, dx, ln_dg, ln_db);
    /* y = dropout(y): dy = the same mask on dx (into tmp, free until dproj) */
    const float *dy =
        resid_dropout_grad(ctx, s->resid_pdrop, s->drop_seed, DROP_RESID_FFN, N * E, dx, tmp);
    /* y = a W2^T + b2: da = dy W2, dW2 += dy^T a, db2 += sum dy */
    attn__linear_backward(ctx, F->a, I, N, I, f->w2, E, dy, E, du, I, 0, g->w2, g->b2, 1);
    /* a = act(u): du = act'(u) da (padded rows: zero) */
#pragma omp parallel for num_threads(attn_ctx_threads(ctx)) schedule(static)
    for (int64_t r = 0; r < N; r++) {
        if (attn__batch_padded(bt, r))
            memset(du + r * I, 0, (size_t)I * sizeof(float));
        else
            attn__ffn_activate_backward(f, F->u + r * I, du + r * I, du + r * I, I);
    }
    /* u = x W1^T + b1 (pre-LN: x = LN(stream), through tmp) */
    float *dproj = s->pre_ln ? tmp : dx;
    attn__linear_backward(ctx, F->x, E, N, E, f->w1, I, du, I, dproj, E, !s->pre_ln, g->w1, g->b1,
                          1);
    if (s->pre_ln) {
        ln_rows_backward(ctx, bt, E, F->ln_in, s->ln_g, F->mean, F->rstd, tmp, tmp, ln_dg, ln_db);
        add_rows(ctx, N, E, dx, tmp);
    }
}

/* ---- the layer ---------------------------------------------------------- */

static sub_attn layer_attn(const attn__layer *L, attn_tensor mask) {
    sub_attn s = {&L->attn,  L->ln1_g,    L->ln1_b,       L->eps,      L->pre_ln,
                  NULL,      mask,        L->attn_pdrop,  L->resid_pdrop, L->drop_seed};
    return s;
}

static sub_ffn layer_ffn(const attn__layer *L) {
    sub_ffn s = {&L->ffn, L->ln2_g, L->ln2_b, L->eps, L->pre_ln, L->resid_pdrop, L->drop_seed};
    return s;
}

/* The forward's scratch y [N, E] comes last in the act block. */
static int64_t layer_carve(const attn__layer *L, int64_t B, int64_t T, float *mem,
                           attn__layer_act *act) {
    carver c = {mem, 0};
    attn__layer_act tmp;
    if (!act) act = &tmp;
    carve_attn(&c, &L->attn, B, T, 0, 0, &act->attn);
    carve_ffn(&c, &L->ffn, B * T, &act->ffn);
    act->y = carve(&c, B * T * L->attn.E);
    return c.used;
}

int64_t attn__layer_act_floats(const attn__layer *L, int64_t B, int64_t T) {
    return layer_carve(L, B, T, NULL, NULL);
}

void attn__layer_act_bind(const attn__layer *L, int64_t B, int64_t T, float *mem,
                          attn__layer_act *act) {
    layer_carve(L, B, T, mem, act);
}

int64_t attn__layer_bwd_floats(const attn__layer *L, int64_t B, int64_t T) {
    return max64(attn_bwd_floats(&L->attn, B, T, 0, 0), ffn_bwd_floats(&L->ffn, B * T));
}

attn_status attn__layer_forward_train(attn_ctx *ctx, const attn__layer *L, const attn__batch *bt,
                                      float *x, attn_tensor mask, const attn__layer_act *act) {
    if (!L->pre_ln && (L->attn_pdrop > 0.0f || L->resid_pdrop > 0.0f))
        return attn_ctx_fail(ctx, ATTN_E_UNSUPPORTED, "dropout in training: pre-LN layers only");
    float *y = act->y;
    sub_attn sa = layer_attn(L, mask);
    attn_status st = attn_fwd(ctx, &sa, bt, x, &act->attn, y);
    if (st || !L->ffn.w1) return st;
    sub_ffn sf = layer_ffn(L);
    ffn_fwd(ctx, &sf, bt, x, &act->ffn, y);
    return ATTN_OK;
}

attn_status attn__layer_backward(attn_ctx *ctx, const attn__layer *L, const attn__batch *bt,
                                 attn_tensor mask, const attn__layer_act *act, float *dx,
                                 const attn__layer_grad *g, float *scratch) {
    zero_padded(bt, L->attn.E, dx);
    if (L->ffn.w1) {
        sub_ffn sf = layer_ffn(L);
        ffn_bwd(ctx, &sf, bt, &act->ffn, dx, &g->ffn, g->ln2_g, g->ln2_b, scratch);
    }
    sub_attn sa = layer_attn(L, mask);
    return attn_bwd(ctx, &sa, bt, &act->attn, dx, NULL, &g->attn, g->ln1_g, g->ln1_b, scratch);
}

/* ---- the decoder layer -------------------------------------------------- */

static int64_t dec_carve(const attn__dec_layer *D, int64_t B, int64_t T, int64_t S, float *mem,
                         attn__dec_layer_act *act) {
    carver c = {mem, 0};
    attn__dec_layer_act tmp;
    if (!act) act = &tmp;
    carve_attn(&c, &D->self, B, T, 0, 0, &act->self);
    carve_attn(&c, &D->cross, B, T, S, 1, &act->cross);
    carve_ffn(&c, &D->ffn, B * T, &act->ffn);
    act->y = carve(&c, B * T * D->self.E);
    return c.used;
}

int64_t attn__dec_layer_act_floats(const attn__dec_layer *D, int64_t B, int64_t T, int64_t S) {
    return dec_carve(D, B, T, S, NULL, NULL);
}

void attn__dec_layer_act_bind(const attn__dec_layer *D, int64_t B, int64_t T, int64_t S, float *mem,
                              attn__dec_layer_act *act) {
    dec_carve(D, B, T, S, mem, act);
}

int64_t attn__dec_layer_bwd_floats(const attn__dec_layer *D, int64_t B, int64_t T, int64_t S) {
    return max64(
        max64(attn_bwd_floats(&D->self, B, T, 0, 0), attn_bwd_floats(&D->cross, B, T, S, 1)),
        ffn_bwd_floats(&D->ffn, B * T));
}

attn_status attn__dec_layer_forward(attn_ctx *ctx, const attn__dec_layer *D, const attn__batch *bt,
                                    float *x, const attn__enc_states *enc,
                                    const attn__dec_layer_act *act) {
    float *y = act->y;
    attn_tensor none;
    memset(&none, 0, sizeof none);
    sub_attn ss = {&D->self, D->ln1_g, D->ln1_b, D->eps, 1, NULL, none, 0.0f, 0.0f, 0};
    sub_attn sc = {&D->cross, D->lnc_g, D->lnc_b, D->eps, 1, enc, none, 0.0f, 0.0f, 0};
    attn_status st = attn_fwd(ctx, &ss, bt, x, &act->self, y);
    if (!st) st = attn_fwd(ctx, &sc, bt, x, &act->cross, y);
    if (st || !D->ffn.w1) return st;
    sub_ffn sf = {&D->ffn, D->ln2_g, D->ln2_b, D->eps, 1, 0.0f, 0};
    ffn_fwd(ctx, &sf, bt, x, &act->ffn, y);
    return ATTN_OK;
}

attn_status attn__dec_layer_backward(attn_ctx *ctx, const attn__dec_layer *D, const attn__batch *bt,
                                     const attn__enc_states *enc, const attn__dec_layer_act *act,
                                     float *dx, float *denc, const attn__dec_layer_grad *g,
                                     float *scratch) {
    zero_padded(bt, D->self.E, dx);
    if (D->ffn.w1) {
        sub_ffn sf = {&D->ffn, D->ln2_g, D->ln2_b, D->eps, 1, 0.0f, 0};
        ffn_bwd(ctx, &sf, bt, &act->ffn, dx, &g->ffn, g->ln2_g, g->ln2_b, scratch);
    }
    attn_tensor none;
    memset(&none, 0, sizeof none);
    sub_attn sc = {&D->cross, D->lnc_g, D->lnc_b, D->eps, 1, enc, none, 0.0f, 0.0f, 0};
    attn_status st =
        attn_bwd(ctx, &sc, bt, &act->cross, dx, denc, &g->cross, g->lnc_g, g->lnc_b, scratch);
    if (st) return st;
    sub_attn ss = {&D->self, D->ln1_g, D->ln1_b, D->eps, 1, NULL, none, 0.0f, 0.0f, 0};
    return attn_bwd(ctx, &ss, bt, &act->self, dx, NULL, &g->self, g->ln1_g, g->ln1_b, scratch);
}

/* ---- embeddings, final LayerNorm, tied head, loss ------------------------ */

void attn__embedding_backward(attn_ctx *ctx, const attn__embedding *e, const attn__batch *bt,
                              const int32_t *const *ids, int64_t pos0, const float *dx,
                              float *g_tok, float *g_pos, float *g_type) {
    assert(!e->ln_g);
    const int64_t E = e->E, T = bt->T, N = bt->B * T;
    /* x = tok[id] + pos[pos0 + t] (+ type): scatter-add; threads own column
     * ranges, so rows sharing an id never race and the order of the sums is
     * the row order for any thread count */
    const int64_t CB = 64, nb = (E + CB - 1) / CB;
#pragma omp parallel for num_threads(attn_ctx_threads(ctx)) schedule(static)
    for (int64_t cb = 0; cb < nb; cb++) {
        const int64_t c0 = cb * CB, c1 = c0 + CB < E ? c0 + CB : E;
        for (int64_t r = 0; r < N; r++) {
            if (attn__batch_padded(bt, r)) continue;
            const int64_t b = r / T, t = r % T;
            const float *d = dx + r * E;
            float *gt = g_tok ? g_tok + (int64_t)ids[b][t] * E : NULL;
            float *gp = g_pos ? g_pos + (pos0 + t) * E : NULL;
            for (int64_t c = c0; c < c1; c++) {
                if (gt) gt[c] += d[c];
                if (gp) gp[c] += d[c];
                if (g_type) g_type[c] += d[c];
            }
        }
    }
}

void attn__layernorm_rows_train(attn_ctx *ctx, int64_t N, int64_t E, const float *x, const float *g,
                                const float *b, float eps, float *y, float *mean, float *rstd) {
    const attn__batch bt = {1, N, NULL};
    ln_rows(ctx, &bt, 1, E, x, g, b, eps, y, mean, rstd);
}

void attn__layernorm_rows_backward(attn_ctx *ctx, int64_t N, int64_t E, const float *x,
                                   const float *g, const float *mean, const float *rstd,
                                   const float *dy, float *dx, float *dg, float *db) {
    const attn__batch bt = {1, N, NULL};
    ln_rows_backward(ctx, &bt, E, x, g, mean, rstd, dy, dx, dg, db);
}

int64_t attn__ce_count(const int32_t *targets, int64_t N, int32_t ignore_index) {
    int64_t n = 0;
    for (int64_t i = 0; i < N; i++)
        n += targets[i] != ignore_index;
    return n;
}

double attn__softmax_ce(attn_ctx *ctx, const float *logits, int64_t ld, int64_t N, int64_t V,
                        const int32_t *targets, int32_t ignore_index, float grad_scale,
                        float *dlogits) {
    double loss = 0.0;
#pragma omp parallel for num_threads(attn_ctx_threads(ctx)) schedule(static) reduction(+ : loss)
    for (int64_t r = 0; r < N; r++) {
        const float *z = logits + r * ld;
        float *d = dlogits ? dlogits + r * ld : NULL;
        const int32_t t = targets[r];
        if (t == ignore_index) {
            if (d) memset(d, 0, (size_t)V * sizeof(float));
            continue;
        }
        /* loss = logsumexp(z) - z[t], with the max taken out first;
         * dz = scale * (softmax(z) - onehot(t)) */
        const float zt = z[t];
        float mx = z[0];
        for (int64_t k = 1; k < V; k++)
            mx = z[k] > mx ? z[k] : mx;
        double s = 0.0;
        for (int64_t k = 0; k < V; k++) {
            float ek = expf(z[k] - mx);
            s += ek;
            if (d) d[k] = ek;
        }
        loss += (double)mx + log(s) - (double)zt;
        if (d) {
            const float f = (float)((double)grad_scale / s);
            for (int64_t k = 0; k < V; k++)
                d[k] *= f;
            d[t] -= grad_scale;
        }
    }
    return loss;
}

/* Rows per chunk of the fused head: enough for a GEMM to run well, few
 * enough that the chunk's logits stay a few MB. */
static int64_t head_rows(int64_t V) {
    int64_t r = ((int64_t)1 << 20) / (V > 0 ? V : 1);
    return r < 64 ? 64 : r > 4096 ? 4096 : r;
}

int64_t attn__lm_head_ce_floats(int64_t V) {
    return head_rows(V) * V;
}

double attn__lm_head_ce(attn_ctx *ctx, const float *h, int64_t N, int64_t E, const float *wte,
                        int64_t V, const int32_t *targets, int32_t ignore_index, float grad_scale,
                        float *dh, float *g_wte, float *scratch) {
    const int64_t R = head_rows(V);
    double loss = 0.0;
    for (int64_t r0 = 0; r0 < N; r0 += R) {
        const int64_t n = N - r0 < R ? N - r0 : R;
        const float *hc = h + r0 * E;
        /* logits = h Wte^T */
        attn__linear_forward(ctx, hc, E, n, E, wte, NULL, V, scratch, V);
        int want = dh || g_wte;
        loss += attn__softmax_ce(ctx, scratch, V, n, V, targets + r0, ignore_index, grad_scale,
                                 want ? scratch : NULL);
        if (!want) continue;
        /* dh = dlogits Wte, dWte += dlogits^T h */
        attn__linear_backward(ctx, hc, E, n, E, wte, V, scratch, V, dh ? dh + r0 * E : NULL, E, 0,
                              g_wte, NULL, 1);
    }
    return loss;
}

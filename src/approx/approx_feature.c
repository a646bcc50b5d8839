/* Kernelized linear attention and Performer FAVOR+: attention through a
 * feature map phi, forward and backward, in chunks of rows.
 *
 *   out_i = phi(q_i)^T KV / phi(q_i)^T z,  KV = sum_j phi(k_j) v_j^T,  z = sum_j phi(k_j)
 *
 * with j over all keys, or j <= i (causal). The state [KV | z] is one
 * [F, Dv+1] matrix (V augmented with a column of ones, V1 = [V | 1]), so the
 * normaliser is its last column. Keys are cut into chunks of C rows.
 * Non-causal: chunk states run in parallel, each chunk exponentiated with
 * its own shift, and a fixed-order float64 scan weighs and sums them; the
 * query pass is the family's `apply` kernel. Causal forward (causal_forward):
 * fixed segments of SEG chunks, each run in chunk order with a float64
 * running state; per chunk the family's `causal` kernel computes the prefix
 * state's part and the C x C diagonal block A = phi_q phi_k^T (j <= i) times
 * V1 in one pass (no GEMM calls). Backward: float64 after phi (the family's
 * bwd_query / bwd_key, register-blocked GEMMs, kernels/feat_bwd.inc).
 * Non-causal: the query pass, the sum G of the query chunks' phi_q^T dnum1,
 * then the key pass; the key sums are float64 over a GQA group's heads, set
 * by the first head and rounded into dphi_k and dv by the last one, whose
 * pass runs the keys' chain rule on the chunk in cache. Causal
 * (causal_backward): one pass over the chunks, last to first, in the
 * forward's fixed segments, the suffix of G a float64 running sum, each
 * chunk's key pass right after its query pass. The feature maps and the
 * Performer's projection are the family's kernels (kernels/feat_kernels.h). Everything runs inside
 * parallel loops over chunks or segments whose boundaries do not depend on
 * the thread count, and the scans run in a fixed order, so the bits do not
 * either. Memory (the context's workspace): per-chunk states (non-causal,
 * backward), per-segment float64 sums (causal forward), per-thread chunk
 * scratch, phi_k [S, F] for the Performer's causal forward and the backward
 * (V1 [S, Dv+1] and the gradients' float64 sums in the backward); nothing
 * T x S. */
#include "approx/approx.h"
#include "kernels/arch.h"

#include <math.h>
#include <omp.h>
#include <string.h>

typedef struct feat {
    const attn__approx_plan *p;
    const float *omega;
    float *omt;  /* Omega^T [D, F] (PERFORMER) */
    double *pws; /* per thread pws_len doubles: the backward's float64 exponents and chain
                  * rule (PERFORMER) */
    int64_t pws_len;
    const attn_feat_kernels *fk; /* the context's family's feature maps */
    int64_t C, F, Dv1; /* chunk rows, features, Dv + 1 */
    int64_t nck, ncq;  /* key chunks, query chunks */
    int nth;
    float *phik;  /* [S, F], kept when causal or backward (else per chunk in scr) */
    float *v1;    /* [S, Dv1], the same */
    float *state; /* [nck + 1][F * Dv1]: chunk sums, then prefix (or total in [nck]) */
    double *cmax; /* [nck]: each key chunk's own shift (PERFORMER) */
    double *ce;   /* [nck]: exp(cmax[c] - the head's max), chunk c's weight */
    float *scr;   /* per thread: phiq [C*F] | dphiq [C*F] | A [C*C] | dA [C*C] | num1 [C*Dv1]
                   * | colsum [F] */
    float *zt;    /* [F]: the total key sum z (column Dv of state[nck]) */
    int64_t scr_len;
    /* backward */
    float *dphik; /* [S, F]: the key side's dphi_k, rounded for the chain rule (by the last
                   * head's bwd_key, which writes dv too) */
    double *gst;  /* [ncq + 1][F * Dv1]: G_c, then its suffix sums */
    double *bscr; /* per thread, bscr_len doubles: backward_chunk's scratch */
    int64_t bscr_len;
    double *acck, *accv; /* [S, F], [S, Dv1]: the sums over a GQA group's heads
                          * (non-causal) */
    double *cbw;         /* causal: per thread, cbw_len doubles: causal_backward's sums and chunk */
    int64_t cbw_len;
    double *run; /* [F * Dv1]: the scans' running sum, in float64 (error ~ one
                  * rounding per state, not one per chunk) */
    /* causal forward: segments of SEG chunks */
    int64_t nseg;
    double *seg; /* [nseg + 1][F * Dv1]: segment sums T, the prefixes Pre */
    float *zk;   /* [nck][F]: each key chunk's column sums of phi_k (PERFORMER) */
    float *cscr; /* per thread, cscr_len floats: T, Pre (doubles) | P | st | phik | phiq |
                  * kernel scratch | colsum */
    int64_t cscr_len;
} feat;

/* Chunks per segment of the causal forward: a fixed number (the bits do
 * not depend on the thread count), large enough that the segment sums are
 * few, small enough that 2 threads share the work. */
#define SEG 16

/* phi of rows x [n, D] (row stride ldx) into u [n, F]: elu + 1 (LINEAR),
 * or the projection sqrt(scale) x Omega^T (a GEMM) exponentiated by the
 * family's kernel with each row's own shift (rowshift) or one shift for the
 * n rows. Returns the largest exponent u_r - |x'|^2/2 (0 for LINEAR). */
static double phi_rows(feat *f, const float *x, int64_t ldx, int64_t n, float *u, int rowshift,
                       float *colsum) {
    const attn__approx_plan *p = f->p;
    if (p->method == ATTN_APPROX_LINEAR) {
        f->fk->elu1(x, ldx, n, p->D, u, colsum);
        return 0.0;
    }
    const float norm = 1.0f / sqrtf((float)f->F);
    if (f->pws) { /* the backward: exponents in float64, exponentiated already shifted */
        double *ws = f->pws + f->pws_len * omp_get_thread_num();
        const double c =
            f->fk->proj64(x, ldx, n, p->D, f->omt, f->F, sqrt((double)p->scale), rowshift, u, ws);
        f->fk->perf_exp(u, n, f->F, x, ldx, p->D, 0.0f, rowshift, norm, colsum);
        return c;
    }
    f->fk->proj(x, ldx, n, p->D, f->omt, f->F, sqrtf(p->scale), u);
    return f->fk->perf_exp(u, n, f->F, x, ldx, p->D, 0.5f * p->scale, rowshift, norm, colsum);
}

/* Chain rule: dx[n, D] from dphi and phi of rows x. */
static void phi_backward(feat *f, const float *x, int64_t ldx, int64_t n, const float *phi,
                         float *dphi, float *dx, int64_t ldd) {
    const attn__approx_plan *p = f->p;
    const int64_t F = f->F, D = p->D;
    if (p->method == ATTN_APPROX_LINEAR) { /* F = D */
        f->fk->elu1_back(x, ldx, n, D, phi, dphi, dx, ldd);
        return;
    }
    /* dphi_r/dx' = phi_r (w_r - x'), x' = sqrt(scale) x:
     *   dx = sqrt(scale) sum_r t_r (w_r - x'),  t = dphi * phi
     * (the family's kernel, in float64) */
    f->fk->perf_back(x, ldx, n, D, phi, dphi, F, f->omega, sqrt((double)p->scale), dx, ldd,
                     f->pws + f->pws_len * omp_get_thread_num());
}

/* n elements of size sz at offset *off of the workspace block base (NULL
 * while sizing: then NULL), in 64-byte aligned pieces. */
static void *carve(char *base, size_t *off, int64_t n, size_t sz) {
    void *p = base ? base + *off : NULL;
    *off += ((size_t)n * sz + 63) / 64 * 64;
    return p;
}

/* Every array lives in the context's workspace (thread 0's block, kept
 * between calls): a call on a warm context touches no fresh pages. */
static attn_status feat_init(attn_ctx *ctx, feat *f, const attn__approx_plan *p, const float *omega,
                             int backward) {
    memset(f, 0, sizeof *f);
    f->p = p, f->omega = omega;
    f->fk = &ctx->arch->feat;
    /* causal: the diagonal blocks cost C^2 (F + Dv) per chunk, so chunks
     * stay small; otherwise larger chunks mean fewer calls */
    f->C = p->chunk ? p->chunk : p->causal ? 64 : 1024;
    f->F = p->F, f->Dv1 = p->Dv + 1;
    f->nck = (p->S + f->C - 1) / f->C;
    f->ncq = (p->T + f->C - 1) / f->C;
    f->nth = attn_ctx_threads(ctx);
    const int64_t C = f->C, F = f->F, Dv1 = f->Dv1, S = p->S;
    const int64_t scr = 2 * C * F + (p->causal ? 2 * C * C : 0) + C * Dv1 + F;
    f->scr_len = (int64_t)attn__round16((size_t)scr);
    const int cfwd = p->causal && !backward, cbwd = p->causal && backward;
    /* bwd_query's scratch | phi_q, dphi_q [C, F] (floats) */
    f->bscr_len = (int64_t)attn__round16((size_t)ATTN_MAX(
        attn__feat_bwd_ws(C, F, Dv1, p->causal) + C * F + 8, attn__feat_bwdk_ws(F, Dv1)));
    f->pws_len = (int64_t)attn__round16(
        (size_t)ATTN_MAX(attn__feat_proj64_ws(C, p->D, F), attn__feat_perf_back_ws(F, p->D)));
    f->nseg = (f->nck + SEG - 1) / SEG;
    f->cbw_len = (int64_t)attn__round16((size_t)(5 * F * Dv1 + C * F + C * Dv1 + C * F / 2 + 16));
    f->cscr_len = (int64_t)attn__round16(
        (size_t)(4 * F * Dv1 + 16 + 2 * F * Dv1 + 2 * C * F + attn__feat_causal_ws(C, F) + F));
    /* two passes: the size (from offset 0), then the pointers */
    char *base = NULL;
    for (int pass = 0; pass < 2; pass++) {
        size_t off = 0;
        /* the diagonal blocks and the backward reread phi_k */
        /* the diagonal blocks and the backward reread phi_k (the causal
         * forward recomputes elu + 1 instead of a round trip through memory) */
        f->phik = backward || (p->causal && p->method == ATTN_APPROX_PERFORMER)
                      ? carve(base, &off, S * F + 1, sizeof(float))
                      : NULL;
        f->v1 = backward ? carve(base, &off, S * Dv1 + 1, sizeof(float)) : NULL;
        f->state = cfwd ? NULL : carve(base, &off, (f->nck + 1) * F * Dv1, sizeof(float));
        f->zk = cfwd && omega ? carve(base, &off, f->nck * F, sizeof(float)) : NULL;
        f->seg =
            cfwd || cbwd ? carve(base, &off, 2 * (f->nseg + 1) * F * Dv1, sizeof(double)) : NULL;
        f->cscr = cfwd ? carve(base, &off, f->cscr_len * f->nth, sizeof(float)) : NULL;
        f->cmax = carve(base, &off, f->nck + 1, sizeof(double));
        f->omt = omega ? carve(base, &off, F * p->D, sizeof(float)) : NULL;
        f->ce = carve(base, &off, f->nck + 1, sizeof(double));
        f->zt = carve(base, &off, F, sizeof(float));
        f->run = carve(base, &off, F * Dv1, sizeof(double));
        f->scr = carve(base, &off, f->scr_len * f->nth, sizeof(float));
        if (backward) {
            f->bscr = carve(base, &off, f->bscr_len * f->nth, sizeof(double));
            f->pws = omega ? carve(base, &off, f->pws_len * f->nth, sizeof(double)) : NULL;
        }
        if (backward && !p->causal) {
            f->dphik = carve(base, &off, S * F + 1, sizeof(float));
            f->gst = carve(base, &off, (f->ncq + 1) * F * Dv1, sizeof(double));
            f->acck = carve(base, &off, S * F + 1, sizeof(double));
            f->accv = carve(base, &off, S * Dv1 + 1, sizeof(double));
        }
        f->cbw = cbwd ? carve(base, &off, f->cbw_len * f->nth, sizeof(double)) : NULL;
        if (pass) break;
        if (attn__ws_reserve(ctx, 1, off))
            return attn_ctx_fail(ctx, ATTN_E_NOMEM, "%s attention: out of memory",
                                 attn_approx_name(p->method));
        base = attn__ws_get(ctx, 0);
    }
    if (omega)
        for (int64_t r = 0; r < F; r++)
            for (int64_t d = 0; d < p->D; d++)
                f->omt[d * F + r] = omega[r * p->D + d];
    return ATTN_OK;
}

static void feat_free(feat *f) {
    (void)f; /* the arrays live in the context's workspace */
}

/* phi_k, V1 and the key state of kv head (b, g). Each key chunk is
 * exponentiated with its own shift cmax[c] (one pass: no head-wide max
 * first) and its state phi_k,c^T V1_c computed while the chunk is in cache;
 * the scan then weighs chunk c by ce[c] = exp(cmax[c] - max_c cmax), so the
 * states are those of one head-wide shift. After it state[c] is the sum over
 * the chunks before c (causal) and state[nck] the total. With phik kept
 * (causal, backward) the diagonal blocks use the chunk's own phi_k times
 * ce[c]; the backward (rescale) scales phi_k itself and sets ce to 1. */
static void key_state(feat *f, int64_t b, int64_t g, int rescale) {
    const attn__approx_plan *p = f->p;
    const int64_t C = f->C, F = f->F, Dv1 = f->Dv1, S = p->S, nck = f->nck;
    const float *kb = ATTN__ROW(p->k, p->ks, b, g, 0), *vb = ATTN__ROW(p->v, p->vs, b, g, 0);
#pragma omp parallel for num_threads(f->nth) schedule(dynamic, 1)
    for (int64_t c = 0; c < nck; c++) {
        const int64_t j0 = c * C, n = ATTN_MIN(C, S - j0);
        /* phi_k of the chunk (kept only where reread) is still in cache
         * for the state: its column sums (z) come from the feature kernel,
         * phi_k^T V from the state kernel reading V in place */
        float *sc = f->state + c * F * Dv1;
        float *w = f->scr + f->scr_len * omp_get_thread_num();
        float *pk = f->phik ? f->phik + j0 * F : w, *zs = w + f->scr_len - F;
        memset(zs, 0, (size_t)F * sizeof(float));
        f->cmax[c] = phi_rows(f, kb + j0 * p->ks[2], p->ks[2], n, pk, 0, zs);
        f->fk->accum(pk, n, F, vb + j0 * p->vs[2], p->vs[2], p->Dv, sc, Dv1);
        for (int64_t r = 0; r < F; r++)
            sc[r * Dv1 + p->Dv] = zs[r];
        if (f->v1) /* the backward's [V | 1] */
            for (int64_t j = j0; j < j0 + n; j++) {
                memcpy(f->v1 + j * Dv1, vb + j * p->vs[2], (size_t)p->Dv * sizeof(float));
                f->v1[j * Dv1 + p->Dv] = 1.0f;
            }
    }
    double mx = -INFINITY;
    for (int64_t c = 0; c < nck; c++)
        mx = fmax(mx, f->cmax[c]);
    for (int64_t c = 0; c < nck; c++) /* a chunk without a finite shift kept shift 0 */
        f->ce[c] = isfinite(mx) && isfinite(f->cmax[c]) ? exp(f->cmax[c] - mx) : 1.0;
    /* exclusive prefix (fixed order): state[c] <- sum_{c' < c}, total in [nck] */
    const int64_t sz = F * Dv1;
    double *run = f->run;
    memset(run, 0, (size_t)sz * sizeof(double));
    for (int64_t c = 0; c < nck; c++) {
        float *sc = f->state + c * sz;
        const double e = f->ce[c];
        for (int64_t e0 = 0; e0 < sz; e0++) {
            const float t = sc[e0];
            sc[e0] = (float)run[e0];
            run[e0] += e * (double)t;
        }
    }
    float *tot = f->state + nck * sz;
    for (int64_t e = 0; e < sz; e++)
        tot[e] = (float)run[e];
    for (int64_t r = 0; r < F; r++)
        f->zt[r] = tot[r * Dv1 + p->Dv];
    if (!rescale) return;
#pragma omp parallel for num_threads(f->nth) schedule(dynamic, 1)
    for (int64_t c = 0; c < nck; c++) {
        const int64_t j0 = c * C, n = ATTN_MIN(C, S - j0);
        const double e = f->ce[c];
        if (e != 1.0) /* one rounding */
            for (int64_t i = j0 * F; i < (j0 + n) * F; i++)
                f->phik[i] = (float)((double)f->phik[i] * e);
        f->ce[c] = 1.0;
    }
}

/* Ask for rows [i0, i0 + n) of a view (row stride ld, w floats each) ahead
 * of their use, into L2: the next chunk's rows load while this one computes
 * (each kernel's first touch of a row would otherwise wait for memory). */
static void prefetch_rows(const float *x, int64_t ld, int64_t n, int64_t w) {
    /* a side effect: GCC counts a prefetch as none, would find a function
     * of prefetches alone pure and drop its calls */
    __asm__ __volatile__("");
    for (int64_t i = 0; i < n; i++)
        for (int64_t d = 0; d < w; d += 16)
            __builtin_prefetch(x + i * ld + d, 0, 2);
}

/* phi_k of key chunk c into pkw (linear: elu + 1 now) or kept (PERFORMER),
 * its column sums into zs. Returns phi_k's rows. */
static const float *chunk_phik(feat *f, int64_t b, int64_t g, int64_t c, float *pkw, float *zs) {
    const attn__approx_plan *p = f->p;
    const int64_t C = f->C, F = f->F, j0 = c * C, n = ATTN_MIN(C, p->S - j0);
    if (p->method == ATTN_APPROX_PERFORMER) { /* both from the first pass */
        memcpy(zs, f->zk + c * F, (size_t)F * sizeof(float));
        return f->phik + j0 * F;
    }
    memset(zs, 0, (size_t)F * sizeof(float));
    f->fk->elu1(ATTN__ROW(p->k, p->ks, b, g, j0), p->ks[2], n, F, pkw, zs);
    return pkw;
}

/* Key chunk c's state [phi_k^T V | z] folded into acc with weight ce[c]
 * (the segment totals T_s that another thread's segments start from): phi_k
 * computed here into pkw, the next chunk's keys and values asked for
 * first; the family's accfold without P (the same bits as the causal
 * pass's own accfold calls). st: the kernel's scratch. */
static void chunk_state(feat *f, int64_t b, int64_t g, int64_t c, float *pkw, float *zs, float *st,
                        double *acc) {
    const attn__approx_plan *p = f->p;
    const int64_t C = f->C, F = f->F, Dv = p->Dv, j0 = c * C;
    const int64_t n = ATTN_MIN(C, p->S - j0);
    const float *kb = ATTN__ROW(p->k, p->ks, b, g, 0), *vb = ATTN__ROW(p->v, p->vs, b, g, 0);
    if (c + 1 < f->nck) {
        const int64_t nn = ATTN_MIN(C, p->S - j0 - C);
        prefetch_rows(kb + (j0 + C) * p->ks[2], p->ks[2], nn, p->D);
        prefetch_rows(vb + (j0 + C) * p->vs[2], p->vs[2], nn, Dv);
    }
    const float *pk = chunk_phik(f, b, g, c, pkw, zs);
    f->fk->accfold(pk, n, F, vb + j0 * p->vs[2], p->vs[2], Dv, zs, f->ce[c], acc, NULL, NULL, st);
}

/* Stream s = ah->ns of ah: rows [0, n) of w floats at x, row stride ld. */
static void ahead_add(attn_feat_ahead *ah, const float *x, int64_t ld, int64_t n, int64_t w) {
    const int s = ah->ns++;
    ah->x[s] = x, ah->ld[s] = ld, ah->n[s] = n, ah->w[s] = w;
}

/* The causal forward of kv head (b, g) and its query heads. The keys are cut
 * into segments of SEG chunks; with T_s = sum over the chunks c of segment
 * s, in order, of ce[c] phi_k,c^T V1_c (float64, from 0) and
 *   Pre_0 = 0,  Pre_{s+1} = Pre_s + T_s,
 * chunk c of segment s sees the prefix state Pre_s plus the states of the
 * chunks before it in s, Pre_s + (the partial T_s), rounded once to fp32 per
 * chunk (the family's accfold sums a chunk's state into T_s and rounds the
 * next chunk's P in one pass), and the family's causal kernel adds its
 * diagonal block (one pass, no GEMM). Thread t runs a fixed range of segments in order and carries
 * Pre from one to the next; the totals T_s of the segments before another
 * thread's first one are computed first, in parallel (none with one thread:
 * the keys are then read once). The definitions of T and Pre fix the bits
 * for any thread count. The Performer's phi_k is computed first for all
 * keys (ce needs the head's largest shift) and kept; linear attention
 * computes elu + 1 of a chunk where it is used. */
static void causal_forward(feat *f, int64_t b, int64_t g) {
    const attn__approx_plan *p = f->p;
    const int64_t C = f->C, F = f->F, Dv1 = f->Dv1, Dv = p->Dv, S = p->S, nck = f->nck;
    const int64_t sz = F * Dv1, nseg = f->nseg;
    const int perf = p->method == ATTN_APPROX_PERFORMER;
    const int nth = (int)ATTN_MIN((int64_t)f->nth, nseg);
    const float *kb = ATTN__ROW(p->k, p->ks, b, g, 0), *vb = ATTN__ROW(p->v, p->vs, b, g, 0);
    double *T = f->seg, *Pre = f->seg + (nseg + 1) * sz;
    if (perf) {
#pragma omp parallel for num_threads(f->nth) schedule(dynamic, 1)
        for (int64_t c = 0; c < nck; c++) {
            const int64_t j0 = c * C, n = ATTN_MIN(C, S - j0);
            const int64_t nn = c + 1 < nck ? ATTN_MIN(C, S - j0 - C) : 0;
            const float *x = kb + j0 * p->ks[2];
            float *u = f->phik + j0 * F, *zc = f->zk + c * F;
            /* the projection 4 rows at a time, each piece asking for 4 rows
             * of the next chunk's keys and phi_k (a burst of a chunk's
             * requests waits on the miss buffers) */
            for (int64_t i = 0; i < n; i += 4) {
                if (i < nn) {
                    const int64_t m = ATTN_MIN(4, nn - i);
                    prefetch_rows(x + (C + i) * p->ks[2], p->ks[2], m, p->D);
                    prefetch_rows(u + (C + i) * F, F, m, F);
                }
                f->fk->proj(x + i * p->ks[2], p->ks[2], ATTN_MIN(4, n - i), p->D, f->omt, F,
                            sqrtf(p->scale), u + i * F);
            }
            memset(zc, 0, (size_t)F * sizeof(float));
            f->cmax[c] = f->fk->perf_exp(u, n, F, x, p->ks[2], p->D, 0.5f * p->scale, 0,
                                         1.0f / sqrtf((float)F), zc);
        }
        double mx = -INFINITY;
        for (int64_t c = 0; c < nck; c++)
            mx = fmax(mx, f->cmax[c]);
        for (int64_t c = 0; c < nck; c++) /* a chunk without a finite shift kept shift 0 */
            f->ce[c] = isfinite(mx) && isfinite(f->cmax[c]) ? exp(f->cmax[c] - mx) : 1.0;
    } else {
        for (int64_t c = 0; c < nck; c++)
            f->ce[c] = 1.0;
    }
#pragma omp parallel num_threads(nth)
    {
        /* thread t runs segments [t nseg / nt, (t + 1) nseg / nt) */
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const int64_t need = (int64_t)(nt - 1) * nseg / nt; /* T_s wanted for s < need */
        float *w = f->cscr + f->cscr_len * t;
        double *tacc = (double *)w, *pre = tacc + sz;
        float *P = w + 4 * sz + 16, *st = P + sz, *pkw = st + sz, *phiq = pkw + C * F;
        float *kws = phiq + C * F, *zs = kws + attn__feat_causal_ws(C, F);
#pragma omp for schedule(dynamic, 1)
        for (int64_t sg = 0; sg < need; sg++) {
            double *ts = T + sg * sz;
            memset(ts, 0, (size_t)sz * sizeof(double));
            for (int64_t c = sg * SEG; c < ATTN_MIN((sg + 1) * SEG, nck); c++)
                chunk_state(f, b, g, c, pkw, zs, st, ts);
        }
#pragma omp single
        { /* Pre_s up to the last thread's first segment (fixed order) */
            memset(Pre, 0, (size_t)sz * sizeof(double));
            for (int64_t sg = 0; sg < need; sg++)
                for (int64_t e = 0; e < sz; e++)
                    Pre[(sg + 1) * sz + e] = Pre[sg * sz + e] + T[sg * sz + e];
        }
        const int64_t lo = (int64_t)t * nseg / nt, hi = (int64_t)(t + 1) * nseg / nt;
        if (lo < hi) memcpy(pre, Pre + lo * sz, (size_t)sz * sizeof(double));
        for (int64_t sg = lo; sg < hi; sg++) {
            memset(tacc, 0, (size_t)sz * sizeof(double));
            for (int64_t e = 0; e < sz; e++)
                P[e] = (float)pre[e];
            const int64_t c1 = ATTN_MIN((sg + 1) * SEG, nck);
            for (int64_t c = sg * SEG; c < c1; c++) {
                const int64_t i0 = c * C, n = ATTN_MIN(C, S - i0);
                const float *pk = chunk_phik(f, b, g, c, pkw, zs);
                /* the next chunk's rows, asked for by the causal kernels a
                 * share per block of rows: the keys (or phi_k) and values
                 * split over the group's calls, each head its queries and
                 * output rows */
                attn_feat_ahead ah;
                const int64_t j1 = i0 + C, nn = c + 1 < nck ? ATTN_MIN(C, S - j1) : 0;
                const float *vc = vb + i0 * p->vs[2];
                for (int64_t h = g * p->group; h < (g + 1) * p->group; h++) {
                    phi_rows(f, ATTN__ROW(p->q, p->qs, b, h, i0), p->qs[2], n, phiq, 1, NULL);
                    if (nn > 0) {
                        const int64_t u = h - g * p->group, G = p->group;
                        const int64_t r0 = j1 + nn * u / G, r1 = j1 + nn * (u + 1) / G;
                        ah.ns = 0;
                        if (perf)
                            ahead_add(&ah, f->phik + r0 * F, F, r1 - r0, F);
                        else
                            ahead_add(&ah, kb + r0 * p->ks[2], p->ks[2], r1 - r0, p->D);
                        ahead_add(&ah, vb + r0 * p->vs[2], p->vs[2], r1 - r0, Dv);
                        ahead_add(&ah, ATTN__ROW(p->q, p->qs, b, h, j1), p->qs[2], nn, p->D);
                        ahead_add(&ah, ATTN__ROW(p->out, p->os, b, h, j1), p->os[2], nn, Dv);
                    }
                    f->fk->causal(phiq, pk, n, F, (float)f->ce[c], P, Dv1, vc, p->vs[2], Dv,
                                  ATTN__ROW(p->out, p->os, b, h, i0), p->os[2], kws,
                                  nn > 0 ? &ah : NULL);
                }
                if (sg + 1 == hi && c + 1 == c1) break; /* no later chunk of this thread */
                /* the chunk's state joins T_sg, and P of the next chunk is
                 * Pre_sg + T_sg so far, rounded once */
                f->fk->accfold(pk, n, F, vc, p->vs[2], Dv, zs, f->ce[c], tacc, pre,
                               c + 1 < c1 ? P : NULL, st);
            }
            if (sg + 1 < hi) /* Pre_{sg+1} = Pre_sg + T_sg, as the table's */
                for (int64_t e = 0; e < sz; e++)
                    pre[e] = pre[e] + tacc[e];
        }
    }
}

attn_status attn__approx_feature_forward(attn_ctx *ctx, const attn__approx_plan *p,
                                         const float *omega) {
    feat f;
    attn_status st = feat_init(ctx, &f, p, omega, 0);
    if (st) {
        feat_free(&f);
        return st;
    }
    const int64_t C = f.C, F = f.F, Dv1 = f.Dv1;
    for (int64_t b = 0; b < p->B; b++)
        for (int64_t g = 0; g < p->Hkv; g++) {
            if (p->causal) {
                causal_forward(&f, b, g);
                continue;
            }
            key_state(&f, b, g, 0);
            for (int64_t h = g * p->group; h < (g + 1) * p->group; h++) {
#pragma omp parallel for num_threads(f.nth) schedule(dynamic, 1)
                for (int64_t c = 0; c < f.ncq; c++) {
                    /* out = phi_q KV straight into out, then / phi_q . z */
                    float *phiq = f.scr + f.scr_len * omp_get_thread_num();
                    const int64_t i0 = c * C, n = ATTN_MIN(C, p->T - i0);
                    float *o = ATTN__ROW(p->out, p->os, b, h, i0);
                    const float *qr = ATTN__ROW(p->q, p->qs, b, h, i0);
                    phi_rows(&f, qr, p->qs[2], n, phiq, 1, NULL);
                    f.fk->apply(phiq, n, F, f.state + f.nck * F * Dv1, Dv1, f.zt, p->Dv, o,
                                p->os[2]);
                }
            }
        }
    feat_free(&f);
    return ATTN_OK;
}

/* Backward. With num1 = [num | den], out = num / den:
 *   dnum_i = dout_i / den_i,  dden_i = -(dout_i . out_i) / den_i   (dnum1 = [dnum | dden])
 *   dphi_q,c = dnum1_c P_c^T + dA phi_k,c,  dA = (dnum1_c V1_c^T) on j <= i
 *   dphi_k,c = dA^T phi_q,c + V1_c G_c^T,   dV1_c = A^T dnum1_c + phi_k,c G_c
 * with G_c = sum over the query chunks after c (causal) or all of them of
 * phi_q^T dnum1 (a suffix scan). Everything after phi and the fp32 states
 * is float64: the gradients cancel (dnum . KV against dden z, v_j . G
 * against G's normaliser column, dnum_i . v_j against dden_i in the
 * diagonal block), so each sum there is formed from the fp32 operands
 * without rounding its terms, and the query heads of a GQA group add into
 * float64 sums of the key gradients. */

/* One query chunk c of head (b, h): phi_q, then the family's float64
 * backward of the chunk: G_c into G; unless gonly, dphi_q, then dq, and
 * (causal) the diagonal block's share of the chunk's key sums into acck,
 * accv by how. ahead (or NULL): rows asked for among its GEMMs. */
static void backward_chunk(feat *f, int64_t b, int64_t h, int64_t c, int gonly, double *G,
                           double *acck, double *accv, int how, double *w,
                           const attn_feat_ahead *ahead) {
    const attn__approx_plan *p = f->p;
    const int64_t C = f->C, F = f->F, Dv1 = f->Dv1, sz = F * Dv1;
    const int64_t i0 = c * C, n = ATTN_MIN(C, p->T - i0);
    float *phiq = (float *)(w + attn__feat_bwd_ws(C, F, Dv1, p->causal)), *dqf = phiq + C * F;
    phi_rows(f, ATTN__ROW(p->q, p->qs, b, h, i0), p->qs[2], n, phiq, 1, NULL);
    f->fk->bwd_query(phiq, n, F, f->state + (p->causal ? c : f->nck) * sz,
                     p->causal ? f->phik + i0 * F : NULL, f->v1 + i0 * Dv1, Dv1,
                     ATTN__ROW(p->dout, p->dos, b, h, i0), p->dos[2], gonly ? NULL : dqf, G, acck,
                     accv, how, w, ahead);
    if (!gonly)
        phi_backward(f, ATTN__ROW(p->q, p->qs, b, h, i0), p->qs[2], n, phiq, dqf,
                     ATTN__ROW(p->dq, p->dqs, b, h, i0), p->dqs[2]);
}

/* Causal chunk c for every query head of kv head (b, g), in head order:
 * H = the sum of their G_c; unless gonly, each head's dq and the diagonal
 * blocks' key sums in ak, av (set by the first head). Gh: scratch. ahead
 * (or NULL): rows asked for among the first head's GEMMs. */
static void causal_chunk(feat *f, int64_t b, int64_t g, int64_t c, int gonly, double *H, double *Gh,
                         double *ak, double *av, double *w, const attn_feat_ahead *ahead) {
    const attn__approx_plan *p = f->p;
    const int64_t sz = f->F * f->Dv1, h0 = g * p->group;
    for (int64_t h = h0; h < h0 + p->group; h++) {
        backward_chunk(f, b, h, c, gonly, h == h0 ? H : Gh, ak, av,
                       h == h0 ? ATTN_FEAT_SET : ATTN_FEAT_ADD, w, h == h0 ? ahead : NULL);
        if (h > h0) {
#pragma omp simd
            for (int64_t e = 0; e < sz; e++)
                H[e] += Gh[e];
        }
    }
}

/* Chunk c's rows of everything causal_backward reads, in the order of
 * their use, as streams of ah, asked for among the GEMMs of the chunk
 * before: a burst of requests stalls on the core's miss buffers. The heads
 * past the streams' room are asked for here. */
static void ahead_chunk(feat *f, int64_t b, int64_t g, int64_t c, attn_feat_ahead *ah) {
    const attn__approx_plan *p = f->p;
    const int64_t C = f->C, F = f->F, Dv1 = f->Dv1, j0 = c * C, n = ATTN_MIN(C, p->S - j0);
    const int64_t h0 = g * p->group;
    ah->ns = 0;
    ahead_add(ah, ATTN__ROW(p->q, p->qs, b, h0, j0), p->qs[2], n, p->D);
    ahead_add(ah, f->phik + j0 * F, F, n, F);
    ahead_add(ah, f->v1 + j0 * Dv1, Dv1, n, Dv1);
    ahead_add(ah, f->state + c * F * Dv1, Dv1, F, Dv1);
    ahead_add(ah, ATTN__ROW(p->dout, p->dos, b, h0, j0), p->dos[2], n, p->Dv);
    for (int64_t h = h0 + 1; h < h0 + p->group; h++) {
        const float *qh = ATTN__ROW(p->q, p->qs, b, h, j0);
        const float *dh = ATTN__ROW(p->dout, p->dos, b, h, j0);
        if (ah->ns + 3 <= ATTN_FEAT_AHEAD) { /* room for k after them */
            ahead_add(ah, qh, p->qs[2], n, p->D);
            ahead_add(ah, dh, p->dos[2], n, p->Dv);
        } else {
            prefetch_rows(qh, p->qs[2], n, p->D);
            prefetch_rows(dh, p->dos[2], n, p->Dv);
        }
    }
    ahead_add(ah, ATTN__ROW(p->k, p->ks, b, g, j0), p->ks[2], n, p->D);
}

/* The causal backward of kv head (b, g) and its query heads, one pass over
 * the chunks, last to first. With H_c the sum over the group's heads (in
 * order) of query chunk c's phi_q^T dnum1, key chunk c needs the suffix
 * G_c = sum_{c' > c} H_c'. The chunks are cut into the forward's segments
 * of SEG chunks; with
 *   T_s = sum over the chunks of segment s, last to first, of H_c (float64, from 0)
 *   Suf_nseg = 0,  Suf_s = Suf_{s+1} + T_s,
 * chunk c of segment s sees G_c = Suf_{s+1} plus the H of the chunks after
 * it in s, added last to first. Thread t runs a fixed range of segments,
 * last to first, carrying Suf from one to the next; the totals T_s of the
 * segments after thread 0's are computed first, in parallel, from G alone
 * (none with one thread). The definitions fix the bits for any thread
 * count. Per chunk: each head's query pass (dq, and the diagonal blocks'
 * float64 key sums), then the key pass with G_c, which rounds the key sums
 * into dphi_k and dv, and the keys' chain rule (dk) while the chunk is in
 * cache: no S-sized float64 array, no stored G. */
static void causal_backward(feat *f, int64_t b, int64_t g) {
    const attn__approx_plan *p = f->p;
    const int64_t C = f->C, F = f->F, Dv1 = f->Dv1, S = p->S, nck = f->nck;
    const int64_t sz = F * Dv1, nseg = f->nseg;
    const int nth = (int)ATTN_MIN((int64_t)f->nth, nseg);
    const float *kb = ATTN__ROW(p->k, p->ks, b, g, 0);
    double *T = f->seg, *Suf = f->seg + (nseg + 1) * sz;
#pragma omp parallel num_threads(nth)
    {
        /* thread t runs segments [t nseg / nt, (t + 1) nseg / nt) */
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const int64_t lo = (int64_t)t * nseg / nt, hi = (int64_t)(t + 1) * nseg / nt;
        const int64_t need = nseg / nt; /* T_s wanted for s >= need (thread 0's end) */
        double *w = f->bscr + f->bscr_len * t, *cw = f->cbw + f->cbw_len * t;
        double *pre = cw, *run = pre + sz, *tacc = run + sz, *H = tacc + sz, *Gh = H + sz;
        double *ak = Gh + sz, *av = ak + C * F;
        float *dpk = (float *)(av + C * Dv1);
        if (nt > 1) {
#pragma omp for schedule(dynamic, 1)
            for (int64_t sg = need; sg < nseg; sg++) {
                double *ts = T + sg * sz;
                memset(ts, 0, (size_t)sz * sizeof(double));
                for (int64_t c = ATTN_MIN((sg + 1) * SEG, nck) - 1; c >= sg * SEG; c--) {
                    causal_chunk(f, b, g, c, 1, H, Gh, ak, av, w, NULL);
#pragma omp simd
                    for (int64_t e = 0; e < sz; e++)
                        ts[e] += H[e];
                }
            }
        }
#pragma omp single
        { /* Suf_s down to thread 0's end (fixed order) */
            memset(Suf + nseg * sz, 0, (size_t)sz * sizeof(double));
            for (int64_t sg = nseg - 1; nt > 1 && sg >= need; sg--)
                for (int64_t e = 0; e < sz; e++)
                    Suf[sg * sz + e] = Suf[(sg + 1) * sz + e] + T[sg * sz + e];
        }
        if (lo < hi) memcpy(pre, Suf + hi * sz, (size_t)sz * sizeof(double));
        for (int64_t sg = hi - 1; sg >= lo; sg--) {
            memcpy(run, pre, (size_t)sz * sizeof(double));
            memset(tacc, 0, (size_t)sz * sizeof(double));
            for (int64_t c = ATTN_MIN((sg + 1) * SEG, nck) - 1; c >= sg * SEG; c--) {
                const int64_t j0 = c * C, n = ATTN_MIN(C, S - j0);
                attn_feat_ahead ah;
                if (c > lo * SEG) ahead_chunk(f, b, g, c - 1, &ah);
                causal_chunk(f, b, g, c, 0, H, Gh, ak, av, w, c > lo * SEG ? &ah : NULL);
                f->fk->bwd_key(f->phik + j0 * F, f->v1 + j0 * Dv1, n, F, Dv1, run, ak, av,
                               ATTN_FEAT_OUT, dpk, ATTN__ROW(p->dv, p->dvs, b, g, j0), p->dvs[2],
                               w);
                phi_backward(f, kb + j0 * p->ks[2], p->ks[2], n, f->phik + j0 * F, dpk,
                             ATTN__ROW(p->dk, p->dks, b, g, j0), p->dks[2]);
#pragma omp simd
                for (int64_t e = 0; e < sz; e++) {
                    run[e] += H[e];
                    tacc[e] += H[e];
                }
            }
#pragma omp simd
            for (int64_t e = 0; e < sz; e++) /* Suf_sg = Suf_{sg+1} + T_sg, as the table's */
                pre[e] = pre[e] + tacc[e];
        }
    }
}

attn_status attn__approx_feature_backward(attn_ctx *ctx, const attn__approx_plan *p,
                                          const float *omega) {
    feat f;
    attn_status st = feat_init(ctx, &f, p, omega, 1);
    if (st) {
        feat_free(&f);
        return st;
    }
    const int64_t C = f.C, F = f.F, Dv1 = f.Dv1, S = p->S, sz = F * Dv1;
    for (int64_t b = 0; b < p->B; b++)
        for (int64_t g = 0; g < p->Hkv; g++) {
            key_state(&f, b, g, 1);
            if (p->causal) {
                causal_backward(&f, b, g);
                continue;
            }
            const int64_t h0 = g * p->group, h1 = h0 + p->group;
            const float *kb = ATTN__ROW(p->k, p->ks, b, g, 0);
            const double *G = f.gst + f.ncq * sz;
            for (int64_t h = h0; h < h1; h++) {
                /* the key sums are float64 over the group's heads: the first
                 * head's key pass sets them, the last one's rounds them
                 * straight into dphi_k and dv (a single head: both) */
                const int first = h == h0, last = h + 1 == h1;
#pragma omp parallel for num_threads(f.nth) schedule(dynamic, 1)
                for (int64_t c = 0; c < f.ncq; c++)
                    backward_chunk(&f, b, h, c, 0, f.gst + c * sz, NULL, NULL, ATTN_FEAT_ADD,
                                   f.bscr + f.bscr_len * omp_get_thread_num(), NULL);
                /* G = the sum of the query chunks' G_c (fixed order) */
                double *restrict run = f.run;
                memset(run, 0, (size_t)sz * sizeof(double));
                for (int64_t c = f.ncq - 1; c >= 0; c--) {
                    const double *restrict gc = f.gst + c * sz;
                    for (int64_t e = 0; e < sz; e++)
                        run[e] += gc[e];
                }
                memcpy(f.gst + f.ncq * sz, run, (size_t)sz * sizeof(double));
                const int how = last ? (first ? ATTN_FEAT_OUT_ONLY : ATTN_FEAT_OUT)
                                     : (first ? ATTN_FEAT_SET : ATTN_FEAT_ADD);
#pragma omp parallel for num_threads(f.nth) schedule(dynamic, 1)
                for (int64_t c = 0; c < f.nck; c++) {
                    const int64_t j0 = c * C, n = ATTN_MIN(C, S - j0);
                    if (c + 1 < f.nck) { /* the next chunk's rows, ahead */
                        const int64_t j1 = j0 + C, nn = ATTN_MIN(C, S - j1);
                        prefetch_rows(f.phik + j1 * F, F, nn, F);
                        prefetch_rows(f.v1 + j1 * Dv1, Dv1, nn, Dv1);
                    }
                    f.fk->bwd_key(f.phik + j0 * F, f.v1 + j0 * Dv1, n, F, Dv1, G, f.acck + j0 * F,
                                  f.accv + j0 * Dv1, how, f.dphik + j0 * F,
                                  ATTN__ROW(p->dv, p->dvs, b, g, j0), p->dvs[2],
                                  f.bscr + f.bscr_len * omp_get_thread_num());
                    if (last) /* the chain rule while the chunk's dphi_k is in cache */
                        phi_backward(&f, kb + j0 * p->ks[2], p->ks[2], n, f.phik + j0 * F,
                                     f.dphik + j0 * F, ATTN__ROW(p->dk, p->dks, b, g, j0),
                                     p->dks[2]);
                }
            }
        }
    feat_free(&f);
    return ATTN_OK;
}

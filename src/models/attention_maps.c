/* Analyses of attention matrices (attn/explain.h): per-head statistics,
 * rollout and flow (Abnar and Zuidema, 2020). Pure functions of the
 * probabilities, computed in float64. */
#include "core/internal.h"

#include <attn/explain.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

attn_status attn_attention_stats(attn_ctx *ctx, int64_t T, const float *p, const uint8_t *cls,
                                 attn_head_stats *out, float *row_entropy) {
    attn__ctx_clear(ctx);
    if (T < 1 || !p || !out)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "attention stats: T = %lld, p and out required",
                             (long long)T);
    memset(out, 0, sizeof *out);
    out->top_p = -1;
    for (int64_t i = 0; i < T; i++) {
        double ent = 0, dist = 0, sc = 0, ss = 0, sp = 0;
        for (int64_t j = 0; j < T; j++) {
            const double v = p[i * T + j];
            if (v > 0) ent -= v * log(v);
            dist += v * (double)(i > j ? i - j : j - i);
            if (cls) {
                if (cls[j] & ATTN_TOKEN_CLS) sc += v;
                if (cls[j] & ATTN_TOKEN_SEP) ss += v;
                if (cls[j] & ATTN_TOKEN_PUNCT) sp += v;
            }
            if ((i != j || T == 1) && v > out->top_p)
                out->top_p = v, out->top_i = i, out->top_j = j;
        }
        if (row_entropy) row_entropy[i] = (float)ent;
        out->entropy += ent, out->distance += dist;
        out->share_cls += sc, out->share_sep += ss, out->share_punct += sp;
    }
    out->entropy /= (double)T, out->distance /= (double)T;
    out->share_cls /= (double)T, out->share_sep /= (double)T, out->share_punct /= (double)T;
    return ATTN_OK;
}

/* A'_l = rownorm(0.5 * mean_h probs[l, h] + 0.5 I) into a [T, T] (double). */
static void residual_attention(int64_t H, int64_t T, const float *pl, double *a) {
    for (int64_t i = 0; i < T; i++) {
        double s = 0;
        for (int64_t j = 0; j < T; j++) {
            double v = 0;
            for (int64_t h = 0; h < H; h++)
                v += pl[(h * T + i) * T + j];
            v = 0.5 * v / (double)H + (i == j ? 0.5 : 0.0);
            a[i * T + j] = v, s += v;
        }
        if (s > 0)
            for (int64_t j = 0; j < T; j++)
                a[i * T + j] /= s;
    }
}

static attn_status check_maps(attn_ctx *ctx, int64_t L, int64_t H, int64_t T, const float *probs,
                              const void *out) {
    if (L < 1 || H < 1 || T < 1 || !probs || !out)
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "attention maps: L = %lld, H = %lld, T = %lld must be >= 1, probs "
                             "and out non-NULL",
                             (long long)L, (long long)H, (long long)T);
    return ATTN_OK;
}

attn_status attn_attention_rollout(attn_ctx *ctx, int64_t L, int64_t H, int64_t T,
                                   const float *probs, float *out) {
    attn__ctx_clear(ctx);
    attn_status st = check_maps(ctx, L, H, T, probs, out);
    if (st) return st;
    const size_t TT = (size_t)(T * T);
    double *a = malloc(TT * sizeof *a), *r = malloc(TT * sizeof *r), *t = malloc(TT * sizeof *t);
    if (!a || !r || !t) {
        free(a), free(r), free(t);
        return attn_ctx_fail(ctx, ATTN_E_NOMEM, "rollout: out of memory for T = %lld",
                             (long long)T);
    }
    residual_attention(H, T, probs, r);
    for (int64_t l = 1; l < L; l++) { /* r = A'_l r */
        residual_attention(H, T, probs + (size_t)(l * H) * TT, a);
        memset(t, 0, TT * sizeof *t);
        for (int64_t i = 0; i < T; i++)
            for (int64_t k = 0; k < T; k++) {
                const double v = a[i * T + k];
                if (v == 0) continue;
                for (int64_t j = 0; j < T; j++)
                    t[i * T + j] += v * r[k * T + j];
            }
        double *sw = r;
        r = t, t = sw;
    }
    for (size_t k = 0; k < TT; k++)
        out[k] = (float)r[k];
    free(a), free(r), free(t);
    return ATTN_OK;
}

/* ---- max flow: Dinic over the layered graph, float64 ---------------------
 * Node (l, t) = l*T + t, l = 0..L. Edge (l, j) -> (l+1, i) has capacity
 * A'_l[i, j]; each edge is stored with its reverse (capacity 0). The maximum
 * flow value does not depend on the algorithm, so Dinic gives what the
 * paper's Edmonds-Karp gives, faster. */
typedef struct flow_graph {
    int64_t n, m;
    int64_t *head;  /* [n + 1] CSR offsets */
    int64_t *to;    /* [m] */
    int64_t *rev;   /* [m] index of the reverse edge */
    double *cap0;   /* [m] capacity */
    double *res;    /* [m] residual */
    int64_t *level; /* [n] */
    int64_t *it;    /* [n] */
    int64_t *queue; /* [n] */
} flow_graph;

#define FLOW_EPS 1e-13

static void graph_free(flow_graph *g) {
    free(g->head), free(g->to), free(g->rev), free(g->cap0), free(g->res);
    free(g->level), free(g->it), free(g->queue);
}

/* Build the graph from A' [L, T, T] (double). */
static int graph_build(flow_graph *g, int64_t L, int64_t T, const double *ap) {
    const int64_t n = (L + 1) * T;
    int64_t *deg = calloc((size_t)n + 1, sizeof *deg);
    if (!deg) return -1;
    /* forward edges (l, j) -> (l+1, i) for nonzero A'_l[i, j]; reverses */
    for (int64_t l = 0; l < L; l++)
        for (int64_t i = 0; i < T; i++)
            for (int64_t j = 0; j < T; j++)
                if (ap[(l * T + i) * T + j] > 0) deg[l * T + j]++, deg[(l + 1) * T + i]++;
    g->n = n;
    g->head = malloc((size_t)(n + 1) * sizeof *g->head);
    int64_t m = 0;
    for (int64_t v = 0; v < n; v++)
        m += deg[v];
    g->m = m;
    g->to = malloc((size_t)(m + 1) * sizeof *g->to);
    g->rev = malloc((size_t)(m + 1) * sizeof *g->rev);
    g->cap0 = malloc((size_t)(m + 1) * sizeof *g->cap0);
    g->res = malloc((size_t)(m + 1) * sizeof *g->res);
    g->level = malloc((size_t)n * sizeof *g->level);
    g->it = malloc((size_t)n * sizeof *g->it);
    g->queue = malloc((size_t)n * sizeof *g->queue);
    if (!g->head || !g->to || !g->rev || !g->cap0 || !g->res || !g->level || !g->it || !g->queue) {
        free(deg);
        return -1;
    }
    g->head[0] = 0;
    for (int64_t v = 0; v < n; v++)
        g->head[v + 1] = g->head[v] + deg[v];
    for (int64_t v = 0; v < n; v++)
        deg[v] = g->head[v]; /* next free slot */
    for (int64_t l = 0; l < L; l++)
        for (int64_t i = 0; i < T; i++)
            for (int64_t j = 0; j < T; j++) {
                const double c = ap[(l * T + i) * T + j];
                if (!(c > 0)) continue;
                const int64_t u = l * T + j, v = (l + 1) * T + i;
                const int64_t e = deg[u]++, r = deg[v]++;
                g->to[e] = v, g->rev[e] = r, g->cap0[e] = c;
                g->to[r] = u, g->rev[r] = e, g->cap0[r] = 0;
            }
    free(deg);
    return 0;
}

static int bfs(flow_graph *g, int64_t s, int64_t t) {
    for (int64_t v = 0; v < g->n; v++)
        g->level[v] = -1;
    int64_t qh = 0, qt = 0;
    g->level[s] = 0, g->queue[qt++] = s;
    while (qh < qt) {
        const int64_t u = g->queue[qh++];
        for (int64_t e = g->head[u]; e < g->head[u + 1]; e++)
            if (g->res[e] > FLOW_EPS && g->level[g->to[e]] < 0) {
                g->level[g->to[e]] = g->level[u] + 1;
                g->queue[qt++] = g->to[e];
            }
    }
    return g->level[t] >= 0;
}

static double dfs(flow_graph *g, int64_t u, int64_t t, double f) {
    if (u == t) return f;
    for (int64_t *e = &g->it[u]; *e < g->head[u + 1]; (*e)++) {
        const int64_t v = g->to[*e];
        if (g->res[*e] <= FLOW_EPS || g->level[v] != g->level[u] + 1) continue;
        const double d = dfs(g, v, t, f < g->res[*e] ? f : g->res[*e]);
        if (d > 0) {
            g->res[*e] -= d;
            g->res[g->rev[*e]] += d;
            return d;
        }
    }
    return 0;
}

static double max_flow(flow_graph *g, int64_t s, int64_t t) {
    memcpy(g->res, g->cap0, (size_t)g->m * sizeof *g->res);
    double total = 0;
    while (bfs(g, s, t)) {
        for (int64_t v = 0; v < g->n; v++)
            g->it[v] = g->head[v];
        double f;
        while ((f = dfs(g, s, t, INFINITY)) > 0)
            total += f;
    }
    return total;
}

attn_status attn_attention_flow(attn_ctx *ctx, int64_t L, int64_t H, int64_t T, const float *probs,
                                int64_t i0, int64_t rows, float *out) {
    attn__ctx_clear(ctx);
    attn_status st = check_maps(ctx, L, H, T, probs, out);
    if (st) return st;
    if (i0 < 0 || rows < 0 || i0 + rows > T)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "flow rows [%lld, %lld) outside [0, T = %lld)",
                             (long long)i0, (long long)(i0 + rows), (long long)T);
    if (rows == 0) return ATTN_OK;
    const size_t TT = (size_t)(T * T);
    double *ap = malloc((size_t)L * TT * sizeof *ap);
    double *f = malloc((size_t)T * sizeof *f);
    flow_graph g;
    memset(&g, 0, sizeof g);
    if (ap)
        for (int64_t l = 0; l < L; l++)
            residual_attention(H, T, probs + (size_t)(l * H) * TT, ap + (size_t)l * TT);
    if (!ap || !f || graph_build(&g, L, T, ap)) {
        st = attn_ctx_fail(ctx, ATTN_E_NOMEM, "flow: out of memory for %lld layers of T = %lld",
                           (long long)L, (long long)T);
    } else {
        for (int64_t r = 0; r < rows; r++) {
            const int64_t sink = L * T + i0 + r;
            double s = 0;
            for (int64_t j = 0; j < T; j++)
                s += f[j] = max_flow(&g, j, sink);
            for (int64_t j = 0; j < T; j++)
                out[r * T + j] = (float)(s > 0 ? f[j] / s : 0.0);
        }
    }
    free(ap), free(f);
    graph_free(&g);
    return st;
}

/* Generation with a decoder: the sampling rule (temperature, top-k, top-p,
 * greedy) and the loop of a prefill then one-token steps over the KV cache.
 * The draws come from one splitmix64 stream seeded by the caller, and every
 * choice is made on one thread from the logits, so the same seed gives the
 * same tokens whatever the thread count. */
#include "models/gpt2.h"
#include "nn/nn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void attn_gen_params_default(const attn_gpt *m, attn_gen_params *p) {
    if (!p) return;
    memset(p, 0, sizeof *p);
    p->max_new_tokens = 64;
    p->temperature = 1.0f;
    p->top_k = 0;
    p->top_p = 1.0f;
    p->seed = 0;
    p->eos_id = m ? m->cfg.eos_token_id : -1;
}

/* The message for a bad p, or NULL. */
const char *attn__gen_bad_params(const attn_gen_params *p) {
    if (!(p->temperature >= 0.0f) || !isfinite(p->temperature))
        return "temperature must be a finite number >= 0";
    if (p->top_k < 0) return "top_k must be >= 0 (0: off)";
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f)) return "top_p must be in (0, 1] (1: off)";
    if (p->max_new_tokens < 0) return "max_new_tokens must be >= 0";
    return NULL;
}

/* Sort order of candidates: larger logit first, then the lower id (a fixed
 * order, so ties never depend on the sort). */
static int cmp_desc(const void *x, const void *y, void *arg) {
    const float *lg = arg;
    const int32_t a = *(const int32_t *)x, b = *(const int32_t *)y;
    if (lg[a] != lg[b]) return lg[a] > lg[b] ? -1 : 1;
    return (a > b) - (a < b);
}

/* idx[0..n) in descending order of lg. qsort_r is not C11: a small merge
 * sort keeps this portable and stable. */
static void sort_desc(int32_t *idx, int32_t *tmp, int64_t n, const float *lg) {
    if (n < 2) return;
    if (n <= 16) { /* insertion sort */
        for (int64_t i = 1; i < n; i++) {
            int32_t v = idx[i];
            int64_t j = i;
            while (j > 0 && cmp_desc(&v, &idx[j - 1], (void *)lg) < 0) {
                idx[j] = idx[j - 1];
                j--;
            }
            idx[j] = v;
        }
        return;
    }
    const int64_t h = n / 2;
    sort_desc(idx, tmp, h, lg);
    sort_desc(idx + h, tmp, n - h, lg);
    int64_t i = 0, j = h, k = 0;
    while (i < h && j < n)
        tmp[k++] = cmp_desc(&idx[j], &idx[i], (void *)lg) < 0 ? idx[j++] : idx[i++];
    while (i < h)
        tmp[k++] = idx[i++];
    while (j < n)
        tmp[k++] = idx[j++];
    memcpy(idx, tmp, (size_t)n * sizeof *idx);
}

/* k largest of lg into idx[0..k) in descending order: a partial selection
 * (a binary heap of k) instead of sorting all V. */
static void top_k_select(const float *lg, int64_t V, int64_t k, int32_t *idx) {
    /* min-heap over idx[0..k) by (logit, -id): the root is the worst kept */
#define WORSE(a, b) (cmp_desc(&(a), &(b), (void *)lg) > 0)
    int64_t n = 0;
    for (int32_t id = 0; id < V; id++) {
        if (n == k && !WORSE(idx[0], id)) continue;
        int64_t i;
        if (n < k) { /* sift up */
            i = n++;
            while (i > 0 && WORSE(id, idx[(i - 1) / 2])) {
                idx[i] = idx[(i - 1) / 2];
                i = (i - 1) / 2;
            }
            idx[i] = id;
            continue;
        }
        i = 0; /* replace the root, sift down */
        for (;;) {
            int64_t c = 2 * i + 1;
            if (c >= n) break;
            if (c + 1 < n && WORSE(idx[c + 1], idx[c])) c++;
            if (!WORSE(idx[c], id)) break;
            idx[i] = idx[c];
            i = c;
        }
        idx[i] = id;
    }
#undef WORSE
}

int32_t attn_gen_sample(float *lg, int64_t V, const attn_gen_params *p, uint64_t *rng,
                        int32_t *idx) {
    if (!lg || !p || !rng || !idx || V < 1 || V > INT32_MAX || attn__gen_bad_params(p)) return -1;
    if (p->temperature == 0.0f) { /* greedy: the first maximum; NaN never wins */
        int32_t best = 0;
        for (int32_t i = 1; i < V; i++)
            if (lg[i] > lg[best] || (lg[best] != lg[best] && lg[i] == lg[i])) best = i;
        return best;
    }
    const float inv_t = 1.0f / p->temperature;
    for (int64_t i = 0; i < V; i++)
        lg[i] = lg[i] != lg[i] ? -INFINITY : lg[i] * inv_t;
    /* candidates idx[0..n): all ids in id order, or the top-k / nucleus in
     * descending order */
    int64_t n = V;
    const int64_t k = p->top_k > 0 && p->top_k < V ? p->top_k : 0;
    int32_t *tmp = NULL;
    if (k) {
        top_k_select(lg, V, k, idx);
        n = k;
    } else {
        for (int32_t i = 0; i < V; i++)
            idx[i] = i;
    }
    if (k || p->top_p < 1.0f) {
        tmp = malloc((size_t)n * sizeof *tmp);
        if (!tmp) return -1;
        sort_desc(idx, tmp, n, lg);
        free(tmp);
    }
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        mx = fmaxf(mx, lg[idx[i]]);
    if (mx == -INFINITY) return idx[0];
    double total = 0.0;
    for (int64_t i = 0; i < n; i++)
        total += exp((double)lg[idx[i]] - (double)mx);
    if (p->top_p < 1.0f) { /* the smallest prefix whose mass reaches top_p */
        double cum = 0.0;
        int64_t keep = 0;
        while (keep < n && (keep == 0 || cum < (double)p->top_p * total))
            cum += exp((double)lg[idx[keep++]] - (double)mx);
        n = keep, total = cum;
    }
    attn__rng r = {*rng};
    const double u = (double)(attn__rng_next(&r) >> 11) * 0x1.0p-53 * total;
    *rng = r.s;
    double cum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        cum += exp((double)lg[idx[i]] - (double)mx);
        if (u < cum) return idx[i];
    }
    for (int64_t i = n - 1; i > 0; i--) /* rounding: the last candidate with mass */
        if (lg[idx[i]] > -INFINITY) return idx[i];
    return idx[0];
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

attn_status attn_gpt_generate(attn_ctx *ctx, const attn_gpt *m, const int32_t *prompt, int64_t n,
                              const attn_gen_params *p, attn_gen_token_fn on_token, void *user,
                              int32_t *out, int64_t *n_out, attn_gen_stats *stats) {
    attn__ctx_clear(ctx);
    if (n_out) *n_out = 0;
    if (stats) memset(stats, 0, sizeof *stats);
    if (!m || !prompt || !p)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "model, prompt or params is NULL");
    const char *why = attn__gen_bad_params(p);
    if (why) return attn_ctx_fail(ctx, ATTN_E_ARG, "generation parameters: %s", why);
    const attn_gpt_config *cf = &m->cfg;
    if (n < 1) return attn_ctx_fail(ctx, ATTN_E_ARG, "the prompt is empty (need >= 1 token)");
    if (n > cf->n_positions)
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "the prompt has %lld tokens, more than the model's n_positions = "
                             "%lld",
                             (long long)n, (long long)cf->n_positions);
    if (p->max_new_tokens > cf->n_positions - n + 1)
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "%lld prompt tokens + %lld new tokens exceed the model's position "
                             "table (n_positions = %lld: at most %lld new tokens)",
                             (long long)n, (long long)p->max_new_tokens, (long long)cf->n_positions,
                             (long long)(cf->n_positions - n + 1));
    if (p->eos_id >= cf->vocab_size)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "eos_id %d is outside [0, vocab_size = %lld)",
                             p->eos_id, (long long)cf->vocab_size);
    if (p->max_new_tokens == 0) return ATTN_OK;
    const int64_t V = cf->vocab_size;
    float *lg = malloc((size_t)V * sizeof *lg);
    int32_t *idx = malloc((size_t)V * sizeof *idx);
    attn_gpt_cache *c = NULL;
    attn_status st =
        lg && idx ? ATTN_OK
                  : attn_ctx_fail(ctx, ATTN_E_NOMEM, "cannot allocate %lld logits", (long long)V);
    if (!st) st = attn_gpt_cache_create(ctx, m, 1, n + p->max_new_tokens - 1, &c);
    double t0 = now_s(), t1 = t0;
    if (!st) st = attn_gpt_forward(ctx, m, c, n, prompt, 1, lg);
    t1 = now_s();
    uint64_t rng = p->seed;
    int64_t made = 0;
    while (!st) {
        const int32_t id = attn_gen_sample(lg, V, p, &rng, idx);
        if (id < 0) {
            st = attn_ctx_fail(ctx, ATTN_E_NOMEM, "sampling: out of memory");
            break;
        }
        if (out) out[made] = id;
        made++;
        const int stop = on_token ? on_token(user, id) : 0;
        if (stop || id == p->eos_id || made == p->max_new_tokens) break;
        st = attn_gpt_forward(ctx, m, c, 1, &id, 1, lg);
    }
    const double t2 = now_s();
    if (n_out) *n_out = made;
    if (stats) {
        stats->prompt_tokens = n, stats->new_tokens = made;
        stats->prompt_s = t1 - t0, stats->decode_s = t2 - t1;
    }
    attn_gpt_cache_free(c);
    free(lg), free(idx);
    return st;
}

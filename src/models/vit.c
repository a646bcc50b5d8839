/* Vision Transformer, forward (attn/vit.h): patch embedding as one GEMM over
 * the unfolded patches, [CLS] and position embeddings, the pre-LN
 * transformer layers of nn/block.h, final LayerNorm, pooler, classifier.
 *
 * A batch of B images of gh x gw patches is B sequences of T = 1 + gh*gw
 * token rows (row b*T + t, token 0 the [CLS]), all real, so no padding. */
#include "models/vit.h"
#include "nn/block.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define BATCH_IMAGES 16 /* images per pass: bounds the scratch */

attn_status attn__vit_alloc(attn_ctx *ctx, const attn_vit_config *c, attn_vit **out) {
    *out = NULL;
    if (c->hidden_size < 1 || c->num_layers < 1 || c->num_heads < 1 ||
        c->hidden_size % c->num_heads || c->intermediate_size < 1 || c->patch_size < 1 ||
        c->image_size < c->patch_size || c->num_channels < 1 || c->num_labels < 0 ||
        c->image_size > ATTN_IMAGE_MAX_SIDE || c->num_channels > 4 || c->patch_size > 1024)
        return attn_ctx_fail(ctx, ATTN_E_SHAPE,
                             "invalid ViT sizes (E=%lld, heads=%lld, I=%lld, layers=%lld, "
                             "image_size=%lld, patch_size=%lld, channels=%lld)",
                             (long long)c->hidden_size, (long long)c->num_heads,
                             (long long)c->intermediate_size, (long long)c->num_layers,
                             (long long)c->image_size, (long long)c->patch_size,
                             (long long)c->num_channels);
    const size_t E = (size_t)c->hidden_size, I = (size_t)c->intermediate_size;
    const size_t g = (size_t)(c->image_size / c->patch_size);
    const size_t K = (size_t)(c->num_channels * c->patch_size * c->patch_size);
    const size_t per_layer = attn__enc_weights_floats((int64_t)E, (int64_t)I);
    const size_t NL = (size_t)c->num_labels;
    const size_t total = E * K + E + E + (1 + g * g) * E + 2 * E +
                         (c->has_pooler ? E * E + E : 0) + NL * E + NL +
                         (size_t)c->num_layers * per_layer;
    attn_vit *m = calloc(1, sizeof *m);
    if (m) m->layers = calloc((size_t)c->num_layers, sizeof *m->layers);
    if (m && m->layers) m->arena = attn__malloc(total * sizeof(float));
    if (!m || !m->layers || !m->arena) {
        attn_vit_free(m);
        return attn_ctx_fail(ctx, ATTN_E_NOMEM, "cannot allocate %zu MB of ViT weights",
                             total * sizeof(float) >> 20);
    }
    m->cfg = *c;
    m->cfg.id2label = NULL;
    m->grid = (int64_t)g;
    float *p = m->arena;
#define TAKE(ptr, n) (ptr = p, p += (n))
    TAKE(m->patch_w, E * K);
    TAKE(m->patch_b, E);
    TAKE(m->cls, E);
    TAKE(m->pos, (1 + g * g) * E);
    TAKE(m->ln_g, E);
    TAKE(m->ln_b, E);
    if (c->has_pooler) {
        TAKE(m->pool_w, E * E);
        TAKE(m->pool_b, E);
    }
    if (NL) {
        TAKE(m->head_w, NL * E);
        TAKE(m->head_b, NL);
    }
    for (int64_t l = 0; l < c->num_layers; l++) {
        attn__vit_layer *L = &m->layers[l];
        p = attn__enc_weights_take(L, p, (int64_t)E, (int64_t)I);
        if (!c->qkv_bias) memset(L->bqkv, 0, 3 * E * sizeof(float));
    }
#undef TAKE
    *out = m;
    return ATTN_OK;
}

void attn_vit_free(attn_vit *m) {
    if (!m) return;
    if (m->labels)
        for (int64_t i = 0; i < m->cfg.num_labels; i++)
            free(m->labels[i]);
    free(m->labels);
    attn__free(m->arena);
    free(m->layers);
    free(m);
}

const attn_vit_config *attn_vit_get_config(const attn_vit *m) {
    return m ? &m->cfg : NULL;
}

const attn_image_preproc *attn_vit_get_preproc(const attn_vit *m) {
    return m ? &m->pre : NULL;
}

/* ---- position embeddings ------------------------------------------------ */

/* PyTorch's bicubic taps (A = -0.75) of output i of a side in -> out,
 * align_corners=False, in float as its CPU kernel: indices clamped. */
static void cubic_taps(int64_t in, int64_t out, int64_t i, int64_t idx[4], float w[4]) {
    const float scale = (float)in / (float)out;
    const float real = scale * ((float)i + 0.5f) - 0.5f;
    int64_t i0 = (int64_t)floorf(real);
    if (i0 > in - 1) i0 = in - 1;
    float t = real - (float)i0;
    t = t < 0.0f ? 0.0f : t > 1.0f ? 1.0f : t;
    const float A = -0.75f;
#define CC1(x) ((((A + 2.0f) * (x)) - (A + 3.0f)) * (x) * (x) + 1.0f)
#define CC2(x) ((((A * (x)) - 5.0f * A) * (x) + 8.0f * A) * (x)-4.0f * A)
    w[0] = CC2(t + 1.0f);
    w[1] = CC1(t);
    w[2] = CC1(1.0f - t);
    w[3] = CC2(2.0f - t);
#undef CC1
#undef CC2
    for (int j = 0; j < 4; j++) {
        int64_t k = i0 - 1 + j;
        idx[j] = k < 0 ? 0 : k > in - 1 ? in - 1 : k;
    }
}

void attn__vit_pos(const attn_vit *m, int64_t gh, int64_t gw, int square, float *out) {
    const int64_t E = m->cfg.hidden_size, g = m->grid;
    if (gh * gw == g * g && square) { /* Hugging Face: the table as it is */
        memcpy(out, m->pos, (size_t)((1 + g * g) * E) * sizeof(float));
        return;
    }
    memcpy(out, m->pos, (size_t)E * sizeof(float)); /* [CLS]'s row */
    const float *src = m->pos + E;                   /* [g, g, E] */
    for (int64_t y = 0; y < gh; y++) {
        int64_t iy[4], ix[4];
        float wy[4], wx[4];
        cubic_taps(g, gh, y, iy, wy);
        for (int64_t x = 0; x < gw; x++) {
            cubic_taps(g, gw, x, ix, wx);
            float *o = out + (1 + y * gw + x) * E;
            for (int64_t e = 0; e < E; e++) {
                float acc = 0.0f; /* sum_y w_y (sum_x w_x p), PyTorch's order */
                for (int a = 0; a < 4; a++) {
                    const float *r = src + iy[a] * g * E + e;
                    float t = 0.0f;
                    for (int b = 0; b < 4; b++)
                        t += wx[b] * r[ix[b] * E];
                    acc += wy[a] * t;
                }
                o[e] = acc;
            }
        }
    }
}

/* ---- forward ------------------------------------------------------------ */

typedef struct vit_ws {
    float *x, *qkv, *o, *h, *patches, *pos, *lse;
} vit_ws;

static void ws_free(vit_ws *w) {
    attn__free(w->x), attn__free(w->qkv), attn__free(w->o), attn__free(w->h);
    attn__free(w->patches), attn__free(w->pos), attn__free(w->lse);
}

static attn_status ws_alloc(attn_ctx *ctx, const attn_vit *m, int64_t B, int64_t T, vit_ws *w) {
    const attn_vit_config *c = &m->cfg;
    const size_t N = (size_t)(B * T), E = (size_t)c->hidden_size;
    const size_t K = (size_t)(c->num_channels * c->patch_size * c->patch_size);
    memset(w, 0, sizeof *w);
    w->x = attn__malloc(N * E * sizeof(float));
    w->qkv = attn__malloc(N * 3 * E * sizeof(float));
    w->o = attn__malloc(N * E * sizeof(float));
    w->h = attn__malloc(N * (size_t)c->intermediate_size * sizeof(float));
    w->patches = attn__malloc(N * (K > E ? K : E) * sizeof(float));
    w->pos = attn__malloc((size_t)T * E * sizeof(float));
    w->lse = attn__malloc((size_t)(B * c->num_heads * T) * sizeof(float));
    if (w->x && w->qkv && w->o && w->h && w->patches && w->pos && w->lse) return ATTN_OK;
    ws_free(w);
    return attn_ctx_fail(ctx, ATTN_E_NOMEM, "cannot allocate ViT scratch for %lld images of %lld tokens",
                         (long long)B, (long long)T);
}

attn__layer attn__vit_layer_view(const attn_vit *m, int64_t l) {
    const attn_vit_config *c = &m->cfg;
    return attn__enc_layer(&m->layers[l], c->hidden_size, c->num_heads, c->intermediate_size,
                           c->layer_norm_eps, 1, c->qkv_bias);
}

/* x [B*T, E] = embeddings of B images pixels [B, C, H, W]: the patches
 * unfolded to rows (c, y, x) and projected by one GEMM, plus bias, then the
 * [CLS] row, then position embeddings (w->pos, already for this grid). */
void attn__vit_embed(attn_ctx *ctx, const attn_vit *m, int64_t B, int64_t H, int64_t W,
                     int64_t gh, int64_t gw, const float *pixels, const float *pos, float *patches,
                     float *x) {
    const attn_vit_config *c = &m->cfg;
    const int64_t P = c->patch_size, C = c->num_channels, E = c->hidden_size;
    const int64_t K = C * P * P, Np = gh * gw, T = 1 + Np;
#pragma omp parallel for num_threads(attn_ctx_threads(ctx)) schedule(static)
    for (int64_t r = 0; r < B * Np; r++) {
        const int64_t b = r / Np, py = r % Np / gw, px = r % Np % gw;
        float *dst = patches + r * K;
        for (int64_t ch = 0; ch < C; ch++)
            for (int64_t y = 0; y < P; y++)
                memcpy(dst + (ch * P + y) * P,
                       pixels + ((b * C + ch) * H + py * P + y) * W + px * P,
                       (size_t)P * sizeof(float));
    }
    /* the projection lands in the token rows directly: image b's patches
     * are rows b*T + 1 .. b*T + Np, one GEMM per image */
    for (int64_t b = 0; b < B; b++)
        attn__linear_forward(ctx, patches + b * Np * K, K, Np, K, m->patch_w, m->patch_b, E,
                             x + (b * T + 1) * E, E);
#pragma omp parallel for num_threads(attn_ctx_threads(ctx)) schedule(static)
    for (int64_t r = 0; r < B * T; r++) {
        float *xr = x + r * E;
        const float *pr = pos + (r % T) * E;
        if (r % T == 0)
            for (int64_t e = 0; e < E; e++)
                xr[e] = m->cls[e] + pr[e];
        else
            for (int64_t e = 0; e < E; e++)
                xr[e] += pr[e];
    }
}

static attn_status check_args(attn_ctx *ctx, const attn_vit *m, int64_t B, int64_t H, int64_t W,
                              const float *pixels, int interpolate, int64_t *gh, int64_t *gw) {
    if (!m) return attn_ctx_fail(ctx, ATTN_E_ARG, "model is NULL");
    const attn_vit_config *c = &m->cfg;
    if (B < 0) return attn_ctx_fail(ctx, ATTN_E_ARG, "batch %lld is negative", (long long)B);
    if (B > 0 && !pixels) return attn_ctx_fail(ctx, ATTN_E_ARG, "pixels is NULL");
    if (!interpolate && (H != c->image_size || W != c->image_size))
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "image of %lld x %lld pixels (height x width), but the model takes "
                             "%lld x %lld without position-embedding interpolation",
                             (long long)H, (long long)W, (long long)c->image_size,
                             (long long)c->image_size);
    if (H < c->patch_size || W < c->patch_size || H > ATTN_IMAGE_MAX_SIDE ||
        W > ATTN_IMAGE_MAX_SIDE)
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "image of %lld x %lld pixels: each side must be in [patch_size = "
                             "%lld, %d]",
                             (long long)H, (long long)W, (long long)c->patch_size,
                             ATTN_IMAGE_MAX_SIDE);
    *gh = H / c->patch_size, *gw = W / c->patch_size;
    if ((*gh) * (*gw) + 1 > (1 << 20))
        return attn_ctx_fail(ctx, ATTN_E_ARG, "image of %lld x %lld pixels: too many patches",
                             (long long)H, (long long)W);
    return ATTN_OK;
}

attn_status attn_vit_forward(attn_ctx *ctx, const attn_vit *m, int64_t B, int64_t H, int64_t W,
                             const float *pixels, int interpolate, attn_vit_outputs *out) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    int64_t gh, gw;
    attn_status st = check_args(ctx, m, B, H, W, pixels, interpolate, &gh, &gw);
    if (st) return st;
    if (!out) return attn_ctx_fail(ctx, ATTN_E_ARG, "out is NULL");
    const attn_vit_config *c = &m->cfg;
    if (out->logits && !m->head_w)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "logits asked of a model without a classifier");
    if (out->pooled && !m->pool_w)
        return attn_ctx_fail(ctx, ATTN_E_ARG, "pooled output asked of a model without a pooler");
    if (B == 0) return ATTN_OK;
    const int64_t E = c->hidden_size, T = 1 + gh * gw, C = c->num_channels;
    const int64_t Bc = ATTN_MIN(B, (int64_t)BATCH_IMAGES);
    vit_ws w;
    if ((st = ws_alloc(ctx, m, Bc, T, &w))) return st;
    attn__vit_pos(m, gh, gw, H == W, w.pos);
    attn_tensor nomask;
    memset(&nomask, 0, sizeof nomask);
    for (int64_t b0 = 0; b0 < B && !st; b0 += Bc) {
        const int64_t nb = ATTN_MIN(Bc, B - b0);
        const attn__batch bt = {nb, T, NULL};
        attn__vit_embed(ctx, m, nb, H, W, gh, gw, pixels + b0 * C * H * W, w.pos, w.patches, w.x);
        attn__layer_ws lws = {w.qkv, w.o, w.h};
        for (int64_t l = 0; l < c->num_layers && !st; l++) {
            const attn__layer L = attn__vit_layer_view(m, l);
            st = attn__layer_forward(ctx, &L, &bt, w.x, nomask, NULL, &lws);
        }
        if (st) break;
        /* the final LayerNorm: every row for hidden, else the [CLS] rows */
#pragma omp parallel for num_threads(attn_ctx_threads(ctx)) schedule(static)
        for (int64_t r = 0; r < nb * T; r++)
            if (out->hidden || r % T == 0)
                attn__layernorm_forward(w.x + r * E, E, 1, E, m->ln_g, m->ln_b, c->layer_norm_eps,
                                        w.x + r * E, E, NULL, NULL);
        if (out->hidden)
            memcpy(out->hidden + b0 * T * E, w.x, (size_t)(nb * T * E) * sizeof(float));
        if (out->logits)
            attn__linear_forward(ctx, w.x, T * E, nb, E, m->head_w, m->head_b, c->num_labels,
                                 out->logits + b0 * c->num_labels, c->num_labels);
        if (out->pooled) {
            float *pl = out->pooled + b0 * E;
            attn__linear_forward(ctx, w.x, T * E, nb, E, m->pool_w, m->pool_b, E, pl, E);
            for (int64_t k = 0; k < nb * E; k++)
                pl[k] = tanhf(pl[k]);
        }
    }
    ws_free(&w);
    return st;
}

attn_status attn_vit_attention(attn_ctx *ctx, const attn_vit *m, int64_t H, int64_t W,
                               const float *pixels, int interpolate, float *probs) {
    if (!ctx) return ATTN_E_ARG;
    attn__ctx_clear(ctx);
    int64_t gh, gw;
    attn_status st = check_args(ctx, m, 1, H, W, pixels, interpolate, &gh, &gw);
    if (st) return st;
    if (!probs) return attn_ctx_fail(ctx, ATTN_E_ARG, "probs is NULL");
    const attn_vit_config *c = &m->cfg;
    const int64_t E = c->hidden_size, NH = c->num_heads, T = 1 + gh * gw;
    vit_ws w;
    if ((st = ws_alloc(ctx, m, 1, T, &w))) return st;
    attn__vit_pos(m, gh, gw, H == W, w.pos);
    attn__vit_embed(ctx, m, 1, H, W, gh, gw, pixels, w.pos, w.patches, w.x);
    const attn__batch bt = {1, T, NULL};
    float *ln = w.patches; /* [T, E]: LN1(x), the attention's input */
    for (int64_t l = 0; l < c->num_layers && !st; l++) {
        const attn__layer L = attn__vit_layer_view(m, l);
        for (int64_t r = 0; r < T; r++)
            attn__layernorm_forward(w.x + r * E, E, 1, E, L.ln1_g, L.ln1_b, L.eps, ln + r * E, E,
                                    NULL, NULL);
        attn__mha_block_args a;
        memset(&a, 0, sizeof a);
        a.B = 1, a.T = T, a.x = ln, a.qkv = w.qkv, a.o = w.o, a.lse = w.lse;
        if ((st = attn__mha_block_attend(ctx, &L.attn, &a))) break;
        /* the probabilities through the same views the layer attended with */
        attn__attend_args at;
        memset(&at, 0, sizeof at);
        at.B = 1, at.T = T, at.S = T, at.lse = w.lse;
        at.q = (attn__rows){w.qkv, T * 3 * E, 3 * E};
        at.k = (attn__rows){w.qkv + E, T * 3 * E, 3 * E};
        at.v = (attn__rows){w.qkv + 2 * E, T * 3 * E, 3 * E};
        at.o = (attn__rows){w.o, T * E, E};
        attn_sdpa_args s;
        attn__attend_sdpa_args(&L.attn.heads, &at, &s);
        for (int64_t hh = 0; hh < NH && !st; hh++)
            st = attn_sdpa_probs(ctx, &s, 0, hh, 0,
                                 attn_tensor_make(probs + (l * NH + hh) * T * T, ATTN_F32, 2,
                                                  (int64_t[]){T, T}));
        if (st) break;
        float *y = w.qkv; /* q | k | v are spent: the branch output */
        attn__mha_block_out(ctx, &L.attn, T, w.o, y);
        attn__residual_add(ctx, T, E, w.x, y);
        for (int64_t r = 0; r < T; r++)
            attn__layernorm_forward(w.x + r * E, E, 1, E, L.ln2_g, L.ln2_b, L.eps, ln + r * E, E,
                                    NULL, NULL);
        attn__ffn_forward(ctx, &L.ffn, &bt, ln, w.h, y);
        attn__residual_add(ctx, T, E, w.x, y);
    }
    ws_free(&w);
    return st;
}

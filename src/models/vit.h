/* Internal layout of a loaded Vision Transformer (never installed). */
#ifndef ATTN_MODELS_VIT_H
#define ATTN_MODELS_VIT_H

#include "core/internal.h"
#include "nn/block.h"

/* One encoder layer, PyTorch Linear layout (weight [out, in]). */
/* one layer's weights: the encoder weight set of nn/block.h */
typedef attn__enc_weights attn__vit_layer;

struct attn_vit {
    attn_vit_config cfg;
    attn_image_preproc pre;
    int64_t grid;             /* patches per side of the position table */
    float *patch_w, *patch_b; /* [E, C*P*P] (the convolution's (c, y, x) order), [E] */
    float *cls, *pos;         /* [E], [1 + grid^2, E] */
    float *ln_g, *ln_b;       /* [E] the final LayerNorm */
    float *pool_w, *pool_b;   /* [E, E], [E] or NULL */
    float *head_w, *head_b;   /* [num_labels, E], [num_labels] or NULL */
    attn__vit_layer *layers;
    float *arena;
    char **labels; /* cfg.id2label's strings */
};

/* A model with cfg's sizes (cfg.id2label is not copied; set m->labels
 * after) and uninitialised weights. Returns ATTN_OK, ATTN_E_SHAPE (invalid
 * sizes), ATTN_E_NOMEM. */
attn_status attn__vit_alloc(attn_ctx *ctx, const attn_vit_config *cfg, attn_vit **out);

/* Position embeddings for a gh x gw patch grid: [1 + gh*gw, E] into out,
 * bicubic-interpolated from the model's grid as PyTorch's
 * interpolate(mode="bicubic", align_corners=False) when (gh, gw) or the
 * image's squareness differ (Hugging Face's interpolate_pos_encoding). */
void attn__vit_pos(const attn_vit *m, int64_t gh, int64_t gw, int square, float *out);

/* Layer l as an nn/ transformer layer (pre-LN) over the model's weights. */
struct attn__layer;
struct attn__layer attn__vit_layer_view(const attn_vit *m, int64_t l);

/* x [B*T, E] (T = 1 + gh*gw) = the embeddings of pixels [B, C, H, W]: the
 * patches unfolded into patches [B*gh*gw, C*P*P] ((c, y, x) order) and
 * projected by the GEMM, plus bias; the [CLS] row; plus pos [T, E]. */
void attn__vit_embed(attn_ctx *ctx, const attn_vit *m, int64_t B, int64_t H, int64_t W,
                     int64_t gh, int64_t gw, const float *pixels, const float *pos, float *patches,
                     float *x);

/* The encoder half of attn_vit_trainer_step, shared with the captioner
 * (caption.c). encode: the embedding and layers of B images into the x
 * buffer [B*T, E] (before the final LayerNorm), activations kept.
 * encode_backward: from dL/dx in the dx buffer, gradients ACCUMULATED into
 * the trainer's gradient model (the caller zeroes them). bufs: the x and dx
 * buffers and the gradient model (same layout as the model). */
attn_status attn__vit_trainer_encode(attn_ctx *ctx, attn_vit_trainer *t, int64_t B,
                                     const float *pixels);
attn_status attn__vit_trainer_encode_backward(attn_ctx *ctx, attn_vit_trainer *t, int64_t B);
void attn__vit_trainer_bufs(attn_vit_trainer *t, float **x, float **dx, attn_vit **grad);

/* Saving helper shared with the captioner: dir/preprocessor_config.json of p
 * (JSON files are written by attn__write_json, io/json.h). */
attn_status attn__vit_write_preproc(attn_ctx *ctx, const attn_image_preproc *p, const char *dir);

#endif /* ATTN_MODELS_VIT_H */

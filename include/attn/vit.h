/* attn/vit.h: images and the Vision Transformer. PNG and JPEG decoding,
 * preprocessing as Hugging Face's ViTImageProcessor, and a ViT image
 * classifier loaded from a Hugging Face directory (ViTModel or
 * ViTForImageClassification). Users include <attn/attn.h>, which includes
 * this file. */
#ifndef ATTN_VIT_H
#define ATTN_VIT_H

#include "core.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- images --------------------------------------------------------------
 * A decoded image is 8-bit RGB, row-major, 3 bytes per pixel:
 *   grayscale       -> the gray value in R, G and B
 *   alpha           -> composited over white, as Hugging Face's convert_to_rgb
 *                      (PNG tRNS transparency too)
 *   palette         -> expanded through the palette
 *   16-bit samples  -> their high byte, as PIL
 *   interlaced PNG  -> de-interlaced
 *   CMYK JPEG       -> RGB (Adobe's inverted CMYK, as Photoshop writes it)
 * JPEG orientation: the EXIF Orientation tag of an APP1 segment (values 2..8)
 * is applied, so the image is upright, unless ATTN_IMAGE_NO_EXIF is given.
 *
 * Size limit, checked from the header before any pixel memory is allocated:
 * width and height in [1, ATTN_IMAGE_MAX_SIDE] and width * height <=
 * ATTN_IMAGE_MAX_PIXELS (or the lower max_pixels the caller passes). */
enum { ATTN_IMAGE_MAX_SIDE = 32768 };
#define ATTN_IMAGE_MAX_PIXELS ((int64_t)1 << 26)

/* Flags of attn_image_decode / attn_image_load. */
enum {
    ATTN_IMAGE_NO_EXIF = 1, /* keep a JPEG's stored orientation */
};

typedef struct attn_image {
    int64_t width, height;
    uint8_t *rgb; /* [height, width, 3]; free with attn_image_free */
} attn_image;

/* Decode the PNG or JPEG file in data[0..len) (the format is told by its
 * signature). name is used in messages (e.g. the path; NULL: "image").
 * max_pixels: 0 for ATTN_IMAGE_MAX_PIXELS, else a lower limit in [1, that].
 * Returns ATTN_OK, ATTN_E_ARG (NULL data or out, bad flags or max_pixels),
 * ATTN_E_FORMAT (not a PNG or JPEG, corrupt or truncated data; the message
 * says which), ATTN_E_SHAPE (zero or too large dimensions; the message gives
 * them and the limit), ATTN_E_NOMEM. On failure out is zeroed. Thread-safe
 * for distinct contexts. */
ATTN_NODISCARD attn_status attn_image_decode(attn_ctx *ctx, const void *data, size_t len,
                                             const char *name, int flags, int64_t max_pixels,
                                             attn_image *out);

/* Read the file at path and decode it as attn_image_decode (limit
 * ATTN_IMAGE_MAX_PIXELS). Also ATTN_E_IO (cannot read the file). Messages
 * name the path. */
ATTN_NODISCARD attn_status attn_image_load(attn_ctx *ctx, const char *path, int flags,
                                           attn_image *out);

/* Free the pixels and zero the image. attn_image_free(NULL) is a no-op. */
void attn_image_free(attn_image *img);

/* Preprocessing, as Hugging Face's ViTImageProcessor (its PIL backend,
 * ViTImageProcessorPil in transformers 5):
 *   resize to height x width with PIL's resampling filter (Image.resize:
 *   separable convolution, the filter widened by the scale when shrinking,
 *   so it is antialiased; 8-bit fixed-point accumulation as PIL does), then
 *   value * rescale_factor, then (value - mean[c]) / std[c], channels first. */
typedef enum attn_resample {
    ATTN_RESAMPLE_NEAREST = 0, /* PIL's numbering (preprocessor_config.json "resample") */
    ATTN_RESAMPLE_LANCZOS = 1,
    ATTN_RESAMPLE_BILINEAR = 2,
    ATTN_RESAMPLE_BICUBIC = 3,
    ATTN_RESAMPLE_BOX = 4,
    ATTN_RESAMPLE_HAMMING = 5,
} attn_resample;

typedef struct attn_image_preproc {
    int do_resize;
    int64_t height, width; /* the size after resizing (>= 1) */
    attn_resample resample;
    int do_rescale;
    float rescale_factor; /* 1/255 */
    int do_normalize;
    float mean[3], std[3]; /* std > 0 */
} attn_image_preproc;

/* Read dir/preprocessor_config.json (keys do_resize, size {height, width},
 * resample, do_rescale, rescale_factor, do_normalize, image_mean, image_std;
 * absent keys take ViTImageProcessor's defaults: 224 x 224, bilinear, 1/255,
 * mean and std 0.5). A missing file gives all defaults with the size from
 * default_size (> 0; e.g. config.json's image_size).
 * Returns ATTN_OK, ATTN_E_ARG (NULL argument, default_size outside
 * [1, ATTN_IMAGE_MAX_SIDE]), ATTN_E_IO, ATTN_E_FORMAT (bad JSON or key type,
 * a std <= 0; the message names the file and key), ATTN_E_SHAPE (a size
 * outside [1, ATTN_IMAGE_MAX_SIDE]), ATTN_E_UNSUPPORTED (a resample filter
 * or option this build does not implement, e.g. do_center_crop or
 * shortest_edge sizes). */
ATTN_NODISCARD attn_status attn_image_preproc_load(attn_ctx *ctx, const char *dir,
                                                   int64_t default_size, attn_image_preproc *p);

/* Resize img to out_w x out_h with PIL's filter f, 8-bit RGB in and out
 * (rgb [out_h, out_w, 3]). Returns ATTN_OK, ATTN_E_ARG (bad sizes or
 * filter), ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_image_resize(attn_ctx *ctx, const attn_image *img, int64_t out_w,
                                             int64_t out_h, attn_resample f, uint8_t *rgb);

/* img preprocessed as p says into pixels [3, H, W] (H, W = p's size when
 * resizing, else the image's). Returns ATTN_OK, ATTN_E_ARG (NULL argument,
 * bad p), ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_image_preprocess(attn_ctx *ctx, const attn_image *img,
                                                 const attn_image_preproc *p, float *pixels);

/* ---- the Vision Transformer ---------------------------------------------
 * Dosovitskiy et al. (2021), as Hugging Face's ViTModel:
 *   patches: the image cut into P x P squares, each flattened (c, y, x) and
 *            projected by one GEMM (the stride-P convolution);
 *   x = [CLS; patches] + position embeddings (bicubic-interpolated over the
 *            patch grid, as interpolate_pos_encoding, for other sizes);
 *   pre-LN encoder layers: x += MHA(LN1(x)); x += W2 gelu(W1 LN2(x) + b1) + b2;
 *   final LayerNorm; pooler tanh(W x_cls + b) when present; classifier
 *   logits = Wc x_cls + bc (x_cls after the final LayerNorm). */
typedef struct attn_vit_config {
    int64_t image_size, patch_size, num_channels;
    int64_t hidden_size, num_layers, num_heads, intermediate_size;
    float layer_norm_eps;
    int qkv_bias;        /* nonzero: query/key/value have biases */
    int64_t num_labels;  /* rows of the classifier; 0: no classifier (ViTModel) */
    int has_pooler;      /* ViTModel's pooler is in the weights */
    char **id2label;     /* [num_labels] label names ("LABEL_i" when absent) */
} attn_vit_config;

typedef struct attn_vit attn_vit;

/* Load a Hugging Face ViT directory: config.json (model_type "vit",
 * hidden_act "gelu") and model.safetensors with ViTModel or
 * ViTForImageClassification names (with or without the "vit." prefix), in
 * F32, F16 or BF16. id2label, when present, must name every classifier row.
 * Returns ATTN_OK, ATTN_E_IO, ATTN_E_FORMAT, ATTN_E_NOTFOUND (a file, key or
 * tensor is missing), ATTN_E_UNSUPPORTED (another model type or
 * activation), ATTN_E_SHAPE (a tensor disagrees with config.json; id2label
 * shorter than the classifier), ATTN_E_DTYPE, ATTN_E_NOMEM. Messages name
 * the file. On failure *out is NULL. */
ATTN_NODISCARD attn_status attn_vit_load(attn_ctx *ctx, const char *dir, attn_vit **out);
void attn_vit_free(attn_vit *m);
const attn_vit_config *attn_vit_get_config(const attn_vit *m);
/* The model's preprocessing (its directory's preprocessor_config.json). */
const attn_image_preproc *attn_vit_get_preproc(const attn_vit *m);

/* Forward of B images pixels [B, C, height, width] (preprocessed).
 * Without interpolate, height and width must equal image_size; with it, any
 * size of at least one patch (the patch grid is height/P x width/P, the
 * remainder cropped as the convolution does) and the position embeddings are
 * interpolated. Outputs, each optional (NULL: not computed):
 *   logits [B, num_labels]  (ATTN_E_ARG when the model has no classifier)
 *   pooled [B, E]           (ATTN_E_ARG when the model has no pooler)
 *   hidden [B, 1 + n_patches, E], after the final LayerNorm
 * Returns ATTN_OK, ATTN_E_ARG (sizes, as the message says), ATTN_E_NOMEM. */
typedef struct attn_vit_outputs {
    float *logits, *pooled, *hidden;
} attn_vit_outputs;
ATTN_NODISCARD attn_status attn_vit_forward(attn_ctx *ctx, const attn_vit *m, int64_t B,
                                            int64_t height, int64_t width, const float *pixels,
                                            int interpolate, attn_vit_outputs *out);

/* The attention of one image for display: probs [L, H, T, T] with T = 1 +
 * n_patches, every layer's and head's softmax(q k^T / sqrt(Dh)) (rebuilt from
 * the forward's lse). Arguments as attn_vit_forward with B = 1. */
ATTN_NODISCARD attn_status attn_vit_attention(attn_ctx *ctx, const attn_vit *m, int64_t height,
                                              int64_t width, const float *pixels, int interpolate,
                                              float *probs);

/* Save m as a Hugging Face ViTForImageClassification directory dir (created
 * if absent): config.json (with id2label), model.safetensors (F32, "vit."
 * names) and preprocessor_config.json (m's preprocessing). transformers and
 * attn_vit_load read it back. Files are written atomically. Returns ATTN_OK,
 * ATTN_E_ARG (a model without a classifier), ATTN_E_IO, ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_vit_save(attn_ctx *ctx, const attn_vit *m, const char *dir);

/* ---- training a ViT classifier from scratch ------------------------------
 * A ViTForImageClassification with cfg's sizes (num_channels 3, num_labels
 * >= 2, id2label optional, copied), initialised as transformers does
 * (truncated normal std 0.02 for weights, [CLS] and positions; zero biases;
 * LayerNorm 1 and 0), trained on batches at image_size with softmax
 * cross-entropy on the classifier. Used by `attn train --task digits`. */
typedef struct attn_vit_trainer attn_vit_trainer;

/* Returns ATTN_OK, ATTN_E_SHAPE (invalid sizes), ATTN_E_ARG (max_batch < 1,
 * fewer than 2 labels), ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_vit_trainer_create(attn_ctx *ctx, const attn_vit_config *cfg,
                                                   const attn_image_preproc *pre, int max_batch,
                                                   uint64_t seed, attn_vit_trainer **out);
void attn_vit_trainer_free(attn_vit_trainer *t);
/* Every parameter with its gradient, under the Hugging Face names
 * ("vit.embeddings.cls_token", ..., "classifier.bias"); for attn_adamw. */
const attn_param *attn_vit_trainer_params(attn_vit_trainer *t, int *n);
/* The model being trained (for attn_vit_forward and attn_vit_save). */
const attn_vit *attn_vit_trainer_model(const attn_vit_trainer *t);
/* Forward (and, with train, backward: every gradient overwritten) of B
 * images pixels [B, 3, image_size, image_size] with labels [B] in
 * [0, num_labels): the mean cross-entropy to *loss and the number of
 * correct argmax predictions to *correct (either may be NULL). Returns
 * ATTN_OK, ATTN_E_ARG (B outside [1, max_batch], a label out of range),
 * ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_vit_trainer_step(attn_ctx *ctx, attn_vit_trainer *t, int64_t B,
                                                 const float *pixels, const int32_t *labels,
                                                 int train, double *loss, int *correct);

#ifdef __cplusplus
}
#endif
#endif /* ATTN_VIT_H */

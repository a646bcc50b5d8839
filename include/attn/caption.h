/* attn/caption.h: an image captioner trained from scratch: a ViT encoder
 * (attn/vit.h) whose final-LayerNormed patch tokens are the keys and values
 * of the cross-attention in a small GPT-style decoder (pre-LN blocks of
 * causal self-attention, cross-attention and an MLP; learned token and
 * position embeddings; final LayerNorm; LM head tied to the token
 * embedding). Users include <attn/attn.h>, which includes this header. */
#ifndef ATTN_CAPTION_H
#define ATTN_CAPTION_H

#include "core.h"
#include "nn.h"
#include "vit.h"

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The decoder's sizes; its width is the encoder's hidden_size. */
typedef struct attn_caption_config {
    int64_t vocab;   /* words, ids 0..vocab-1 (the caller's vocabulary) */
    int64_t max_len; /* positions of the decoder (tokens including BOS) */
    int64_t layers, heads, mlp;
    const char *const *words; /* [vocab] the words (copied; NULL: "w0", "w1", ...) */
    int32_t bos, eos;         /* start and end tokens */
} attn_caption_config;

typedef struct attn_caption_trainer attn_caption_trainer;

/* A captioner with a fresh encoder of enc (ViT initialisation; its
 * classifier head is not used) and a decoder of dec (weights N(0, 0.02),
 * biases 0, LayerNorms 1 and 0), for batches of up to max_batch images.
 * Returns ATTN_OK, ATTN_E_ARG (sizes out of range), ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_caption_trainer_create(attn_ctx *ctx, const attn_vit_config *enc,
                                                       const attn_image_preproc *pre,
                                                       const attn_caption_config *dec,
                                                       int max_batch, uint64_t seed,
                                                       attn_caption_trainer **out);
void attn_caption_trainer_free(attn_caption_trainer *t);

/* Every trained parameter (encoder under "encoder.<ViT name>", decoder
 * under "decoder.<name>") with its gradient, for attn_adamw_create. */
const attn_param *attn_caption_trainer_params(attn_caption_trainer *t, int *n);

/* Teacher forcing over B images pixels [B, 3, S, S] and their token
 * sequences ids [B, T + 1] (T + 1 <= max_len + 1): the decoder reads ids[:, :T] and
 * predicts ids[:, 1:], cross-entropy averaged over the B*T predictions
 * into *loss. With train, every gradient is overwritten by this batch's.
 * Returns ATTN_OK, ATTN_E_ARG (sizes, an id outside the vocabulary). */
ATTN_NODISCARD attn_status attn_caption_trainer_step(attn_ctx *ctx, attn_caption_trainer *t,
                                                     int64_t B, const float *pixels,
                                                     const int32_t *ids, int64_t T, int train,
                                                     double *loss);

/* The decoder's configuration (words owned by t). */
const attn_caption_config *attn_caption_trainer_config(const attn_caption_trainer *t);

/* Save to dir (created if missing): model.safetensors (the names of
 * attn_caption_trainer_params), config.json (model_type "attn_captioner":
 * "encoder" with the ViT sizes, "decoder" with vocab, max_len, layers,
 * heads, mlp, "words", "bos", "eos") and preprocessor_config.json (the
 * images' preprocessing, ViTImageProcessor keys). Each file is written
 * whole or not at all. Returns ATTN_OK, ATTN_E_IO, ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_caption_save(attn_ctx *ctx, const attn_caption_trainer *t,
                                             const char *dir);

/* Load a directory written by attn_caption_save, for batches of up to
 * max_batch images; *pre receives its preprocessing. Returns ATTN_OK,
 * ATTN_E_NOTFOUND / ATTN_E_IO (missing or unreadable file),
 * ATTN_E_FORMAT / ATTN_E_SHAPE (bad config, missing or mis-shaped tensor;
 * the message names the file and key), ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_caption_load(attn_ctx *ctx, const char *dir, int max_batch,
                                             attn_image_preproc *pre, attn_caption_trainer **out);

/* Greedy decoding of B images: out [B, max_len] starts with bos, then the
 * most likely next word, until every sequence has written eos or max_len
 * tokens are there (positions after a sequence's eos are eos). */
ATTN_NODISCARD attn_status attn_caption_generate(attn_ctx *ctx, attn_caption_trainer *t, int64_t B,
                                                 const float *pixels, int32_t bos, int32_t eos,
                                                 int32_t *out);

/* Patches per side of the encoder's grid (*patch: the patch side). */
int64_t attn_caption_patch_grid(const attn_caption_trainer *t, int64_t *patch);

/* Cross-attention of one image's caption ids [T] (ids[0] the bos): out
 * [T, S] (S = patches, row-major over the patch grid) = row t the last
 * decoder layer's cross-attention probabilities of query position t (the
 * position that predicts word t + 1), averaged over the heads. Returns
 * ATTN_OK, ATTN_E_ARG (T outside [1, max_len], an id outside the
 * vocabulary). */
ATTN_NODISCARD attn_status attn_caption_cross_attention(attn_ctx *ctx, attn_caption_trainer *t,
                                                        const float *pixels, const int32_t *ids,
                                                        int64_t T, float *out);

#ifdef __cplusplus
}
#endif

#endif /* ATTN_CAPTION_H */

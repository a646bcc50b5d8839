/* attn/gpt.h: a causal decoder that generates text, of two architectures:
 *   GPT-2 (Hugging Face GPT2LMHeadModel directories): token and learned
 *     position embeddings, pre-LN blocks (causal multi-head attention,
 *     GELU-tanh MLP), a final LayerNorm, an LM head tied to the embeddings;
 *   Llama (LlamaForCausalLM): token embeddings, pre-RMSNorm blocks (causal
 *     grouped-query attention with rotary positions, applied inside the
 *     attention kernels, SwiGLU MLP), a final RMSNorm, an untied head;
 * a KV cache so each new token costs one row; and sampling (greedy,
 * temperature, top-k, top-p) with a seed. Users include <attn/attn.h>,
 * which includes this file. */
#ifndef ATTN_GPT_H
#define ATTN_GPT_H

#include "core.h"
#include "nn.h"
#include "sdpa.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What the MLP applies between its two projections (config.json's
 * activation_function). */
typedef enum attn_gpt_act {
    ATTN_GPT_GELU_TANH =
        0, /* "gelu_new", "gelu_pytorch_tanh": 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3))) */
    ATTN_GPT_GELU = 1, /* "gelu": exact, x Phi(x) */
    ATTN_GPT_SILU = 2, /* Llama's "silu" gate: down(silu(gate x) * up x) */
} attn_gpt_act;

/* The architecture, from config.json's model_type. */
typedef enum attn_gpt_arch {
    ATTN_GPT_ARCH_GPT2 = 0,  /* "gpt2" */
    ATTN_GPT_ARCH_LLAMA = 1, /* "llama" */
} attn_gpt_arch;

/* The sizes and options of a decoder (config.json; Llama's keys in
 * brackets). E = n_embd, Dh = E / n_head. */
typedef struct attn_gpt_config {
    attn_gpt_arch arch;
    int64_t vocab_size;       /* rows of the token embedding */
    int64_t n_positions;      /* the longest sequence, prompt + generated (GPT-2: rows of
                               * wpe) [max_position_embeddings] */
    int64_t n_embd;           /* E [hidden_size] */
    int64_t n_layer;          /* [num_hidden_layers] */
    int64_t n_head;           /* dividing E [num_attention_heads] */
    int64_t n_kv_head;        /* key/value heads, dividing n_head (GPT-2: n_head)
                               * [num_key_value_heads] */
    int64_t n_inner;          /* MLP width (GPT-2 config null: 4E) [intermediate_size] */
    float layer_norm_epsilon; /* LayerNorm's, or RMSNorm's [rms_norm_eps] */
    double rope_theta;        /* Llama: RoPE base [rope_theta, or rope_parameters.rope_theta] */
    attn_rope_scaling rope_scaling; /* Llama: [rope_scaling / rope_parameters]:
                                     * default, linear or llama3 */
    int attention_bias, mlp_bias;   /* Llama: biases of the projections (GPT-2: 1) */
    attn_gpt_act act;
    int scale_attn_weights;              /* 0: scores are q.k, not q.k / sqrt(Dh) */
    int scale_attn_by_inverse_layer_idx; /* scores of layer l further divided by l + 1 */
    int tie_word_embeddings;             /* 1: the LM head is wte; 0: lm_head.weight */
    int32_t bos_token_id, eos_token_id;  /* -1 when config.json has none */
    /* GPT-2's dropout probabilities, in [0, 1), used only by the train steps
     * of attn_gpt_trainer_step (never by evaluation or generation):
     * attn_pdrop on the attention probabilities, resid_pdrop on each
     * block's attention and MLP output before its residual add, embd_pdrop
     * on the summed embeddings [attn_pdrop, resid_pdrop, embd_pdrop;
     * absent from a GPT-2 config.json: 0.1, as GPT2Config; Llama: 0] */
    float attn_pdrop, resid_pdrop, embd_pdrop;
} attn_gpt_config;

/* Read dir/config.json (model_type "gpt2" or "llama"). Returns ATTN_OK,
 * ATTN_E_IO, ATTN_E_FORMAT (invalid JSON, a key of the wrong type),
 * ATTN_E_NOTFOUND (config.json or a required key missing),
 * ATTN_E_UNSUPPORTED (another model_type, an activation other than
 * gelu_new / gelu_pytorch_tanh / gelu (GPT-2) or silu (Llama),
 * cross-attention, a rope_type other than default / linear / llama3, a
 * head_dim with head_dim * heads != hidden_size), ATTN_E_SHAPE (n_embd not
 * a multiple of n_head, heads not a multiple of key/value heads). The
 * message names the file. */
ATTN_NODISCARD attn_status attn_gpt_config_load(attn_ctx *ctx, const char *dir,
                                                attn_gpt_config *cfg);

/* A loaded decoder (weights converted to F32, or bfloat16 on request,
 * Conv1D weights transposed to [out, in]). Opaque; immutable once loaded,
 * so one model may serve several contexts and caches at once. */
typedef struct attn_gpt attn_gpt;

/* Load a decoder directory: config.json as above and model.safetensors
 * with the architecture's tensor names in F32, F16 or BF16:
 *   GPT-2: wte.weight, wpe.weight, h.<l>.ln_1.weight, h.<l>.attn.c_attn.weight
 *     [E, 3E] (Conv1D), ..., ln_f.weight, with or without the "transformer."
 *     prefix of GPT2LMHeadModel; the attention's causal-mask buffers
 *     (attn.bias, attn.masked_bias) are ignored;
 *   Llama: model.embed_tokens.weight, model.layers.<l>.input_layernorm.weight,
 *     .self_attn.{q,k,v,o}_proj.weight, .post_attention_layernorm.weight,
 *     .mlp.{gate,up,down}_proj.weight, model.norm.weight, lm_head.weight
 *     (absent when tie_word_embeddings).
 * Returns the statuses of attn_gpt_config_load, and ATTN_E_NOTFOUND (a
 * tensor is missing), ATTN_E_SHAPE (a tensor's shape disagrees with
 * config.json, or the file has more layers than n_layer), ATTN_E_DTYPE (a
 * tensor is not a float type), ATTN_E_NOMEM. On failure *out is NULL. */
ATTN_NODISCARD attn_status attn_gpt_load(attn_ctx *ctx, const char *dir, attn_gpt **out);

/* How a loaded decoder stores its weight matrices. */
typedef enum attn_gpt_weights {
    ATTN_GPT_WEIGHTS_F32 = 0,  /* float32, the default */
    ATTN_GPT_WEIGHTS_BF16 = 1, /* the matrices (token embeddings, every
                                * projection, the LM head) as bfloat16,
                                * rounded to nearest even from the file's
                                * values (a BF16 file's values unchanged);
                                * products widen them to fp32 in registers
                                * and sum in fp32 with fp32 activations, so
                                * logits move by the weights' rounding only
                                * (docs/DESIGN.md, "bf16 weights"). Half the
                                * memory, and decoding, which reads every
                                * weight per token, up to twice as fast.
                                * Position embeddings, norms and biases stay
                                * fp32. attn_gpt_save refuses such a model. */
} attn_gpt_weights;

/* Options of attn_gpt_load_with; valid when zero-initialised (the
 * defaults of attn_gpt_load). */
typedef struct attn_gpt_load_opts {
    attn_gpt_weights weights;
} attn_gpt_load_opts;

/* attn_gpt_load with options (opts NULL: the defaults). Returns the
 * statuses of attn_gpt_load, and ATTN_E_ARG for an unknown opts->weights. */
ATTN_NODISCARD attn_status attn_gpt_load_with(attn_ctx *ctx, const char *dir,
                                              const attn_gpt_load_opts *opts, attn_gpt **out);
/* How m stores its weights (ATTN_GPT_WEIGHTS_F32 for NULL). */
attn_gpt_weights attn_gpt_get_weights(const attn_gpt *m);
void attn_gpt_free(attn_gpt *m);
const attn_gpt_config *attn_gpt_get_config(const attn_gpt *m);

/* The keys and values of B sequences seen so far, for every layer, so a new
 * token attends to them without recomputing them (cap positions each, at
 * most n_positions). All B sequences advance together. Also the forward's
 * scratch: a cache is used by one thread at a time. */
typedef struct attn_gpt_cache attn_gpt_cache;

/* Returns ATTN_OK, ATTN_E_ARG (B < 1, cap outside [1, n_positions]),
 * ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_gpt_cache_create(attn_ctx *ctx, const attn_gpt *m, int64_t B,
                                                 int64_t cap, attn_gpt_cache **out);
void attn_gpt_cache_free(attn_gpt_cache *c);
/* Positions filled (the next token's position). */
int64_t attn_gpt_cache_len(const attn_gpt_cache *c);
/* Forget everything (length 0), keeping the memory. */
void attn_gpt_cache_reset(attn_gpt_cache *c);

/* Run T new tokens of each of the cache's B sequences: ids [B, T] at
 * positions len .. len + T - 1 (len = attn_gpt_cache_len before the call),
 * appending their keys and values to the cache. Prefill a prompt with T =
 * its length, then decode with T = 1. logits: when last_only, [B, V] (the
 * next-token logits after each sequence's last new token), else [B, T, V];
 * NULL skips the LM head. Returns ATTN_OK, ATTN_E_ARG (NULL argument,
 * T < 1, an id outside [0, vocab_size), len + T beyond the cache's cap:
 * the message names it; nothing is appended), ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_gpt_forward(attn_ctx *ctx, const attn_gpt *m, attn_gpt_cache *c,
                                            int64_t T, const int32_t *ids, int last_only,
                                            float *logits);

/* ---- generation --------------------------------------------------------- */

/* How the next token is chosen from the logits, in Hugging Face's order:
 * temperature, then top-k, then top-p, then a draw. temperature 0 is greedy
 * (argmax; the lowest id wins a tie), and top_k / top_p are then unused. */
typedef struct attn_gen_params {
    int64_t max_new_tokens; /* >= 0 */
    float temperature;      /* >= 0; 1 = the model's distribution */
    int64_t top_k;          /* 0: off; else keep the k most likely */
    float top_p;            /* in (0, 1]; 1: off; else the smallest set with mass >= top_p */
    uint64_t seed;          /* the draws' stream: the same seed gives the same tokens
                             * for any thread count */
    int32_t eos_id;         /* stop after this token (it is emitted); -1: never */
} attn_gen_params;

/* Defaults: max_new_tokens 64, temperature 1, top_k 0, top_p 1, seed 0,
 * eos_id the model's (-1 for a NULL model). */
void attn_gen_params_default(const attn_gpt *m, attn_gen_params *p);

/* Called with each new token as it is made (before the next one is
 * computed). Return nonzero to stop (a stop string, a consumer that has
 * enough). */
typedef int (*attn_gen_token_fn)(void *user, int32_t id);

/* Timing of one generation (seconds of wall clock). */
typedef struct attn_gen_stats {
    int64_t prompt_tokens, new_tokens;
    double prompt_s, decode_s; /* prefill; the steps after it */
} attn_gen_stats;

/* Generate after prompt[0..n) (1 <= n): a prefill of the prompt, then one
 * token per step, each chosen by p, until eos_id is made, on_token returns
 * nonzero, or max_new_tokens are made. out (optional, max_new_tokens ids)
 * receives the tokens, *n_out (optional) their number, *stats (optional) the
 * timing. Returns ATTN_OK, ATTN_E_ARG (bad p: temperature < 0 or not
 * finite, top_k < 0, top_p outside (0, 1], max_new_tokens < 0; n < 1 or an
 * id out of range; n + max_new_tokens - 1 beyond n_positions: the message
 * names the limit), ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_gpt_generate(attn_ctx *ctx, const attn_gpt *m,
                                             const int32_t *prompt, int64_t n,
                                             const attn_gen_params *p, attn_gen_token_fn on_token,
                                             void *user, int32_t *out, int64_t *n_out,
                                             attn_gen_stats *stats);

/* Generate after n prompts of different lengths together: each prompt is
 * prefilled on its own, then every unfinished sequence advances one token
 * per step in one batch (one row each in every product; attention through a
 * paged KV cache, attn_kvcache, whose decode kernel reads each sequence's
 * keys and values). Each sequence stops on its own (eos_id, or
 * max_new_tokens) and leaves the batch. prompts[i][0..lens[i]) as in
 * attn_gpt_generate; out[i] (max_new_tokens ids each) receives sequence i's
 * tokens and n_out[i] their number. Sequence i draws from its own stream
 * seeded with p->seed, so it makes the tokens attn_gpt_generate makes for
 * that prompt alone, up to the rounding of products over several rows.
 * Returns the statuses of attn_gpt_generate (the message names the prompt). */
ATTN_NODISCARD attn_status attn_gpt_generate_batch(attn_ctx *ctx, const attn_gpt *m, int64_t n,
                                                   const int32_t *const *prompts,
                                                   const int64_t *lens, const attn_gen_params *p,
                                                   int32_t *const *out, int64_t *n_out);

/* One choice of p from logits [V] (overwritten), with *rng the draw stream
 * (splitmix64 state, advanced by one draw unless greedy) and idx [V] scratch.
 * The rule attn_gpt_generate applies at each step. Returns the id, or -1 for
 * a bad p, V < 1 or NULL arrays. */
int32_t attn_gen_sample(float *logits, int64_t V, const attn_gen_params *p, uint64_t *rng,
                        int32_t *idx);

/* ---- training a GPT-2 from scratch ---------------------------------------
 * A GPT-2 decoder (arch GPT2, tied head, GELU-tanh, n_kv_head = n_head)
 * with cfg's sizes, initialised as transformers' GPT2 does (normal std 0.02
 * for embeddings and projections, the residual projections attn.c_proj and
 * mlp.c_proj scaled by 1/sqrt(2 n_layer), zero biases, LayerNorm 1 and 0),
 * trained on next-token cross-entropy over batches of up to max_batch
 * windows of up to n_positions tokens. Used by `attn train --task lm`. */
typedef struct attn_gpt_trainer attn_gpt_trainer;

/* seed: the initial weights and the dropout masks. Returns ATTN_OK,
 * ATTN_E_ARG (NULL argument, max_batch < 1, a config that is not a tied
 * GPT-2, a dropout probability outside [0, 1): the message names it),
 * ATTN_E_SHAPE (invalid sizes), ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_gpt_trainer_create(attn_ctx *ctx, const attn_gpt_config *cfg,
                                                   int64_t max_batch, uint64_t seed,
                                                   attn_gpt_trainer **out);
void attn_gpt_trainer_free(attn_gpt_trainer *t);
/* Every parameter with its gradient, under GPT-2's names ("wte.weight",
 * "h.0.attn.c_attn.weight", ...; weights in the model's [out, in] layout,
 * not Conv1D's); for attn_adamw. */
const attn_param *attn_gpt_trainer_params(attn_gpt_trainer *t, int *n);
/* The model being trained (for attn_gpt_forward and attn_gpt_save). */
const attn_gpt *attn_gpt_trainer_model(const attn_gpt_trainer *t);
/* Forward (and, with train, backward: every gradient overwritten, of the
 * mean loss) of B windows of T + 1 ids each, ids [B, T + 1]: tokens 0..T-1
 * are the input, tokens 1..T the targets. *loss_sum (optional) receives the
 * summed cross-entropy in nats over the B * T predictions. train:
 *   0  evaluation: no dropout, no backward;
 *   1  a train step: the config's dropout (masks a pure function of the
 *      trainer's seed and the number of train steps before this one, so a
 *      run is reproducible), forward and backward; then the step count
 *      advances;
 *   2  the forward of the next train step alone (the same masks; nothing
 *      advances): the loss its gradients are of, for checks.
 * Returns ATTN_OK, ATTN_E_ARG (B outside [1, max_batch], T outside
 * [1, n_positions], an id out of range, train not 0, 1 or 2),
 * ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_gpt_trainer_step(attn_ctx *ctx, attn_gpt_trainer *t, int64_t B,
                                                 int64_t T, const int32_t *ids, int train,
                                                 double *loss_sum);

/* Save a GPT-2 model as a Hugging Face GPT2LMHeadModel directory (created
 * if missing): config.json and model.safetensors (F32, GPT-2's names with
 * the "transformer." prefix, Conv1D layout). With byte_tokenizer (the model
 * needs vocab_size >= 256; ids 0..255 are the bytes 0..255) also a
 * tokenizer.json (and vocab.json, merges.txt): a byte-level BPE with those
 * 256 tokens and no merges (attn_bpe_save of attn_bpe_train at size 256),
 * which transformers' GPT2TokenizerFast and attn_bpe_load_dir both read; a
 * model trained on another tokenizer is saved without one and the tokenizer
 * beside it (attn_bpe_save). Files are written atomically. Returns ATTN_OK, ATTN_E_ARG (a Llama model,
 * an untied head, bf16 weights, vocab_size < 256 with byte_tokenizer), ATTN_E_IO,
 * ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_gpt_save(attn_ctx *ctx, const attn_gpt *m, const char *dir,
                                         int byte_tokenizer);

#ifdef __cplusplus
}
#endif
#endif /* ATTN_GPT_H */

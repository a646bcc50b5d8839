/* attn/nn.h: learned layers. The multi-head attention layer (attn_mha, as
 * PyTorch's nn.MultiheadAttention with batch_first=True, plus grouped
 * key/value heads), its parameters, the AdamW optimiser and gradient clipping.
 * Users include <attn/attn.h>, which includes this file.
 *
 * Symbols: B batch, T query length, S key length, E embedding width,
 * H query heads, Hkv key/value heads, Dh = E / H head width,
 * KV = Hkv * Dh (width of the key and value projections). */
#ifndef ATTN_NN_PUBLIC_H
#define ATTN_NN_PUBLIC_H

#include "core.h"
#include "io.h"
#include "sdpa.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One learnable tensor: its name, its value and its gradient, both F32,
 * contiguous, same shape. The views point into the object that owns them. */
typedef struct attn_param {
    const char *name;
    attn_tensor value;
    attn_tensor grad;
} attn_param;

/* Multi-head attention configuration. Valid when zero-initialised apart from
 * E and H. */
typedef struct attn_mha_config {
    int64_t E;     /* embedding width (of x_q and y); required */
    int64_t H;     /* query heads; E % H == 0; required */
    int64_t Hkv;   /* key/value heads, H % Hkv == 0; 0 means H */
    int64_t kdim;  /* width of the key input x_k; 0 means E */
    int64_t vdim;  /* width of the value input x_v; 0 means E (as PyTorch) */
    int no_bias;   /* nonzero: no projection biases (PyTorch bias=False) */
    float dropout; /* drop probability of attention probabilities, [0, 1);
                    * applied only in forwards with training != 0 */
    /* passed to attn_sdpa_forward / attn_sdpa_backward unchanged: */
    float scale; /* 0 = 1/sqrt(Dh) */
    float softcap;
    int causal;
    attn_align align;
    int window;
    int64_t window_left, window_right;
} attn_mha_config;

/* The layer: parameters, their gradients, and the activations of the last
 * forward that the backward needs. Opaque. A layer must not be used by two
 * threads at once (forward and backward write its saved state). */
typedef struct attn_mha attn_mha;

/* Create a layer with PyTorch's initialisation of nn.MultiheadAttention:
 * the packed in-projection [E + 2*KV, E] is xavier_uniform over the packed
 * matrix when kdim == vdim == E and Hkv == H, else each of the q, k, v
 * weights is xavier_uniform on its own; out_proj.weight is
 * kaiming_uniform(a=sqrt(5)) (bound 1/sqrt(E)); biases are zero. Random numbers
 * come from `seed` (a splitmix64 stream: reproducible, not torch's RNG).
 * Returns ATTN_OK, ATTN_E_SHAPE (E % H or H % Hkv nonzero, as attn_sdpa_* and
 * BERT's config report them), ATTN_E_ARG (other bad config: E or H < 1,
 * dropout outside [0,1), window < -1, ...), ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_mha_create(attn_ctx *ctx, const attn_mha_config *cfg, uint64_t seed,
                                           attn_mha **out);
/* Free the layer. attn_mha_free(NULL) is a no-op. */
void attn_mha_free(attn_mha *m);
/* The configuration with defaults resolved (Hkv, kdim, vdim filled in),
 * owned by m; NULL for a NULL m. (Getters are attn_<object>_get_<what>.) */
const attn_mha_config *attn_mha_get_config(const attn_mha *m);

/* The parameters, by PyTorch state-dict names, in a fixed order (*n of them;
 * the array and its views belong to m and live as long as it):
 *   Hkv == H and kdim == vdim == E (PyTorch's packed layout):
 *     in_proj_weight [3E, E], in_proj_bias [3E],
 *   Hkv == H and kdim or vdim != E (PyTorch's separate layout):
 *     q_proj_weight [E, E], k_proj_weight [E, kdim], v_proj_weight [E, vdim],
 *     in_proj_bias [3E],
 *   Hkv < H (grouped heads; PyTorch's module cannot express this):
 *     q_proj_weight [E, E], k_proj_weight [KV, kdim], v_proj_weight [KV, vdim],
 *     q_proj_bias [E], k_proj_bias [KV], v_proj_bias [KV],
 *   always: out_proj.weight [E, E], out_proj.bias [E].
 * Biases are absent with no_bias. Write values through the views to load
 * weights; gradients are written by attn_mha_backward. */
const attn_param *attn_mha_get_params(attn_mha *m, int *n);

/* Load the parameters from an open safetensors file, by the names of
 * attn_mha_get_params prefixed with `prefix` (NULL or "" for none; e.g.
 * "encoder.layers.0.self_attn."). Tensors may be F32, F16, BF16 or F64.
 * strict != 0: a tensor whose name starts with prefix and is not a parameter
 * of this layer is an error (with prefix "" every other tensor is). Nothing
 * is changed unless every parameter loads.
 * Returns ATTN_OK, ATTN_E_NOTFOUND (a missing weight: the message names it
 * with the expected shape and the layer's configuration), ATTN_E_SHAPE (a
 * weight of another shape: both shapes named), ATTN_E_ARG (strict: an extra
 * tensor, named), ATTN_E_DTYPE, ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_mha_load(attn_ctx *ctx, attn_mha *m, const attn_safetensors *st,
                                         const char *prefix, int strict);
/* Write the parameters to a safetensors file (atomically, as
 * attn_safetensors_write) under the names of attn_mha_get_params, F32.
 * Returns ATTN_OK or what attn_safetensors_write returns. */
ATTN_NODISCARD attn_status attn_mha_save(attn_ctx *ctx, attn_mha *m, const char *path);

/* Inputs and outputs of one forward. Valid when zero-initialised apart from
 * x_q and y. Every view is F32 with a contiguous last dim and any outer
 * strides.
 * Key and value inputs: x_k absent means self-attention (keys and values from
 * x_q); x_k present and x_v absent means both from x_k (PyTorch's x_kv);
 * both present: keys from x_k, values from x_v.
 * Masks follow attn_sdpa_args: `mask` is F32 additive or BOOL/U8 where
 * nonzero = ATTEND (true keeps the key), broadcast as PyTorch's SDPA does.
 * PyTorch's nn.MultiheadAttention uses the OPPOSITE convention for a boolean
 * attn_mask (true = masked out): invert such a mask. key_padding_mask has
 * nn.MultiheadAttention's meaning (BOOL/U8 [B, S], true = padding, ignored),
 * any pattern including left padding. kv_len[b] masks keys j >= kv_len[b]
 * (trailing key padding). */
typedef struct attn_mha_args {
    attn_tensor x_q;              /* [B, T, E] */
    attn_tensor x_k;              /* optional [B, S, kdim] */
    attn_tensor x_v;              /* optional [B, S, vdim] */
    attn_tensor mask;             /* optional [B|1, H|1, T|1, S], right-aligned */
    attn_tensor key_padding_mask; /* optional BOOL/U8 [B|1, S]: true = padding */
    const int32_t *kv_len;        /* optional [B] */
    attn_tensor y;                /* [B, T, E] written */
    attn_tensor attn_weights;     /* optional, written: attention probabilities
                                   * [B, H, T, S] per head, or [B, T, S] averaged
                                   * over heads (chosen by ndim); after dropout
                                   * when training, as PyTorch returns them */
    int training;                 /* nonzero: apply cfg.dropout */
    uint64_t seed;                /* dropout seed (see attn_sdpa_args.seed) */
} attn_mha_args;

/* Forward: y = out_proj(attention(q_proj(x_q), k_proj(x_k), v_proj(x_v))).
 * The projections run on the BLAS; attention on attn_sdpa_forward reading the
 * projections in place through strided views ([B,T,H,Dh] seen as [B,H,T,Dh]).
 * Saved in m for the backward: the projections q [B,T,E], k and v [B,S,KV],
 * the attention output before out_proj [B,T,E] and lse [B,H,T]; the inputs
 * are NOT copied, so the backward must get the same, unchanged x views.
 * attn_weights are computed one head at a time as p = exp(s - lse), so no
 * T x S buffer beyond the output itself is held.
 * Returns ATTN_OK, ATTN_E_SHAPE, ATTN_E_LAYOUT, ATTN_E_DTYPE, ATTN_E_ARG,
 * ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_mha_forward(attn_ctx *ctx, attn_mha *m, const attn_mha_args *a);

/* Gradients of one backward. dx_q is required; dx_k and dx_v exactly when
 * the forward had x_k and x_v. With self-attention dx_q holds the sum of the
 * query, key and value paths; with x_k only, dx_k holds key + value paths.
 * dx views are overwritten; parameter gradients (attn_mha_get_params) are
 * overwritten. */
typedef struct attn_mha_grads {
    attn_tensor dy;   /* [B, T, E] in */
    attn_tensor dx_q; /* [B, T, E] out */
    attn_tensor dx_k; /* [B, S, kdim] out */
    attn_tensor dx_v; /* [B, S, vdim] out */
} attn_mha_grads;

/* Backward of the last forward on m. `a` must be that forward's arguments
 * (same inputs, masks, training flag and seed; y and attn_weights are not
 * read). Calls attn_sdpa_backward.
 * Returns ATTN_OK, ATTN_E_ARG (no forward saved, or a different shape),
 * ATTN_E_SHAPE, ATTN_E_LAYOUT, ATTN_E_DTYPE, ATTN_E_NOMEM, or whatever
 * attn_sdpa_backward returns. */
ATTN_NODISCARD attn_status attn_mha_backward(attn_ctx *ctx, attn_mha *m, const attn_mha_args *a,
                                             const attn_mha_grads *g);

/* ---- optimisation ------------------------------------------------------ */

/* AdamW as torch.optim.AdamW: with g the gradient, t the step (from 1),
 *   w -= lr * weight_decay * w                 (decoupled decay)
 *   m = beta1*m + (1-beta1)*g,  v = beta2*v + (1-beta2)*g^2
 *   w -= lr * (m / (1-beta1^t)) / (sqrt(v / (1-beta2^t)) + eps)
 * Zero fields take defaults: lr 1e-3, beta1 0.9, beta2 0.999, eps 1e-8.
 * weight_decay is used as given (0 = none; PyTorch's default is 0.01). */
typedef struct attn_adamw_config {
    float lr, beta1, beta2, eps, weight_decay;
} attn_adamw_config;

typedef struct attn_adamw attn_adamw;

/* An optimiser over n parameters. The views in params are borrowed and must
 * stay valid (same shapes) for the optimiser's life; its moment buffers are
 * owned. Returns ATTN_OK, ATTN_E_ARG (negative lr / decay, beta outside [0,1),
 * a value and grad of different sizes, non-contiguous views), ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_adamw_create(attn_ctx *ctx, const attn_adamw_config *cfg,
                                             const attn_param *params, int n, attn_adamw **out);
/* One update of every parameter from its current gradient (the views given
 * to attn_adamw_create, written in place). Returns ATTN_OK, or ATTN_E_ARG if
 * opt is NULL. One optimiser is used by one thread at a time. */
ATTN_NODISCARD attn_status attn_adamw_step(attn_ctx *ctx, attn_adamw *opt);
/* Change the learning rate (for schedules). A NULL opt, or lr <= 0 or NaN,
 * is ignored (the rate stays as it was). */
void attn_adamw_set_lr(attn_adamw *opt, float lr);
/* Free the optimiser's moments (not the parameters, which are borrowed).
 * attn_adamw_free(NULL) is a no-op. */
void attn_adamw_free(attn_adamw *opt);

/* Gradient clipping by global norm, as torch.nn.utils.clip_grad_norm_: the
 * L2 norm of all n gradients together is computed (in float64); if it exceeds
 * max_norm every gradient is scaled by max_norm / (norm + 1e-6). The norm
 * before clipping goes to *norm (may be NULL). Returns ATTN_OK, ATTN_E_ARG
 * (max_norm <= 0 or NaN). A non-finite norm leaves the gradients unchanged. */
ATTN_NODISCARD attn_status attn_param_clip_grad_norm(attn_ctx *ctx, const attn_param *params, int n,
                                                     float max_norm, double *norm);

#ifdef __cplusplus
}
#endif
#endif /* ATTN_NN_PUBLIC_H */

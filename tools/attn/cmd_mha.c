/* attn mha: a multi-head attention layer (PyTorch nn.MultiheadAttention,
 * batch_first) on tensors and weights from a safetensors file: forward, the
 * attention weights, and with dy every gradient. */
#include "cli.h"
#include "cli_out.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fputs("usage: attn mha IN.safetensors OUT.safetensors --heads H [options]\n"
          "\n"
          "Multi-head attention as PyTorch's nn.MultiheadAttention(batch_first=True):\n"
          "y = out_proj(attention(q_proj(x_q), k_proj(x_k), v_proj(x_v))).\n"
          "IN holds (F32, or F16/BF16/F64):\n"
          "  inputs      x [B,T,E] (self-attention), or x_q [B,T,E] and x_kv [B,S,kdim]\n"
          "              (keys and values from one tensor), or x_q, x_k [B,S,kdim] and\n"
          "              x_v [B,S,vdim]; 2-D inputs ([T,E]) mean B = 1\n"
          "  weights     by state-dict names: in_proj_weight [3E,E] (kdim = vdim = E), or\n"
          "              q_proj_weight [E,E], k_proj_weight [E,kdim], v_proj_weight [E,vdim];\n"
          "              in_proj_bias [3E]; out_proj.weight [E,E], out_proj.bias [E].\n"
          "              With --kv-heads Hkv < H (grouped heads, which PyTorch's module\n"
          "              cannot express): q_proj_weight [E,E], k_proj_weight [Hkv*E/H,kdim],\n"
          "              v_proj_weight [Hkv*E/H,vdim], q_proj_bias [E], k_proj_bias and\n"
          "              v_proj_bias [Hkv*E/H]. Biases are optional: absent means none.\n"
          "  attn_mask   optional, nn.MultiheadAttention's argument with its meaning: F32\n"
          "              added, or BOOL/U8 where TRUE = NOT ALLOWED; [T,S] or [B*H,T,S]\n"
          "  key_padding_mask optional, nn.MultiheadAttention's: BOOL/U8 [B,S] where\n"
          "              TRUE = padding (ignored), any pattern (left padding too); or F32\n"
          "              [B,S] added to the scores (then without another mask)\n"
          "  mask        optional, attn's own (instead of attn_mask): F32 additive, or\n"
          "              BOOL/U8 keep-mask where TRUE = ATTEND (SDPA's convention),\n"
          "              broadcast as PyTorch does ([B|1,H|1,T|1,S] right-aligned)\n"
          "  kv_len      optional I32/I64 [B]: keys j >= kv_len[b] are masked (trailing\n"
          "              padding)\n"
          "  dy          optional [B,T,E]: the gradient of y; enables the backward\n"
          "OUT receives y; attn_weights [B,H,T,S] with --need-weights ([B,T,S] averaged\n"
          "over heads with --average-weights); with dy also dx (or dx_q and dx_kv, or dx_q,\n"
          "dx_k and dx_v, matching the inputs) and grad.<name> for every weight, all F32\n"
          "whatever the inputs' dtype (F16 in gives F32 out). Any other tensor name is an\n"
          "error. OUT is replaced atomically; on any error it is not created.\n"
          "\n"
          "options:\n"
          "  --heads H             query heads (required); E % H == 0\n"
          "  --kv-heads Hkv        key/value heads (default H); H % Hkv == 0\n"
          "  --causal              mask keys after the query's position p(i)\n"
          "  --align top-left|bottom-right\n"
          "                        p(i) = i (default, PyTorch is_causal) or i + S - T\n"
          "  --window L,R          keep keys p(i)-L <= j <= p(i)+R; -1 = unbounded side\n"
          "  --need-weights        also write the attention probabilities per head\n"
          "  --average-weights     write them averaged over heads (implies --need-weights)\n"
          "  --dropout P           drop attention probabilities with probability P in [0,1)\n"
          "                        (training mode; attn_weights are then after dropout)\n"
          "  --seed N              dropout seed (default 0)\n"
          "  --threads N           threads (default: ATTN_NUM_THREADS, else all cores)\n"
          "  -h, --help            show this help\n"
          "\n"
          "Exit status: 0 success, 1 bad input or failure, 2 bad usage.\n",
          f);
}

typedef struct mha_opts {
    const char *in, *out;
    int heads, kv_heads, threads;
    int causal, need_weights, average;
    attn_align align;
    cli_window window;
    float dropout;
    uint64_t seed;
} mha_opts;

static int parse_args(int argc, char **argv, mha_opts *o) {
    const cli_opt opts[] = {
        {"--heads", CLI_INT, &o->heads, 1, 4096, 0, NULL},
        {"--kv-heads", CLI_INT, &o->kv_heads, 1, 4096, 0, NULL},
        {"--causal", CLI_FLAG, &o->causal, 0, 0, 0, NULL},
        {"--need-weights", CLI_FLAG, &o->need_weights, 0, 0, 0, NULL},
        {"--average-weights", CLI_FLAG, &o->average, 0, 0, 0, NULL},
        CLI_OPT_ALIGN(&o->align),
        CLI_OPT_WINDOW(&o->window),
        CLI_OPT_DROPOUT(&o->dropout),
        CLI_OPT_SEED(&o->seed),
        CLI_OPT_THREADS(&o->threads),
    };
    const cli_spec spec = {"mha", opts, sizeof opts / sizeof opts[0], usage, CLI_POS_ANYWHERE, 2};
    const char *pos[2];
    int npos;
    int rc = attn_cli_parse(&spec, argc, argv, pos, &npos);
    if (rc >= 0) return rc;
    if (npos < 2)
        return attn_cli_error(2,
                              "mha: expected IN.safetensors OUT.safetensors (see attn mha --help)");
    o->in = pos[0], o->out = pos[1];
    if (!strcmp(o->out, "-"))
        return attn_cli_error(2, "mha: OUT is a safetensors file and cannot be stdout ('-'); "
                                 "name a file");
    if (attn_cli_same_file(o->out, o->in)) return 2;
    if (!o->heads) return attn_cli_error(2, "mha: --heads H is required");
    /* options that contradict each other are bad usage, whatever the file */
    if (o->kv_heads && o->heads % o->kv_heads)
        return attn_cli_error(2, "mha: --heads %d is not a multiple of --kv-heads %d", o->heads,
                              o->kv_heads);
    if (o->average) o->need_weights = 1;
    return -1;
}

/* Everything one run owns; freed in one place. */
typedef struct mha_run {
    attn_ctx *ctx;
    attn_safetensors *st;
    attn_mha *m;
    void *owned[64]; /* freed with free */
    int nowned;
    float *converted[32]; /* from attn_safetensors_get_f32: freed with attn_buffer_free */
    int nconverted;
    int rank2;      /* inputs given as [T,E]: B = 1, outputs without the B dim */
    const char *in; /* the input file, for messages */
} mha_run;

static void *own(mha_run *r, void *p) {
    if (p) r->owned[r->nowned++] = p;
    return p;
}

/* Tensor `name` as F32 (converted from F16/BF16/F64); absent leaves *t empty. */
static int load_float(mha_run *r, const char *name, attn_tensor *t) {
    float *f;
    int rc = attn_cli_load_f32(r->ctx, r->st, r->in, name, 0, t, &f);
    if (f) r->converted[r->nconverted++] = f;
    return rc;
}

/* An input, the file's convention: all inputs 3-D [B,S,width], or all 2-D
 * [S,width] meaning B = 1 (lifted to 3-D here). Everything else about its
 * shape is attn_mha_forward's to check. */
static int load_input(mha_run *r, const char *name, attn_tensor *t) {
    if (load_float(r, name, t)) return 1;
    if (!t->data) return 0;
    if (t->ndim != (r->rank2 ? 2 : 3)) {
        char s[96];
        attn_tensor_shape_str(t, s, sizeof s);
        int q = !strcmp(name, "x") || !strcmp(name, "x_q");
        return attn_cli_error(1, "%s: tensor '%s' has shape %s, expected %s", r->in, name, s,
                              q          ? "3 dims [B,T,E] or 2 dims [T,E]"
                              : r->rank2 ? "2 dims [S,width] like the query input"
                                         : "3 dims [B,S,width] like the query input");
    }
    if (r->rank2) *t = attn_cli_add_dim0(*t);
    return 0;
}

static const char *const INPUT_NAMES[] = {
    "x", "x_q", "x_kv", "x_k", "x_v", "mask", "attn_mask", "key_padding_mask", "kv_len", "dy"};
static const char *const BIAS_NAMES[] = {"in_proj_bias", "q_proj_bias", "k_proj_bias",
                                         "v_proj_bias", "out_proj.bias"};

/* A mask tensor as the library takes it: F32 (converted) or BOOL/U8 as stored. */
static int get_mask(mha_run *r, const char *name, attn_tensor *m) {
    if (attn_safetensors_get(r->ctx, r->st, name, m))
        return attn_cli_error(1, "%s", attn_ctx_last_error(r->ctx));
    if (m->dtype == ATTN_F64 || m->dtype == ATTN_F16 || m->dtype == ATTN_BF16)
        return load_float(r, name, m);
    return 0;
}

/* The masks, by nn.MultiheadAttention's names with its meanings, or attn's
 * `mask` (true = attend). attn_mask: a boolean one is inverted into a copy
 * (true = not allowed there); [B*H,T,S] is read as [B,H,T,S]. A float
 * key_padding_mask [B,S] is the float mask [B,1,1,S] (a stride-0 view). */
static int load_masks(mha_run *r, int64_t B, int64_t H, attn_mha_args *a) {
    const char *in = r->in;
    int hm = attn_safetensors_find(r->st, "mask") >= 0;
    int ham = attn_safetensors_find(r->st, "attn_mask") >= 0;
    if (hm && ham)
        return attn_cli_error(1,
                              "%s: both 'mask' (true = attend) and 'attn_mask' (PyTorch's, true = "
                              "not allowed) given; give one",
                              in);
    if (hm && get_mask(r, "mask", &a->mask)) return 1;
    if (ham) {
        attn_tensor m;
        if (get_mask(r, "attn_mask", &m)) return 1;
        if (m.ndim == 3 && m.shape[0] == B * H && B * H > 1) { /* [B*H,T,S] -> [B,H,T,S] */
            int64_t sh[4] = {B, H, m.shape[1], m.shape[2]};
            m = attn_tensor_make(m.data, m.dtype, 4, sh);
        }
        if (m.dtype == ATTN_BOOL || m.dtype == ATTN_U8) { /* true = not allowed: invert */
            int64_t n = attn_tensor_numel(&m);
            uint8_t *k = own(r, malloc(n ? (size_t)n : 1));
            if (!k) return attn_cli_error(1, "out of memory for attn_mask");
            const uint8_t *src = m.data;
            for (int64_t e = 0; e < n; e++)
                k[e] = !src[e];
            m = attn_tensor_make(k, m.dtype, m.ndim, m.shape);
        }
        a->mask = m;
    }
    if (attn_safetensors_find(r->st, "key_padding_mask") >= 0) {
        attn_tensor k;
        if (get_mask(r, "key_padding_mask", &k)) return 1;
        if (k.dtype == ATTN_F32) {
            if (a->mask.data)
                return attn_cli_error(1,
                                      "%s: a float key_padding_mask with another mask: add them "
                                      "into one attn_mask",
                                      in);
            if (k.ndim != 2) {
                char s[96];
                attn_tensor_shape_str(&k, s, sizeof s);
                return attn_cli_error(
                    1, "%s: tensor 'key_padding_mask' has shape %s, expected [B,S]", in, s);
            }
            int64_t sh[4] = {k.shape[0], 1, 1, k.shape[1]};
            attn_tensor v = attn_tensor_make(k.data, ATTN_F32, 4, sh);
            v.stride[0] = k.stride[0];
            a->mask = v;
        } else {
            a->key_padding_mask = k; /* the library's meaning too: true = padding */
        }
    }
    return 0;
}

static float *out_buf(mha_run *r, int ndim, const int64_t *shape, attn_tensor *t) {
    size_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= (size_t)shape[d];
    float *f = own(r, calloc(n ? n : 1, sizeof *f));
    if (f) *t = attn_tensor_make(f, ATTN_F32, ndim, shape);
    return f;
}

/* The view as written: 2-D inputs give outputs without the B dim. */
static attn_tensor out_view(const mha_run *r, attn_tensor t) {
    return r->rank2 ? attn_cli_drop_dim0(t) : t;
}

static int run(const mha_opts *o, mha_run *r) {
    const char *in = o->in;
    r->in = in;
    int rc_ctx = attn_cli_ctx(&r->ctx, o->threads);
    if (rc_ctx) return rc_ctx;
    if (attn_safetensors_open(r->ctx, in, &r->st))
        return attn_cli_error(1, "%s", attn_ctx_last_error(r->ctx));
    /* which inputs: x | x_q + x_kv | x_q + x_k + x_v */
    int has[5];
    for (int i = 0; i < 5; i++)
        has[i] = attn_safetensors_find(r->st, INPUT_NAMES[i]) >= 0;
    int self = has[0] && !has[1] && !has[2] && !has[3] && !has[4];
    int kv = !has[0] && has[1] && has[2] && !has[3] && !has[4];
    int split = !has[0] && has[1] && !has[2] && has[3] && has[4];
    if (!self && !kv && !split)
        return attn_cli_error(1,
                              "%s: inputs must be x (self-attention), or x_q and x_kv, or x_q, "
                              "x_k and x_v (and nothing else of these names)",
                              in);
    attn_mha_args a;
    memset(&a, 0, sizeof a);
    const char *qname = self ? "x" : "x_q";
    r->rank2 = attn_safetensors_ndim(r->st, attn_safetensors_find(r->st, qname)) == 2;
    if (load_input(r, qname, &a.x_q)) return 1;
    if (kv && load_input(r, "x_kv", &a.x_k)) return 1;
    if (split && (load_input(r, "x_k", &a.x_k) || load_input(r, "x_v", &a.x_v))) return 1;
    /* the layer's widths come from the inputs; the library checks the rest */
    int64_t B = a.x_q.shape[0], T = a.x_q.shape[1], E = a.x_q.shape[2];
    int64_t S = self ? T : a.x_k.shape[1];
    int64_t kdim = self ? E : a.x_k.shape[2], vdim = split ? a.x_v.shape[2] : kdim;
    int hkv = o->kv_heads ? o->kv_heads : o->heads;

    /* the layer: biases present in the file switch them on */
    int bias = 0;
    for (size_t i = 0; i < sizeof BIAS_NAMES / sizeof BIAS_NAMES[0]; i++)
        bias |= attn_safetensors_find(r->st, BIAS_NAMES[i]) >= 0;
    attn_mha_config c = {0};
    c.E = E, c.H = o->heads, c.Hkv = hkv, c.kdim = kdim, c.vdim = vdim, c.no_bias = !bias;
    c.dropout = o->dropout, c.causal = o->causal;
    c.align = o->align;
    c.window = o->window.on, c.window_left = o->window.left, c.window_right = o->window.right;
    if (attn_mha_create(r->ctx, &c, 0, &r->m))
        return attn_cli_error(1, "%s: %s", in, attn_ctx_last_error(r->ctx));
    int np;
    const attn_param *ps = attn_mha_get_params(r->m, &np);
    if (attn_mha_load(r->ctx, r->m, r->st, "", 0))
        return attn_cli_error(1, "%s: %s", in, attn_ctx_last_error(r->ctx));
    /* nothing else may be in the file */
    char expected[600];
    size_t u = (size_t)snprintf(expected, sizeof expected, "this layer's weights are: ");
    for (int k = 0; k < np && u < sizeof expected; k++)
        u += (size_t)snprintf(expected + u, sizeof expected - u, "%s%s", k ? ", " : "", ps[k].name);
    if (u < sizeof expected)
        snprintf(expected + u, sizeof expected - u,
                 "; inputs: x | x_q, x_kv | x_q, x_k, x_v; attn_mask (or mask), "
                 "key_padding_mask, kv_len, dy");
    if (attn_cli_check_names(r->st, in, INPUT_NAMES, sizeof INPUT_NAMES / sizeof INPUT_NAMES[0], ps,
                             np, expected))
        return 1;

    int32_t *kvl;
    if (attn_cli_load_kv_len(r->ctx, r->st, in, B, &kvl)) return 1;
    a.kv_len = own(r, kvl);
    if (load_masks(r, B, o->heads, &a)) return 1;
    attn_tensor dy = {0};
    if (load_input(r, "dy", &dy)) return 1;

    int64_t shy[3] = {B, T, E}, shw4[4] = {B, o->heads, T, S}, shw3[3] = {B, T, S};
    if (!out_buf(r, 3, shy, &a.y)) return attn_cli_error(1, "out of memory");
    if (o->need_weights &&
        !(o->average ? out_buf(r, 3, shw3, &a.attn_weights) : out_buf(r, 4, shw4, &a.attn_weights)))
        return attn_cli_error(1, "out of memory for the attention weights");
    a.training = o->dropout != 0.0f;
    a.seed = o->seed;
    if (attn_mha_forward(r->ctx, r->m, &a))
        return attn_cli_error(1, "%s: %s", in, attn_ctx_last_error(r->ctx));

    const char *names[40];
    attn_tensor views[40];
    int n = 0;
    names[n] = "y", views[n++] = out_view(r, a.y);
    if (o->need_weights) names[n] = "attn_weights", views[n++] = out_view(r, a.attn_weights);
    if (dy.data) {
        attn_mha_grads g;
        memset(&g, 0, sizeof g);
        g.dy = dy;
        int64_t shk[3] = {B, S, kdim}, shv[3] = {B, S, vdim};
        if (!out_buf(r, 3, shy, &g.dx_q) || (!self && !out_buf(r, 3, shk, &g.dx_k)) ||
            (split && !out_buf(r, 3, shv, &g.dx_v)))
            return attn_cli_error(1, "out of memory for the gradients");
        if (attn_mha_backward(r->ctx, r->m, &a, &g))
            return attn_cli_error(1, "%s: backward: %s", in, attn_ctx_last_error(r->ctx));
        names[n] = self ? "dx" : "dx_q", views[n++] = out_view(r, g.dx_q);
        if (kv) names[n] = "dx_kv", views[n++] = out_view(r, g.dx_k);
        if (split) names[n] = "dx_k", views[n++] = out_view(r, g.dx_k);
        if (split) names[n] = "dx_v", views[n++] = out_view(r, g.dx_v);
        for (int i = 0; i < np; i++) {
            char *nm = own(r, malloc(strlen(ps[i].name) + 6));
            if (!nm) return attn_cli_error(1, "out of memory");
            sprintf(nm, "grad.%s", ps[i].name);
            names[n] = nm, views[n++] = ps[i].grad;
        }
    }
    if (attn_safetensors_write(r->ctx, o->out, n, names, views))
        return attn_cli_error(1, "%s", attn_ctx_last_error(r->ctx));
    return 0;
}

int attn_cmd_mha(int argc, char **argv) {
    mha_opts o;
    memset(&o, 0, sizeof o);
    int rc = parse_args(argc, argv, &o);
    if (rc >= 0) return rc;
    mha_run r;
    memset(&r, 0, sizeof r);
    rc = run(&o, &r);
    for (int i = 0; i < r.nowned; i++)
        free(r.owned[i]);
    for (int i = 0; i < r.nconverted; i++)
        attn_buffer_free(r.converted[i]);
    attn_mha_free(r.m);
    attn_safetensors_close(r.st);
    attn_ctx_free(r.ctx);
    return rc;
}

/* attn sdpa: scaled dot-product attention on tensors from a safetensors
 * file, forward (and backward with --backward), results to another file.
 * Inputs are used in place where they are already F32 (the file's buffer),
 * and the fast path allocates nothing of size T x S. The file's tensors map
 * to attn_sdpa_args as they are: shapes, masks and values are checked by
 * attn_sdpa_forward / attn_sdpa_backward, whose messages are printed. */
#include "cli.h"
#include "cli_out.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fputs("usage: attn sdpa IN.safetensors OUT.safetensors [options]\n"
          "\n"
          "Scaled dot-product attention: out = softmax(scale * q k^T + bias) v.\n"
          "IN holds F32 (or F16/BF16/F64) tensors:\n"
          "  q [B,H,T,D]  k [B,Hkv,S,D]  v [B,Hkv,S,Dv]  (H a multiple of Hkv; 3-D [H,T,D]\n"
          "               means B = 1, and then outputs are 3-D too)\n"
          "  attn_mask    optional (also called mask): F32 additive bias, or BOOL/U8 keep-mask\n"
          "               (true = attend), as PyTorch SDPA's attn_mask; broadcast as PyTorch\n"
          "               does: [B|1,H|1,T|1,S] with dims aligned on the right, so [S],\n"
          "               [T,S], [H,1,S], the padding mask [B,1,1,S] ... (no expand needed)\n"
          "  key_padding_mask optional BOOL/U8 [B,S] or [S]: true = key j is padding and\n"
          "               ignored (nn.MultiheadAttention's meaning, the opposite of a\n"
          "               boolean attn_mask); any pattern, left padding too\n"
          "  kv_len       optional I32 or I64 [B]: keys j >= kv_len[b] are masked\n"
          "  alibi_slopes optional F32 [H]: adds -slope[h] * |p(i) - j|\n"
          "  dout         [B,H,T,Dv], required with --backward\n"
          "  layout       optional BOOL/U8 [nqb,nkb] or [H,nqb,nkb]: block-sparse layout,\n"
          "               true = the (query block, key block) pair is computed; blocks of\n"
          "               --block BQ,BK (nqb = ceil(T/BQ), nkb = ceil(S/BK))\n"
          "  global_tokens optional BOOL/U8 [B,S] or [S]: true = the token at key\n"
          "               position j is global (Longformer's global_attention_mask):\n"
          "               seen by every query and, as the query at position j, seeing\n"
          "               every key, through --window and the layout (causal, kv_len and\n"
          "               the masks still apply)\n"
          "Any other tensor name is an error. Every output is F32, whatever the inputs'\n"
          "dtype (F16 in gives F32 out). OUT receives out [B,H,T,Dv] and lse [B,H,T]\n"
          "(natural log; -inf for a query that sees no key, whose out is 0); with\n"
          "--backward also dq, dk, dv and, for a float mask, dmask (the mask's shape,\n"
          "summed over its broadcast dims). OUT is replaced atomically (a device such as\n"
          "/dev/null or a FIFO is written in place; a read-only file, a directory or the\n"
          "input itself is refused); on any error it is not created.\n"
          "\n"
          "options:\n"
          "  --causal              mask keys after the query's position p(i)\n"
          "  --align top-left|bottom-right\n"
          "                        p(i) = i (default, PyTorch is_causal) or i + S - T\n"
          "                        (FlashAttention, KV caches)\n"
          "  --window L,R          keep keys p(i)-L <= j <= p(i)+R; -1 = unbounded side\n"
          "  --scale X             score scale; 0 or absent means the default 1/sqrt(D)\n"
          "                        (unlike PyTorch, where scale=0.0 gives uniform attention;\n"
          "                        for that, give a tiny scale such as 1e-30)\n"
          "  --softcap X           s = X * tanh(s / X) before bias and ALiBi (0 = off)\n"
          "  --dropout P           drop probabilities with probability P in [0, 1)\n"
          "  --seed N              dropout seed (default 0): same seed, same mask\n"
          "  --threads N           threads (default: ATTN_NUM_THREADS, else all cores)\n"
          "  --layout SPEC         block-sparse attention with a built pattern, a comma list\n"
          "                        of window=W (local band of W blocks each side),\n"
          "                        dilation=N, global=G (first G blocks global both ways),\n"
          "                        random=R and seed=S (BigBird's random blocks), stride=N\n"
          "                        (Sparse Transformer columns), causal (no block after the\n"
          "                        diagonal); e.g. window=2,global=1,random=2\n"
          "  --block BQ[,BK]       the layout's block sizes (default 64,64)\n"
          "  --global-tokens LIST  global tokens at these key positions, for every batch:\n"
          "                        a comma list of indices and inclusive ranges A-B in\n"
          "                        strictly increasing order, each in [0, S); e.g. 0 or\n"
          "                        0-15,511. With --window W,W: Longformer's attention\n"
          "  --ref                 use the float64 reference instead (slow; for checking)\n"
          "  --backward            also compute gradients from dout\n"
          "  -h, --help            show this help\n"
          "\n"
          "Exit status: 0 success, 1 bad input or failure, 2 bad usage.\n",
          f);
}

typedef struct sdpa_opts {
    const char *in, *out;
    attn_sdpa_args a; /* options only; tensors are filled in later */
    int threads, ref, backward;
    cli_window window;
    int has_spec;
    attn_sdpa_layout_spec spec; /* --layout */
    int64_t bq, bk;             /* --block */
    const char *globals;        /* --global-tokens, checked by parse_globals */
} sdpa_opts;

/* --global-tokens: "I" and "A-B" items, comma separated, strictly
 * increasing, each index in [0, 2^31). With mark (S entries) the positions
 * are marked there (all must be < S); without, only the syntax is checked.
 * Returns 0, or 2 after printing the error. */
static int globals_walk(const char *cmd, const char *v, uint8_t *mark, int64_t S) {
    if (!*v) return attn_cli_error(2, "%s: --global-tokens: empty list", cmd);
    long prev = -1;
    for (const char *item = v;; item++) {
        const char *comma = strchr(item, ',');
        const size_t len = comma ? (size_t)(comma - item) : strlen(item);
        char tok[48]; /* an item longer than this is no index anyway */
        if (len == 0)
            return attn_cli_error(2, "%s: --global-tokens: empty item in '%.40s%s'", cmd, v,
                                  strlen(v) > 40 ? "..." : "");
        snprintf(tok, sizeof tok, "%.*s", (int)(len < sizeof tok ? len : sizeof tok - 1), item);
        char *dash = strchr(tok + (*tok == '-'), '-');
        if (dash) *dash = '\0';
        long a, e;
        if (len >= sizeof tok || attn_cli_parse_long(tok, &a) ||
            (dash && attn_cli_parse_long(dash + 1, &e)) || a < 0 || a > INT32_MAX ||
            (dash && (e < a || e > INT32_MAX)))
            return attn_cli_error(2,
                                  "%s: --global-tokens: '%.*s%s' is not an index or a range A-B "
                                  "with 0 <= A <= B < 2^31",
                                  cmd, (int)(len < 40 ? len : 40), item, len > 40 ? "..." : "");
        if (!dash) e = a;
        if (a <= prev)
            return attn_cli_error(2,
                                  "%s: --global-tokens: %ld comes after %ld: the list must be "
                                  "strictly increasing (sorted, no duplicates)",
                                  cmd, a, prev);
        if (mark && e >= S)
            return attn_cli_error(2, "%s: --global-tokens: index %ld is outside [0, S=%lld)", cmd,
                                  e, (long long)S);
        for (long j = a; mark && j <= e; j++)
            mark[j] = 1;
        prev = e;
        if (!comma) break;
        item = comma;
    }
    return 0;
}

static int parse_globals(const char *cmd, const char *name, const char *v, void *dst) {
    (void)name;
    sdpa_opts *o = dst;
    o->globals = v;
    return globals_walk(cmd, v, NULL, 0);
}

/* --layout: "key=value,..." of attn_sdpa_layout_spec's fields. */
static int parse_layout(const char *cmd, const char *name, const char *v, void *dst) {
    sdpa_opts *o = dst;
    memset(&o->spec, 0, sizeof o->spec);
    o->has_spec = 1;
    char buf[256];
    if (strlen(v) >= sizeof buf) return attn_cli_error(2, "%s: %s: too long", cmd, name);
    strcpy(buf, v);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        if (!strcmp(tok, "causal")) {
            o->spec.causal = 1;
            continue;
        }
        char *eq = strchr(tok, '=');
        long n;
        if (!eq || attn_cli_parse_long(eq + 1, &n) || n < 0 || n > (1L << 30))
            return attn_cli_error(2, "%s: %s: '%s' is not key=N with N in [0, 2^30] (or 'causal')",
                                  cmd, name, tok);
        *eq = '\0';
        if (!strcmp(tok, "window"))
            o->spec.use_window = 1, o->spec.window = n;
        else if (!strcmp(tok, "dilation"))
            o->spec.dilation = n;
        else if (!strcmp(tok, "global"))
            o->spec.global = n;
        else if (!strcmp(tok, "random"))
            o->spec.random = n;
        else if (!strcmp(tok, "seed"))
            o->spec.seed = (uint64_t)n;
        else if (!strcmp(tok, "stride"))
            o->spec.stride = n;
        else
            return attn_cli_error(2,
                                  "%s: %s: unknown key '%s' (window, dilation, global, random, "
                                  "seed, stride, causal)",
                                  cmd, name, tok);
    }
    return 0;
}

/* --block: "BQ" or "BQ,BK", each >= 1. */
static int parse_block(const char *cmd, const char *name, const char *v, void *dst) {
    sdpa_opts *o = dst;
    char buf[64];
    if (strlen(v) >= sizeof buf) return attn_cli_error(2, "%s: %s: too long", cmd, name);
    strcpy(buf, v);
    char *c = strchr(buf, ',');
    if (c) *c = '\0';
    long q, k;
    if (attn_cli_parse_long(buf, &q) || q < 1 || q > (1L << 30) ||
        (c && (attn_cli_parse_long(c + 1, &k) || k < 1 || k > (1L << 30))))
        return attn_cli_error(2, "%s: %s: expected BQ or BQ,BK, each in [1, 2^30], got '%s'", cmd,
                              name, v);
    o->bq = q, o->bk = c ? k : q;
    return 0;
}

/* Returns -1 to continue, else the exit status (0 for --help, 2 bad usage). */
static int parse_args(int argc, char **argv, sdpa_opts *o) {
    const cli_opt opts[] = {
        {"--causal", CLI_FLAG, &o->a.causal, 0, 0, 0, NULL},
        {"--ref", CLI_FLAG, &o->ref, 0, 0, 0, NULL},
        {"--backward", CLI_FLAG, &o->backward, 0, 0, 0, NULL},
        CLI_OPT_ALIGN(&o->a.align),
        CLI_OPT_WINDOW(&o->window),
        {"--scale", CLI_FLOAT, &o->a.scale, -CLI_INF, CLI_INF, 0, NULL},
        {"--softcap", CLI_FLOAT, &o->a.softcap, 0, CLI_INF, 0, NULL},
        CLI_OPT_DROPOUT(&o->a.dropout_p),
        CLI_OPT_SEED(&o->a.seed),
        CLI_OPT_THREADS(&o->threads),
        {"--layout", CLI_CUSTOM, o, 0, 0, 0, parse_layout},
        {"--block", CLI_CUSTOM, o, 0, 0, 0, parse_block},
        {"--global-tokens", CLI_CUSTOM, o, 0, 0, 0, parse_globals},
    };
    const cli_spec spec = {"sdpa", opts, sizeof opts / sizeof opts[0], usage, CLI_POS_ANYWHERE, 2};
    const char *pos[2];
    int npos;
    int rc = attn_cli_parse(&spec, argc, argv, pos, &npos);
    if (rc >= 0) return rc;
    if (npos < 2)
        return attn_cli_error(
            2, "sdpa: expected IN.safetensors OUT.safetensors (see attn sdpa --help)");
    o->in = pos[0], o->out = pos[1];
    if (!strcmp(o->out, "-"))
        return attn_cli_error(2, "sdpa: OUT is a safetensors file and cannot be stdout ('-'); "
                                 "name a file");
    if (attn_cli_same_file(o->out, o->in)) return 2;
    o->a.window = o->window.on;
    o->a.window_left = o->window.left;
    o->a.window_right = o->window.right;
    return -1;
}

/* Everything one run owns; freed in one place. */
typedef struct sdpa_run {
    attn_ctx *ctx;
    attn_safetensors *st;
    float *converted[8]; /* from attn_safetensors_get_f32: freed with attn_buffer_free */
    int nconverted;
    float *owned[12]; /* outputs, layout, global tokens: freed with free */
    int nowned;
    int32_t *kv_len;
    int rank3; /* q, k, v given as [H,T,D]: B = 1, outputs without the B dim */
} sdpa_run;

static const char *const NAMES[] = {"q",
                                    "k",
                                    "v",
                                    "mask",
                                    "attn_mask",
                                    "key_padding_mask",
                                    "kv_len",
                                    "alibi_slopes",
                                    "dout",
                                    "layout",
                                    "global_tokens"};

/* Tensor `name` as F32 in *t (converted from F16/BF16/F64 into an owned
 * buffer). Absent: *t stays empty, which is an error when required. */
static int load_float(sdpa_run *r, const char *in, const char *name, int required, attn_tensor *t) {
    float *f;
    int rc = attn_cli_load_f32(r->ctx, r->st, in, name, required, t, &f);
    if (f) r->converted[r->nconverted++] = f;
    return rc;
}

/* The file's convention: q, k, v and dout are all [B,H,T,D], or all [H,T,D]
 * meaning B = 1 (then lifted to 4-D here). */
static int check_rank(sdpa_run *r, const char *in, const char *name, attn_tensor *t) {
    int want = r->rank3 ? 3 : 4;
    if (t->ndim != want) {
        char s[96];
        attn_tensor_shape_str(t, s, sizeof s);
        return attn_cli_error(1, "%s: tensor '%s' has shape %s, expected %s", in, name, s,
                              !strcmp(name, "q") ? "4 dims [B,H,T,D] or 3 dims [H,T,D]"
                              : r->rank3         ? "3 dims [H,T,D] like q"
                                                 : "4 dims [B,H,T,D] like q");
    }
    if (r->rank3) *t = attn_cli_add_dim0(*t);
    return 0;
}

static float *alloc_f32(sdpa_run *r, const attn_tensor *like, int64_t last, attn_tensor *t) {
    int64_t sh[4] = {like->shape[0], like->shape[1], like->shape[2], last};
    int nd = like->ndim;
    if (last < 0) nd--; /* lse: [B,H,T] */
    size_t n = 1;
    for (int d = 0; d < nd; d++) {
        if (sh[d] > 0 && n > SIZE_MAX / sizeof(float) / (size_t)sh[d]) return NULL; /* overflow */
        n *= (size_t)sh[d];
    }
    float *f = calloc(n ? n : 1, sizeof *f);
    if (!f) return NULL;
    r->owned[r->nowned++] = f;
    *t = attn_tensor_make(f, ATTN_F32, nd, sh);
    return f;
}

/* The view as written to OUT: 3-D inputs give outputs without the B dim. */
static attn_tensor out_view(const sdpa_run *r, attn_tensor t) {
    return r->rank3 ? attn_cli_drop_dim0(t) : t;
}

static int run(sdpa_opts *o, sdpa_run *r) {
    const char *in = o->in;
    attn_sdpa_args a = o->a;
    int rc_ctx = attn_cli_ctx(&r->ctx, o->threads);
    if (rc_ctx) return rc_ctx;
    if (attn_safetensors_open(r->ctx, in, &r->st))
        return attn_cli_error(1, "%s", attn_ctx_last_error(r->ctx));
    if (attn_cli_check_names(r->st, in, NAMES, sizeof NAMES / sizeof NAMES[0], NULL, 0,
                             "accepted: q, k, v; optional attn_mask (or mask), key_padding_mask, "
                             "kv_len, alibi_slopes, dout, layout, global_tokens"))
        return 1;

    if (load_float(r, in, "q", 1, &a.q) || load_float(r, in, "k", 1, &a.k) ||
        load_float(r, in, "v", 1, &a.v))
        return 1;
    r->rank3 = a.q.ndim == 3;
    if (check_rank(r, in, "q", &a.q) || check_rank(r, in, "k", &a.k) ||
        check_rank(r, in, "v", &a.v))
        return 1;
    int64_t B = a.q.shape[0], H = a.q.shape[1];

    /* arrays the API takes as bare pointers: their lengths are ours to check */
    attn_tensor al;
    if (load_float(r, in, "alibi_slopes", 0, &al)) return 1;
    if (al.data) {
        if (al.ndim != 1 || al.shape[0] != H) {
            char s[96];
            attn_tensor_shape_str(&al, s, sizeof s);
            return attn_cli_error(1, "%s: tensor 'alibi_slopes' has shape %s, expected [H=%lld]",
                                  in, s, (long long)H);
        }
        a.alibi_slopes = al.data;
    }
    if (attn_cli_load_kv_len(r->ctx, r->st, in, B, &r->kv_len)) return 1;
    a.kv_len = r->kv_len;

    /* attn_mask (PyTorch's name) or mask, used as stored: the library
     * broadcasts it as PyTorch does (a 3-D mask with 3-D inputs is [H|1,T|1,S]) */
    int hm = attn_safetensors_find(r->st, "mask") >= 0;
    int ham = attn_safetensors_find(r->st, "attn_mask") >= 0;
    if (hm && ham)
        return attn_cli_error(1, "%s: both 'mask' and 'attn_mask' given; they are one tensor", in);
    if (hm || ham) {
        const char *mn = ham ? "attn_mask" : "mask";
        attn_tensor m;
        if (attn_safetensors_get(r->ctx, r->st, mn, &m))
            return attn_cli_error(1, "%s", attn_ctx_last_error(r->ctx));
        if ((m.dtype == ATTN_F64 || m.dtype == ATTN_F16 || m.dtype == ATTN_BF16) &&
            load_float(r, in, mn, 1, &m))
            return 1;
        a.mask = m;
    }
    if (attn_safetensors_find(r->st, "key_padding_mask") >= 0 &&
        attn_safetensors_get(r->ctx, r->st, "key_padding_mask", &a.key_padding_mask))
        return attn_cli_error(1, "%s", attn_ctx_last_error(r->ctx));

    /* the block-sparse layout: from the file, or built from --layout */
    attn_sdpa_layout lay = {0};
    int has_lt = attn_safetensors_find(r->st, "layout") >= 0;
    if (has_lt && o->has_spec)
        return attn_cli_error(2, "sdpa: both --layout and a 'layout' tensor in %s given", in);
    if (has_lt || o->has_spec) {
        const int64_t T = a.q.shape[2], S = a.k.shape[2];
        lay.bq = o->bq ? o->bq : 64, lay.bk = o->bk ? o->bk : 64;
        lay.nqb = (T + lay.bq - 1) / lay.bq, lay.nkb = (S + lay.bk - 1) / lay.bk;
        if (has_lt) {
            attn_tensor lt;
            if (attn_safetensors_get(r->ctx, r->st, "layout", &lt))
                return attn_cli_error(1, "%s", attn_ctx_last_error(r->ctx));
            if (lt.dtype != ATTN_BOOL && lt.dtype != ATTN_U8)
                return attn_cli_error(1, "%s: tensor 'layout' must be BOOL or U8", in);
            int ok = (lt.ndim == 2 || (lt.ndim == 3 && (lt.shape[0] == 1 || lt.shape[0] == H))) &&
                     lt.shape[lt.ndim - 2] == lay.nqb && lt.shape[lt.ndim - 1] == lay.nkb;
            if (!ok) {
                char s[96];
                attn_tensor_shape_str(&lt, s, sizeof s);
                return attn_cli_error(1,
                                      "%s: tensor 'layout' has shape %s; blocks of %lld x %lld "
                                      "(--block) need [%lld, %lld] or [H=%lld, %lld, %lld]",
                                      in, s, (long long)lay.bq, (long long)lay.bk,
                                      (long long)lay.nqb, (long long)lay.nkb, (long long)H,
                                      (long long)lay.nqb, (long long)lay.nkb);
            }
            lay.blocks = lt.data;
            lay.per_head = lt.ndim == 3 && lt.shape[0] == H && H > 1;
        } else {
            uint8_t *b = malloc((size_t)(lay.nqb * lay.nkb > 0 ? lay.nqb * lay.nkb : 1));
            if (!b) return attn_cli_error(1, "out of memory for the layout");
            r->owned[r->nowned++] = (float *)(void *)b;
            if (attn_sdpa_layout_build(r->ctx, &o->spec, T, S, lay.bq, lay.bk, b))
                return attn_cli_error(2, "sdpa: --layout: %s", attn_ctx_last_error(r->ctx));
            lay.blocks = b;
        }
        a.layout = &lay;
    } else if (o->bq) {
        return attn_cli_error(2, "sdpa: --block needs --layout or a 'layout' tensor");
    }

    /* global tokens: from the file (used as stored; the library checks the
     * shape) or from --global-tokens (one [S] row for every batch) */
    int has_gt = attn_safetensors_find(r->st, "global_tokens") >= 0;
    if (has_gt && o->globals)
        return attn_cli_error(2,
                              "sdpa: both --global-tokens and a 'global_tokens' tensor in %s "
                              "given",
                              in);
    if (has_gt && attn_safetensors_get(r->ctx, r->st, "global_tokens", &a.global_tokens))
        return attn_cli_error(1, "%s", attn_ctx_last_error(r->ctx));
    if (o->globals) {
        const int64_t S = a.k.shape[2];
        uint8_t *g = calloc((size_t)(S > 0 ? S : 1), 1);
        if (!g) return attn_cli_error(1, "out of memory for the global tokens");
        r->owned[r->nowned++] = (float *)(void *)g;
        if (globals_walk("sdpa", o->globals, g, S)) return 2;
        a.global_tokens = attn_tensor_make(g, ATTN_U8, 1, (int64_t[]){S});
    }

    attn_tensor dout = {0};
    if (!o->backward && attn_safetensors_find(r->st, "dout") >= 0)
        return attn_cli_error(1,
                              "%s: tensor 'dout' is only used with --backward; add --backward "
                              "or remove it",
                              in);
    if (o->backward && (load_float(r, in, "dout", 1, &dout) || check_rank(r, in, "dout", &dout)))
        return 1;

    int64_t Dv = a.v.shape[3], D = a.q.shape[3];
    if (!alloc_f32(r, &a.q, Dv, &a.out) || !alloc_f32(r, &a.q, -1, &a.lse))
        return attn_cli_error(1, "out of memory for the output");
    attn_status s = o->ref ? attn_sdpa_forward_ref(r->ctx, &a) : attn_sdpa_forward(r->ctx, &a);
    if (s) return attn_cli_error(1, "%s: %s", in, attn_ctx_last_error(r->ctx));

    const char *names[6] = {"out", "lse"};
    attn_tensor views[6] = {out_view(r, a.out), out_view(r, a.lse)};
    int n = 2;
    if (o->backward) {
        attn_sdpa_grads g = {.dout = dout};
        if (!alloc_f32(r, &a.q, D, &g.dq) || !alloc_f32(r, &a.k, a.k.shape[3], &g.dk) ||
            !alloc_f32(r, &a.v, Dv, &g.dv))
            return attn_cli_error(1, "out of memory for the gradients");
        if (a.mask.data && a.mask.dtype == ATTN_F32) {
            size_t nm = (size_t)attn_tensor_numel(&a.mask);
            float *f = calloc(nm ? nm : 1, sizeof *f);
            if (!f) return attn_cli_error(1, "out of memory for dmask");
            r->owned[r->nowned++] = f;
            g.dmask = attn_tensor_make(f, ATTN_F32, a.mask.ndim, a.mask.shape);
        }
        s = o->ref ? attn_sdpa_backward_ref(r->ctx, &a, &g) : attn_sdpa_backward(r->ctx, &a, &g);
        if (s) return attn_cli_error(1, "%s: backward: %s", in, attn_ctx_last_error(r->ctx));
        names[n] = "dq", views[n++] = out_view(r, g.dq);
        names[n] = "dk", views[n++] = out_view(r, g.dk);
        names[n] = "dv", views[n++] = out_view(r, g.dv);
        if (g.dmask.data) names[n] = "dmask", views[n++] = g.dmask;
    }
    if (attn_safetensors_write(r->ctx, o->out, n, names, views))
        return attn_cli_error(1, "%s", attn_ctx_last_error(r->ctx));
    return 0;
}

int attn_cmd_sdpa(int argc, char **argv) {
    sdpa_opts o;
    memset(&o, 0, sizeof o);
    int rc = parse_args(argc, argv, &o);
    if (rc >= 0) return rc;
    sdpa_run r;
    memset(&r, 0, sizeof r);
    rc = run(&o, &r);
    for (int i = 0; i < r.nconverted; i++)
        attn_buffer_free(r.converted[i]);
    for (int i = 0; i < r.nowned; i++)
        free(r.owned[i]);
    free(r.kv_len);
    attn_safetensors_close(r.st);
    attn_ctx_free(r.ctx);
    return rc;
}

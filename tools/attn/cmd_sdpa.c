/* attn sdpa: scaled dot-product attention on tensors from a safetensors
 * file, forward (and backward with --backward), results to another file.
 * Inputs are used in place where they are already F32 (the file's buffer),
 * and the fast path allocates nothing of size T x S. */
#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
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
          "  mask         optional: F32 additive bias, or BOOL/U8 keep-mask (true = attend),\n"
          "               shape [T,S] or [B|1,H|1,T,S] (or [H|1,T,S] with 3-D inputs)\n"
          "  kv_len       optional I32 or I64 [B]: keys j >= kv_len[b] are masked\n"
          "  alibi_slopes optional F32 [H]: adds -slope[h] * |p(i) - j|\n"
          "  dout         [B,H,T,Dv], required with --backward\n"
          "OUT receives out [B,H,T,Dv] and lse [B,H,T] (natural log; -inf for a query that\n"
          "sees no key, whose out is 0); with --backward also dq, dk, dv and, for a float\n"
          "mask, dmask. OUT is replaced atomically; on any error it is not created.\n"
          "\n"
          "options:\n"
          "  --causal              mask keys after the query's position p(i)\n"
          "  --align top-left|bottom-right\n"
          "                        p(i) = i (default, PyTorch is_causal) or i + S - T\n"
          "                        (FlashAttention, KV caches)\n"
          "  --window L,R          keep keys p(i)-L <= j <= p(i)+R; -1 = unbounded side\n"
          "  --scale X             score scale (default 1/sqrt(D))\n"
          "  --softcap X           s = X * tanh(s / X) before bias and ALiBi (0 = off)\n"
          "  --dropout P           drop probabilities with probability P in [0, 1)\n"
          "  --seed N              dropout seed (default 0): same seed, same mask\n"
          "  --threads N           threads (default: ATTN_NUM_THREADS, else all cores)\n"
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
} sdpa_opts;

/* The value of option argv[*i] ("--x V" or "--x=V"); NULL if missing. */
static const char *opt_value(int argc, char **argv, int *i, const char *eq) {
    if (eq) return eq + 1;
    if (*i + 1 >= argc) return NULL;
    return argv[++*i];
}

/* Returns -1 to continue, else the exit status (0 for --help, 2 bad usage). */
static int parse_args(int argc, char **argv, sdpa_opts *o) {
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        char *arg = argv[i];
        if (arg[0] != '-' || !strcmp(arg, "-")) {
            if (npos == 0)
                o->in = arg;
            else if (npos == 1)
                o->out = arg;
            else
                return attn_cli_error(2, "sdpa: unexpected argument '%s'", arg);
            npos++;
            continue;
        }
        if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
            usage(stdout);
            return 0;
        }
        char name[32];
        const char *eq = strchr(arg, '=');
        size_t nl = eq ? (size_t)(eq - arg) : strlen(arg);
        if (nl >= sizeof name) return attn_cli_error(2, "sdpa: unknown option '%s'", arg);
        memcpy(name, arg, nl);
        name[nl] = '\0';
        int flag =
            !strcmp(name, "--causal") || !strcmp(name, "--ref") || !strcmp(name, "--backward");
        if (flag) {
            if (eq) return attn_cli_error(2, "sdpa: option %s takes no value", name);
            if (!strcmp(name, "--causal"))
                o->a.causal = 1;
            else if (!strcmp(name, "--ref"))
                o->ref = 1;
            else
                o->backward = 1;
            continue;
        }
        static const char *const valued[] = {"--align",   "--window", "--scale",  "--softcap",
                                             "--dropout", "--seed",   "--threads"};
        int known = 0;
        for (size_t k = 0; k < sizeof valued / sizeof valued[0]; k++)
            known |= !strcmp(name, valued[k]);
        if (!known)
            return attn_cli_error(2, "sdpa: unknown option '%s' (see attn sdpa --help)", arg);
        const char *v = opt_value(argc, argv, &i, eq);
        if (!v) return attn_cli_error(2, "sdpa: option %s needs a value", name);
        float x;
        long n;
        if (!strcmp(name, "--align")) {
            if ((n = attn_cli_parse_align("sdpa", v, &o->a.align))) return (int)n;
        } else if (!strcmp(name, "--window")) {
            long l, r;
            if ((n = attn_cli_parse_window("sdpa", v, &l, &r))) return (int)n;
            o->a.window = 1;
            o->a.window_left = l;
            o->a.window_right = r;
        } else if (!strcmp(name, "--scale")) {
            if (attn_cli_parse_float(v, &x) || !isfinite(x))
                return attn_cli_error(2, "sdpa: --scale must be a finite number, got '%s'", v);
            o->a.scale = x;
        } else if (!strcmp(name, "--softcap")) {
            if (attn_cli_parse_float(v, &x) || !isfinite(x) || x < 0.0f)
                return attn_cli_error(2, "sdpa: --softcap must be a number >= 0, got '%s'", v);
            o->a.softcap = x;
        } else if (!strcmp(name, "--dropout")) {
            if (attn_cli_parse_float(v, &x) || !(x >= 0.0f && x < 1.0f))
                return attn_cli_error(2, "sdpa: --dropout must be in [0, 1), got '%s'", v);
            o->a.dropout_p = x;
        } else if (!strcmp(name, "--seed")) {
            if (attn_cli_parse_u64(v, &o->a.seed))
                return attn_cli_error(2, "sdpa: --seed must be an integer >= 0, got '%s'", v);
        } else { /* --threads */
            if (attn_cli_parse_long(v, &n) || n < 0 || n > 4096)
                return attn_cli_error(
                    2, "sdpa: --threads must be an integer in [0, 4096], got '%s'", v);
            o->threads = (int)n;
        }
    }
    if (npos < 2)
        return attn_cli_error(
            2, "sdpa: expected IN.safetensors OUT.safetensors (see attn sdpa --help)");
    return -1;
}

/* Everything one run owns; freed in one place. */
typedef struct sdpa_run {
    attn_ctx *ctx;
    attn_safetensors *st;
    float *converted[8]; /* from attn_safetensors_get_f32: freed with attn_free */
    int nconverted;
    float *owned[8]; /* outputs: freed with free */
    int nowned;
    int32_t *kv_len;
    int rank3; /* q, k, v given as [H,T,D] */
    int mask3; /* mask given as [H|1,T,S] (with rank3) */
} sdpa_run;

/* Tensor `name` as F32 in *t (converted from F16/BF16/F64 into an owned
 * buffer). Absent: *t stays empty, which is an error when required. */
static int load_float(sdpa_run *r, const char *in, const char *name, int required, attn_tensor *t) {
    float *f;
    int rc = attn_cli_load_f32(r->ctx, r->st, in, name, required, t, &f);
    if (f) r->converted[r->nconverted++] = f;
    return rc;
}

/* q, k, v (and dout): 4-D, or all 3-D meaning B = 1. */
static int check_rank(sdpa_run *r, const char *in, const char *name, attn_tensor *t) {
    char s[128];
    attn_cli_shape_str(t, s, sizeof s);
    if (t->ndim != (r->rank3 ? 3 : 4))
        return attn_cli_error(1, "%s: tensor '%s' has shape %s, expected %s", in, name, s,
                              r->rank3 ? "3 dims [H,T,D] like q" : "4 dims [B,H,T,D] like q");
    if (r->rank3) { /* [H,T,D] -> [1,H,T,D] */
        for (int d = 3; d > 0; d--)
            t->shape[d] = t->shape[d - 1], t->stride[d] = t->stride[d - 1];
        t->shape[0] = 1;
        t->stride[0] = t->shape[1] * t->stride[1];
        t->ndim = 4;
    }
    return 0;
}

static int expect_shape(const char *in, const char *name, const attn_tensor *t,
                        const int64_t want[4], const char *what) {
    for (int d = 0; d < 4; d++)
        if (want[d] >= 0 && t->shape[d] != want[d]) {
            char s[128];
            attn_cli_shape_str(t, s, sizeof s);
            return attn_cli_error(1, "%s: tensor '%s' has shape %s, expected %s", in, name, s,
                                  what);
        }
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
    if (attn_ctx_create(&r->ctx, o->threads))
        return attn_cli_error(1, "cannot create a context with %d threads", o->threads);
    if (attn_safetensors_open(r->ctx, in, &r->st))
        return attn_cli_error(1, "%s", attn_ctx_last_error(r->ctx));

    if (load_float(r, in, "q", 1, &a.q) || load_float(r, in, "k", 1, &a.k) ||
        load_float(r, in, "v", 1, &a.v))
        return 1;
    r->rank3 = a.q.ndim == 3;
    if (check_rank(r, in, "q", &a.q) || check_rank(r, in, "k", &a.k) ||
        check_rank(r, in, "v", &a.v))
        return 1;
    int64_t B = a.q.shape[0], H = a.q.shape[1], T = a.q.shape[2], D = a.q.shape[3];
    int64_t Hkv = a.k.shape[1], S = a.k.shape[2], Dv = a.v.shape[3];
    char what[160];
    snprintf(what, sizeof what, "[B=%lld, Hkv, S, D=%lld] to match q", (long long)B, (long long)D);
    if (expect_shape(in, "k", &a.k, (int64_t[]){B, -1, -1, D}, what)) return 1;
    if (Hkv < 1 || H % Hkv)
        return attn_cli_error(1, "%s: k has %lld heads, which must divide q's H=%lld", in,
                              (long long)Hkv, (long long)H);
    snprintf(what, sizeof what, "[B=%lld, Hkv=%lld, S=%lld, Dv] to match k", (long long)B,
             (long long)Hkv, (long long)S);
    if (expect_shape(in, "v", &a.v, (int64_t[]){B, Hkv, S, -1}, what)) return 1;

    attn_tensor al;
    if (load_float(r, in, "alibi_slopes", 0, &al)) return 1;
    if (al.data) {
        if (al.ndim != 1 || al.shape[0] != H) {
            char s[128];
            attn_cli_shape_str(&al, s, sizeof s);
            return attn_cli_error(1, "%s: tensor 'alibi_slopes' has shape %s, expected [H=%lld]",
                                  in, s, (long long)H);
        }
        a.alibi_slopes = al.data;
    }

    if (attn_cli_load_kv_len(r->ctx, r->st, in, B, S, &r->kv_len)) return 1;
    a.kv_len = r->kv_len;

    if (attn_safetensors_find(r->st, "mask") >= 0) {
        attn_tensor m;
        if (attn_safetensors_get(r->ctx, r->st, "mask", &m))
            return attn_cli_error(1, "%s", attn_ctx_last_error(r->ctx));
        if (m.dtype != ATTN_BOOL && m.dtype != ATTN_U8) {
            if (m.dtype != ATTN_F32 && m.dtype != ATTN_F64 && m.dtype != ATTN_F16 &&
                m.dtype != ATTN_BF16)
                return attn_cli_error(1,
                                      "%s: tensor 'mask' has dtype %s, expected F32 (additive) "
                                      "or BOOL/U8 (keep-mask)",
                                      in, attn_dtype_name(m.dtype));
            if (load_float(r, in, "mask", 1, &m)) return 1;
        }
        char s[128];
        attn_cli_shape_str(&m, s, sizeof s);
        int mask3 = r->rank3 && m.ndim == 3; /* [H|1,T,S] with 3-D inputs */
        if (mask3) {
            for (int d = 3; d > 0; d--)
                m.shape[d] = m.shape[d - 1], m.stride[d] = m.stride[d - 1];
            m.shape[0] = 1, m.stride[0] = 0, m.ndim = 4;
        }
        if (!attn_cli_mask_shape_ok(&m, B, H, T, S))
            return attn_cli_error(1,
                                  "%s: tensor 'mask' has shape %s, expected [T=%lld,S=%lld] or "
                                  "%s[B=%lld|1,H=%lld|1,T,S]",
                                  in, s, (long long)T, (long long)S,
                                  r->rank3 ? "[H|1,T,S] or " : "", (long long)B, (long long)H);
        a.mask = m;
        r->mask3 = mask3;
    }

    attn_tensor dout = {0};
    if (o->backward) {
        if (load_float(r, in, "dout", 1, &dout) || check_rank(r, in, "dout", &dout)) return 1;
        snprintf(what, sizeof what, "[B=%lld, H=%lld, T=%lld, Dv=%lld] like out", (long long)B,
                 (long long)H, (long long)T, (long long)Dv);
        if (expect_shape(in, "dout", &dout, (int64_t[]){B, H, T, Dv}, what)) return 1;
    }

    if (!alloc_f32(r, &a.q, Dv, &a.out) || !alloc_f32(r, &a.q, -1, &a.lse))
        return attn_cli_error(1, "out of memory for the output");
    attn_status s = o->ref ? attn_sdpa_forward_ref(r->ctx, &a) : attn_sdpa_forward(r->ctx, &a);
    if (s) return attn_cli_error(1, "%s: %s", in, attn_ctx_last_error(r->ctx));

    const char *names[6] = {"out", "lse"};
    attn_tensor views[6] = {out_view(r, a.out), out_view(r, a.lse)};
    int n = 2;
    if (o->backward) {
        attn_sdpa_grads g = {.dout = dout};
        if (!alloc_f32(r, &a.q, D, &g.dq) || !alloc_f32(r, &a.k, D, &g.dk) ||
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
        if (g.dmask.data)
            names[n] = "dmask", views[n++] = r->mask3 ? out_view(r, g.dmask) : g.dmask;
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
        attn_free(r.converted[i]);
    for (int i = 0; i < r.nowned; i++)
        free(r.owned[i]);
    free(r.kv_len);
    attn_safetensors_close(r.st);
    attn_ctx_free(r.ctx);
    return rc;
}

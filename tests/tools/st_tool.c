/* st_tool: safetensors helper for the shell tests (no Python needed).
 *
 *   st_tool gen OUT SEED SPEC...    write random tensors; SPEC is
 *       name=DTYPE:d0,d1,...[:KIND]  with KIND one of
 *         normal=SIGMA   float normal(0, SIGMA^2) (the float default, SIGMA 1)
 *         ninf=P         float normal(0,1), each entry -inf with probability P
 *         p=P            BOOL/U8: 1 with probability P (default 0.7)
 *         vals=a,b,...   these values, repeated to fill the tensor
 *       (integers default to uniform 0..9; a shape of "-" is 0-dim)
 *   st_tool info FILE               one line per tensor: name dtype [shape]
 *   st_tool equal A B               every tensor bitwise equal (exit 1 if not)
 *   st_tool check IN REF FAST [SDPA OPTIONS]
 *       out and lse of FAST against REF (from `attn sdpa --ref`) with the
 *       project tolerance: max error <= 2 x the error of a plain fp32 naive
 *       attention (computed here from IN with the same options) + 1e-6.
 *       Gradients (dq, dk, dv, dmask), when REF has them, get the same rule
 *       with a plain fp32 naive backward (from IN's dout).
 * Exit 0 on success, 1 on a mismatch, 2 on bad usage. */
#include "at_sdpa_bwd.h"
#include "attn_test.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int die(const char *fmt, const char *a) {
    fprintf(stderr, "st_tool: ");
    fprintf(stderr, fmt, a);
    fputc('\n', stderr);
    return 2;
}

static attn_dtype dtype_of(const char *s, int *ok) {
    *ok = 1;
    for (int d = ATTN_F32; d <= ATTN_BOOL; d++)
        if (!strcmp(attn_dtype_name((attn_dtype)d), s)) return (attn_dtype)d;
    *ok = 0;
    return ATTN_F32;
}

/* IEEE half bits of x, rounded to nearest even from the double (what a
 * (_Float16)x cast gives on GCC, written out because Clang before 15 has no
 * _Float16 on x86-64). */
static uint16_t f16_bits(double x) {
    uint16_t sign = signbit(x) ? 0x8000 : 0;
    double a = fabs(x);
    if (isnan(x)) return sign | 0x7e00;
    if (a < 0x1p-14) return sign | (uint16_t)nearbyint(a * 0x1p24); /* subnormal (or 2^-14) */
    int e;
    double r = nearbyint(ldexp(frexp(a, &e), 11)); /* 1024..2048: 1.f x 2^10 */
    int E = e + 14;
    if (r == 2048.0) r = 1024.0, E++;
    if (E >= 31) return sign | 0x7c00; /* overflow: inf */
    return sign | (uint16_t)(E << 10) | (uint16_t)((int)r - 1024);
}

static void put(void *data, attn_dtype t, int64_t i, double x) {
    switch (t) {
    case ATTN_F32:
        ((float *)data)[i] = (float)x;
        break;
    case ATTN_F64:
        ((double *)data)[i] = x;
        break;
    case ATTN_I32:
        ((int32_t *)data)[i] = (int32_t)x;
        break;
    case ATTN_I64:
        ((int64_t *)data)[i] = (int64_t)x;
        break;
    case ATTN_U8:
    case ATTN_BOOL:
        ((uint8_t *)data)[i] = (uint8_t)x;
        break;
    case ATTN_F16:
        ((uint16_t *)data)[i] = f16_bits(x);
        break;
    case ATTN_BF16: { /* round to nearest even on the top 16 bits (finite x) */
        float f = (float)x;
        uint32_t u;
        memcpy(&u, &f, 4);
        ((uint16_t *)data)[i] = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
        break;
    }
    }
}

static int cmd_gen(int argc, char **argv) {
    if (argc < 3) return die("%s", "usage: st_tool gen OUT SEED SPEC...");
    at_rng r;
    at_rng_init(&r, strtoull(argv[2], NULL, 10));
    int n = argc - 3;
    attn_tensor *ts = calloc((size_t)n, sizeof *ts);
    char **names = calloc((size_t)n, sizeof *names);
    for (int i = 0; i < n; i++) {
        char *spec = strdup(argv[3 + i]);
        char *eq = strchr(spec, '=');
        if (!eq) return die("bad spec '%s' (name=DTYPE:shape[:kind])", argv[3 + i]);
        *eq = '\0';
        names[i] = spec;
        char *dt = eq + 1, *shp = strchr(dt, ':');
        if (!shp) return die("bad spec '%s' (no shape)", argv[3 + i]);
        *shp++ = '\0';
        char *kind = strchr(shp, ':');
        if (kind) *kind++ = '\0';
        int ok;
        attn_dtype t = dtype_of(dt, &ok);
        if (!ok) return die("unknown dtype in '%s'", argv[3 + i]);
        int64_t sh[ATTN_MAX_DIMS];
        int nd = 0;
        if (strcmp(shp, "-"))
            for (char *p = shp; nd < ATTN_MAX_DIMS; nd++) {
                sh[nd] = strtoll(p, &p, 10);
                if (*p != ',') {
                    nd++;
                    break;
                }
                p++;
            }
        ts[i] = attn_tensor_make(NULL, t, nd, sh);
        int64_t numel = attn_tensor_numel(&ts[i]);
        ts[i].data = calloc((size_t)(numel ? numel : 1), attn_dtype_size(t));
        int isf = t == ATTN_F32 || t == ATTN_F64 || t == ATTN_F16 || t == ATTN_BF16;
        double sigma = 1.0, ninf = 0.0, p1 = 0.7;
        double *vals = NULL;
        int nvals = 0;
        if (kind) {
            if (!strncmp(kind, "normal=", 7))
                sigma = atof(kind + 7);
            else if (!strncmp(kind, "ninf=", 5))
                ninf = atof(kind + 5);
            else if (!strncmp(kind, "p=", 2))
                p1 = atof(kind + 2);
            else if (!strncmp(kind, "vals=", 5)) {
                vals = malloc(strlen(kind) * sizeof *vals);
                for (char *p = kind + 5;;) {
                    vals[nvals++] = strtod(p, &p);
                    if (*p != ',') break;
                    p++;
                }
            } else
                return die("unknown kind '%s'", kind);
        }
        for (int64_t e = 0; e < numel; e++) {
            double x;
            if (vals)
                x = vals[e % nvals];
            else if (isf)
                x = at_rng_unit(&r) < ninf ? -INFINITY : sigma * at_rng_normal(&r);
            else if (t == ATTN_BOOL || t == ATTN_U8)
                x = at_rng_unit(&r) < p1;
            else
                x = (double)at_rng_int(&r, 0, 9);
            put(ts[i].data, t, e, x);
        }
        free(vals);
    }
    attn_ctx *ctx;
    if (attn_ctx_create(&ctx, 1)) return 1;
    attn_status s = attn_safetensors_write(ctx, argv[1], n, (const char *const *)names, ts);
    if (s) fprintf(stderr, "st_tool: %s\n", attn_ctx_last_error(ctx));
    for (int i = 0; i < n; i++)
        free(ts[i].data), free(names[i]);
    free(ts), free(names);
    attn_ctx_free(ctx);
    return s ? 1 : 0;
}

static attn_safetensors *open_or_die(attn_ctx *ctx, const char *path) {
    attn_safetensors *st;
    if (attn_safetensors_open(ctx, path, &st)) {
        fprintf(stderr, "st_tool: %s\n", attn_ctx_last_error(ctx));
        exit(1);
    }
    return st;
}

static int cmd_info(attn_ctx *ctx, const char *path) {
    attn_safetensors *st = open_or_die(ctx, path);
    for (int i = 0; i < attn_safetensors_count(st); i++) {
        attn_tensor t;
        const char *name = attn_safetensors_name(st, i);
        if (attn_safetensors_get(ctx, st, name, &t)) continue;
        printf("%s %s [", name, attn_dtype_name(t.dtype));
        for (int d = 0; d < t.ndim; d++)
            printf("%s%lld", d ? "," : "", (long long)t.shape[d]);
        printf("]\n");
    }
    attn_safetensors_close(st);
    return 0;
}

static int cmd_equal(attn_ctx *ctx, const char *pa, const char *pb) {
    attn_safetensors *a = open_or_die(ctx, pa), *b = open_or_die(ctx, pb);
    int ok = attn_safetensors_count(a) == attn_safetensors_count(b);
    for (int i = 0; ok && i < attn_safetensors_count(a); i++) {
        const char *name = attn_safetensors_name(a, i);
        attn_tensor x, y;
        if (attn_safetensors_get(ctx, a, name, &x) || attn_safetensors_get(ctx, b, name, &y)) {
            fprintf(stderr, "st_tool: %s\n", attn_ctx_last_error(ctx));
            ok = 0;
            break;
        }
        size_t nb = (size_t)attn_tensor_numel(&x) * attn_dtype_size(x.dtype);
        if (x.dtype != y.dtype || attn_tensor_numel(&x) != attn_tensor_numel(&y) ||
            memcmp(x.data, y.data, nb)) {
            fprintf(stderr, "st_tool: tensor '%s' differs between %s and %s\n", name, pa, pb);
            ok = 0;
        }
    }
    attn_safetensors_close(a);
    attn_safetensors_close(b);
    return ok ? 0 : 1;
}

/* Options of `attn sdpa` that change the result (the others are ignored);
 * "--x V" and "--x=V" both work. */
static int parse_opts(int argc, char **argv, attn_sdpa_args *a) {
    for (int i = 0; i < argc; i++) {
        char o[64];
        const char *eq = strchr(argv[i], '='), *v = eq ? eq + 1 : i + 1 < argc ? argv[i + 1] : "";
        snprintf(o, sizeof o, "%.*s", eq ? (int)(eq - argv[i]) : 63, argv[i]);
        int valued = 1;
        if (!strcmp(o, "--causal"))
            a->causal = 1, valued = 0;
        else if (!strcmp(o, "--ref") || !strcmp(o, "--backward"))
            valued = 0;
        else if (!strcmp(o, "--align"))
            a->align = !strcmp(v, "bottom-right") ? ATTN_ALIGN_BOTTOM_RIGHT : ATTN_ALIGN_TOP_LEFT;
        else if (!strcmp(o, "--window")) {
            a->window = 1;
            if (sscanf(v, "%" SCNd64 ",%" SCNd64, &a->window_left, &a->window_right) != 2)
                return -1;
        } else if (!strcmp(o, "--scale"))
            a->scale = strtof(v, NULL);
        else if (!strcmp(o, "--softcap"))
            a->softcap = strtof(v, NULL);
        else if (!strcmp(o, "--dropout"))
            a->dropout_p = strtof(v, NULL);
        else if (!strcmp(o, "--seed"))
            a->seed = strtoull(v, NULL, 0);
        else if (strcmp(o, "--threads"))
            return -1;
        if (valued && !eq) i++;
    }
    return 0;
}

/* 3-D [H,T,D] inputs mean B = 1. */
static attn_tensor as4(attn_tensor t) {
    if (t.ndim == 3) {
        for (int d = 3; d > 0; d--)
            t.shape[d] = t.shape[d - 1], t.stride[d] = t.stride[d - 1];
        t.shape[0] = 1, t.stride[0] = t.shape[1] * t.stride[1], t.ndim = 4;
    }
    return t;
}

static attn_tensor get_or_die(attn_ctx *ctx, attn_safetensors *st, const char *name) {
    attn_tensor t;
    if (attn_safetensors_get(ctx, st, name, &t)) {
        fprintf(stderr, "st_tool: %s\n", attn_ctx_last_error(ctx));
        exit(1);
    }
    return t;
}

/* Drop leading size-1 dims of v until it has ndim dims (the file's 3-D
 * outputs against naive 4-D buffers). */
static attn_tensor squeeze_to(attn_tensor v, int ndim) {
    while (v.ndim > ndim && v.shape[0] == 1) {
        for (int d = 0; d + 1 < v.ndim; d++)
            v.shape[d] = v.shape[d + 1], v.stride[d] = v.stride[d + 1];
        v.ndim--;
    }
    return v;
}

/* One output of FAST against REF with the tolerance set by naive. */
static int check_one(attn_ctx *ctx, attn_safetensors *ref, attn_safetensors *fast, const char *name,
                     const char *label, attn_tensor nv) {
    attn_tensor r = get_or_die(ctx, ref, name), f = get_or_die(ctx, fast, name);
    nv = squeeze_to(nv, r.ndim);
    int same = r.ndim == f.ndim && r.ndim == nv.ndim;
    for (int d = 0; same && d < r.ndim; d++)
        same = r.shape[d] == f.shape[d] && r.shape[d] == nv.shape[d];
    if (!same) {
        fprintf(stderr, "st_tool: '%s' has different shapes in REF, FAST and naive\n", name);
        return 0;
    }
    at_stats s;
    int pass = at_check(name, label, 0, &f, &r, &nv, &s);
    printf("%s: max_err %.3g naive_err %.3g tol %.3g nmse %.3g%s\n", name, s.max_err, s.naive_err,
           s.tol, s.nmse, pass ? "" : "  FAIL");
    return pass;
}

/* A float tensor as F32 (converted from F16/BF16/F64), freed by free_converted. */
static float *converted[8];
static int nconverted;
static void free_converted(void) {
    while (nconverted > 0)
        attn_buffer_free(converted[--nconverted]);
}
static attn_tensor get_f32_or_die(attn_ctx *ctx, attn_safetensors *st, const char *name) {
    attn_tensor t;
    float *f;
    if (attn_safetensors_get_f32(ctx, st, name, &f, &t)) {
        fprintf(stderr, "st_tool: %s\n", attn_ctx_last_error(ctx));
        exit(1);
    }
    converted[nconverted++] = f;
    return t;
}

static int cmd_check(attn_ctx *ctx, int argc, char **argv) {
    attn_sdpa_args a;
    memset(&a, 0, sizeof a);
    if (parse_opts(argc - 4, argv + 4, &a)) return die("%s", "check: unknown sdpa option");
    attn_safetensors *in = open_or_die(ctx, argv[1]), *ref = open_or_die(ctx, argv[2]);
    attn_safetensors *fast = open_or_die(ctx, argv[3]);
    a.q = as4(get_f32_or_die(ctx, in, "q"));
    a.k = as4(get_f32_or_die(ctx, in, "k"));
    a.v = as4(get_f32_or_die(ctx, in, "v"));
    const char *mn = attn_safetensors_find(in, "attn_mask") >= 0 ? "attn_mask" : "mask";
    if (attn_safetensors_find(in, mn) >= 0) { /* as stored: PyTorch's broadcasting */
        a.mask = get_or_die(ctx, in, mn);
        if (a.mask.dtype != ATTN_BOOL && a.mask.dtype != ATTN_U8)
            a.mask = get_f32_or_die(ctx, in, mn);
    }
    if (attn_safetensors_find(in, "key_padding_mask") >= 0)
        a.key_padding_mask = get_or_die(ctx, in, "key_padding_mask");
    if (attn_safetensors_find(in, "global_tokens") >= 0)
        a.global_tokens = get_or_die(ctx, in, "global_tokens");
    if (attn_safetensors_find(in, "alibi_slopes") >= 0)
        a.alibi_slopes = get_or_die(ctx, in, "alibi_slopes").data;
    int32_t kvl[64];
    if (attn_safetensors_find(in, "kv_len") >= 0) {
        attn_tensor k = get_or_die(ctx, in, "kv_len");
        for (int64_t b = 0; b < k.shape[0] && b < 64; b++)
            kvl[b] = k.dtype == ATTN_I32 ? ((int32_t *)k.data)[b] : (int32_t)((int64_t *)k.data)[b];
        a.kv_len = kvl;
    }
    at_buf no, nl;
    int64_t B = a.q.shape[0], H = a.q.shape[1], T = a.q.shape[2], Dv = a.v.shape[3];
    if (at_buf_f32(&no, B, H, T, Dv) ||
        at_buf_alloc(&nl, ATTN_F32, 3, (int64_t[]){B, H, T}, NULL, 0))
        return 1;
    a.out = no.t;
    a.lse = nl.t;
    if (at_naive32_forward(ctx, &a)) {
        fprintf(stderr, "st_tool: naive32: %s\n", attn_ctx_last_error(ctx));
        return 1;
    }
    int ok = check_one(ctx, ref, fast, "out", argv[3], no.t);
    ok &= check_one(ctx, ref, fast, "lse", argv[3], nl.t);
    if (attn_safetensors_find(ref, "dq") >= 0) {
        at_buf dq, dk, dv, dm = {0};
        attn_sdpa_grads g = {.dout = as4(get_f32_or_die(ctx, in, "dout"))};
        const attn_tensor *m = &a.mask;
        if (at_buf_alloc(&dq, ATTN_F32, 4, a.q.shape, NULL, 0) ||
            at_buf_alloc(&dk, ATTN_F32, 4, a.k.shape, NULL, 0) ||
            at_buf_alloc(&dv, ATTN_F32, 4, a.v.shape, NULL, 0) ||
            (m->data && m->dtype == ATTN_F32 &&
             at_buf_alloc(&dm, ATTN_F32, m->ndim, m->shape, NULL, 0)))
            return 1;
        g.dq = dq.t, g.dk = dk.t, g.dv = dv.t, g.dmask = dm.t;
        if (at_naive32_backward(ctx, &a, &g)) {
            fprintf(stderr, "st_tool: naive32 backward: %s\n", attn_ctx_last_error(ctx));
            return 1;
        }
        ok &= check_one(ctx, ref, fast, "dq", argv[3], dq.t);
        ok &= check_one(ctx, ref, fast, "dk", argv[3], dk.t);
        ok &= check_one(ctx, ref, fast, "dv", argv[3], dv.t);
        if (dm.mem)
            ok &= check_one(ctx, ref, fast, "dmask", argv[3], dm.t);
        else
            ok &= attn_safetensors_find(ref, "dmask") < 0;
        at_buf_free(&dq), at_buf_free(&dk), at_buf_free(&dv), at_buf_free(&dm);
    }
    at_buf_free(&no);
    at_buf_free(&nl);
    free_converted();
    attn_safetensors_close(in);
    attn_safetensors_close(ref);
    attn_safetensors_close(fast);
    return ok ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc < 2) return die("%s", "usage: st_tool gen|info|equal|check ...");
    attn_ctx *ctx;
    if (attn_ctx_create(&ctx, 1)) return 1;
    int rc;
    if (!strcmp(argv[1], "gen"))
        rc = cmd_gen(argc - 1, argv + 1);
    else if (!strcmp(argv[1], "info") && argc == 3)
        rc = cmd_info(ctx, argv[2]);
    else if (!strcmp(argv[1], "equal") && argc == 4)
        rc = cmd_equal(ctx, argv[2], argv[3]);
    else if (!strcmp(argv[1], "check") && argc >= 5)
        rc = cmd_check(ctx, argc - 1, argv + 1);
    else
        rc = die("unknown or incomplete command '%s'", argv[1]);
    attn_ctx_free(ctx);
    return rc;
}

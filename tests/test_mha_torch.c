/* Parity with PyTorch's nn.MultiheadAttention(batch_first=True) on the golden
 * fixtures of tests/fixtures/make_mha_fixtures.py (tests/data/mha): y, the
 * attention weights (per head and averaged), the input gradients and every
 * parameter gradient.
 *
 * Reference and tolerance: each case holds PyTorch's results in float64
 * (<case>.f64) and in float32 (<case>.torch32) from identical inputs and
 * weights. attn must satisfy, per tensor,
 *   max |attn - f64| <= 2 * max |torch32 - f64| + 1e-6,
 * the DESIGN.md rule with PyTorch's fp32 module as the plain fp32
 * implementation: attn may be at most twice as far from the exact result as
 * PyTorch itself.
 *
 * With ATTN_MHA_CLI_OUT=<dir> set, the tensors are instead read from the
 * files `attn mha` wrote there (<case>.heads.safetensors with --need-weights,
 * <case>.avg.safetensors with --average-weights), so tests/test_mha_cli.sh
 * checks the command line with the same code. */
#include <attn/attn.h>

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static const char *CASES[] = {"self",      "self_nobias", "causal",     "float_mask",
                              "bool_mask", "cross_kv",    "cross_kdim", "cross_kdim_pad",
                              "torch_kpm", "torch_bool"};

typedef struct fixture {
    attn_ctx *ctx;
    attn_safetensors *in, *f64, *t32;
} fixture;

static attn_safetensors *open_file(attn_ctx *ctx, const char *dir, const char *name,
                                   const char *suffix) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.%s.safetensors", dir, name, suffix);
    attn_safetensors *st = NULL;
    if (attn_safetensors_open(ctx, path, &st)) print_error("%s\n", attn_ctx_last_error(ctx));
    return st;
}

/* F64 tensor `name` of the float64 results; NULL if absent. */
static const double *ref64(fixture *f, const char *name, int64_t *n) {
    attn_tensor t;
    if (attn_safetensors_find(f->f64, name) < 0) return NULL;
    if (attn_safetensors_get(f->ctx, f->f64, name, &t) || t.dtype != ATTN_F64) return NULL;
    *n = attn_tensor_numel(&t);
    return t.data;
}

/* Compare n floats (contiguous) named `name` with the f64 and torch32 results. */
static int compare(fixture *f, const char *cs, const char *name, const float *got, int64_t n) {
    int64_t n64 = 0;
    const double *ref = ref64(f, name, &n64);
    attn_tensor t32;
    if (!ref || attn_safetensors_get(f->ctx, f->t32, name, &t32) || t32.dtype != ATTN_F32) {
        print_error("%s: fixture has no %s\n", cs, name);
        return 1;
    }
    if (n64 != n || attn_tensor_numel(&t32) != n) {
        print_error("%s: %s has %lld elements, the fixture %lld\n", cs, name, (long long)n,
                    (long long)n64);
        return 1;
    }
    const float *tr = t32.data;
    double et = 0, eg = 0;
    int64_t worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double dt = fabs((double)tr[i] - ref[i]), dg = fabs((double)got[i] - ref[i]);
        if (dt > et) et = dt;
        if (!(dg <= eg)) eg = dg, worst = i; /* NaN counts as the worst */
    }
    double tol = 2.0 * et + 1e-6;
    if (getenv("ATTN_TEST_VERBOSE"))
        printf("%-14s %-26s attn %.3g  torch32 %.3g\n", cs, name, eg, et);
    if (eg <= tol) return 0;
    print_error("%s: %s max err %.3g > tol %.3g (torch fp32 err %.3g); at [%lld]: attn %.9g, "
                "float64 %.9g, torch32 %.9g\n",
                cs, name, eg, tol, et, (long long)worst, (double)got[worst], ref[worst],
                (double)tr[worst]);
    return 1;
}

static float *get_f32(fixture *f, attn_safetensors *st, const char *name, attn_tensor *t,
                      float **owned) {
    if (attn_safetensors_find(st, name) < 0) return NULL;
    if (attn_safetensors_get_f32(f->ctx, st, name, owned, t)) return NULL;
    return *owned;
}

/* Compare every tensor of the CLI's output file with the fixture. */
static int check_cli(fixture *f, const char *dir, const char *cs) {
    int fails = 0;
    const char *kinds[2] = {"heads", "avg"};
    for (int k = 0; k < 2; k++) {
        attn_safetensors *o = open_file(f->ctx, dir, cs, kinds[k]);
        if (!o) return 1;
        for (int i = 0; i < attn_safetensors_count(o); i++) {
            const char *nm = attn_safetensors_name(o, i);
            attn_tensor t;
            float *buf = NULL;
            if (!get_f32(f, o, nm, &t, &buf)) {
                fails++;
                continue;
            }
            const char *refname = k == 1 && !strcmp(nm, "attn_weights") ? "attn_weights_avg" : nm;
            fails += compare(f, cs, refname, buf, attn_tensor_numel(&t));
            attn_buffer_free(buf);
        }
        /* the CLI must have written everything the fixture has */
        for (int i = 0; i < attn_safetensors_count(f->f64); i++) {
            const char *nm = attn_safetensors_name(f->f64, i);
            const char *want = !strcmp(nm, "attn_weights_avg") ? "attn_weights" : nm;
            int in_this =
                k == 0 ? strcmp(nm, "attn_weights_avg") != 0 : strcmp(nm, "attn_weights") != 0;
            if (in_this && attn_safetensors_find(o, want) < 0) {
                print_error("%s: attn mha wrote no '%s' (%s)\n", cs, want, kinds[k]);
                fails++;
            }
        }
        attn_safetensors_close(o);
    }
    return fails;
}

/* Run the library on the fixture's inputs and compare everything. */
static int check_lib(fixture *f, const char *cs) {
    attn_safetensors *in = f->in;
    const char *hs = attn_safetensors_metadata(in, "heads");
    const char *cz = attn_safetensors_metadata(in, "causal");
    if (!hs) {
        print_error("%s: no heads in the metadata\n", cs);
        return 1;
    }
    int self = attn_safetensors_find(in, "x") >= 0, kv = attn_safetensors_find(in, "x_kv") >= 0;
    float *bufs[32];
    int nb = 0;
    attn_mha_args a;
    memset(&a, 0, sizeof a);
    assert_non_null(get_f32(f, in, self ? "x" : "x_q", &a.x_q, &bufs[nb++]));
    if (kv) assert_non_null(get_f32(f, in, "x_kv", &a.x_k, &bufs[nb++]));
    if (!self && !kv) {
        assert_non_null(get_f32(f, in, "x_k", &a.x_k, &bufs[nb++]));
        assert_non_null(get_f32(f, in, "x_v", &a.x_v, &bufs[nb++]));
    }
    int64_t B = a.x_q.shape[0], T = a.x_q.shape[1], E = a.x_q.shape[2];
    int64_t S = self ? T : a.x_k.shape[1];
    attn_mha_config c = {0};
    c.E = E, c.H = atoi(hs), c.causal = cz && !strcmp(cz, "1");
    if (!self) c.kdim = a.x_k.shape[2], c.vdim = a.x_v.data ? a.x_v.shape[2] : c.kdim;
    c.no_bias = attn_safetensors_find(in, "out_proj.bias") < 0;
    attn_mha *m = NULL;
    assert_int_equal(attn_mha_create(f->ctx, &c, 1, &m), ATTN_OK);
    int np;
    const attn_param *ps = attn_mha_get_params(m, &np);
    for (int i = 0; i < np; i++) {
        attn_tensor w;
        float *wb = NULL;
        if (!get_f32(f, in, ps[i].name, &w, &wb)) fail_msg("%s: no weight %s", cs, ps[i].name);
        assert_int_equal(attn_tensor_numel(&w), attn_tensor_numel(&ps[i].value));
        memcpy(ps[i].value.data, wb, (size_t)attn_tensor_numel(&w) * sizeof(float));
        attn_buffer_free(wb);
    }
    attn_tensor mk;
    if (attn_safetensors_find(in, "mask") >= 0) {
        assert_int_equal(attn_safetensors_get(f->ctx, in, "mask", &mk), ATTN_OK);
        a.mask = mk;
    }
    /* nn.MultiheadAttention's own masks (torch_* cases): key_padding_mask
     * has the library's meaning; attn_mask is boolean true = not allowed
     * (inverted here) or float [B*H,T,S] (seen as [B,H,T,S]) */
    uint8_t *keep = NULL;
    if (attn_safetensors_find(in, "key_padding_mask") >= 0)
        assert_int_equal(attn_safetensors_get(f->ctx, in, "key_padding_mask", &a.key_padding_mask),
                         ATTN_OK);
    if (attn_safetensors_find(in, "attn_mask") >= 0) {
        assert_int_equal(attn_safetensors_get(f->ctx, in, "attn_mask", &mk), ATTN_OK);
        if (mk.dtype == ATTN_BOOL) {
            int64_t n = attn_tensor_numel(&mk);
            keep = malloc((size_t)n);
            for (int64_t e = 0; e < n; e++)
                keep[e] = !((const uint8_t *)mk.data)[e];
            mk = attn_tensor_make(keep, ATTN_BOOL, mk.ndim, mk.shape);
        } else if (mk.ndim == 3) {
            mk = attn_tensor_make(mk.data, mk.dtype, 4,
                                  (int64_t[]){B, c.H, mk.shape[1], mk.shape[2]});
        }
        a.mask = mk;
    }
    attn_tensor kl;
    if (attn_safetensors_find(in, "kv_len") >= 0) {
        assert_int_equal(attn_safetensors_get(f->ctx, in, "kv_len", &kl), ATTN_OK);
        assert_int_equal(kl.dtype, ATTN_I32);
        a.kv_len = kl.data;
    }
    float *y = calloc((size_t)(B * T * E), 4), *w4 = calloc((size_t)(B * c.H * T * S), 4);
    float *w3 = calloc((size_t)(B * T * S), 4);
    int64_t shy[3] = {B, T, E}, sh4[4] = {B, c.H, T, S}, sh3[3] = {B, T, S};
    a.y = attn_tensor_make(y, ATTN_F32, 3, shy);
    int fails = 0;
    /* averaged first, so the forward the backward uses is the per-head one */
    a.attn_weights = attn_tensor_make(w3, ATTN_F32, 3, sh3);
    assert_int_equal(attn_mha_forward(f->ctx, m, &a), ATTN_OK);
    fails += compare(f, cs, "attn_weights_avg", w3, B * T * S);
    a.attn_weights = attn_tensor_make(w4, ATTN_F32, 4, sh4);
    assert_int_equal(attn_mha_forward(f->ctx, m, &a), ATTN_OK);
    fails += compare(f, cs, "y", y, B * T * E);
    fails += compare(f, cs, "attn_weights", w4, B * c.H * T * S);

    attn_mha_grads g;
    memset(&g, 0, sizeof g);
    assert_non_null(get_f32(f, in, "dy", &g.dy, &bufs[nb++]));
    float *dxq = calloc((size_t)(B * T * E), 4), *dxk = NULL, *dxv = NULL;
    g.dx_q = attn_tensor_make(dxq, ATTN_F32, 3, shy);
    if (!self) {
        dxk = calloc((size_t)attn_tensor_numel(&a.x_k), 4);
        g.dx_k = attn_tensor_make(dxk, ATTN_F32, 3, a.x_k.shape);
    }
    if (a.x_v.data) {
        dxv = calloc((size_t)attn_tensor_numel(&a.x_v), 4);
        g.dx_v = attn_tensor_make(dxv, ATTN_F32, 3, a.x_v.shape);
    }
    attn_status st = attn_mha_backward(f->ctx, m, &a, &g);
    if (st) print_error("%s: backward: %s\n", cs, attn_ctx_last_error(f->ctx));
    assert_int_equal(st, ATTN_OK);
    fails += compare(f, cs, self ? "dx" : "dx_q", dxq, B * T * E);
    if (kv) fails += compare(f, cs, "dx_kv", dxk, attn_tensor_numel(&a.x_k));
    if (dxv) fails += compare(f, cs, "dx_k", dxk, attn_tensor_numel(&a.x_k));
    if (dxv) fails += compare(f, cs, "dx_v", dxv, attn_tensor_numel(&a.x_v));
    for (int i = 0; i < np; i++) {
        char nm[128];
        snprintf(nm, sizeof nm, "grad.%s", ps[i].name);
        fails += compare(f, cs, nm, ps[i].grad.data, attn_tensor_numel(&ps[i].grad));
    }
    for (int i = 0; i < nb; i++)
        attn_buffer_free(bufs[i]);
    free(keep), free(y), free(w4), free(w3), free(dxq), free(dxk), free(dxv);
    attn_mha_free(m);
    return fails;
}

static void test_torch_parity(void **state) {
    (void)state;
    const char *data = getenv("ATTN_TEST_DATA");
    const char *cli = getenv("ATTN_MHA_CLI_OUT");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/mha", data ? data : "tests/data");
    fixture f = {0};
    assert_int_equal(attn_ctx_create(&f.ctx, 2), ATTN_OK);
    int fails = 0;
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        f.in = open_file(f.ctx, dir, CASES[i], "in");
        f.f64 = open_file(f.ctx, dir, CASES[i], "f64");
        f.t32 = open_file(f.ctx, dir, CASES[i], "torch32");
        if (!f.in || !f.f64 || !f.t32) fail_msg("cannot open the fixtures of %s", CASES[i]);
        fails += cli && *cli ? check_cli(&f, cli, CASES[i]) : check_lib(&f, CASES[i]);
        attn_safetensors_close(f.in), attn_safetensors_close(f.f64), attn_safetensors_close(f.t32);
    }
    attn_ctx_free(f.ctx);
    assert_int_equal(fails, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_torch_parity)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

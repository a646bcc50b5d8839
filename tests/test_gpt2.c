/* GPT-2 decoder against Hugging Face transformers (fixtures made by
 * scripts/make_gpt_fixtures.py: a GPT2LMHeadModel from a small random
 * config, saved as a directory twice, F32 without a prefix and F16 with the
 * "transformer." prefix):
 *   - logits of several prompts within 1e-4 max abs of transformers';
 *   - prefill + one-token steps through the KV cache equal the full forward;
 *   - greedy generation of 64 tokens identical to transformers' generate();
 *   - BF16 weights load to exactly the values of their F32 spelling;
 *   - the sampling rule (greedy ties, top-k, top-p, the distribution, the
 *     seed and thread-count independence);
 *   - hostile directories and arguments: clear statuses, nothing leaks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "attn_test.h"
#include "nn/nn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NPROMPTS 4
#define NEW 64

static char dir32[1024], dir16[1024], dirl[1024];

static void data_dirs(void) {
    const char *d = getenv("ATTN_TEST_DATA");
    if (!d) d = "tests/data";
    snprintf(dir32, sizeof dir32, "%s/gpt2-tiny", d);
    snprintf(dir16, sizeof dir16, "%s/gpt2-tiny-f16", d);
    snprintf(dirl, sizeof dirl, "%s/llama-tiny", d);
}

/* Expected tensor `name` of dir/expected.safetensors as a malloc'd copy. */
static void *expected(const char *dir, const char *name, int64_t *numel) {
    char path[1100];
    snprintf(path, sizeof path, "%s/expected.safetensors", dir);
    attn_safetensors *st;
    assert_int_equal(attn_safetensors_open(at_ctx, path, &st), ATTN_OK);
    attn_tensor t;
    assert_int_equal(attn_safetensors_get(at_ctx, st, name, &t), ATTN_OK);
    const int64_t n = attn_tensor_numel(&t);
    void *p = malloc((size_t)n * 4);
    assert_non_null(p);
    memcpy(p, t.data, (size_t)n * 4);
    attn_safetensors_close(st);
    *numel = n;
    return p;
}

static attn_gpt *load(const char *dir) {
    attn_gpt *m = NULL;
    attn_status st = attn_gpt_load(at_ctx, dir, &m);
    if (st) fprintf(stderr, "load %s: %s\n", dir, attn_ctx_last_error(at_ctx));
    assert_int_equal(st, ATTN_OK);
    return m;
}

static double max_abs_diff(const float *a, const float *b, int64_t n) {
    double w = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= w)) w = d; /* NaN propagates */
    }
    return w;
}

/* Full-forward logits of every prompt within 1e-4 of transformers'. */
static void check_logits(const char *dir) {
    attn_gpt *m = load(dir);
    const int64_t V = attn_gpt_get_config(m)->vocab_size;
    for (int i = 0; i < NPROMPTS; i++) {
        char name[32];
        int64_t T, n;
        snprintf(name, sizeof name, "ids_%d", i);
        int32_t *ids = expected(dir, name, &T);
        snprintf(name, sizeof name, "logits_%d", i);
        float *want = expected(dir, name, &n);
        assert_int_equal(n, T * V);
        attn_gpt_cache *c;
        assert_int_equal(attn_gpt_cache_create(at_ctx, m, 1, T, &c), ATTN_OK);
        float *got = malloc((size_t)n * sizeof *got);
        assert_non_null(got);
        assert_int_equal(attn_gpt_forward(at_ctx, m, c, T, ids, 0, got), ATTN_OK);
        const double d = max_abs_diff(got, want, n);
        if (at_verbose() || d > 1e-4)
            printf("%s prompt %d (T=%lld): max |attn - transformers| = %.3g\n", dir, i,
                   (long long)T, d);
        assert_true(d <= 1e-4);
        attn_gpt_cache_free(c);
        free(ids), free(want), free(got);
    }
    attn_gpt_free(m);
}

static void test_logits_f32(void **state) {
    (void)state;
    check_logits(dir32);
}

static void test_logits_f16_prefixed(void **state) {
    (void)state;
    check_logits(dir16);
}

/* Prefill of a prefix, then the rest one token at a time (and in a chunk of
 * several): each step's logits equal the full forward's row. */
static void check_greedy(const char *dir);

static void check_incremental(const char *dir32) {
    attn_gpt *m = load(dir32);
    const int64_t V = attn_gpt_get_config(m)->vocab_size;
    int64_t T, n;
    int32_t *ids = expected(dir32, "ids_3", &T);
    float *full = expected(dir32, "logits_3", &n);
    assert_true(T >= 12);
    float *own = malloc((size_t)(T * V) * sizeof(float)),
          *step = malloc((size_t)V * 8 * sizeof(float));
    assert_non_null(own);
    assert_non_null(step);
    attn_gpt_cache *c;
    assert_int_equal(attn_gpt_cache_create(at_ctx, m, 1, T, &c), ATTN_OK);
    assert_int_equal(attn_gpt_forward(at_ctx, m, c, T, ids, 0, own), ATTN_OK);
    const int64_t pre = 5;
    attn_gpt_cache_reset(c);
    assert_int_equal(attn_gpt_cache_len(c), 0);
    assert_int_equal(attn_gpt_forward(at_ctx, m, c, pre, ids, 1, step), ATTN_OK);
    double worst = max_abs_diff(step, own + (pre - 1) * V, V), worst_hf = 0.0;
    for (int64_t t = pre; t < T - 4; t++) {
        assert_int_equal(attn_gpt_forward(at_ctx, m, c, 1, ids + t, 1, step), ATTN_OK);
        assert_int_equal(attn_gpt_cache_len(c), t + 1);
        worst = fmax(worst, max_abs_diff(step, own + t * V, V));
        worst_hf = fmax(worst_hf, max_abs_diff(step, full + t * V, V));
    }
    /* a chunk of 4 with every row's logits */
    assert_int_equal(attn_gpt_forward(at_ctx, m, c, 4, ids + T - 4, 0, step), ATTN_OK);
    worst = fmax(worst, max_abs_diff(step, own + (T - 4) * V, 4 * V));
    if (at_verbose()) printf("incremental vs full: %.3g, vs transformers %.3g\n", worst, worst_hf);
    assert_true(worst <= 1e-5);
    assert_true(worst_hf <= 1e-4);
    /* the cache is full: one more is refused and nothing changes */
    assert_int_equal(attn_gpt_forward(at_ctx, m, c, 1, ids, 1, step), ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(at_ctx), "exceed"));
    assert_int_equal(attn_gpt_cache_len(c), T);
    attn_gpt_cache_free(c);
    free(ids), free(full), free(own), free(step);
    attn_gpt_free(m);
}

static void test_incremental(void **state) {
    (void)state;
    check_incremental(dir32);
}

/* Llama: GQA, RoPE with llama3 scaling (positions beyond its original 32),
 * RMSNorm, SwiGLU, untied head. */
static void test_llama(void **state) {
    (void)state;
    check_logits(dirl);
    check_incremental(dirl);
    check_greedy(dirl);
    attn_gpt *m = load(dirl);
    const attn_gpt_config *c = attn_gpt_get_config(m);
    assert_int_equal(c->arch, ATTN_GPT_ARCH_LLAMA);
    assert_int_equal(c->n_kv_head, 2);
    assert_int_equal(c->rope_scaling.type, ATTN_ROPE_SCALING_LLAMA3);
    assert_int_equal(c->tie_word_embeddings, 0);
    attn_gpt_free(m);
    attn_model *mm;
    assert_int_equal(attn_model_open(at_ctx, dirl, 0, &mm), ATTN_OK);
    assert_int_equal(attn_model_get_info(mm)->type, ATTN_MODEL_LLAMA);
    assert_string_equal(attn_model_get_info(mm)->type_name, "llama");
    assert_non_null(attn_model_get_bpe(mm));
    attn_model_free(mm);
}

/* Two sequences of one batch equal each run alone. */
static void test_batch(void **state) {
    (void)state;
    attn_gpt *m = load(dir32);
    const int64_t V = attn_gpt_get_config(m)->vocab_size;
    int64_t T, n;
    int32_t *ids = expected(dir32, "ids_3", &T);
    float *full = expected(dir32, "logits_3", &n);
    const int64_t S = 8;
    int32_t two[2 * 8];
    for (int64_t t = 0; t < S; t++)
        two[t] = ids[t], two[S + t] = ids[T - S + t];
    attn_gpt_cache *c;
    assert_int_equal(attn_gpt_cache_create(at_ctx, m, 2, S, &c), ATTN_OK);
    float *lg = malloc((size_t)(2 * V) * sizeof(float)), *one = malloc((size_t)V * sizeof(float));
    assert_int_equal(attn_gpt_forward(at_ctx, m, c, S, two, 1, lg), ATTN_OK);
    assert_true(max_abs_diff(lg, full + (S - 1) * V, V) <= 1e-4);
    attn_gpt_cache *c1;
    assert_int_equal(attn_gpt_cache_create(at_ctx, m, 1, S, &c1), ATTN_OK);
    assert_int_equal(attn_gpt_forward(at_ctx, m, c1, S, two + S, 1, one), ATTN_OK);
    assert_true(max_abs_diff(lg + V, one, V) <= 1e-5);
    attn_gpt_cache_free(c), attn_gpt_cache_free(c1);
    free(ids), free(full), free(lg), free(one);
    attn_gpt_free(m);
}

typedef struct seen {
    int32_t ids[NEW + 1];
    int n, stop_at;
} seen;

static int on_token(void *user, int32_t id) {
    seen *s = user;
    s->ids[s->n++] = id;
    return s->stop_at && s->n == s->stop_at;
}

static void check_greedy(const char *dir) {
    attn_gpt *m = load(dir);
    attn_gen_params p;
    attn_gen_params_default(m, &p);
    p.temperature = 0.0f, p.max_new_tokens = NEW, p.eos_id = -1;
    for (int i = 0; i < NPROMPTS; i++) {
        char name[32];
        int64_t T, n;
        snprintf(name, sizeof name, "ids_%d", i);
        int32_t *ids = expected(dir, name, &T);
        snprintf(name, sizeof name, "gen_%d", i);
        int32_t *want = expected(dir, name, &n);
        assert_int_equal(n, NEW);
        int32_t out[NEW];
        int64_t made = 0;
        seen s = {{0}, 0, 0};
        attn_gen_stats stats;
        assert_int_equal(attn_gpt_generate(at_ctx, m, ids, T, &p, on_token, &s, out, &made, &stats),
                         ATTN_OK);
        assert_int_equal(made, NEW);
        assert_int_equal(s.n, NEW);
        assert_int_equal(stats.new_tokens, NEW);
        assert_int_equal(stats.prompt_tokens, T);
        for (int k = 0; k < NEW; k++) {
            if (out[k] != want[k])
                printf("%s prompt %d: token %d is %d, transformers %d\n", dir, i, k, out[k],
                       want[k]);
            assert_int_equal(out[k], want[k]);
            assert_int_equal(s.ids[k], want[k]);
        }
        free(ids), free(want);
    }
    attn_gpt_free(m);
}

static void test_greedy_f32(void **state) {
    (void)state;
    check_greedy(dir32);
}

static void test_greedy_f16(void **state) {
    (void)state;
    check_greedy(dir16);
}

/* Stops: at EOS (emitted), when the callback asks, at max_new_tokens. */
static void test_stops(void **state) {
    (void)state;
    attn_gpt *m = load(dir32);
    int64_t T, n;
    int32_t *ids = expected(dir32, "ids_1", &T);
    int32_t *want = expected(dir32, "gen_1", &n);
    attn_gen_params p;
    attn_gen_params_default(m, &p);
    assert_int_equal(p.eos_id, attn_gpt_get_config(m)->eos_token_id);
    p.temperature = 0.0f, p.max_new_tokens = NEW;
    p.eos_id = want[9]; /* the 10th greedy token plays EOS (if it came earlier, there) */
    int k = 0;
    while (want[k] != p.eos_id)
        k++;
    int32_t out[NEW];
    int64_t made;
    assert_int_equal(attn_gpt_generate(at_ctx, m, ids, T, &p, NULL, NULL, out, &made, NULL),
                     ATTN_OK);
    assert_int_equal(made, k + 1);
    assert_int_equal(out[k], p.eos_id);
    p.eos_id = -1;
    seen s = {{0}, 0, 7};
    assert_int_equal(attn_gpt_generate(at_ctx, m, ids, T, &p, on_token, &s, out, &made, NULL),
                     ATTN_OK);
    assert_int_equal(made, 7);
    p.max_new_tokens = 3;
    assert_int_equal(attn_gpt_generate(at_ctx, m, ids, T, &p, NULL, NULL, out, &made, NULL),
                     ATTN_OK);
    assert_int_equal(made, 3);
    assert_memory_equal(out, want, 3 * sizeof *out);
    p.max_new_tokens = 0;
    assert_int_equal(attn_gpt_generate(at_ctx, m, ids, T, &p, NULL, NULL, out, &made, NULL),
                     ATTN_OK);
    assert_int_equal(made, 0);
    free(ids), free(want);
    attn_gpt_free(m);
}

/* The same seed gives the same tokens on 1 and 2 threads; another seed
 * other tokens (at temperature 1 on a near-uniform model, 64 equal draws by
 * chance are impossible in practice). */
static void test_seed_threads(void **state) {
    (void)state;
    attn_gpt *m = load(dir32);
    int64_t T;
    int32_t *ids = expected(dir32, "ids_2", &T);
    attn_gen_params p;
    attn_gen_params_default(m, &p);
    p.max_new_tokens = NEW, p.eos_id = -1, p.seed = 42, p.top_k = 50, p.top_p = 0.9f;
    int32_t a[NEW], b[NEW], c[NEW];
    int64_t na, nb, nc;
    attn_ctx *one;
    assert_int_equal(attn_ctx_create(&one, 1), ATTN_OK);
    assert_int_equal(attn_gpt_generate(one, m, ids, T, &p, NULL, NULL, a, &na, NULL), ATTN_OK);
    assert_int_equal(attn_gpt_generate(at_ctx, m, ids, T, &p, NULL, NULL, b, &nb, NULL), ATTN_OK);
    p.seed = 43;
    assert_int_equal(attn_gpt_generate(at_ctx, m, ids, T, &p, NULL, NULL, c, &nc, NULL), ATTN_OK);
    assert_int_equal(na, NEW);
    assert_int_equal(nb, NEW);
    assert_memory_equal(a, b, sizeof a);
    assert_memory_not_equal(a, c, sizeof a);
    attn_ctx_free(one);
    free(ids);
    attn_gpt_free(m);
}

/* The sampling rule on logits made here. */
static void test_sample(void **state) {
    (void)state;
    enum { V = 6 };
    const float base[V] = {1.0f, 3.0f, 3.0f, 0.5f, 2.0f, -1.0f};
    float lg[V];
    int32_t idx[V];
    uint64_t rng = 7;
    attn_gen_params p;
    attn_gen_params_default(NULL, &p);
    assert_int_equal(p.eos_id, -1);
    /* greedy: the first of two maxima; the stream does not move */
    p.temperature = 0.0f;
    memcpy(lg, base, sizeof lg);
    assert_int_equal(attn_gen_sample(lg, V, &p, &rng, idx), 1);
    assert_int_equal(rng, 7);
    /* top_k = 1 and a tiny top_p are greedy too (ties: the lower id) */
    p.temperature = 1.0f, p.top_k = 1;
    for (int r = 0; r < 20; r++) {
        memcpy(lg, base, sizeof lg);
        assert_int_equal(attn_gen_sample(lg, V, &p, &rng, idx), 1);
    }
    p.top_k = 0, p.top_p = 1e-6f;
    for (int r = 0; r < 20; r++) {
        memcpy(lg, base, sizeof lg);
        assert_int_equal(attn_gen_sample(lg, V, &p, &rng, idx), 1);
    }
    /* frequencies follow softmax(logits / temperature) after top-k / top-p */
    const struct {
        float t;
        int64_t k;
        float top_p;
    } cases[] = {
        {1.0f, 0, 1.0f}, {0.5f, 0, 1.0f}, {2.0f, 3, 1.0f}, {1.0f, 0, 0.8f}, {1.0f, 4, 0.95f}};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        p.temperature = cases[ci].t, p.top_k = cases[ci].k, p.top_p = cases[ci].top_p;
        /* expected: sort by (logit desc, id asc), keep k, then the nucleus */
        int order[V] = {1, 2, 4, 0, 3, 5};
        double w[V] = {0}, tot = 0.0;
        int keep = cases[ci].k ? (int)cases[ci].k : V;
        for (int i = 0; i < keep; i++)
            tot += exp(base[order[i]] / cases[ci].t);
        double cum = 0.0;
        int nk = 0;
        while (nk < keep && (nk == 0 || cum < cases[ci].top_p * tot))
            cum += exp(base[order[nk++]] / cases[ci].t);
        for (int i = 0; i < nk; i++)
            w[order[i]] = exp(base[order[i]] / cases[ci].t) / cum;
        enum { DRAWS = 40000 };
        int count[V] = {0};
        for (int r = 0; r < DRAWS; r++) {
            memcpy(lg, base, sizeof lg);
            int32_t id = attn_gen_sample(lg, V, &p, &rng, idx);
            assert_true(id >= 0 && id < V);
            count[id]++;
        }
        for (int i = 0; i < V; i++) {
            const double f = (double)count[i] / DRAWS, sd = sqrt(w[i] * (1 - w[i]) / DRAWS);
            if (at_verbose()) printf("case %zu id %d: %.4f want %.4f\n", ci, i, f, w[i]);
            if (w[i] == 0.0)
                assert_int_equal(count[i], 0);
            else
                assert_true(fabs(f - w[i]) <= 5 * sd + 1e-9);
        }
    }
    /* bad parameters */
    memcpy(lg, base, sizeof lg);
    p.temperature = -1.0f;
    assert_int_equal(attn_gen_sample(lg, V, &p, &rng, idx), -1);
    p.temperature = 1.0f, p.top_p = 0.0f;
    assert_int_equal(attn_gen_sample(lg, V, &p, &rng, idx), -1);
    p.top_p = 1.5f;
    assert_int_equal(attn_gen_sample(lg, V, &p, &rng, idx), -1);
    p.top_p = 1.0f, p.top_k = -1;
    assert_int_equal(attn_gen_sample(lg, V, &p, &rng, idx), -1);
}

/* ---- hostile directories ------------------------------------------------- */

static char tmpdir[256];

static void copy_file(const char *from, const char *to) {
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    assert_non_null(a);
    assert_non_null(b);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, a)) > 0)
        assert_int_equal(fwrite(buf, 1, n, b), n);
    fclose(a), fclose(b);
}

/* tmpdir/config.json: the fixture's (src_dir's) with `from` replaced by `to`. */
static const char *src_dir = dir32;
static void edit_config(const char *from, const char *to) {
    char path[1200];
    snprintf(path, sizeof path, "%s/config.json", src_dir);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char text[8192];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    char *at = strstr(text, from);
    assert_non_null(at);
    snprintf(path, sizeof path, "%s/config.json", tmpdir);
    f = fopen(path, "wb");
    fwrite(text, 1, (size_t)(at - text), f);
    fputs(to, f);
    fputs(at + strlen(from), f);
    fclose(f);
}

/* tmpdir/model.safetensors: the fixture's tensors, with `drop` left out,
 * every float tensor in dtype dt (BF16: rounded to nearest even; the F32
 * spelling of those values goes to f32_twin when not NULL), and `bad`
 * stored as I32. */
static void rewrite_weights(const char *drop, const char *bad, attn_dtype dt,
                            const char *f32_twin) {
    char path[1200];
    snprintf(path, sizeof path, "%s/model.safetensors", dir32);
    attn_safetensors *st;
    assert_int_equal(attn_safetensors_open(at_ctx, path, &st), ATTN_OK);
    const int n = attn_safetensors_count(st);
    const char **names = calloc((size_t)n, sizeof *names);
    attn_tensor *ts = calloc((size_t)n, sizeof *ts), *tw = calloc((size_t)n, sizeof *tw);
    void **mem = calloc((size_t)n, sizeof *mem), **mem2 = calloc((size_t)n, sizeof *mem2);
    int k = 0;
    for (int i = 0; i < n; i++) {
        const char *name = attn_safetensors_name(st, i);
        if (drop && !strcmp(name, drop)) continue;
        attn_tensor t;
        assert_int_equal(attn_safetensors_get(at_ctx, st, name, &t), ATTN_OK);
        const int64_t ne = attn_tensor_numel(&t);
        const float *src = t.data;
        names[k] = name;
        ts[k] = t, tw[k] = t;
        if (bad && !strcmp(name, bad)) {
            ts[k].dtype = ATTN_I32; /* same bytes, an integer dtype */
        } else if (dt == ATTN_BF16) {
            uint16_t *h = malloc((size_t)ne * 2);
            float *twin = malloc((size_t)ne * 4);
            for (int64_t e = 0; e < ne; e++) {
                uint32_t u;
                memcpy(&u, &src[e], 4);
                u += 0x7fff + ((u >> 16) & 1);
                h[e] = (uint16_t)(u >> 16);
                u = (uint32_t)h[e] << 16;
                memcpy(&twin[e], &u, 4);
            }
            ts[k].data = mem[k] = h, ts[k].dtype = ATTN_BF16;
            tw[k].data = mem2[k] = twin;
        }
        k++;
    }
    snprintf(path, sizeof path, "%s/model.safetensors", tmpdir);
    assert_int_equal(attn_safetensors_write(at_ctx, path, k, names, ts), ATTN_OK);
    if (f32_twin) assert_int_equal(attn_safetensors_write(at_ctx, f32_twin, k, names, tw), ATTN_OK);
    for (int i = 0; i < n; i++)
        free(mem[i]), free(mem2[i]);
    free(mem), free(mem2), free(names), free(ts), free(tw);
    attn_safetensors_close(st);
}

static void expect_fail(attn_status want, const char *needle) {
    attn_gpt *m = (attn_gpt *)1;
    attn_status st = attn_gpt_load(at_ctx, tmpdir, &m);
    const char *msg = attn_ctx_last_error(at_ctx);
    if (at_verbose() || st != want || !strstr(msg, needle))
        printf("load: %s (%s)\n", attn_status_str(st), msg);
    assert_int_equal(st, want);
    assert_null(m);
    assert_non_null(strstr(msg, needle));
    /* attn_model_open says the same */
    attn_model *mm = (attn_model *)1;
    assert_int_equal(attn_model_open(at_ctx, tmpdir, 0, &mm), want);
    assert_null(mm);
}

static void test_bf16(void **state) {
    (void)state;
    char src[1200], twin_dir[300], twin[400];
    snprintf(src, sizeof src, "%s/config.json", dir32);
    snprintf(twin_dir, sizeof twin_dir, "%s/twin", tmpdir);
    mkdir(twin_dir, 0700);
    char p[400];
    snprintf(p, sizeof p, "%s/config.json", tmpdir);
    copy_file(src, p);
    snprintf(p, sizeof p, "%s/config.json", twin_dir);
    copy_file(src, p);
    snprintf(twin, sizeof twin, "%s/model.safetensors", twin_dir);
    rewrite_weights(NULL, NULL, ATTN_BF16, twin);
    attn_gpt *a = load(tmpdir), *b = load(twin_dir);
    const int64_t V = attn_gpt_get_config(a)->vocab_size;
    const int32_t ids[5] = {3, 100, 7, 250, 9};
    float *la = malloc((size_t)(5 * V) * 4), *lb = malloc((size_t)(5 * V) * 4);
    attn_gpt_cache *ca, *cb;
    assert_int_equal(attn_gpt_cache_create(at_ctx, a, 1, 5, &ca), ATTN_OK);
    assert_int_equal(attn_gpt_cache_create(at_ctx, b, 1, 5, &cb), ATTN_OK);
    assert_int_equal(attn_gpt_forward(at_ctx, a, ca, 5, ids, 0, la), ATTN_OK);
    assert_int_equal(attn_gpt_forward(at_ctx, b, cb, 5, ids, 0, lb), ATTN_OK);
    assert_memory_equal(la, lb, (size_t)(5 * V) * 4);
    attn_gpt_cache_free(ca), attn_gpt_cache_free(cb);
    free(la), free(lb);
    attn_gpt_free(a), attn_gpt_free(b);
    remove(twin);
    snprintf(p, sizeof p, "%s/config.json", twin_dir);
    remove(p);
    rmdir(twin_dir);
}

static void test_hostile_dirs(void **state) {
    (void)state;
    char src[1200], p[400];
    snprintf(src, sizeof src, "%s/model.safetensors", dir32);
    snprintf(p, sizeof p, "%s/model.safetensors", tmpdir);
    copy_file(src, p);
    /* the config disagrees with the weights */
    edit_config("\"n_embd\": 64", "\"n_embd\": 32");
    expect_fail(ATTN_E_SHAPE, "but config.json implies");
    edit_config("\"n_layer\": 2", "\"n_layer\": 1");
    expect_fail(ATTN_E_SHAPE, "n_layer = 1");
    edit_config("\"n_layer\": 2", "\"n_layer\": 3");
    expect_fail(ATTN_E_NOTFOUND, "h.2.ln_1.weight");
    edit_config("\"vocab_size\": 512", "\"vocab_size\": 600");
    expect_fail(ATTN_E_SHAPE, "wte.weight");
    edit_config("\"n_head\": 4", "\"n_head\": 5");
    expect_fail(ATTN_E_SHAPE, "n_head");
    edit_config("\"gelu_new\"", "\"relu\"");
    expect_fail(ATTN_E_UNSUPPORTED, "relu");
    edit_config("\"model_type\": \"gpt2\"", "\"model_type\": \"gptj\"");
    expect_fail(ATTN_E_UNSUPPORTED, "gptj");
    edit_config("\"n_positions\": 128", "\"n_positions\": \"128\"");
    expect_fail(ATTN_E_FORMAT, "n_positions");
    edit_config("\"n_positions\": 128,", "");
    expect_fail(ATTN_E_NOTFOUND, "n_positions");
    edit_config("\"n_positions\": 128", "\"n_positions\": 128,,");
    expect_fail(ATTN_E_FORMAT, "invalid JSON");
    /* the weights lack a tensor, or hold an integer one */
    edit_config("\"n_head\": 4", "\"n_head\": 4");
    rewrite_weights("h.1.mlp.c_fc.bias", NULL, ATTN_F32, NULL);
    expect_fail(ATTN_E_NOTFOUND, "h.1.mlp.c_fc.bias");
    rewrite_weights(NULL, "h.0.attn.c_attn.weight", ATTN_F32, NULL);
    expect_fail(ATTN_E_DTYPE, "h.0.attn.c_attn.weight");
    remove(p);
    expect_fail(ATTN_E_IO, "model.safetensors");
    snprintf(p, sizeof p, "%s/config.json", tmpdir);
    remove(p);
    expect_fail(ATTN_E_NOTFOUND, "config.json");
}

/* Llama directories whose config disagrees with the weights or asks for
 * what is not supported. */
static void test_llama_hostile(void **state) {
    (void)state;
    char src[1200], p[400];
    snprintf(src, sizeof src, "%s/model.safetensors", dirl);
    snprintf(p, sizeof p, "%s/model.safetensors", tmpdir);
    copy_file(src, p);
    src_dir = dirl;
    edit_config("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 4");
    expect_fail(ATTN_E_SHAPE, "k_proj.weight");
    edit_config("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3");
    expect_fail(ATTN_E_SHAPE, "num_key_value_heads 3");
    edit_config("\"rope_type\": \"llama3\"", "\"rope_type\": \"yarn\"");
    expect_fail(ATTN_E_UNSUPPORTED, "yarn");
    edit_config("\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\"");
    expect_fail(ATTN_E_UNSUPPORTED, "hidden_act");
    edit_config("\"tie_word_embeddings\": false", "\"tie_word_embeddings\": 0");
    expect_fail(ATTN_E_FORMAT, "tie_word_embeddings");
    edit_config("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 1");
    expect_fail(ATTN_E_SHAPE, "num_hidden_layers = 1");
    edit_config("\"head_dim\": 16", "\"head_dim\": 8");
    expect_fail(ATTN_E_UNSUPPORTED, "head_dim");
    src_dir = dir32;
    remove(p);
    snprintf(p, sizeof p, "%s/config.json", tmpdir);
    remove(p);
}

/* Batched generation: the fixture's prompts (lengths 1 to 24) together,
 * greedy tokens identical to transformers' for each; with an EOS each stops
 * on its own at its first EOS; sampled, each equals its prompt alone. */
static void check_batch(const char *dir) {
    attn_gpt *m = load(dir);
    int32_t *pr[NPROMPTS], *want[NPROMPTS], buf[NPROMPTS][NEW], buf2[NPROMPTS][NEW];
    int32_t *out[NPROMPTS], *out2[NPROMPTS];
    int64_t lens[NPROMPTS], made[NPROMPTS], n;
    for (int i = 0; i < NPROMPTS; i++) {
        char name[32];
        snprintf(name, sizeof name, "ids_%d", i);
        pr[i] = expected(dir, name, &lens[i]);
        snprintf(name, sizeof name, "gen_%d", i);
        want[i] = expected(dir, name, &n);
        out[i] = buf[i], out2[i] = buf2[i];
    }
    attn_gen_params p;
    attn_gen_params_default(m, &p);
    p.temperature = 0.0f, p.max_new_tokens = NEW, p.eos_id = -1;
    assert_int_equal(attn_gpt_generate_batch(at_ctx, m, NPROMPTS, (const int32_t *const *)pr, lens,
                                             &p, out, made),
                     ATTN_OK);
    for (int i = 0; i < NPROMPTS; i++) {
        assert_int_equal(made[i], NEW);
        assert_memory_equal(buf[i], want[i], NEW * sizeof(int32_t));
    }
    /* each stops at its first EOS (a token of prompt 1's greedy run) */
    p.eos_id = want[1][5];
    assert_int_equal(attn_gpt_generate_batch(at_ctx, m, NPROMPTS, (const int32_t *const *)pr, lens,
                                             &p, out, made),
                     ATTN_OK);
    for (int i = 0; i < NPROMPTS; i++) {
        int k = 0;
        while (k < NEW && want[i][k] != p.eos_id)
            k++;
        assert_int_equal(made[i], k < NEW ? k + 1 : NEW);
        assert_memory_equal(buf[i], want[i], (size_t)made[i] * sizeof(int32_t));
    }
    /* sampled: each sequence's stream is its own */
    p.eos_id = -1, p.temperature = 1.0f, p.top_k = 20, p.seed = 9, p.max_new_tokens = 24;
    assert_int_equal(attn_gpt_generate_batch(at_ctx, m, NPROMPTS, (const int32_t *const *)pr, lens,
                                             &p, out, made),
                     ATTN_OK);
    for (int i = 0; i < NPROMPTS; i++) {
        int64_t one;
        assert_int_equal(
            attn_gpt_generate(at_ctx, m, pr[i], lens[i], &p, NULL, NULL, out2[i], &one, NULL),
            ATTN_OK);
        assert_int_equal(made[i], 24);
        assert_int_equal(one, 24);
        assert_memory_equal(buf[i], buf2[i], 24 * sizeof(int32_t));
    }
    /* bad input names the prompt */
    lens[2] = attn_gpt_get_config(m)->n_positions;
    assert_int_equal(attn_gpt_generate_batch(at_ctx, m, NPROMPTS, (const int32_t *const *)pr, lens,
                                             &p, out, made),
                     ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(at_ctx), "prompt 2"));
    for (int i = 0; i < NPROMPTS; i++)
        free(pr[i]), free(want[i]);
    attn_gpt_free(m);
}

static void test_batch_generate(void **state) {
    (void)state;
    check_batch(dir32);
    check_batch(dirl);
}

/* Bad arguments of the forward and of generation. */
static void test_bad_args(void **state) {
    (void)state;
    attn_gpt *m = load(dir32);
    const attn_gpt_config *cf = attn_gpt_get_config(m);
    attn_gpt_cache *c = (attn_gpt_cache *)1;
    assert_int_equal(attn_gpt_cache_create(at_ctx, m, 1, cf->n_positions + 1, &c), ATTN_E_ARG);
    assert_null(c);
    assert_int_equal(attn_gpt_cache_create(at_ctx, m, 0, 4, &c), ATTN_E_ARG);
    assert_int_equal(attn_gpt_cache_create(at_ctx, m, 1, 4, &c), ATTN_OK);
    float *lg = malloc((size_t)(4 * cf->vocab_size) * 4);
    int32_t ids[4] = {1, 2, (int32_t)cf->vocab_size, 3};
    assert_int_equal(attn_gpt_forward(at_ctx, m, c, 4, ids, 0, lg), ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(at_ctx), "vocab_size"));
    assert_int_equal(attn_gpt_cache_len(c), 0);
    assert_int_equal(attn_gpt_forward(at_ctx, m, c, 0, ids, 0, lg), ATTN_E_ARG);
    assert_int_equal(attn_gpt_forward(at_ctx, m, c, 5, ids, 0, lg), ATTN_E_ARG);
    ids[2] = -1;
    assert_int_equal(attn_gpt_forward(at_ctx, m, c, 4, ids, 0, lg), ATTN_E_ARG);
    attn_gpt_cache_free(c);

    attn_gen_params p;
    attn_gen_params_default(m, &p);
    int32_t prompt[200] = {0};
    int64_t made = 99;
    p.temperature = -0.5f;
    assert_int_equal(attn_gpt_generate(at_ctx, m, prompt, 3, &p, NULL, NULL, NULL, &made, NULL),
                     ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(at_ctx), "temperature"));
    assert_int_equal(made, 0);
    p.temperature = 1.0f, p.top_p = 0.0f;
    assert_int_equal(attn_gpt_generate(at_ctx, m, prompt, 3, &p, NULL, NULL, NULL, NULL, NULL),
                     ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(at_ctx), "top_p"));
    p.top_p = 1.0f;
    assert_int_equal(
        attn_gpt_generate(at_ctx, m, prompt, cf->n_positions + 1, &p, NULL, NULL, NULL, NULL, NULL),
        ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(at_ctx), "n_positions"));
    p.max_new_tokens = cf->n_positions - 10 + 2; /* one beyond the table */
    assert_int_equal(attn_gpt_generate(at_ctx, m, prompt, 10, &p, NULL, NULL, NULL, NULL, NULL),
                     ATTN_E_ARG);
    assert_non_null(strstr(attn_ctx_last_error(at_ctx), "position table"));
    p.max_new_tokens = cf->n_positions - 10 + 1; /* exactly fills it */
    p.eos_id = -1;
    assert_int_equal(attn_gpt_generate(at_ctx, m, prompt, 10, &p, NULL, NULL, NULL, &made, NULL),
                     ATTN_OK);
    assert_int_equal(made, p.max_new_tokens);
    assert_int_equal(attn_gpt_generate(at_ctx, m, prompt, 0, &p, NULL, NULL, NULL, NULL, NULL),
                     ATTN_E_ARG);
    free(lg);
    attn_gpt_free(m);
}

static void test_model_open(void **state) {
    (void)state;
    attn_model *m;
    assert_int_equal(attn_model_open(at_ctx, dir16, 0, &m), ATTN_OK);
    const attn_model_info *in = attn_model_get_info(m);
    assert_int_equal(in->type, ATTN_MODEL_GPT2);
    assert_string_equal(in->type_name, "gpt2");
    assert_int_equal(in->num_layers, 2);
    assert_int_equal(in->hidden_size, 64);
    assert_non_null(attn_model_get_gpt(m));
    assert_null(attn_model_get_bert(m));
    const attn_bpe *t = attn_model_get_bpe(m);
    assert_non_null(t);
    assert_int_equal(attn_bpe_vocab_size(t), 512);
    assert_int_equal(attn_bpe_eos_id(t), attn_gpt_get_config(attn_model_get_gpt(m))->eos_token_id);
    attn_model_free(m);
}

/* The one-row product of a decoder step (attn__sgemm at M = 1, the nn
 * kernel table's gemv) under the rule of every check: within 2x the error of
 * a plain fp32 sum (+1e-6) of the float64 product, odd sizes and tails,
 * with and without accumulation (beta 1: a Linear layer's bias), and the
 * same on 1 and 2 threads. */
static void test_gemv(void **state) {
    (void)state;
    const int64_t shapes[][2] = {{1, 1}, {3, 5}, {4, 16}, {7, 31}, {67, 773}, {130, 33}, {513, 64}};
    attn_ctx *one;
    assert_int_equal(attn_ctx_create(&one, 1), ATTN_OK);
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int64_t N = shapes[si][0], K = shapes[si][1], ldw = K + 3;
        at_rng r = at_rng_for(1200 + si);
        float *W = malloc((size_t)(N * ldw) * 4), *x = malloc((size_t)K * 4);
        float *y = malloc((size_t)N * 4), *y1 = malloc((size_t)N * 4), *f32 = malloc((size_t)N * 4);
        double *ref = malloc((size_t)N * 8);
        for (int64_t i = 0; i < N * ldw; i++)
            W[i] = at_rng_uniform(&r, -1, 1);
        for (int64_t k = 0; k < K; k++)
            x[k] = at_rng_uniform(&r, -1, 1);
        for (int acc = 0; acc < 2; acc++) {
            for (int64_t j = 0; j < N; j++) {
                const float b = acc ? at_rng_uniform(&r, -1, 1) : 0.0f;
                double d = b;
                float f = 0.0f;
                for (int64_t k = 0; k < K; k++)
                    d += (double)W[j * ldw + k] * x[k], f += W[j * ldw + k] * x[k];
                ref[j] = d, f32[j] = f + b;
                y[j] = y1[j] = acc ? b : NAN; /* without acc y must not be read */
            }
            attn__sgemm(at_ctx, 0, 1, 1, N, K, 1.0f, x, K, W, ldw, acc ? 1.0f : 0.0f, y, N);
            attn__sgemm(one, 0, 1, 1, N, K, 1.0f, x, K, W, ldw, acc ? 1.0f : 0.0f, y1, N);
            assert_true(at_check_f64("gemv", y, ref, f32, N, r.seed));
            assert_memory_equal(y, y1, (size_t)N * 4);
        }
        free(W), free(x), free(y), free(y1), free(f32), free(ref);
    }
    attn_ctx_free(one);
}

/* A few rows times a transposed weight matrix (a short prompt, a batched
 * decode step: attn__sgemm splits W's rows over the threads, one
 * single-threaded oneDNN call each): the 2x plain-fp32 rule against float64,
 * odd sizes, with and without accumulation, and the same bits on 1 and 2
 * threads. */
static void test_small_m(void **state) {
    (void)state;
    const int64_t shapes[][3] = {{2, 512, 64}, {5, 700, 33}, {32, 2304, 768}, {64, 1031, 97}};
    attn_ctx *one, *two;
    assert_int_equal(attn_ctx_create(&one, 1), ATTN_OK);
    assert_int_equal(attn_ctx_create(&two, 2), ATTN_OK);
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int64_t M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
        const int64_t lda = K + 1, ldw = K + 3, ldc = N + 2;
        at_rng r = at_rng_for(1300 + si);
        float *W = malloc((size_t)(N * ldw) * 4), *A = malloc((size_t)(M * lda) * 4);
        float *y = malloc((size_t)(M * ldc) * 4), *y1 = malloc((size_t)(M * ldc) * 4);
        float *f32 = malloc((size_t)(M * N) * 4), *got = malloc((size_t)(M * N) * 4);
        double *ref = malloc((size_t)(M * N) * 8);
        for (int64_t i = 0; i < N * ldw; i++)
            W[i] = at_rng_uniform(&r, -1, 1);
        for (int64_t i = 0; i < M * lda; i++)
            A[i] = at_rng_uniform(&r, -1, 1);
        for (int acc = 0; acc < 2; acc++) {
            for (int64_t i = 0; i < M; i++)
                for (int64_t j = 0; j < N; j++) {
                    const float b = acc ? at_rng_uniform(&r, -1, 1) : 0.0f;
                    double d = b;
                    float f = 0.0f;
                    for (int64_t k = 0; k < K; k++)
                        d += (double)W[j * ldw + k] * A[i * lda + k], f += W[j * ldw + k] * A[i * lda + k];
                    ref[i * N + j] = d, f32[i * N + j] = f + b;
                    y[i * ldc + j] = y1[i * ldc + j] = acc ? b : 0.0f;
                }
            attn__sgemm(two, 0, 1, M, N, K, 1.0f, A, lda, W, ldw, acc ? 1.0f : 0.0f, y, ldc);
            attn__sgemm(one, 0, 1, M, N, K, 1.0f, A, lda, W, ldw, acc ? 1.0f : 0.0f, y1, ldc);
            for (int64_t i = 0; i < M; i++) {
                memcpy(got + i * N, y + i * ldc, (size_t)N * 4);
                assert_memory_equal(y + i * ldc, y1 + i * ldc, (size_t)N * 4);
            }
            assert_true(at_check_f64("small-M gemm", got, ref, f32, M * N, r.seed));
        }
        free(W), free(A), free(y), free(y1), free(f32), free(got), free(ref);
    }
    attn_ctx_free(one);
    attn_ctx_free(two);
}

static int setup(void **state) {
    data_dirs();
    snprintf(tmpdir, sizeof tmpdir, "/tmp/attn_gpt2_XXXXXX");
    if (!mkdtemp(tmpdir)) return -1;
    return at_ctx_setup(state);
}

static int teardown(void **state) {
    rmdir(tmpdir);
    return at_ctx_teardown(state);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logits_f32),     cmocka_unit_test(test_logits_f16_prefixed),
        cmocka_unit_test(test_incremental),    cmocka_unit_test(test_batch),
        cmocka_unit_test(test_greedy_f32),     cmocka_unit_test(test_greedy_f16),
        cmocka_unit_test(test_stops),          cmocka_unit_test(test_seed_threads),
        cmocka_unit_test(test_small_m),
        cmocka_unit_test(test_sample),         cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_hostile_dirs),   cmocka_unit_test(test_bad_args),
        cmocka_unit_test(test_model_open),     cmocka_unit_test(test_gemv),
        cmocka_unit_test(test_llama),          cmocka_unit_test(test_llama_hostile),
        cmocka_unit_test(test_batch_generate),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

/* libFuzzer target for the model-directory loader: every file a user's
 * model directory hands it (config.json, modules.json,
 * sentence_bert_config.json, 1_Pooling/config.json, tokenizer_config.json,
 * vocab.txt, model.safetensors) comes from the input, cut at the two bytes
 * "\x01\x02" in that order (an empty part, or fewer parts: that file is
 * absent).
 * Any content must give ATTN_OK or an error status with a message (never a
 * crash, leak or undefined behaviour); a model that opens must be
 * self-consistent and embed a text.
 * Build as fuzz_safetensors.c says, then:
 *   cmake --build build-fuzz --target fuzz_model_dir
 *   build-fuzz/tests/fuzz_model_dir -max_total_time=600 corpus
 * (seeds: tests/fuzz/corpus/model_dir, made by tests/fuzz/make_model_dir_seeds.py).
 * The files go to a directory of its own (under TMPDIR, else /tmp), made
 * once per process. tests/test_fuzz_replay.c includes this file to replay
 * the committed corpus in ctest. */
#include <attn/attn.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz_check.h"

#define FUZZ_MODEL_NFILES 7
static const char *const fuzz_model_files[FUZZ_MODEL_NFILES] = {
    "config.json",           "modules.json", "sentence_bert_config.json", "1_Pooling/config.json",
    "tokenizer_config.json", "vocab.txt",    "model.safetensors"};

static char fuzz_model_root[512];

/* Remove the directory (at exit). */
static void fuzz_model_cleanup(void) {
    if (!fuzz_model_root[0]) return;
    char p[600];
    for (int i = 0; i < FUZZ_MODEL_NFILES; i++) {
        snprintf(p, sizeof p, "%s/%s", fuzz_model_root, fuzz_model_files[i]);
        unlink(p);
    }
    snprintf(p, sizeof p, "%s/1_Pooling", fuzz_model_root);
    rmdir(p);
    rmdir(fuzz_model_root);
    fuzz_model_root[0] = 0;
}

/* The directory, made once; NULL when it cannot be made. */
static const char *fuzz_model_dir(void) {
    if (!fuzz_model_root[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(fuzz_model_root, sizeof fuzz_model_root, "%s/attn_fuzz_model.XXXXXX",
                 t && *t ? t : "/tmp");
        if (!mkdtemp(fuzz_model_root)) {
            fuzz_model_root[0] = 0;
            return NULL;
        }
        char sub[600];
        snprintf(sub, sizeof sub, "%s/1_Pooling", fuzz_model_root);
        FUZZ_CHECK(mkdir(sub, 0700) == 0);
        atexit(fuzz_model_cleanup);
    }
    return fuzz_model_root;
}

static int fuzz_status_ok(attn_status s) {
    return s == ATTN_OK || s == ATTN_E_FORMAT || s == ATTN_E_NOTFOUND || s == ATTN_E_SHAPE ||
           s == ATTN_E_UNSUPPORTED || s == ATTN_E_DTYPE || s == ATTN_E_IO || s == ATTN_E_ARG ||
           s == ATTN_E_NOMEM;
}

/* Write the parts of buf as the directory's files, open it three ways
 * (configuration only, tokenizer only, the whole model) and return the
 * whole model's status. */
static attn_status fuzz_model_one(const uint8_t *buf, size_t len) {
    const char *dir = fuzz_model_dir();
    if (!dir) return ATTN_E_IO;
    size_t at = 0;
    for (int f = 0; f < FUZZ_MODEL_NFILES; f++) {
        char p[600];
        snprintf(p, sizeof p, "%s/%s", dir, fuzz_model_files[f]);
        if (at > len) { /* fewer parts than files: this one is absent */
            unlink(p);
            continue;
        }
        size_t end = at;
        while (end + 1 < len && !(buf[end] == 1 && buf[end + 1] == 2))
            end++;
        if (end + 1 >= len) end = len;
        if (end == at) { /* an empty part: the file is absent */
            unlink(p);
            at = end + 2;
            continue;
        }
        FILE *fp = fopen(p, "wb");
        FUZZ_CHECK(fp);
        FUZZ_CHECK(fwrite(buf + at, 1, end - at, fp) == end - at);
        FUZZ_CHECK(fclose(fp) == 0);
        at = end + 2;
    }
    attn_ctx *ctx = NULL;
    if (attn_ctx_create(&ctx, 1)) return ATTN_E_NOMEM;

    attn_bert_config cfg;
    attn_status s = attn_bert_config_load(ctx, dir, &cfg);
    FUZZ_CHECK(fuzz_status_ok(s));
    FUZZ_CHECK(s == ATTN_OK || attn_ctx_last_error(ctx)[0]);
    if (s == ATTN_OK)
        FUZZ_CHECK(cfg.hidden_size > 0 && cfg.num_heads > 0 && cfg.num_layers > 0 &&
                   cfg.hidden_size % cfg.num_heads == 0 && cfg.max_seq_length >= 1 &&
                   cfg.max_seq_length <= cfg.max_position);

    attn_tokenizer *tok = NULL;
    s = attn_tokenizer_load_dir(ctx, dir, &tok);
    FUZZ_CHECK(fuzz_status_ok(s) && (s == ATTN_OK) == (tok != NULL));
    FUZZ_CHECK(s == ATTN_OK || attn_ctx_last_error(ctx)[0]);
    if (tok) {
        int n = 0;
        s = attn_tokenizer_encode(ctx, tok, "hello world", 11, 0, NULL, 0, &n);
        FUZZ_CHECK(s == ATTN_OK && n >= 2);
    }
    attn_tokenizer_free(tok);

    attn_model *m = NULL;
    s = attn_model_open(ctx, dir, 0, &m);
    FUZZ_CHECK(fuzz_status_ok(s) && (s == ATTN_OK) == (m != NULL));
    FUZZ_CHECK(s == ATTN_OK || attn_ctx_last_error(ctx)[0]);
    if (m) {
        const attn_model_info *in = attn_model_get_info(m);
        const attn_bert *b = attn_model_get_bert(m);
        FUZZ_CHECK(in && b && in->vocab_size == attn_bert_get_config(b)->vocab_size);
        int32_t ids[4];
        int n = 0;
        attn_status e = attn_tokenizer_encode(ctx, attn_model_get_tokenizer(m), "hi", 2,
                                              (int)in->max_seq_length, ids, 4, &n);
        if (e == ATTN_OK && n >= 1 && n <= 4 && in->hidden_size <= 4096) {
            float *out = malloc((size_t)in->hidden_size * sizeof *out);
            FUZZ_CHECK(out);
            const int32_t *idp[1] = {ids};
            int64_t ln[1] = {n};
            e = attn_bert_embed(ctx, b, 1, idp, ln, out);
            FUZZ_CHECK(e == ATTN_OK || e == ATTN_E_NOMEM || e == ATTN_E_ARG);
            free(out);
        }
    }
    attn_model_free(m);
    attn_ctx_free(ctx);
    return s;
}

#ifndef FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > (1u << 16)) return 0; /* the loader's cost grows with the files, not new paths */
    (void)fuzz_model_one(data, size);
    return 0;
}
#endif

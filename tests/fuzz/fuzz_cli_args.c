/* libFuzzer target for the attn tool's one option parser (tools/attn/
 * cli_args.c, compiled into this file): the input is argv, its strings cut
 * at NUL bytes. For option tables with every kind of option (the common
 * declarations and the shapes of sdpa's, train's and embed's), any argv must
 * give -1 (go on), 0 (help) or 2 (bad usage) and never a crash or undefined
 * behaviour; a parse that goes on leaves every value inside its declared
 * range and every positional pointing into argv; and "--opt=value" must
 * parse exactly as "--opt value" (the one-parser rule), whether it is
 * accepted or refused.
 * Build as fuzz_safetensors.c says, then:
 *   cmake --build build-fuzz --target fuzz_cli_args
 *   build-fuzz/tests/fuzz_cli_args -max_total_time=600 -close_fd_mask=2 corpus
 * (seeds: tests/fuzz/corpus/cli_args). tests/test_fuzz_replay.c includes
 * this file to replay the committed corpus in ctest. */
#include "../../tools/attn/cli_args.c"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"

/* The tool's error printer, silenced: the target checks statuses only. */
int attn_cli_error(int code, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap); /* formats every message: UBSan sees them */
    va_end(ap);
    return code;
}

static void fuzz_usage(FILE *f) {
    (void)f;
}

typedef struct fuzz_vals {
    int flag1, flag2, threads, heads, layers, topk;
    float scale, dropout, lr;
    uint64_t seed;
    const char *model, *format;
    attn_align align;
    cli_window window;
} fuzz_vals;

/* Parse argv with one of two tables (positionals anywhere, or a rest of
 * texts); returns the parser's result and fills v. */
static int fuzz_parse(int table, int argc, char **argv, fuzz_vals *v, const char **pos, int *npos) {
    memset(v, 0, sizeof *v);
    const cli_opt opts[] = {
        {"--causal", CLI_FLAG, &v->flag1, 0, 0, 0, NULL},
        {"--backward", CLI_FLAG, &v->flag2, 0, 0, 0, NULL},
        CLI_OPT_THREADS(&v->threads),
        CLI_OPT_SEED(&v->seed),
        CLI_OPT_DROPOUT(&v->dropout),
        CLI_OPT_ALIGN(&v->align),
        CLI_OPT_WINDOW(&v->window),
        {"--scale", CLI_FLOAT, &v->scale, -CLI_INF, CLI_INF, 0, NULL},
        {"--lr", CLI_FLOAT, &v->lr, 0, CLI_INF, CLI_LO_OPEN, NULL},
        {"--heads", CLI_INT, &v->heads, 1, 1e9, 0, NULL},
        {"--layers", CLI_INT, &v->layers, 1, 8, 0, NULL},
        {"--top-k", CLI_INT, &v->topk, 1, INT_MAX, 0, NULL},
        {"--model", CLI_STRING, &v->model, 0, 0, 0, NULL},
        {"--format", CLI_STRING, &v->format, 0, 0, 0, NULL},
    };
    const cli_spec spec = {"fuzz",
                           opts,
                           sizeof opts / sizeof opts[0],
                           fuzz_usage,
                           table ? CLI_POS_REST : CLI_POS_ANYWHERE,
                           table ? 0 : 2};
    return attn_cli_parse(&spec, argc, argv, pos, npos);
}

static void fuzz_check_vals(const fuzz_vals *v) {
    FUZZ_CHECK(v->flag1 == 0 || v->flag1 == 1);
    FUZZ_CHECK(v->threads >= 0 && v->threads <= 4096);
    FUZZ_CHECK(v->dropout >= 0.0f && v->dropout < 1.0f);
    FUZZ_CHECK(isfinite(v->scale));
    FUZZ_CHECK(v->lr == 0.0f || (v->lr > 0.0f && isfinite(v->lr)));
    FUZZ_CHECK(v->heads == 0 || v->heads >= 1);
    FUZZ_CHECK(v->layers >= 0 && v->layers <= 8);
    FUZZ_CHECK(v->topk >= 0);
    FUZZ_CHECK(v->align == ATTN_ALIGN_TOP_LEFT || v->align == ATTN_ALIGN_BOTTOM_RIGHT);
    FUZZ_CHECK(!v->window.on || (v->window.left >= -1 && v->window.right >= -1));
}

/* 1 if arg, up to its first '=' (or whole, with eq 0), names an option
 * that takes a value. */
static int fuzz_is_valued(const char *arg, int eq) {
    static const char *const valued[] = {"--threads", "--seed",  "--dropout", "--align",
                                         "--window",  "--scale", "--lr",      "--heads",
                                         "--layers",  "--top-k", "--model",   "--format"};
    const char *e = eq ? strchr(arg, '=') : arg + strlen(arg);
    if (!e || arg[0] != '-') return 0;
    for (size_t k = 0; k < sizeof valued / sizeof valued[0]; k++)
        if (strlen(valued[k]) == (size_t)(e - arg) && !strncmp(valued[k], arg, (size_t)(e - arg)))
            return 1;
    return 0;
}

#define FUZZ_MAX_ARGS 32

static void fuzz_cli_args_one(const uint8_t *buf, size_t len) {
    /* argv[0] is the command; the input's NUL-separated strings follow */
    char *copy = malloc(len + 1), *argv[FUZZ_MAX_ARGS + 1], *split[2 * FUZZ_MAX_ARGS + 1];
    FUZZ_CHECK(copy);
    memcpy(copy, buf, len);
    copy[len] = 0;
    int argc = 0;
    argv[argc++] = "fuzz";
    for (size_t at = 0; at <= len && argc < FUZZ_MAX_ARGS; at += strlen(copy + at) + 1)
        argv[argc++] = copy + at;
    argv[argc] = NULL;
    /* the same argv with every "--opt=value" as "--opt" "value" */
    char *names[FUZZ_MAX_ARGS];
    int nsplit = 0, nnames = 0;
    for (int i = 0; i < argc; i++) {
        /* after "--" (or, for a rest table, a positional) nothing is an option:
         * stop splitting there, conservatively, at the first non-option */
        if (i > 0 && (argv[i][0] != '-' || !strcmp(argv[i], "--"))) {
            for (; i < argc; i++)
                split[nsplit++] = argv[i];
            break;
        }
        if (i > 0 && fuzz_is_valued(argv[i], 0)) { /* "--opt value": the value as is */
            split[nsplit++] = argv[i];
            if (i + 1 < argc) split[nsplit++] = argv[++i];
            continue;
        }
        if (i > 0 && fuzz_is_valued(argv[i], 1)) {
            const char *eq = strchr(argv[i], '=');
            char *nm = strndup(argv[i], (size_t)(eq - argv[i]));
            FUZZ_CHECK(nm);
            names[nnames++] = nm;
            split[nsplit++] = nm;
            split[nsplit++] = (char *)eq + 1;
        } else {
            split[nsplit++] = argv[i];
        }
    }
    split[nsplit] = NULL;
    for (int table = 0; table < 2; table++) {
        fuzz_vals a, b;
        const char *pa[2], *pb[2];
        int na = -7, nb = -7;
        int ra = fuzz_parse(table, argc, argv, &a, pa, &na);
        FUZZ_CHECK(ra == -1 || ra == 0 || ra == 2);
        if (ra == -1) {
            fuzz_check_vals(&a);
            if (table)
                FUZZ_CHECK(na >= 1 && na <= argc);
            else
                for (int k = 0; k < na; k++)
                    FUZZ_CHECK(na <= 2 && pa[k] >= copy && pa[k] <= copy + len);
        }
        int rb = fuzz_parse(table, nsplit, split, &b, pb, &nb);
        FUZZ_CHECK(rb == ra);
        if (ra == -1) {
            /* the same values (strings compared by content) */
            FUZZ_CHECK(a.flag1 == b.flag1 && a.flag2 == b.flag2 && a.threads == b.threads &&
                       a.heads == b.heads && a.layers == b.layers && a.topk == b.topk &&
                       a.seed == b.seed && a.align == b.align && a.window.on == b.window.on &&
                       a.window.left == b.window.left && a.window.right == b.window.right);
            FUZZ_CHECK(!memcmp(&a.scale, &b.scale, sizeof a.scale) &&
                       !memcmp(&a.dropout, &b.dropout, sizeof a.dropout) &&
                       !memcmp(&a.lr, &b.lr, sizeof a.lr));
            FUZZ_CHECK((!a.model && !b.model) || (a.model && b.model && !strcmp(a.model, b.model)));
            FUZZ_CHECK((!a.format && !b.format) ||
                       (a.format && b.format && !strcmp(a.format, b.format)));
            if (!table) FUZZ_CHECK(na == nb);
        }
    }
    for (int k = 0; k < nnames; k++)
        free(names[k]);
    free(copy);
}

#ifndef FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 4096) return 0;
    fuzz_cli_args_one(data, size);
    return 0;
}
#endif

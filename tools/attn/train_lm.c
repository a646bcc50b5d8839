/* attn train --task lm: a GPT-2 trained from scratch on a text file at the
 * byte level (ids 0..255 are the bytes), with AdamW, warm-up and cosine
 * decay over a time or step budget, progress lines, and at the end the
 * held-out bits per character beside xz -9e's on the same text; --out saves
 * a Hugging Face GPT-2 directory with a byte-level tokenizer.json
 * (attn_gpt_save) that transformers and `attn generate --model` load. */
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
            "GELU-tanh MLP, head tied to the token embedding) from scratch on FILE, one token\n"
            "per byte. The last 10%% of FILE is held out; the rest is sampled in random\n"
            "windows. AdamW with linear warm-up and cosine decay to 10%% of the peak over the\n"
            "budget (--steps if given, else --minutes of training), gradients clipped to 1.\n"
            "Prints progress (step, loss, tokens/s, ETA) and at the end the held-out bits per\n"
            "character (UTF-8 characters) of the model and of `xz -9e` on the same text.\n\n"
            "options:\n"
            "  --task lm          the task (required)\n"
            "  --corpus FILE      the training text (required), e.g. a file of Debian's\n"
            "                     fortunes under /usr/share/games/fortunes\n"
            "  --tokenizer char   one token per byte (the only tokenizer so far)\n"
            "  --layers N         blocks (default 4)\n"
            "  --dim E            width (default 128)\n"
            "  --heads H          attention heads, dividing E (default 4)\n"
            "  --ctx T            context window in tokens (default 128)\n"
            "  --batch N          windows per step (default 16)\n"
            "  --minutes M        training time budget (default 10; ignored with --steps)\n"
            "  --steps N          a fixed number of steps instead (reproducible)\n"
            "  --lr X             peak learning rate (default 2e-3)\n"
            "  --weight-decay X   AdamW weight decay (default 0.01)\n"
            "  --seed S           initialisation and sampling (default 1)\n"
            "  --threads N        threads (default 1: on a shared machine two threads ran 5x\n"
            "                    slower than one; 0 = ATTN_NUM_THREADS, else all cores)\n"
            "  --log-every N      progress every N steps (default 50)\n"
            "  --out DIR          save a Hugging Face GPT-2 directory there at the end\n"
            "  -h, --help         show this help\n\n"
            "Exit status: 0 success, 1 failure (unreadable or too small corpus), 2 bad usage.\n");
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

/* Summed loss (nats) of predicting text[from..to) from the bytes before it
 * within windows of T: windows start at from - 1 and step by T. */
static int eval_nats(attn_ctx *ctx, attn_gpt_trainer *tr, const unsigned char *text, size_t from,
                     size_t to, int T, int B, int32_t *ids, double *nats) {
    double sum = 0.0;
    size_t s = from - 1;
    while (s + 1 < to) {
        int nb = 0;
        /* full windows, B at a time */
        while (nb < B && s + (size_t)T + 1 <= to) {
            for (int i = 0; i <= T; i++)
                ids[(size_t)nb * (size_t)(T + 1) + (size_t)i] = text[s + (size_t)i];
            nb++, s += (size_t)T;
        }
        int Tw = T;
        if (nb == 0) { /* the last, shorter window */
            Tw = (int)(to - 1 - s);
            for (int i = 0; i <= Tw; i++)
                ids[i] = text[s + (size_t)i];
            nb = 1, s += (size_t)Tw;
        }
        double part;
        if (attn_gpt_trainer_step(ctx, tr, nb, Tw, ids, 0, &part)) return -1;
        sum += part;
    }
    *nats = sum;
    return 0;
}

int attn_cmd_train_lm(int argc, char **argv) {
    int layers = 4, dim = 128, heads = 4, ctxlen = 128, batch = 16, steps = 0, threads = 1;
    int log_every = 50;
    float minutes = 10.0f, lr = 2e-3f, wd = 0.01f;
    uint64_t seed = 1;
    const char *task = NULL, *corpus = NULL, *tokenizer = "char", *out = NULL;
    const cli_opt opts[] = {
        {"--task", CLI_STRING, &task, 0, 0, 0, NULL},
        {"--corpus", CLI_STRING, &corpus, 0, 0, 0, NULL},
        {"--tokenizer", CLI_STRING, &tokenizer, 0, 0, 0, NULL},
        {"--layers", CLI_INT, &layers, 1, 64, 0, NULL},
        {"--dim", CLI_INT, &dim, 1, 8192, 0, NULL},
        {"--heads", CLI_INT, &heads, 1, 8192, 0, NULL},
        {"--ctx", CLI_INT, &ctxlen, 1, 65536, 0, NULL},
        {"--batch", CLI_INT, &batch, 1, 65536, 0, NULL},
        {"--minutes", CLI_FLOAT, &minutes, 0, 1e6, CLI_LO_OPEN, NULL},
        {"--steps", CLI_INT, &steps, 1, 1e9, 0, NULL},
        {"--lr", CLI_FLOAT, &lr, 0, CLI_INF, CLI_LO_OPEN, NULL},
        {"--weight-decay", CLI_FLOAT, &wd, 0, CLI_INF, 0, NULL},
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
    if (strcmp(tokenizer, "char"))
        return attn_cli_error(2, "train: --tokenizer '%s' is not supported (only 'char')",
                              tokenizer);
    if (dim % heads)
        return attn_cli_error(2, "train: --dim %d is not divisible by --heads %d", dim, heads);

    size_t n = 0;
    unsigned char *text = read_all(corpus, &n);
    if (!text) return attn_cli_error(1, "train: cannot read the corpus '%s'", corpus);
    const size_t held = n / 10, split = n - held;
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
    int32_t *ids = malloc((size_t)batch * (size_t)(ctxlen + 1) * sizeof *ids);
    attn_status st;
    if (!ids) {
        attn_cli_error(1, "out of memory");
        goto done;
    }
    attn_gpt_config c;
    memset(&c, 0, sizeof c);
    c.arch = ATTN_GPT_ARCH_GPT2, c.vocab_size = 256, c.n_positions = ctxlen, c.n_embd = dim;
    c.n_layer = layers, c.n_head = heads, c.n_kv_head = heads, c.n_inner = 4 * (int64_t)dim;
    c.layer_norm_epsilon = 1e-5f, c.attention_bias = c.mlp_bias = 1, c.act = ATTN_GPT_GELU_TANH;
    c.scale_attn_weights = 1, c.tie_word_embeddings = 1, c.bos_token_id = c.eos_token_id = -1;
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
    printf("task lm: corpus %s, %zu bytes (%zu training, %zu held out), byte tokens; GPT-2 "
           "layers=%d E=%d heads=%d ctx=%d, %lld parameters; batch %d, ",
           corpus, n, split, held, layers, dim, heads, ctxlen, (long long)nweights, batch);
    if (steps)
        printf("%d steps", steps);
    else
        printf("%.2f minutes", (double)minutes);
    printf(", %d threads, seed %llu\n", attn_ctx_threads(ctx), (unsigned long long)seed);
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
            const size_t s0 = (size_t)(attn_train_mix(&rng) % (uint64_t)(split - (size_t)ctxlen));
            for (int i = 0; i <= ctxlen; i++)
                ids[(size_t)b * (size_t)(ctxlen + 1) + (size_t)i] = text[s0 + (size_t)i];
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
            printf("step %6ld  loss %.4f (%.3f bits/byte)  lr %.2e  %.0f tokens/s  %.0f s  "
                   "ETA %.0f s\n",
                   step + 1, run_loss / run_n, run_loss / run_n / log(2.0), lr * f, tps, now, eta);
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
    if (eval_nats(ctx, tr, text, split, n, ctxlen, batch, ids, &nats)) {
        attn_cli_error(1, "%s", attn_ctx_last_error(ctx));
        goto done;
    }
    size_t chars = 0;
    for (size_t i = split; i < n; i++)
        chars += (text[i] & 0xC0) != 0x80;
    const double bpc = nats / log(2.0) / (double)chars;
    printf("held-out: %zu bytes, %zu characters\n", held, chars);
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
        if ((st = attn_gpt_save(ctx, attn_gpt_trainer_model(tr), out, 1))) {
            attn_cli_error(1, "%s", attn_ctx_last_error(ctx));
            goto done;
        }
        printf("saved: %s (Hugging Face GPT2LMHeadModel, byte-level tokenizer.json)\n", out);
    }
    rc = 0;
done:
    free(text), free(ids);
    attn_adamw_free(opt);
    attn_gpt_trainer_free(tr);
    attn_ctx_free(ctx);
    return rc;
}

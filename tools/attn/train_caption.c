/* attn train --task caption: an image captioner trained end to end from
 * scratch on the built-in handwritten digits (attn/caption.h): a ViT
 * encoder whose patch tokens feed the cross-attention of a small text
 * decoder that writes "a handwritten seven". Teacher forcing with
 * cross-entropy and AdamW; greedy decoding on the held-out images (every
 * fifth, as --task digits) and `caption accuracy: X` (exact match). */
#include "cli.h"
#include "cli_time.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { NDIGITS = 1797, SIDE = 8, PX = 3 * SIDE * SIDE };
enum { W_BOS, W_EOS, W_A, W_HAND, W_DIGIT0, VOCAB = W_DIGIT0 + 10, CAP_LEN = 5, MAX_LEN = 6 };

static const char *const words[VOCAB] = {"<bos>", "<eos>", "a",     "handwritten", "zero",
                                         "one",   "two",   "three", "four",        "five",
                                         "six",   "seven", "eight", "nine"};

static void usage(FILE *f) {
    fprintf(f,
            "usage: attn train --task caption [options]\n\n"
            "Train an image captioner end to end from scratch on scikit-learn's handwritten\n"
            "digits (built into attn; every fifth image held out, as --task digits): a\n"
            "Vision Transformer encoder whose final-LayerNormed patch tokens are the keys and\n"
            "values of the cross-attention in a small GPT-style decoder (pre-LN blocks of\n"
            "causal self-attention, cross-attention and an MLP, tied LM head) over a word\n"
            "vocabulary of %d (<bos> <eos> a handwritten zero .. nine). Captions are\n"
            "\"<bos> a handwritten seven <eos>\"; teacher forcing with cross-entropy, AdamW\n"
            "(5%% warmup, cosine decay, gradients clipped to norm 1); training images are\n"
            "shifted by up to a pixel and half get a 2x2 square blanked. At the end the\n"
            "held-out images are captioned by greedy decoding and `caption accuracy: X`\n"
            "(exact caption match) is printed.\n\n"
            "  --epochs N        passes over the training images (default 300)\n"
            "  --minutes M       stop after the epoch that exceeds M minutes of wall time\n"
            "                    (default 0: no limit; the schedule still spans --epochs)\n"
            "  --batch N         images per step (default 32)\n"
            "  --lr X            AdamW peak learning rate (default 3e-3)\n"
            "  --weight-decay X  AdamW decoupled weight decay (default 0.05)\n"
            "  --dim N --heads N --layers N --mlp N --patch N\n"
            "                    encoder sizes (default 48, 4, 3, 96, 2); the decoder has the\n"
            "                    same width, heads and MLP width\n"
            "  --dec-layers N    decoder blocks (default 2)\n"
            "  --eval-every N    held-out caption accuracy every N epochs (default 10)\n"
            "  --seed N          initialisation, shuffling and shifts (default 1)\n"
            "  --threads N       threads (default 1; 0 = ATTN_NUM_THREADS, else all cores)\n"
            "  --output DIR      (or --out DIR) save the model there: model.safetensors,\n"
            "                    config.json (model_type attn_captioner) and\n"
            "                    preprocessor_config.json; `attn caption --model DIR` reads it\n"
            "  -h, --help        show this help\n\n"
            "Exit status: 0 success, 1 failure, 2 bad usage.\n",
            VOCAB);
}

static void caption_ids(int label, int32_t *ids) {
    ids[0] = W_BOS, ids[1] = W_A, ids[2] = W_HAND, ids[3] = W_DIGIT0 + label, ids[4] = W_EOS;
}

/* Held-out exact-caption accuracy; prints the first few captions when show. */
static int evaluate(attn_ctx *ctx, attn_caption_trainer *tr, const int *test_idx, int ntest,
                    int batch, float *px, int32_t *gen, int show, double *acc) {
    int right = 0;
    for (int b0 = 0; b0 < ntest; b0 += batch) {
        const int nb = ntest - b0 < batch ? ntest - b0 : batch;
        for (int k = 0; k < nb; k++)
            attn_digits_pixels(test_idx[b0 + k], 0, 0, 0, 0, 0, px + (size_t)k * PX);
        if (attn_caption_generate(ctx, tr, nb, px, W_BOS, W_EOS, gen))
            return attn_cli_error(1, "%s", attn_ctx_last_error(ctx));
        for (int k = 0; k < nb; k++) {
            int32_t want[CAP_LEN];
            caption_ids(attn_digits_label(test_idx[b0 + k]), want);
            const int32_t *g = gen + (size_t)k * MAX_LEN;
            const int ok = !memcmp(g, want, sizeof want);
            right += ok;
            if (show && b0 + k < 3) {
                printf("  held-out image %d (digit %d):", test_idx[b0 + k],
                       attn_digits_label(test_idx[b0 + k]));
                for (int i = 1; i < MAX_LEN && g[i] != W_EOS; i++)
                    printf(" %s", words[g[i]]);
                printf("%s\n", ok ? "" : "   (wrong)");
            }
        }
    }
    *acc = (double)right / ntest;
    return 0;
}

int attn_cmd_train_caption(int argc, char **argv) {
    int epochs = 300, batch = 32, dim = 48, heads = 4, layers = 3, mlp = 96, patch = 2;
    int dec_layers = 2, eval_every = 10, threads = 1;
    float lr = 3e-3f, wd = 0.05f, minutes = 0.0f;
    uint64_t seed = 1;
    const char *task = NULL, *output = NULL;
    const cli_opt opts[] = {
        {"--task", CLI_STRING, &task, 0, 0, 0, NULL},
        {"--epochs", CLI_INT, &epochs, 1, 1e6, 0, NULL},
        {"--minutes", CLI_FLOAT, &minutes, 0, 1e6, 0, NULL},
        {"--batch", CLI_INT, &batch, 1, 1437, 0, NULL},
        {"--lr", CLI_FLOAT, &lr, 0, CLI_INF, CLI_LO_OPEN, NULL},
        {"--weight-decay", CLI_FLOAT, &wd, 0, CLI_INF, 0, NULL},
        {"--dim", CLI_INT, &dim, 1, 4096, 0, NULL},
        {"--heads", CLI_INT, &heads, 1, 4096, 0, NULL},
        {"--layers", CLI_INT, &layers, 1, 64, 0, NULL},
        {"--dec-layers", CLI_INT, &dec_layers, 1, 16, 0, NULL},
        {"--mlp", CLI_INT, &mlp, 1, 1 << 16, 0, NULL},
        {"--patch", CLI_INT, &patch, 1, 8, 0, NULL},
        {"--eval-every", CLI_INT, &eval_every, 1, 1e6, 0, NULL},
        CLI_OPT_SEED(&seed),
        CLI_OPT_THREADS(&threads),
        {"--output", CLI_STRING, &output, 0, 0, 0, NULL},
        {"--out", CLI_STRING, &output, 0, 0, 0, NULL},
    };
    const cli_spec spec = {"train", opts, sizeof opts / sizeof opts[0], usage, CLI_POS_ANYWHERE, 0};
    int npos;
    int prc = attn_cli_parse(&spec, argc, argv, NULL, &npos);
    if (prc >= 0) return prc;
    if (npos) return attn_cli_error(2, "train: unexpected argument (try --help)");
    if (dim % heads) return attn_cli_error(2, "train: --dim %d is not divisible by --heads %d", dim, heads);
    if (SIDE % patch) return attn_cli_error(2, "train: --patch %d does not divide the 8-pixel side", patch);

    attn_ctx *ctx = NULL;
    int rc = attn_cli_ctx(&ctx, threads);
    if (rc) return rc;
    rc = 1;
    attn_vit_config c = {SIDE, patch, 3, dim, layers, heads, mlp, 1e-12f, 1, 10, 0, NULL};
    attn_image_preproc pre = {1, SIDE, SIDE, ATTN_RESAMPLE_BILINEAR, 1, 1.0f / 255.0f, 1,
                              {0.5f, 0.5f, 0.5f}, {0.5f, 0.5f, 0.5f}};
    attn_caption_config dc = {VOCAB, MAX_LEN, dec_layers, heads, mlp, words, W_BOS, W_EOS};
    attn_caption_trainer *tr = NULL;
    attn_adamw *opt = NULL;
    int train_idx[NDIGITS], test_idx[NDIGITS], ntrain = 0, ntest = 0;
    for (int i = 0; i < NDIGITS; i++) {
        if (i % 5 == 0)
            test_idx[ntest++] = i;
        else
            train_idx[ntrain++] = i;
    }
    float *px = malloc((size_t)batch * PX * sizeof(float));
    int32_t *ids = malloc((size_t)batch * CAP_LEN * sizeof *ids);
    int32_t *gen = malloc((size_t)batch * MAX_LEN * sizeof *gen);
    if (!px || !ids || !gen) {
        attn_cli_error(1, "out of memory");
        goto done;
    }
    if (attn_caption_trainer_create(ctx, &c, &pre, &dc, batch, seed, &tr)) {
        attn_cli_error(1, "%s", attn_ctx_last_error(ctx));
        goto done;
    }
    int np;
    const attn_param *ps = attn_caption_trainer_params(tr, &np);
    int64_t nweights = 0;
    for (int i = 0; i < np; i++)
        nweights += attn_tensor_numel(&ps[i].value);
    attn_adamw_config oc = {lr, 0.9f, 0.999f, 1e-8f, wd};
    if (attn_adamw_create(ctx, &oc, ps, np, &opt)) {
        attn_cli_error(1, "%s", attn_ctx_last_error(ctx));
        goto done;
    }
    const int steps_per_epoch = (ntrain + batch - 1) / batch;
    const long total = (long)epochs * steps_per_epoch, warmup = total / 20 + 1;
    printf("task caption: %d training / %d held-out images of 8x8, captions of %d words from a "
           "vocabulary of %d; ViT encoder patch %d, E=%d heads=%d layers=%d mlp=%d; decoder "
           "layers=%d; %lld parameters; batch %d, %d epochs (%ld steps), %d threads, seed %llu\n",
           ntrain, ntest, CAP_LEN - 2, VOCAB, patch, dim, heads, layers, mlp, dec_layers,
           (long long)nweights, batch, epochs, total, attn_ctx_threads(ctx),
           (unsigned long long)seed);
    fflush(stdout);
    uint64_t rng = seed * 0xd1b54a32d192ed03ull + 11;
    const double t0 = attn_cli_clock_s(CLOCK_MONOTONIC);
    long step = 0;
    double acc = -1.0;
    int ep;
    for (ep = 1; ep <= epochs; ep++) {
        for (int i = ntrain - 1; i > 0; i--) { /* shuffle */
            int j = (int)(attn_train_mix(&rng) % (uint64_t)(i + 1)), t = train_idx[i];
            train_idx[i] = train_idx[j], train_idx[j] = t;
        }
        double loss_sum = 0.0;
        for (int b0 = 0; b0 < ntrain; b0 += batch, step++) {
            const int nb = ntrain - b0 < batch ? ntrain - b0 : batch;
            for (int k = 0; k < nb; k++) {
                const uint64_t r = attn_train_mix(&rng);
                const int idx = train_idx[b0 + k];
                attn_digits_pixels(idx, (int)(r % 3) - 1, (int)(r / 3 % 3) - 1,
                                   (r >> 8) & 1 ? 2 : 0, (int)((r >> 16) % 7),
                                   (int)((r >> 24) % 7), px + (size_t)k * PX);
                caption_ids(attn_digits_label(idx), ids + (size_t)k * CAP_LEN);
            }
            const double f = step < warmup ? (double)(step + 1) / (double)warmup
                                           : 0.5 * (1.0 + cos(3.14159265358979323846 *
                                                              (double)(step - warmup) /
                                                              (double)(total - warmup)));
            attn_adamw_set_lr(opt, (float)(lr * fmax(f, 1e-3)));
            double loss;
            if (attn_caption_trainer_step(ctx, tr, nb, px, ids, CAP_LEN - 1, 1, &loss) ||
                attn_param_clip_grad_norm(ctx, ps, np, 1.0f, NULL) || attn_adamw_step(ctx, opt)) {
                attn_cli_error(1, "%s", attn_ctx_last_error(ctx));
                goto done;
            }
            if (!isfinite(loss)) {
                attn_cli_error(1, "epoch %d: the loss is not finite (%g)", ep, loss);
                goto done;
            }
            loss_sum += loss * nb;
        }
        const double el = attn_cli_clock_s(CLOCK_MONOTONIC) - t0;
        const int stop = minutes > 0 && el > 60.0 * minutes;
        if (ep % eval_every == 0 || ep == epochs || stop) {
            if (evaluate(ctx, tr, test_idx, ntest, batch, px, gen, 0, &acc)) goto done;
            printf("epoch %3d/%d  loss %.4f  held-out caption acc %.4f  %.1f s\n", ep, epochs,
                   loss_sum / ntrain, acc, attn_cli_clock_s(CLOCK_MONOTONIC) - t0);
        } else {
            printf("epoch %3d/%d  loss %.4f  %.1f s\n", ep, epochs, loss_sum / ntrain, el);
        }
        fflush(stdout);
        if (stop) {
            printf("stopped: the --minutes %g budget is spent\n", (double)minutes);
            break;
        }
    }
    if (evaluate(ctx, tr, test_idx, ntest, batch, px, gen, 1, &acc)) goto done;
    if (output) {
        if (attn_caption_save(ctx, tr, output)) {
            attn_cli_error(1, "%s", attn_ctx_last_error(ctx));
            goto done;
        }
        printf("saved: %s (attn_captioner)\n", output);
    }
    printf("caption accuracy: %.4f\n", acc);
    rc = 0;
done:
    free(px), free(ids), free(gen);
    attn_adamw_free(opt);
    attn_caption_trainer_free(tr);
    attn_ctx_free(ctx);
    return rc;
}

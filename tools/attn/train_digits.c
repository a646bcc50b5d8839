/* attn train --task digits: a small ViT trained from scratch on
 * scikit-learn's handwritten digits (built in: tools/attn/digits.bin,
 * scripts/export_digits.py), with a fixed held-out split, progress, and
 * `accuracy: X` at the end; --output saves a Hugging Face ViT directory
 * (attn_vit_save) that transformers and `attn classify` load. */
#include "cli.h"
#include "cli_time.h"
#include "digits_data.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { NDIGITS = 1797, SIDE = 8 };

static void usage(FILE *f) {
    fprintf(f,
            "usage: attn train --task digits [options]\n\n"
            "Train a Vision Transformer from scratch on scikit-learn's handwritten digits\n"
            "(1,797 8x8 gray images, 10 classes; built into attn). Every fifth image (360)\n"
            "is held out, the other 1,437 are trained on in shuffled batches, each image\n"
            "shifted by up to one pixel at random and half of them with a random 2x2\n"
            "square blanked (cutout). Gray levels 0..16 become 8-bit levels\n"
            "(v * 255 / 16, rounded) in all three channels, normalised as the saved\n"
            "preprocessor_config.json says (mean 0.5, std 0.5). Prints progress per\n"
            "epoch and `accuracy: X` (held-out) at the end.\n\n"
            "  --epochs N        passes over the training images (default 300)\n"
            "  --batch N         images per step (default 32)\n"
            "  --lr X            AdamW peak learning rate (default 5e-3; 5%% linear warmup,\n"
            "                    cosine decay; gradients clipped to norm 1)\n"
            "  --weight-decay X  AdamW decoupled weight decay (default 0.1)\n"
            "  --dim N --heads N --layers N --mlp N --patch N\n"
            "                    model sizes (default 48, 4, 4, 96, 2: 16 patches of 2x2)\n"
            "  --seed N          initialisation, shuffling and shifts (default 1)\n"
            "  --threads N       threads (default 1: the model is too small to split;\n"
            "                    0 = ATTN_NUM_THREADS, else all cores)\n"
            "  --output DIR      save the model there as a Hugging Face ViT directory\n");
}

/* Image idx shifted by (sx, sy) (zero fill), with the cut x 3 x 3 square at
 * (cx, cy) blanked when cut > 0, into px [3, 8, 8], normalised. */
void attn_digits_pixels(int idx, int sx, int sy, int cut, int cx, int cy, float *px) {
    const unsigned char *d = digits_data + idx * 65 + 1;
    for (int y = 0; y < SIDE; y++)
        for (int x = 0; x < SIDE; x++) {
            const int ys = y - sy, xs = x - sx;
            int v = ys >= 0 && ys < SIDE && xs >= 0 && xs < SIDE ? d[ys * SIDE + xs] : 0;
            if (cut && x >= cx && x < cx + cut && y >= cy && y < cy + cut) v = 0;
            const int level = (v * 255 + 8) / 16; /* 0..16 -> 0..255, rounded */
            const float f = ((float)((double)level * (1.0 / 255.0)) - 0.5f) / 0.5f;
            for (int c = 0; c < 3; c++)
                px[(c * SIDE + y) * SIDE + x] = f;
        }
}

int attn_digits_label(int idx) {
    return digits_data[idx * 65];
}

int attn_cmd_train_digits(int argc, char **argv) {
    int epochs = 300, batch = 32, dim = 48, heads = 4, layers = 4, mlp = 96, patch = 2;
    int threads = 1; /* the model is too small to share: one thread is fastest */
    float lr = 5e-3f, wd = 0.1f;
    uint64_t seed = 1;
    const char *task = NULL, *output = NULL;
    const cli_opt opts[] = {
        {"--task", CLI_STRING, &task, 0, 0, 0, NULL},
        {"--epochs", CLI_INT, &epochs, 1, 1e6, 0, NULL},
        {"--batch", CLI_INT, &batch, 1, 1437, 0, NULL},
        {"--lr", CLI_FLOAT, &lr, 0, CLI_INF, CLI_LO_OPEN, NULL},
        {"--weight-decay", CLI_FLOAT, &wd, 0, CLI_INF, 0, NULL},
        {"--dim", CLI_INT, &dim, 1, 4096, 0, NULL},
        {"--heads", CLI_INT, &heads, 1, 4096, 0, NULL},
        {"--layers", CLI_INT, &layers, 1, 64, 0, NULL},
        {"--mlp", CLI_INT, &mlp, 1, 1 << 16, 0, NULL},
        {"--patch", CLI_INT, &patch, 1, 8, 0, NULL},
        CLI_OPT_SEED(&seed),
        CLI_OPT_THREADS(&threads),
        {"--output", CLI_STRING, &output, 0, 0, 0, NULL},
    };
    const cli_spec spec = {"train", opts, sizeof opts / sizeof opts[0], usage, CLI_POS_ANYWHERE, 0};
    int npos;
    int prc = attn_cli_parse(&spec, argc, argv, NULL, &npos);
    if (prc >= 0) return prc;
    if (dim % heads) return attn_cli_error(2, "train: --dim %d is not divisible by --heads %d", dim, heads);
    if (SIDE % patch) return attn_cli_error(2, "train: --patch %d does not divide the 8-pixel side", patch);

    attn_ctx *ctx = NULL;
    int rc = attn_cli_ctx(&ctx, threads);
    if (rc) return rc;
    rc = 1;
    static const char *names[10] = {"zero", "one", "two", "three", "four",
                                    "five", "six", "seven", "eight", "nine"};
    attn_vit_config c = {SIDE, patch, 3, dim, layers, heads, mlp, 1e-12f, 1, 10, 0, (char **)names};
    attn_image_preproc pre = {1, SIDE, SIDE, ATTN_RESAMPLE_BILINEAR, 1, 1.0f / 255.0f, 1,
                              {0.5f, 0.5f, 0.5f}, {0.5f, 0.5f, 0.5f}};
    attn_vit_trainer *tr = NULL;
    attn_adamw *opt = NULL;
    int train_idx[NDIGITS], test_idx[NDIGITS], ntrain = 0, ntest = 0;
    for (int i = 0; i < NDIGITS; i++) {
        if (i % 5 == 0)
            test_idx[ntest++] = i;
        else
            train_idx[ntrain++] = i;
    }
    float *px = malloc((size_t)batch * 3 * SIDE * SIDE * sizeof(float));
    int32_t *lab = malloc((size_t)batch * sizeof *lab);
    attn_status st;
    if (!px || !lab) {
        attn_cli_error(1, "out of memory");
        goto done;
    }
    if ((st = attn_vit_trainer_create(ctx, &c, &pre, batch, seed, &tr))) {
        attn_cli_error(1, "%s", attn_ctx_last_error(ctx));
        goto done;
    }
    int np;
    const attn_param *ps = attn_vit_trainer_params(tr, &np);
    int64_t nweights = 0;
    for (int i = 0; i < np; i++)
        nweights += attn_tensor_numel(&ps[i].value);
    attn_adamw_config oc = {lr, 0.9f, 0.999f, 1e-8f, wd};
    if ((st = attn_adamw_create(ctx, &oc, ps, np, &opt))) {
        attn_cli_error(1, "%s", attn_ctx_last_error(ctx));
        goto done;
    }
    const int steps_per_epoch = (ntrain + batch - 1) / batch;
    const long total = (long)epochs * steps_per_epoch, warmup = total / 20 + 1;
    printf("task digits: %d training / %d held-out images of 8x8, 10 classes; ViT patch %d, "
           "E=%d heads=%d layers=%d mlp=%d, %lld parameters; batch %d, %d epochs (%ld steps), "
           "%d threads, seed %llu\n",
           ntrain, ntest, patch, dim, heads, layers, mlp, (long long)nweights, batch, epochs,
           total, attn_ctx_threads(ctx), (unsigned long long)seed);
    fflush(stdout);
    uint64_t rng = seed * 0xd1b54a32d192ed03ull + 7;
    const double t0 = attn_cli_clock_s(CLOCK_MONOTONIC);
    long step = 0;
    double acc = 0.0;
    for (int ep = 1; ep <= epochs; ep++) {
        for (int i = ntrain - 1; i > 0; i--) { /* shuffle */
            int j = (int)(attn_train_mix(&rng) % (uint64_t)(i + 1)), t = train_idx[i];
            train_idx[i] = train_idx[j], train_idx[j] = t;
        }
        double loss_sum = 0.0;
        int right = 0;
        for (int b0 = 0; b0 < ntrain; b0 += batch, step++) {
            const int nb = ntrain - b0 < batch ? ntrain - b0 : batch;
            for (int k = 0; k < nb; k++) {
                const uint64_t r = attn_train_mix(&rng);
                const int idx = train_idx[b0 + k];
                /* shift by -1..1 each way; half the images lose a 2x2 square */
                attn_digits_pixels(idx, (int)(r % 3) - 1, (int)(r / 3 % 3) - 1,
                             (r >> 8) & 1 ? 2 : 0, (int)((r >> 16) % 7), (int)((r >> 24) % 7),
                             px + (size_t)k * 3 * SIDE * SIDE);
                lab[k] = digits_data[idx * 65];
            }
            const double f = step < warmup ? (double)(step + 1) / (double)warmup
                                           : 0.5 * (1.0 + cos(3.14159265358979323846 * (double)(step - warmup) /
                                                              (double)(total - warmup)));
            attn_adamw_set_lr(opt, (float)(lr * fmax(f, 1e-3)));
            double loss;
            int ok_n;
            if ((st = attn_vit_trainer_step(ctx, tr, nb, px, lab, 1, &loss, &ok_n)) ||
                (st = attn_param_clip_grad_norm(ctx, ps, np, 1.0f, NULL)) ||
                (st = attn_adamw_step(ctx, opt))) {
                attn_cli_error(1, "%s", attn_ctx_last_error(ctx));
                goto done;
            }
            loss_sum += loss * nb, right += ok_n;
        }
        /* held-out accuracy, unshifted */
        int test_right = 0;
        for (int b0 = 0; b0 < ntest; b0 += batch) {
            const int nb = ntest - b0 < batch ? ntest - b0 : batch;
            for (int k = 0; k < nb; k++) {
                attn_digits_pixels(test_idx[b0 + k], 0, 0, 0, 0, 0, px + (size_t)k * 3 * SIDE * SIDE);
                lab[k] = digits_data[test_idx[b0 + k] * 65];
            }
            int ok_n;
            if ((st = attn_vit_trainer_step(ctx, tr, nb, px, lab, 0, NULL, &ok_n))) {
                attn_cli_error(1, "%s", attn_ctx_last_error(ctx));
                goto done;
            }
            test_right += ok_n;
        }
        acc = (double)test_right / ntest;
        printf("epoch %3d/%d  loss %.4f  train acc %.4f  held-out acc %.4f  %.1f s\n", ep, epochs,
               loss_sum / ntrain, (double)right / ntrain, acc,
               attn_cli_clock_s(CLOCK_MONOTONIC) - t0);
        fflush(stdout);
    }
    if (output) {
        if ((st = attn_vit_save(ctx, attn_vit_trainer_model(tr), output))) {
            attn_cli_error(1, "%s", attn_ctx_last_error(ctx));
            goto done;
        }
        printf("saved: %s (Hugging Face ViTForImageClassification)\n", output);
    }
    printf("accuracy: %.4f\n", acc);
    rc = 0;
done:
    free(px), free(lab);
    attn_adamw_free(opt);
    attn_vit_trainer_free(tr);
    attn_ctx_free(ctx);
    return rc;
}

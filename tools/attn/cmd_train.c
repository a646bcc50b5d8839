/* attn train --task recall: train a small attention model from scratch on
 * associative recall and report held-out accuracy (attn_recall_*, attn/models.h). */
#include "cli.h"
#include "cli_time.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: attn train --task recall [options]\n\n"
            "Trains a small transformer (token, previous-token and position embeddings,\n"
            "pre-LayerNorm blocks of multi-head attention and an MLP, readout at the last\n"
            "position, cross-entropy, AdamW with warm-up and cosine decay, gradient clipping\n"
            "at 1.0) on associative recall: k1 v1 k2 v2 ... kn vn q -> the value paired with\n"
            "key q. Prints the loss as it goes and ends with 'accuracy: X' on held-out\n"
            "sequences (chance is 1/values).\n\n"
            "options:\n"
            "  --task recall     the task (required; `attn train --task digits --help`,\n"
            "                    `--task caption --help` and `--task lm --help` the others)\n"
            "  --steps N         optimiser steps (default 1000)\n"
            "  --seed S          seed of initialisation and data (default 1)\n"
            "  --threads N       threads (default 1: the model is tiny, and more threads mostly\n"
            "                    add synchronisation; 0 = ATTN_NUM_THREADS, else all cores)\n"
            "  --batch N         sequences per step (default 64)\n"
            "  --lr X            peak learning rate (default 3e-3)\n"
            "  --weight-decay X  AdamW weight decay (default 0.01)\n"
            "  --pairs N         key/value pairs per sequence, 1..512 and <= keys (default 8)\n"
            "  --keys N          key vocabulary, 1..1024 (default 16)\n"
            "  --values N        value vocabulary (default 16)\n"
            "  --dim E           model width (default 64)\n"
            "  --heads H         attention heads, dividing E (default 4)\n"
            "  --layers L        blocks, 1..8 (default 2)\n"
            "  --mlp N           MLP hidden width, 0 for attention-only blocks (default 128)\n"
            "  --token-shift 0|1 add a previous-token embedding (default 1): one attention\n"
            "                    lookup then solves the task; with 0 the model must first form\n"
            "                    an induction head over two layers (4 pairs: ~1000 steps; the\n"
            "                    default 8 pairs: still on the plateau after 4000)\n"
            "  --eval N          held-out sequences for the final accuracy (default 2000)\n"
            "  --log-every N     print the loss every N steps (default 100)\n"
            "  -h, --help        show this help\n\n"
            "Exit status: 0 success, 1 failure, 2 bad usage.\n");
}

static double now_s(void) {
    return attn_cli_clock_s(CLOCK_MONOTONIC);
}

int attn_train_task_is(int argc, char **argv, const char *task) {
    for (int i = 1; i < argc; i++) {
        if (!strncmp(argv[i], "--task=", 7)) return !strcmp(argv[i] + 7, task);
        if (!strcmp(argv[i], "--task") && i + 1 < argc) return !strcmp(argv[i + 1], task);
    }
    return 0;
}

uint64_t attn_train_mix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

int attn_cmd_train(int argc, char **argv) {
    if (attn_train_task_is(argc, argv, "digits")) return attn_cmd_train_digits(argc, argv); /* train_digits.c */
    if (attn_train_task_is(argc, argv, "caption")) return attn_cmd_train_caption(argc, argv); /* train_caption.c */
    if (attn_train_task_is(argc, argv, "lm")) return attn_cmd_train_lm(argc, argv); /* train_lm.c */
    attn_recall_config c = {16, 16, 8, 64, 4, 2, 128, 1, 64, 1};
    int steps = 1000, threads = 1, eval = 2000, log_every = 100;
    float lr = 3e-3f, wd = 0.01f;
    const char *task = NULL;
    const cli_opt opts[] = {
        {"--task", CLI_STRING, &task, 0, 0, 0, NULL},
        {"--steps", CLI_INT, &steps, 0, 1e9, 0, NULL},
        CLI_OPT_SEED(&c.seed),
        CLI_OPT_THREADS(&threads),
        {"--batch", CLI_INT, &c.batch, 1, 1e9, 0, NULL},
        {"--lr", CLI_FLOAT, &lr, 0, CLI_INF, CLI_LO_OPEN, NULL},
        {"--weight-decay", CLI_FLOAT, &wd, 0, CLI_INF, 0, NULL},
        {"--pairs", CLI_INT, &c.n_pairs, 1, ATTN_RECALL_MAX_PAIRS, 0, NULL},
        {"--keys", CLI_INT, &c.n_keys, 1, ATTN_RECALL_MAX_KEYS, 0, NULL},
        {"--values", CLI_INT, &c.n_values, 2, 1e9, 0, NULL},
        {"--dim", CLI_INT, &c.E, 1, 1e9, 0, NULL},
        {"--heads", CLI_INT, &c.H, 1, 1e9, 0, NULL},
        {"--layers", CLI_INT, &c.layers, 1, ATTN_RECALL_MAX_LAYERS, 0, NULL},
        {"--mlp", CLI_INT, &c.mlp, 0, 1e9, 0, NULL},
        {"--token-shift", CLI_INT, &c.shift, 0, 1, 0, NULL},
        {"--eval", CLI_INT, &eval, 1, 1e9, 0, NULL},
        {"--log-every", CLI_INT, &log_every, 1, 1e9, 0, NULL},
    };
    const cli_spec spec = {"train", opts, sizeof opts / sizeof opts[0], usage, CLI_POS_ANYWHERE, 0};
    int npos;
    int prc = attn_cli_parse(&spec, argc, argv, NULL, &npos);
    if (prc >= 0) return prc;
    if (!task) return attn_cli_error(2, "train: --task is required (recall, digits, caption or lm)");
    if (strcmp(task, "recall"))
        return attn_cli_error(2, "train: unknown task '%s' (known: recall, digits, caption, lm)", task);
    /* options that contradict each other are bad usage */
    if (c.n_pairs > c.n_keys)
        return attn_cli_error(
            2, "train: --pairs %d exceeds --keys %d (keys in a sequence are distinct)", c.n_pairs,
            c.n_keys);
    if (c.n_keys > 1024 || c.n_pairs > 512)
        return attn_cli_error(2, "train: --keys is limited to 1024 and --pairs to 512");
    if (c.E % c.H)
        return attn_cli_error(2, "train: --dim %d is not divisible by --heads %d", c.E, c.H);

    attn_ctx *ctx = NULL;
    int rc_ctx = attn_cli_ctx(&ctx, threads);
    if (rc_ctx) return rc_ctx;
    attn_recall *model = NULL;
    attn_adamw *opt = NULL;
    int T = 2 * c.n_pairs + 1, rc = 1;
    int32_t *ids = malloc((size_t)c.batch * (size_t)T * sizeof *ids);
    int32_t *ans = malloc((size_t)c.batch * sizeof *ans);
    attn_status st;
    if (!ids || !ans) {
        attn_cli_error(1, "out of memory");
        goto done;
    }
    if ((st = attn_recall_create(ctx, &c, &model))) {
        attn_cli_error(1, "%s", attn_ctx_last_error(ctx));
        goto done;
    }
    int np;
    const attn_param *ps = attn_recall_get_params(model, &np);
    int64_t nweights = 0;
    for (int i = 0; i < np; i++)
        nweights += attn_tensor_numel(&ps[i].value);
    attn_adamw_config oc = {lr, 0.9f, 0.999f, 1e-8f, wd};
    if ((st = attn_adamw_create(ctx, &oc, ps, np, &opt))) {
        attn_cli_error(1, "%s", attn_ctx_last_error(ctx));
        goto done;
    }
    printf("task recall: %d pairs, %d keys, %d values (chance %.4f); model E=%d H=%d layers=%d "
           "mlp=%d, %lld parameters; batch %d, %ld steps, %d threads, seed %llu\n",
           c.n_pairs, c.n_keys, c.n_values, 1.0 / c.n_values, c.E, c.H, c.layers, c.mlp,
           (long long)nweights, c.batch, (long)steps, attn_ctx_threads(ctx),
           (unsigned long long)c.seed);
    fflush(stdout);
    /* training and held-out data come from separate streams */
    uint64_t train_rng = c.seed * 0x9e3779b97f4a7c15ull + 1;
    uint64_t eval_rng = c.seed * 0x9e3779b97f4a7c15ull + 0xe7a1ull;
    long warmup = steps / 20 < 100 ? steps / 20 : 100;
    double t0 = now_s(), run_loss = 0.0;
    int run_right = 0, run_n = 0;
    for (long s = 0; s < steps; s++) {
        /* linear warm-up, then cosine decay to 10% of the peak */
        double f = s < warmup ? (double)(s + 1) / (double)warmup
                              : 0.1 + 0.9 * 0.5 *
                                          (1.0 + cos(3.14159265358979 * (double)(s - warmup) /
                                                     (double)(steps - warmup)));
        attn_adamw_set_lr(opt, (float)(lr * f));
        double loss;
        int right;
        if ((st = attn_recall_sample(ctx, &c, &train_rng, c.batch, ids, ans)) ||
            (st = attn_recall_step(ctx, model, ids, ans, c.batch, 1, &loss, &right)) ||
            (st = attn_param_clip_grad_norm(ctx, ps, np, 1.0f, NULL)) ||
            (st = attn_adamw_step(ctx, opt))) {
            attn_cli_error(1, "step %ld: %s", s, attn_ctx_last_error(ctx));
            goto done;
        }
        if (!isfinite(loss)) {
            attn_cli_error(1, "step %ld: the loss is not finite (%g)", s, loss);
            goto done;
        }
        run_loss += loss, run_right += right, run_n++;
        if ((s + 1) % log_every == 0 || s + 1 == steps) {
            printf("step %5ld  loss %.4f  train-acc %.3f  lr %.2e  %.1f s\n", s + 1,
                   run_loss / run_n, (double)run_right / ((double)run_n * c.batch), lr * f,
                   now_s() - t0);
            fflush(stdout);
            run_loss = 0.0, run_right = 0, run_n = 0;
        }
    }
    long total = 0, right_total = 0;
    double eval_loss = 0.0;
    while (total < eval) {
        int nb = (int)(eval - total < c.batch ? eval - total : c.batch);
        double loss;
        int right;
        if ((st = attn_recall_sample(ctx, &c, &eval_rng, nb, ids, ans)) ||
            (st = attn_recall_step(ctx, model, ids, ans, nb, 0, &loss, &right))) {
            attn_cli_error(1, "evaluation: %s", attn_ctx_last_error(ctx));
            goto done;
        }
        eval_loss += loss * nb, right_total += right, total += nb;
    }
    printf("held-out: %ld sequences, loss %.4f, %.1f s in all\n", total, eval_loss / total,
           now_s() - t0);
    printf("accuracy: %.4f\n", (double)right_total / (double)total);
    rc = 0;
done:
    attn_adamw_free(opt);
    attn_recall_free(model);
    attn_ctx_free(ctx);
    free(ids);
    free(ans);
    return rc;
}

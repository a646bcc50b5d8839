/* attn: command-line tool. One subcommand per job, each in its own file. */
#include "cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    attn_cli_fn fn;
    const char *help;
} commands[] = {
    {"sdpa", attn_cmd_sdpa, "scaled dot-product attention on tensors from a safetensors file"},
    {"bench", attn_cmd_bench, "measure the FMA peak, then attention speed as % of it"},
    {"compare", attn_cmd_compare, "exact vs sparse, linear, Performer, Nystrom, top-k attention"},
    {"mha", attn_cmd_mha, "multi-head attention layer (forward, backward) on a safetensors file"},
    {"train", attn_cmd_train, "train a small attention model from scratch (--task recall)"},
    {"tokenize", attn_cmd_tokenize, "token ids of texts (BERT WordPiece, byte-level BPE)"},
    {"embed", attn_cmd_embed,
     "sentence embeddings (jsonl, npy, safetensors); attention of every head"},
    {"similarity", attn_cmd_similarity,
     "cosine similarities of sentence embeddings; search a file (--query)"},
    {"ring", attn_cmd_ring, "attention with the sequence split over MPI ranks (mpirun -np P)"},
    {"classify", attn_cmd_classify,
     "classify images with a ViT (top-k labels); --show-attention heat map PNG"},
    {"caption", attn_cmd_caption, "caption images with a captioner from train --task caption"},
    {"explain", attn_cmd_explain,
     "what attention does: heads, rollout, flow, head importance, faithfulness, --html"},
    {"generate", attn_cmd_generate, "continue a prompt with a GPT-2 model (streams the text)"},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static char last_error[4096];

int attn_cli_error(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    fprintf(stderr, "attn: error: %s\n", last_error);
    return code;
}

const char *attn_cli_last_error(void) {
    return last_error;
}

int attn_cli_ctx(attn_ctx **ctx, int threads) {
    *ctx = NULL;
    if (threads > attn_ctx_max_threads())
        return attn_cli_error(2, "--threads %d: at most %d on this machine (16x its %d cores)",
                              threads, attn_ctx_max_threads(), attn_ctx_max_threads() / 16);
    attn_status st = attn_ctx_create(ctx, threads);
    if (st == ATTN_OK) return 0;
    const char *why = *ctx ? attn_ctx_last_error(*ctx) : "";
    attn_cli_error(1, "cannot create a context: %s", *why ? why : attn_status_str(st));
    attn_ctx_free(*ctx);
    *ctx = NULL;
    return 1;
}

static void usage(FILE *f) {
    fprintf(f, "usage: attn <command> [options]   (attn <command> --help for its options)\n\n"
               "commands:\n");
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(f, "  %-11s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\nOptions take a value as --opt VALUE or --opt=VALUE. Exit status: 0 success,\n"
               "1 bad input or runtime failure, 2 bad usage (also any bad option value).\n");
    const char *arch = attn_arch_name();
    fprintf(f, "\nlibattn %s, attention kernels: %s, GEMM: %s\n", ATTN_VERSION_STRING,
            arch ? arch : "none (ATTN_ARCH names no family this CPU runs)", attn_gemm_name());
}

/* Every command's stdout, checked once here for all of them: a write that
 * failed on the way (ferror) or in the final flush and close (/dev/full, a
 * closed pipe, a full disk) turns success into exit 1, never a lost output
 * reported as 0. */
static int finish(int rc) {
    int bad = ferror(stdout);
    bad |= fflush(stdout) != 0;
    int e = errno;
    bad |= fclose(stdout) != 0;
    if (!e) e = errno;
    if (bad && rc == 0)
        rc = attn_cli_error(1, "cannot write the output: %s", strerror(e ? e : EIO));
    return rc;
}

static int run(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("attn %s\n", ATTN_VERSION_STRING);
        return 0;
    }
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    attn_cli_error(2, "unknown command '%s'", argv[1]);
    usage(stderr);
    return 2;
}

int main(int argc, char **argv) {
    return finish(run(argc, argv));
}

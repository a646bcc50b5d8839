/* Shared pieces of the attn command-line tool. The tool only maps files and
 * flags to the public API (<attn/attn.h>): the library checks its arguments
 * and its messages are printed as they are. */
#ifndef ATTN_CLI_H
#define ATTN_CLI_H

#include <attn/attn.h>

#include "cli_args.h"

#include <stddef.h>
#include <stdint.h>

/* Each subcommand: argv[0] is the subcommand's name. Returns the exit status:
 * 0 success, 1 bad input or runtime failure, 2 bad usage (cli_args.h). */
typedef int (*attn_cli_fn)(int argc, char **argv);

int attn_cmd_sdpa(int argc, char **argv);
int attn_cmd_bench(int argc, char **argv);
int attn_cmd_mha(int argc, char **argv);
int attn_cmd_train(int argc, char **argv);
int attn_cmd_tokenize(int argc, char **argv);
int attn_cmd_embed(int argc, char **argv);
int attn_cmd_similarity(int argc, char **argv);
int attn_cmd_ring(int argc, char **argv); /* cmd_ring.c: under mpirun; needs MPI in the build */
int attn_cmd_explain(int argc, char **argv);
int attn_cmd_generate(int argc, char **argv);
int attn_cmd_classify(int argc, char **argv); /* cmd_classify.c: ViT image classification */
/* train_digits.c: `attn train --task digits` (a ViT on scikit-learn's digits) */
int attn_cmd_train_digits(int argc, char **argv);
/* cmd_train.c: is this `attn train --task TASK` (--task TASK or --task=TASK)?
 * And the trainers' shuffling stream (splitmix64: the seed is the state). */
int attn_train_task_is(int argc, char **argv, const char *task);
uint64_t attn_train_mix(uint64_t *s);
/* digit idx of the built-in set shifted by (sx, sy), a cut x cut square at
 * (cx, cy) blanked, into px [3, 8, 8] normalised (mean 0.5, std 0.5); and
 * its label */
void attn_digits_pixels(int idx, int sx, int sy, int cut, int cx, int cy, float *px);
int attn_digits_label(int idx);
/* train_caption.c: `attn train --task caption` (a ViT encoder + text decoder) */
int attn_cmd_train_caption(int argc, char **argv);
int attn_cmd_caption(int argc, char **argv); /* cmd_caption.c: caption images */
/* cmd_classify.c: map [gh * gw] over the image rgb [H, W, 3] (patches of
 * P x P) as a heat-map PNG written to path (attn_cli_write_to). */
int attn_cli_write_heatmap(const char *path, const uint8_t *rgb, int64_t H, int64_t W, int64_t P,
                           const float *map, int64_t gh, int64_t gw);
/* train_lm.c: `attn train --task lm` (a GPT-2 on a text corpus, byte tokens) */
int attn_cmd_train_lm(int argc, char **argv);
int attn_cmd_compare(int argc, char **argv); /* cmd_compare.c: the efficient methods side by side */

/* Print "attn: error: <message>" to stderr. Returns `code` for `return cli_error(...)`. */
int attn_cli_error(int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* The message of the last attn_cli_error (cut at 4095 bytes), for passing
 * it on (embed under MPI tells the other ranks). */
const char *attn_cli_last_error(void);

/* Create a context of `threads` threads (0 = the default) into *ctx. On
 * failure prints the reason and leaves *ctx NULL: returns 2 for a thread
 * count above attn_ctx_max_threads (bad usage), 1 for the library's other
 * reasons (an invalid ATTN_ARCH, ...); 0 on success. */
int attn_cli_ctx(attn_ctx **ctx, int threads);

/* ---- tensors in, results out (tools/attn/cli_io.c) ----
 * Only what the library cannot check: which names a file may hold, dtype
 * conversion, the CLI's convention that inputs without the batch dim mean
 * B = 1, and the length of arrays the API takes as bare pointers. Functions
 * returning int return 0 on success, else 1 (bad input) after printing the
 * error; `in` is the input file's path, for messages. */

/* Every tensor in st is one of names[0..n) or one of the parameters
 * ps[0..np) (ps may be NULL); else an error naming the tensor and `expected`. */
int attn_cli_check_names(const attn_safetensors *st, const char *in, const char *const *names,
                         int n, const attn_param *ps, int np, const char *expected);

/* Tensor `name` of st as F32 in *t: in place if F32, else converted from
 * F16/BF16/F64 into *converted (the caller frees it with attn_buffer_free;
 * NULL when nothing was converted). Absent: *t stays empty, an error when
 * required. */
int attn_cli_load_f32(attn_ctx *ctx, attn_safetensors *st, const char *in, const char *name,
                      int required, attn_tensor *t, float **converted);
/* The optional I32/I64 [B] tensor kv_len as int32 into *out (malloc, the
 * caller frees it; NULL when absent). Its values are the library's to check. */
/* The same from a view of the tensor's bytes (kl: I32 or I64, with data). */
int attn_cli_kv_len_of(const attn_tensor *kl, const char *in, int64_t B, int32_t **out);
int attn_cli_load_kv_len(attn_ctx *ctx, attn_safetensors *st, const char *in, int64_t B,
                         int32_t **out);

/* Inputs given without the batch dim: the view with a leading dim of 1, and
 * back (outputs of such inputs are written without it). */
attn_tensor attn_cli_add_dim0(attn_tensor t);
attn_tensor attn_cli_drop_dim0(attn_tensor t);

#endif /* ATTN_CLI_H */

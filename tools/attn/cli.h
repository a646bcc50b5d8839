/* Shared pieces of the attn command-line tool. */
#ifndef ATTN_CLI_H
#define ATTN_CLI_H

#include <attn/attn.h>

#include <stddef.h>
#include <stdint.h>

/* Each subcommand: argv[0] is the subcommand's name. Returns the exit status:
 * 0 success, 1 bad input or runtime failure, 2 bad usage. */
typedef int (*attn_cli_fn)(int argc, char **argv);

int attn_cmd_sdpa(int argc, char **argv);
int attn_cmd_bench(int argc, char **argv);
int attn_cmd_mha(int argc, char **argv);
int attn_cmd_train(int argc, char **argv);
int attn_cmd_tokenize(int argc, char **argv);
int attn_cmd_embed(int argc, char **argv);
int attn_cmd_similarity(int argc, char **argv);

/* Print "attn: error: <message>" to stderr. Returns `code` for `return cli_error(...)`. */
int attn_cli_error(int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Parse a whole decimal/float argument; 0 on success, -1 if not a number. */
int attn_cli_parse_long(const char *s, long *out);
int attn_cli_parse_float(const char *s, float *out);

/* ---- tensors in, results out (tools/attn/cli_io.c) ----
 * Functions returning int return 0 on success, else the exit status (1 bad
 * input, 2 bad usage) after printing the error; cmd is the subcommand's name
 * for messages, in the input file's path. */

/* An unsigned integer (decimal, 0x hex or 0 octal); 0 or -1 if not one. */
int attn_cli_parse_u64(const char *s, uint64_t *out);
/* --align's value: top-left or bottom-right. */
int attn_cli_parse_align(const char *cmd, const char *v, attn_align *out);
/* --window's value "L,R", each >= 0 or -1 (unbounded). */
int attn_cli_parse_window(const char *cmd, const char *v, long *left, long *right);

/* "[d0,d1,...]" into buf (truncated to n bytes). */
void attn_cli_shape_str(const attn_tensor *t, char *buf, size_t n);
/* The view without its leading dim (outputs of inputs given without B). */
attn_tensor attn_cli_drop_dim0(attn_tensor t);

/* Tensor `name` of st as F32 in *t: in place if F32, else converted from
 * F16/BF16/F64 into *converted (the caller frees it with attn_free; NULL when
 * nothing was converted). Absent: *t stays empty, an error when required. */
int attn_cli_load_f32(attn_ctx *ctx, attn_safetensors *st, const char *in, const char *name,
                      int required, attn_tensor *t, float **converted);
/* The optional I32/I64 [B] tensor kv_len, each in [0, S], into *out (malloc,
 * the caller frees it; NULL when absent). */
int attn_cli_load_kv_len(attn_ctx *ctx, attn_safetensors *st, const char *in, int64_t B, int64_t S,
                         int32_t **out);
/* 1 if mask m is [T,S] or [B|1,H|1,T,S]. */
int attn_cli_mask_shape_ok(const attn_tensor *m, int64_t B, int64_t H, int64_t T, int64_t S);

#endif /* ATTN_CLI_H */

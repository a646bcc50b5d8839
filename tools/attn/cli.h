/* Shared pieces of the attn command-line tool. */
#ifndef ATTN_CLI_H
#define ATTN_CLI_H

#include <attn/attn.h>

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

#endif /* ATTN_CLI_H */

/* Machine-readable outputs of the CLI: files written atomically (no partial
 * file is ever left behind), JSON strings, and .npy matrices. */
#ifndef ATTN_CLI_OUT_H
#define ATTN_CLI_OUT_H

#include <stdint.h>
#include <stdio.h>

/* Writes the content to f; returns 0, or nonzero after printing an error. */
typedef int (*attn_cli_writer)(FILE *f, void *arg);

/* Run write into `path` ("-" or NULL: stdout) by the library's output-file
 * rule (attn_outfile_open: a regular file atomically, a device or FIFO in
 * place, read-only files and dangling links refused). Every write, the
 * flush and the close are checked. Returns 0 or 1 (bad output, message
 * printed). */
int attn_cli_write_to(const char *path, attn_cli_writer write, void *arg);

/* 2 with "attn: error: OUT: the output is the input file IN" printed when
 * out and in name the same file (any link to it), else 0. "-" is never a
 * file. Checked before anything is written: an output replacing its input
 * destroys it. */
int attn_cli_same_file(const char *out, const char *in);

/* s[0..n) as a JSON string literal (quotes, escapes; UTF-8 passed through). */
void attn_cli_json_str(FILE *f, const char *s, size_t n);

/* A float32 C-order .npy matrix [rows, cols] (format version 1.0). */
int attn_cli_write_npy(FILE *f, const float *m, int64_t rows, int64_t cols);
/* Its header alone, for writers that stream the rows after it. */
void attn_cli_npy_header(FILE *f, int64_t rows, int64_t cols);

#endif /* ATTN_CLI_OUT_H */

/* attn embed, attn similarity and the attention display share these: texts
 * from arguments and --input lines, a model session, embedding. */
#ifndef ATTN_CLI_EMBED_H
#define ATTN_CLI_EMBED_H

#include "cli.h"

#include <stdint.h>
#include <stdio.h>

typedef struct texts {
    char **s;
    size_t *len;
    char **where; /* "argument 2", "FILE:7": for messages */
    int64_t n, cap;
    char *file; /* the --input file's bytes (texts point into it) */
} texts;

typedef struct session {
    attn_ctx *ctx;
    attn_model *model; /* the directory: tokenizer and encoder */
    const attn_bert *bert;
    const attn_tokenizer *tok;
    int32_t **ids;
    int64_t *len;
    const attn_bert_options *opt; /* NULL: attn_bert_embed; else attn_bert_embed_with */
    attn_bert_stats stats;        /* with opt: summed over the calls */
} session;

/* Append text s[0..len) with its place for messages (where_fmt with a, b). */
int embed_push(texts *t, char *s, size_t len, const char *where_fmt, const char *a, long b);
void embed_texts_free(texts *t);
/* Lines of FILE ('-' = stdin) as texts. */
int embed_read_lines(texts *t, const char *path);
/* Offset of the first byte that breaks UTF-8, or -1. */
long embed_utf8_error(const unsigned char *s, size_t n);
void embed_session_free(session *s, int64_t n);
int embed_open_model(session *s, const char *model, long threads);
int embed_tokenize_all(session *s, const texts *t);
/* Embeddings of every text into out [n, E] (see --bench). */
int embed_all(session *s, const texts *t, float *out, long bench);
/* embed_all without --bench, EMBED_BATCH texts per call: a text's numbers
 * depend on the texts it is batched with (attn_bert_embed pads and groups
 * texts), so every writer of `attn embed` (the jsonl stream, npy,
 * safetensors, the ranks of an MPI run) embeds the same blocks of lines:
 * texts [k * EMBED_BATCH, (k + 1) * EMBED_BATCH). */
enum { EMBED_BATCH = 1024 };
int embed_all_blocks(session *s, const texts *t, float *out);
/* At most `cols` columns of UTF-8 s to f ("…" when cut), padded when pad. */
void embed_put_label(FILE *f, const char *s, size_t n, int cols, int pad);
/* Read TEXT arguments and --input lines into t, checking UTF-8; 0, or the
 * exit status after printing the error. */
int embed_gather(texts *t, int argc, char **argv, int first, const char *input, const char *cmd,
                 void (*usage)(FILE *));

/* Help lines of the options every embedding command shares (--model, --input,
 * --threads). */
void embed_help_model(FILE *f);

/* --show-attention: one head's strongest links (display), or every layer's
 * and head's attention to FILE as json or safetensors (format != NULL). */
int embed_show_attention(session *s, const texts *t, long layer, long head);
int embed_export_attention(session *s, const texts *t, const char *format, const char *output);

/* Rows of embeddings to write: texts t with their embeddings e [t->n, E]. */
typedef struct embed_rows {
    const texts *t;
    int64_t base; /* texts written before these (streaming): ids count on */
    const float *e;
    int64_t E;
    const char *id; /* NULL, "line" or "tab" */
    char **ids;     /* --id tab: the ids */
    size_t *idlen;
} embed_rows;

/* The rows as JSON lines (arg: embed_rows); 0 or 1 after printing an error. */
int embed_write_jsonl(FILE *f, void *arg);
/* --id tab: split every text of t at its first tab into r's id and the text. */
int embed_split_ids(texts *t, embed_rows *r);

/* attn embed under mpirun (embed_mpi.c). embed_mpi_ranks: the rank count
 * Open MPI's launcher announces (OMPI_COMM_WORLD_SIZE), 1 when none. */
typedef struct embed_mpi_opts {
    const char *model, *input, *format, *output, *id;
    int threads, ntexts, bench, show; /* ntexts: TEXT arguments */
} embed_mpi_opts;
int embed_mpi_ranks(void);
/* The lines of o->input split over the ranks by byte ranges, one output in
 * input order, written by rank 0 (attn_mpi_lines_run); the exit status. */
int embed_mpi(const embed_mpi_opts *o);

#endif /* ATTN_CLI_EMBED_H */

/* attn explain: the analyses of one run, shared by the command
 * (cmd_explain.c) and its writers (explain_out.c: json and html,
 * explain_png.c: png). */
#ifndef ATTN_CLI_EXPLAIN_H
#define ATTN_CLI_EXPLAIN_H

#include "embed.h"

#include <stdint.h>
#include <stdio.h>

/* Attribution methods whose faithfulness is measured (random last;
 * relevance only with --relevance). */
enum { EX_ATTENTION, EX_ROLLOUT, EX_FLOW, EX_RELEVANCE, EX_RANDOM, EX_METHODS };
extern const char *const explain_method_names[EX_METHODS];

/* Everything computed for one text. */
typedef struct ex_text {
    int64_t T;
    const int32_t *ids;
    float *probs;           /* [L, H, T, T] */
    float *emb;             /* [E] */
    attn_head_stats *stats; /* [L, H] */
    float *row_entropy;     /* [L, H, T] */
    uint8_t *cls;           /* [T] ATTN_TOKEN_* */
    float *rollout;         /* [T, T] */
    float *flow;            /* [flow_rows, T], rows 0 .. flow_rows - 1 */
    int64_t flow_rows;
    float *relevance;        /* [T, T] (--relevance) or NULL */
    double relevance_output; /* the output y it explains */
    float *w;                /* [E] the w of y = w . embedding; --faithfulness then tracks w . e */
    float *score[EX_RELEVANCE + 1]; /* [T] per method (NULL: not computed): token
                                     * attribution under the pooling */
    float *curve[EX_METHODS];       /* [steps + 1] deletion curves (--faithfulness) */
} ex_text;

typedef struct ex_run {
    session *s;
    const texts *t;
    int64_t L, H, E, n;
    int64_t layer, head;   /* selected for --png and the explorer's first view */
    int png_rollout;       /* --png-map rollout */
    const char *relevance; /* --relevance: "similarity" or "dim:K", or NULL */
    int64_t relevance_dim; /* K of dim:K, -1 for similarity */
    ex_text *x;            /* [n] */
    /* --heads */
    float *importance; /* [L, H] or NULL */
    float *prune;      /* [L*H + 1] */
    int64_t *order;    /* [L*H] */
    int64_t heads_texts;
    /* --faithfulness */
    int64_t steps; /* 0: not run */
    int64_t random_orders;
    double area[EX_METHODS]; /* mean area over texts */
    /* two or more texts: text 0 against text 1 */
    double similarity;
    float *token_similarity; /* [T0, T1] cosine of last hidden states, or NULL */
    /* the JSON document once formatted (--json and --html share it), or NULL */
    char *json;
    size_t json_n;
} ex_run;

int explain_write_json(FILE *f, void *run);
/* r->json from explain_write_json; 0, or 1 after printing the error. */
int explain_format_json(ex_run *r);
/* Writes r->json as formatted (an attn_cli_writer). */
int explain_write_json_cached(FILE *f, void *run);
int explain_write_html(FILE *f, void *run);
int explain_write_png(const char *path, const ex_run *r);

#endif /* ATTN_CLI_EXPLAIN_H */

/* The one option parser of the attn subcommands.
 *
 * Every command declares its options in a table of cli_opt and calls
 * attn_cli_parse: "--opt value" and "--opt=value" both work for every option
 * that takes a value, a flag given "=value" is an error, and numbers are read
 * and range-checked the same way everywhere with the same messages.
 *
 * Exit status rule (every command): 0 success; 2 bad usage, which includes
 * any option value that is malformed or outside its declared range and
 * options that contradict each other; 1 bad input (a file, a tensor, a text)
 * or a runtime failure. So the same bad value gets the same status, and the
 * same message, in every command. */
#ifndef ATTN_CLI_ARGS_H
#define ATTN_CLI_ARGS_H

#include <float.h>
#include <stdint.h>
#include <stdio.h>

typedef enum cli_kind {
    CLI_FLAG,   /* int *dst = 1; "--flag=x" is bad usage */
    CLI_INT,    /* int *dst: a decimal integer in [lo, hi] (within int's range) */
    CLI_FLOAT,  /* float *dst: a finite number in [lo, hi]; see CLI_LO_OPEN, CLI_HI_OPEN */
    CLI_SEED,   /* uint64_t *dst: a decimal integer in [0, 2^64 - 1] */
    CLI_STRING, /* const char **dst: the value as given */
    CLI_CUSTOM, /* parse(cmd, name, value, dst): 0, or 2 after printing the error */
} cli_kind;

enum { CLI_LO_OPEN = 1, CLI_HI_OPEN = 2 };

typedef struct cli_opt {
    const char *name; /* "--threads" */
    cli_kind kind;
    void *dst;
    double lo, hi; /* CLI_INT, CLI_FLOAT: the allowed range */
    int open;      /* CLI_FLOAT: CLI_LO_OPEN / CLI_HI_OPEN exclude that end */
    int (*parse)(const char *cmd, const char *name, const char *value, void *dst);
} cli_opt;

/* No upper bound (CLI_FLOAT), no lower bound. */
#define CLI_INF DBL_MAX
/* The common options: the same name, range and meaning in every command. */
#define CLI_OPT_THREADS(dst)                                                                       \
    { "--threads", CLI_INT, (dst), 0, 4096, 0, NULL }
#define CLI_OPT_SEED(dst)                                                                          \
    { "--seed", CLI_SEED, (dst), 0, 0, 0, NULL }
#define CLI_OPT_DROPOUT(dst)                                                                       \
    { "--dropout", CLI_FLOAT, (dst), 0, 1, CLI_HI_OPEN, NULL }
#define CLI_OPT_ALIGN(dst)                                                                         \
    { "--align", CLI_CUSTOM, (dst), 0, 0, 0, attn_cli_parse_align }
#define CLI_OPT_WINDOW(dst)                                                                        \
    { "--window", CLI_CUSTOM, (dst), 0, 0, 0, attn_cli_parse_window }

/* Positional arguments: with CLI_POS_ANYWHERE they may sit between options
 * (attn sdpa IN OUT --causal); with CLI_POS_REST the first one, or "--",
 * ends the options and everything after it is positional (texts that may
 * start with '-'). "-" alone is always positional. */
enum { CLI_POS_ANYWHERE = 0, CLI_POS_REST = 1 };

typedef struct cli_spec {
    const char *cmd; /* "sdpa": prefixes messages */
    const cli_opt *opts;
    int nopts;
    void (*usage)(FILE *); /* printed to stdout for -h / --help */
    int pos_mode;
    int max_pos; /* CLI_POS_ANYWHERE: more positionals are bad usage */
} cli_spec;

/* Parse argv[1..argc) (argv[0] is the subcommand). Positionals go to
 * pos[0..*npos) (CLI_POS_ANYWHERE; pos may be NULL when max_pos is 0) or,
 * with CLI_POS_REST, are argv[*npos ..] where *npos receives the index of the
 * first one (argc when there is none). Returns -1 to go on, 0 after printing
 * the help, 2 after printing a usage error. */
int attn_cli_parse(const cli_spec *spec, int argc, char **argv, const char **pos, int *npos);
/* The same, and seen[k] (an array of spec->nopts, zeroed by the caller) set to
 * 1 when opts[k] is given: for options whose meaning depends on whether they
 * were given at all, not only on the value. */
int attn_cli_parse_seen(const cli_spec *spec, int argc, char **argv, const char **pos, int *npos,
                        unsigned char *seen);

/* Number parsing shared by the options and by values inside them (--window
 * L,R): the whole string must be the number. 0 on success, -1 otherwise. */
int attn_cli_parse_long(const char *s, long *out);
int attn_cli_parse_float(const char *s, float *out);

/* CLI_CUSTOM parsers. --align: top-left | bottom-right into attn_align.
 * --window: "L,R", each >= 0 or -1 (unbounded), into cli_window. */
int attn_cli_parse_align(const char *cmd, const char *name, const char *v, void *dst);
/* --weights: f32 | bf16 into an int, 0 or 1 (a decoder's weight storage). */
int attn_cli_parse_weights(const char *cmd, const char *name, const char *v, void *dst);
#define CLI_OPT_WEIGHTS(dst)                                                                       \
    { "--weights", CLI_CUSTOM, (dst), 0, 0, 0, attn_cli_parse_weights }
typedef struct cli_window {
    int on;
    long left, right;
} cli_window;
int attn_cli_parse_window(const char *cmd, const char *name, const char *v, void *dst);

#endif /* ATTN_CLI_ARGS_H */

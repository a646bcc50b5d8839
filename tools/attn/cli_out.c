/* Machine-readable outputs (see cli_out.h). */
#include "cli_out.h"

#include "cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int attn_cli_write_to(const char *path, attn_cli_writer write, void *arg) {
    if (!path || !strcmp(path, "-")) {
        int rc = write(stdout, arg);
        if ((fflush(stdout) || ferror(stdout)) && !rc)
            rc = attn_cli_error(1, "stdout: cannot write the output: %s", strerror(errno));
        return rc;
    }
    attn_ctx *ctx = NULL;
    if (attn_ctx_create(&ctx, 1)) return attn_cli_error(1, "out of memory");
    attn_outfile *o = NULL;
    if (attn_outfile_open(ctx, path, &o)) {
        int rc = attn_cli_error(1, "%s", attn_ctx_last_error(ctx));
        attn_ctx_free(ctx);
        return rc;
    }
    int fd = dup(attn_outfile_fd(o));
    FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    int rc = f ? write(f, arg) : attn_cli_error(1, "%s: %s", path, strerror(errno));
    if (!f && fd >= 0) close(fd);
    if (f && (fflush(f) || ferror(f)) && !rc)
        rc = attn_cli_error(1, "%s: cannot write the output: %s", path, strerror(errno));
    if (f && fclose(f) && !rc)
        rc = attn_cli_error(1, "%s: cannot write the output: %s", path, strerror(errno));
    if (rc)
        attn_outfile_abort(o);
    else if (attn_outfile_commit(ctx, o))
        rc = attn_cli_error(1, "%s", attn_ctx_last_error(ctx));
    attn_ctx_free(ctx);
    return rc;
}

int attn_cli_same_file(const char *out, const char *in) {
    if (!out || !in || !strcmp(out, "-") || !strcmp(in, "-")) return 0;
    struct stat so, si;
    if (stat(out, &so) || stat(in, &si)) return 0;
    if (so.st_dev != si.st_dev || so.st_ino != si.st_ino) return 0;
    return attn_cli_error(2, "%s: the output is the input file %s; name another output", out, in);
}

void attn_cli_json_str(FILE *f, const char *s, size_t n) {
    putc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c == '\t')
            fputs("\\t", f);
        else if (c == '\r')
            fputs("\\r", f);
        else if (c < 0x20 || c == 0x7f)
            fprintf(f, "\\u%04x", c);
        else
            putc(c, f);
    }
    putc('"', f);
}

void attn_cli_npy_header(FILE *f, int64_t rows, int64_t cols) {
    char dict[128];
    int dn = snprintf(dict, sizeof dict,
                      "{'descr': '<f4', 'fortran_order': False, 'shape': (%lld, %lld), }",
                      (long long)rows, (long long)cols);
    /* magic (6) + version (2) + length (2) + dict, padded with spaces and a
     * final newline to a multiple of 64 bytes, as numpy writes it */
    int total = 10 + dn + 1;
    int pad = (64 - total % 64) % 64;
    unsigned hl = (unsigned)(dn + pad + 1);
    unsigned char pre[10] = {
        0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hl & 0xff), (unsigned char)(hl >> 8)};
    fwrite(pre, 1, sizeof pre, f);
    fwrite(dict, 1, (size_t)dn, f);
    for (int i = 0; i < pad; i++)
        putc(' ', f);
    putc('\n', f);
}

int attn_cli_write_npy(FILE *f, const float *m, int64_t rows, int64_t cols) {
    attn_cli_npy_header(f, rows, cols);
    /* little-endian float32, as on every machine this builds for (x86-64) */
    size_t n = (size_t)(rows * cols);
    if (fwrite(m, sizeof *m, n, f) != n)
        return attn_cli_error(1, "write failed: %s", strerror(errno));
    return 0;
}

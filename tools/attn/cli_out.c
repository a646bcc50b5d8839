/* Machine-readable outputs (see cli_out.h). */
#include "cli_out.h"

#include "cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int attn_cli_write_to(const char *path, attn_cli_writer write, void *arg) {
    if (!path || !strcmp(path, "-")) {
        int rc = write(stdout, arg);
        if (fflush(stdout) && !rc)
            rc = attn_cli_error(1, "stdout: write failed: %s", strerror(errno));
        return rc;
    }
    size_t n = strlen(path);
    char *tmp = malloc(n + 16);
    if (!tmp) return attn_cli_error(1, "out of memory");
    snprintf(tmp, n + 16, "%s.tmp-XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int e = errno;
        free(tmp);
        return attn_cli_error(1, "%s: cannot create: %s", path, strerror(e));
    }
    FILE *f = fdopen(fd, "wb");
    int rc = f ? write(f, arg) : attn_cli_error(1, "%s: %s", path, strerror(errno));
    if (!rc && (fflush(f) || fsync(fd)))
        rc = attn_cli_error(1, "%s: write failed: %s", path, strerror(errno));
    if (f ? fclose(f) : close(fd)) {
        if (!rc) rc = attn_cli_error(1, "%s: write failed: %s", path, strerror(errno));
    }
    if (!rc && rename(tmp, path))
        rc = attn_cli_error(1, "%s: cannot write: %s", path, strerror(errno));
    if (rc) unlink(tmp);
    free(tmp);
    return rc;
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

int attn_cli_write_npy(FILE *f, const float *m, int64_t rows, int64_t cols) {
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
    /* little-endian float32, as on every machine this builds for (x86-64) */
    size_t n = (size_t)(rows * cols);
    if (fwrite(m, sizeof *m, n, f) != n)
        return attn_cli_error(1, "write failed: %s", strerror(errno));
    return 0;
}

/* Output files: the one rule for what writing to a path does (io.h,
 * attn_outfile_open). Every writer of the library and the CLI goes through
 * it, so /dev/null, a FIFO, a symbolic link or a read-only file mean the
 * same thing to `attn sdpa`, `attn embed --output` and
 * attn_safetensors_write. */
/* realpath */
#undef _POSIX_C_SOURCE
#define _XOPEN_SOURCE 700
#include "core/internal.h"

#include <attn/io.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct attn_outfile {
    int fd;
    char *path; /* the file written: the link's target for a symbolic link */
    char *tmp;  /* the temporary file renamed over path; NULL when written in place */
};

/* Flush the directory entry made by rename so the new name survives a crash.
 * Best effort: the file itself is complete either way. */
static void sync_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir) return;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    free(dir);
}

static attn_status fail_free(attn_ctx *ctx, attn_outfile *o, attn_status s, const char *fmt,
                             const char *path, const char *why) {
    attn_ctx_fail(ctx, s, fmt, path, why);
    if (o) {
        free(o->path);
        free(o->tmp);
        free(o);
    }
    return s;
}

attn_status attn_outfile_open(attn_ctx *ctx, const char *path, attn_outfile **out) {
    if (!out) return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_outfile_open: out is NULL");
    *out = NULL;
    if (!path || !*path) return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_outfile_open: empty path");
    attn_outfile *o = calloc(1, sizeof *o);
    if (!o) return attn_ctx_fail(ctx, ATTN_E_NOMEM, "%s: out of memory", path);
    o->fd = -1;
    struct stat st;
    int exists = lstat(path, &st) == 0;
    if (!exists && errno != ENOENT)
        return fail_free(ctx, o, ATTN_E_IO, "%s: cannot write there: %s", path, strerror(errno));
    if (exists && S_ISLNK(st.st_mode)) {
        /* a symbolic link is followed: its target is written by the rules
         * below and the link stays a link */
        char *real = realpath(path, NULL);
        if (!real || stat(real, &st))
            return fail_free(ctx, o, ATTN_E_IO,
                             "%s: a symbolic link to a file that does not exist (%s); "
                             "name the target itself",
                             path, strerror(errno));
        o->path = real;
    } else if (!(o->path = strdup(path))) {
        return fail_free(ctx, o, ATTN_E_NOMEM, "%s: out of memory%s", path, "");
    }
    if (exists) {
        if (S_ISDIR(st.st_mode))
            return fail_free(ctx, o, ATTN_E_IO, "%s: %s", path, "is a directory");
        if (S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode)) {
            /* a device (/dev/null, a terminal) or a pipe is written through,
             * in place: never replaced by a regular file */
            o->fd = open(o->path, O_WRONLY | O_CLOEXEC | O_NOCTTY);
            if (o->fd < 0)
                return fail_free(ctx, o, ATTN_E_IO, "%s: cannot open: %s", path, strerror(errno));
            *out = o;
            attn__ctx_clear(ctx);
            return ATTN_OK;
        }
        if (!S_ISREG(st.st_mode))
            return fail_free(ctx, o, ATTN_E_IO, "%s: %s", path,
                             "is not a regular file, a character device or a FIFO; refused");
        /* a read-only file stays as it is, as the shell's > leaves it (root
         * included: write permission bits all clear) */
        if (access(o->path, W_OK) || !(st.st_mode & (S_IWUSR | S_IWGRP | S_IWOTH)))
            return fail_free(ctx, o, ATTN_E_IO, "%s: %s", path,
                             "is read-only; refused (make it writable or remove it first)");
    }
    size_t n = strlen(o->path) + 64;
    if (!(o->tmp = malloc(n)))
        return fail_free(ctx, o, ATTN_E_NOMEM, "%s: out of memory%s", path, "");
    static atomic_uint counter;
    for (int tries = 0; o->fd < 0; tries++) {
        snprintf(o->tmp, n, "%s.tmp-%ld-%u", o->path, (long)getpid(),
                 (unsigned)atomic_fetch_add(&counter, 1));
        o->fd = open(o->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (o->fd < 0 && (errno != EEXIST || tries > 100))
            return fail_free(ctx, o, ATTN_E_IO, "%s: cannot create a file there: %s", path,
                             strerror(errno));
    }
    /* an existing file keeps its permission bits */
    if (exists) (void)fchmod(o->fd, st.st_mode & 07777);
    *out = o;
    attn__ctx_clear(ctx);
    return ATTN_OK;
}

int attn_outfile_fd(const attn_outfile *o) {
    return o ? o->fd : -1;
}

attn_status attn_outfile_commit(attn_ctx *ctx, attn_outfile *o) {
    if (!o) return attn_ctx_fail(ctx, ATTN_E_ARG, "attn_outfile_commit: NULL");
    attn_status s = ATTN_OK;
    if (o->tmp && fsync(o->fd))
        s = attn_ctx_fail(ctx, ATTN_E_IO, "%s: fsync failed: %s", o->path, strerror(errno));
    if (close(o->fd) && !s)
        s = attn_ctx_fail(ctx, ATTN_E_IO, "%s: write failed: %s", o->path, strerror(errno));
    o->fd = -1;
    if (!s && o->tmp) {
        if (rename(o->tmp, o->path))
            s = attn_ctx_fail(ctx, ATTN_E_IO, "%s: cannot replace: %s", o->path, strerror(errno));
        else {
            free(o->tmp);
            o->tmp = NULL;
            sync_dir(o->path);
        }
    }
    attn_outfile_abort(o);
    return s;
}

void attn_outfile_abort(attn_outfile *o) {
    if (!o) return;
    if (o->fd >= 0) close(o->fd);
    if (o->tmp) unlink(o->tmp);
    free(o->tmp);
    free(o->path);
    free(o);
}

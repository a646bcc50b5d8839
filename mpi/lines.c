/* attn_mpi_lines_run: a text file's lines split over MPI ranks by byte
 * ranges, each rank's output spooled, rank 0 writing one output in input
 * order (include/attn/mpi.h). */
#define _GNU_SOURCE /* getline, fseeko */
#include <attn/mpi.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum {
    TAG_FAIL = 31, /* "I failed: stop" notes, one int, any rank to any rank */
    TAG_SIZE,      /* a rank's spool size, to rank 0 */
    TAG_DATA,      /* its bytes, CHUNK at a time */
    TAG_DONE,      /* its status after the last chunk */
    CHUNK = 1 << 20,
    MSG = 512,
};

typedef struct lines_run {
    attn_ctx *ctx;
    const attn_mpi_lines_job *job;
    MPI_Comm comm;
    int P, rank;
    attn_status st; /* this rank's first failure */
    char msg[MSG];  /* its message */
    /* the early stop: a posted receive for any rank's note, the notes sent */
    MPI_Request note_in, *note_out;
    int note, note_got, notes_sent;
    FILE *in, *spool;
    int64_t base, mine, total; /* first line (from 0), lines of this rank, of all */
} lines_run;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Record this rank's first failure and tell every other rank to stop. */
static void fail(lines_run *r, attn_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static void fail(lines_run *r, attn_status st, const char *fmt, ...) {
    if (r->st) return;
    r->st = st;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->msg, sizeof r->msg, fmt, ap);
    va_end(ap);
    if (!r->note_out) return;
    for (int d = 0; d < r->P; d++)
        if (d != r->rank)
            MPI_Isend(&r->note, 1, MPI_INT, d, TAG_FAIL, r->comm, &r->note_out[r->notes_sent++]);
}

/* Has another rank failed? (polls the posted note receive) */
static int told_to_stop(lines_run *r) {
    if (!r->note_got) MPI_Test(&r->note_in, &r->note_got, MPI_STATUS_IGNORE);
    return r->note_got;
}

/* Every rank learns the first failing rank and gets its status and message;
 * the failure notes are all received (so every send completes). Returns the
 * agreed status. */
static attn_status agree(lines_run *r) {
    int v[2] = {r->st ? r->rank : r->P, r->notes_sent > 0}, w[2];
    MPI_Allreduce(&v[0], &w[0], 1, MPI_INT, MPI_MIN, r->comm);
    MPI_Allreduce(&v[1], &w[1], 1, MPI_INT, MPI_SUM, r->comm);
    /* notes addressed to me: one from every rank that sent them, except me */
    int expect = w[1] - (r->notes_sent > 0), got = 0;
    if (expect > 0) {
        if (!r->note_got) MPI_Wait(&r->note_in, MPI_STATUS_IGNORE);
        r->note_got = 1;
        got = 1;
        for (; got < expect; got++) {
            int x;
            MPI_Recv(&x, 1, MPI_INT, MPI_ANY_SOURCE, TAG_FAIL, r->comm, MPI_STATUS_IGNORE);
        }
        /* a fresh receive for later phases */
        MPI_Irecv(&r->note, 1, MPI_INT, MPI_ANY_SOURCE, TAG_FAIL, r->comm, &r->note_in);
        r->note_got = 0;
    }
    if (r->notes_sent) MPI_Waitall(r->notes_sent, r->note_out, MPI_STATUSES_IGNORE);
    r->notes_sent = 0;
    int first = w[0];
    if (first == r->P) return ATTN_OK;
    int st = r->st;
    MPI_Bcast(&st, 1, MPI_INT, first, r->comm);
    char m[MSG];
    memcpy(m, r->msg, sizeof m);
    MPI_Bcast(m, MSG, MPI_CHAR, first, r->comm);
    m[MSG - 1] = 0;
    r->st = (attn_status)st;
    return attn_ctx_fail(r->ctx, (attn_status)st, "rank %d of %d: %s", first, r->P, m);
}

/* Open the input, check it is the same size everywhere, find this rank's
 * first line start and count its lines (reading its range only). */
static void open_range(lines_run *r, int64_t *begin, int64_t *end, int64_t *size) {
    const char *path = r->job->input;
    *begin = *end = *size = 0;
    /* every rank takes part in the size check, also one that could not open
     * its input (size -1), so the collectives always match */
    int64_t Z = -1, lo, hi;
    struct stat s;
    if (!(r->in = fopen(path, "rb")))
        fail(r, ATTN_E_IO, "%s: cannot open: %s", path, strerror(errno));
    else if (fstat(fileno(r->in), &s) || !S_ISREG(s.st_mode))
        fail(r, ATTN_E_IO, "%s: not a regular file (a pipe or stdin cannot be split by ranks)",
             path);
    else
        Z = (int64_t)s.st_size;
    MPI_Allreduce(&Z, &lo, 1, MPI_INT64_T, MPI_MIN, r->comm);
    MPI_Allreduce(&Z, &hi, 1, MPI_INT64_T, MPI_MAX, r->comm);
    *size = Z;
    if (r->st || lo < 0) return; /* a rank failed: it says why */
    if (lo != hi) {
        fail(r, ATTN_E_ARG, "%s: the input differs between ranks (%lld to %lld bytes)", path,
             (long long)lo, (long long)hi);
        return;
    }
    if (Z == 0) {
        fail(r, ATTN_E_FORMAT, "%s: empty input file (one text per line expected)", path);
        return;
    }
    /* byte ranges [Z*r/P, Z*(r+1)/P), in 128 bits: Z*r may pass 2^63 */
    int64_t a = (int64_t)((__int128)Z * r->rank / r->P),
            e = (int64_t)((__int128)Z * (r->rank + 1) / r->P);
    if (a > 0) { /* the line that holds byte a-1 belongs to a rank before */
        if (fseeko(r->in, (off_t)(a - 1), SEEK_SET)) {
            fail(r, ATTN_E_IO, "%s: cannot seek: %s", path, strerror(errno));
            return;
        }
        int c;
        a--;
        while ((c = getc(r->in)) != EOF) {
            a++;
            if (c == '\n') break;
        }
        if (c == EOF) a = Z;
    }
    *begin = a, *end = e;
    /* lines: one starting at a (if a < e), and one after every '\n' in [a, e-1) */
    int64_t n = a < e, pos = a;
    char *buf = malloc(1 << 16);
    if (!buf) {
        fail(r, ATTN_E_NOMEM, "out of memory");
        return;
    }
    if (fseeko(r->in, (off_t)a, SEEK_SET)) fail(r, ATTN_E_IO, "%s: cannot seek", path);
    while (!r->st && pos < e - 1) {
        size_t want = (size_t)(e - 1 - pos < (1 << 16) ? e - 1 - pos : (1 << 16));
        size_t got = fread(buf, 1, want, r->in);
        for (size_t i = 0; i < got; i++)
            n += buf[i] == '\n';
        pos += (int64_t)got;
        if (got < want) fail(r, ATTN_E_IO, "%s: read error (the file shrank?)", path);
    }
    free(buf);
    r->mine = n;
    if (!r->st && fseeko(r->in, (off_t)a, SEEK_SET))
        fail(r, ATTN_E_IO, "%s: cannot seek: %s", path, strerror(errno));
}

/* Move the rank boundaries from line starts to batch starts: rank r's
 * first line becomes the multiple of `batch` (lines from the file's first)
 * nearest to the first line of its byte range, so every batch holds the
 * lines a single process reading `batch` at a time would group, and the
 * results (which may depend on a line's batch mates) are the same; the
 * nearest one, so ranks differ by at most one batch of lines from the byte
 * split. Each rank finds the byte offsets of the batch starts in its range
 * (a second pass over it) and all ranks share them (MPI_Allgatherv), since
 * a rank may now start in the range of a rank before it. Collective: every
 * rank calls it, failed or not. `a`: where this rank's first line starts. */
static void align_batches(lines_run *r, int64_t a) {
    const int64_t b = r->job->batch;
    int ok = !r->st;
    /* the batch starts k*b in [base, base + mine): their offsets */
    int64_t k0 = (r->base + b - 1) / b, k1 = (r->base + r->mine + b - 1) / b;
    int n = ok ? (int)(k1 - k0) : 0, got = 0;
    int64_t *mine = malloc(((size_t)n + 1) * sizeof *mine), pos = a, line = r->base;
    if (!mine) fail(r, ATTN_E_NOMEM, "out of memory"), n = 0;
    if (n > 0 && fseeko(r->in, (off_t)a, SEEK_SET))
        fail(r, ATTN_E_IO, "%s: cannot seek", r->job->input), n = 0;
    if (n > 0 && line % b == 0) mine[got++] = pos;
    while (got < n) {
        int c = getc(r->in);
        if (c == EOF) {
            fail(r, ATTN_E_IO, "%s: read error (the file shrank?)", r->job->input);
            n = got;
            break;
        }
        pos++;
        if (c == '\n' && ++line % b == 0) mine[got++] = pos;
    }
    int *counts = calloc((size_t)r->P, sizeof *counts),
        *displs = calloc((size_t)r->P, sizeof *displs);
    int64_t *all = NULL, nall = 0;
    ok = counts && displs;
    MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, r->comm);
    if (ok) {
        MPI_Allgather(&n, 1, MPI_INT, counts, 1, MPI_INT, r->comm);
        for (int i = 0; i < r->P; i++)
            displs[i] = (int)nall, nall += counts[i];
        ok = (all = malloc(((size_t)nall + 1) * sizeof *all)) != NULL;
        MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, r->comm);
        if (ok) MPI_Allgatherv(mine, n, MPI_INT64_T, all, counts, displs, MPI_INT64_T, r->comm);
    }
    if (!ok) fail(r, ATTN_E_NOMEM, "out of memory for the batch offsets");
    if (!r->st) {
        /* round half up to a batch start; the last rank ends at the end */
        int64_t next = r->base + r->mine;
        int64_t from = r->rank == 0 ? 0 : (r->base + b / 2) / b * b;
        int64_t to = r->rank == r->P - 1 ? r->total : (next + b / 2) / b * b;
        if (from > r->total) from = r->total;
        if (to > r->total) to = r->total;
        if (to < from) to = from;
        if (from < to && (from / b >= nall || fseeko(r->in, (off_t)all[from / b], SEEK_SET)))
            fail(r, ATTN_E_IO, "%s: cannot seek to line %lld", r->job->input, (long long)from + 1);
        r->base = from, r->mine = to - from;
    }
    free(all), free(counts), free(displs), free(mine);
}

typedef struct batch {
    char **s;
    size_t *len;
    int64_t n;
} batch;

static void batch_clear(batch *b) {
    for (int64_t i = 0; i < b->n; i++)
        free(b->s[i]);
    b->n = 0;
}

/* Stream this rank's lines (from where align_batches left the file) through
 * job->each into the spool. */
static void stream(lines_run *r) {
    const attn_mpi_lines_job *job = r->job;
    batch b = {calloc((size_t)job->batch, sizeof(char *)),
               calloc((size_t)job->batch, sizeof(size_t)), 0};
    if (!b.s || !b.len)
        fail(r, ATTN_E_NOMEM, "out of memory for a batch of %lld lines", (long long)job->batch);
    int64_t done = 0;
    double t0 = now_s(), last = t0;
    while (!r->st && done < r->mine && !told_to_stop(r)) {
        while (b.n < job->batch && done + b.n < r->mine) {
            char *line = NULL;
            size_t cap = 0;
            errno = 0;
            ssize_t got = getline(&line, &cap, r->in);
            if (got < 0) {
                int nomem = errno == ENOMEM;
                free(line);
                fail(r, nomem ? ATTN_E_NOMEM : ATTN_E_IO, "%s:%lld: %s", job->input,
                     (long long)(r->base + done + b.n + 1),
                     nomem ? "out of memory reading the line" : "read error");
                break;
            }
            size_t len = (size_t)got;
            if (len && line[len - 1] == '\n') len--;
            if (len && line[len - 1] == '\r') len--;
            line[len] = '\0';
            b.s[b.n] = line;
            b.len[b.n++] = len;
        }
        if (!r->st && b.n > 0) {
            char m[MSG] = "";
            attn_status st =
                job->each(job->user, r->base + done + 1, b.n, b.s, b.len, r->spool, m, sizeof m);
            if (st)
                fail(r, st, "%s", m[0] ? m : attn_status_str(st));
            else if (ferror(r->spool))
                fail(r, ATTN_E_IO, "cannot write this rank's spool file in TMPDIR: %s",
                     strerror(errno));
            done += b.n;
        }
        batch_clear(&b);
        double t = now_s();
        if (job->progress && r->rank == 0 && t - last >= 1.0) {
            last = t;
            fprintf(job->progress,
                    "%s: rank 0 of %d: %lld of its %lld lines (%.0f%%), %.1f lines/s; "
                    "%lld lines in all\n",
                    job->what ? job->what : "lines", r->P, (long long)done, (long long)r->mine,
                    r->mine ? 100.0 * (double)done / (double)r->mine : 100.0,
                    (double)done / (t - t0), (long long)r->total);
            fflush(job->progress);
        }
    }
    if (!r->st && !told_to_stop(r) && done != r->mine)
        fail(r, ATTN_E_IO, "%s: %lld lines where %lld were counted (the file changed?)", job->input,
             (long long)done, (long long)r->mine);
    batch_clear(&b);
    free(b.s), free(b.len);
}

/* Rank 0: header, then every spool in rank order, to the output. Other
 * ranks: send their spool. Every rank ends agreed. */
static attn_status write_out(lines_run *r) {
    const attn_mpi_lines_job *job = r->job;
    char *buf = malloc(CHUNK);
    int bad = !buf;
    int64_t size = 0;
    if (!bad && (fflush(r->spool) || (size = (int64_t)ftello(r->spool)) < 0 ||
                 fseeko(r->spool, 0, SEEK_SET)))
        bad = 1;
    if (bad) fail(r, buf ? ATTN_E_IO : ATTN_E_NOMEM, "cannot read back this rank's spool file");
    attn_status st = agree(r); /* every rank can send / rank 0 can receive */
    if (st) {
        free(buf);
        return st;
    }
    if (r->rank != 0) {
        int ok = 1;
        MPI_Send(&size, 1, MPI_INT64_T, 0, TAG_SIZE, r->comm);
        for (int64_t off = 0; off < size; off += CHUNK) {
            int n = (int)(size - off < CHUNK ? size - off : CHUNK);
            if (ok && fread(buf, 1, (size_t)n, r->spool) != (size_t)n) ok = 0;
            MPI_Send(buf, n, MPI_BYTE, 0, TAG_DATA, r->comm);
        }
        MPI_Send(&ok, 1, MPI_INT, 0, TAG_DONE, r->comm);
        free(buf);
        return agree(r);
    }
    attn_outfile *of = NULL;
    FILE *f = stdout;
    int to_file = job->output && strcmp(job->output, "-");
    if (to_file) {
        int fd = -1;
        if (attn_outfile_open(r->ctx, job->output, &of) == ATTN_OK) fd = dup(attn_outfile_fd(of));
        f = fd >= 0 ? fdopen(fd, "wb") : NULL;
        if (!f && fd >= 0) close(fd);
        if (!f) {
            if (of)
                fail(r, ATTN_E_IO, "%s: %s", job->output, strerror(errno));
            else
                fail(r, ATTN_E_IO, "%s", attn_ctx_last_error(r->ctx));
        }
    }
    char m[MSG] = "";
    if (!r->st && job->header) {
        attn_status hs = job->header(job->user, r->total, f, m, sizeof m);
        if (hs) fail(r, hs, "%s", m[0] ? m : attn_status_str(hs));
    }
    for (int src = 0; src < r->P; src++) {
        int64_t n = size;
        if (src) MPI_Recv(&n, 1, MPI_INT64_T, src, TAG_SIZE, r->comm, MPI_STATUS_IGNORE);
        for (int64_t off = 0; off < n; off += CHUNK) {
            int k = (int)(n - off < CHUNK ? n - off : CHUNK);
            if (src) {
                MPI_Recv(buf, k, MPI_BYTE, src, TAG_DATA, r->comm, MPI_STATUS_IGNORE);
            } else if (!r->st && fread(buf, 1, (size_t)k, r->spool) != (size_t)k) {
                fail(r, ATTN_E_IO, "cannot read back rank 0's spool file");
            }
            /* after a failure the bytes are still received, so no rank blocks */
            if (!r->st && f && fwrite(buf, 1, (size_t)k, f) != (size_t)k)
                fail(r, ATTN_E_IO, "%s: cannot write the output: %s",
                     job->output ? job->output : "stdout", strerror(errno));
        }
        int ok = 1;
        if (src) MPI_Recv(&ok, 1, MPI_INT, src, TAG_DONE, r->comm, MPI_STATUS_IGNORE);
        if (!ok) fail(r, ATTN_E_IO, "rank %d could not read back its spool file", src);
    }
    free(buf);
    if (f && (fflush(f) || ferror(f)))
        fail(r, ATTN_E_IO, "%s: cannot write the output: %s", job->output ? job->output : "stdout",
             strerror(errno));
    if (to_file && f && fclose(f))
        fail(r, ATTN_E_IO, "%s: cannot write the output: %s", job->output, strerror(errno));
    if (r->st) {
        attn_outfile_abort(of);
    } else if (of && attn_outfile_commit(r->ctx, of)) {
        fail(r, ATTN_E_IO, "%s", attn_ctx_last_error(r->ctx));
    }
    return agree(r);
}

attn_status attn_mpi_lines_run(attn_ctx *ctx, MPI_Comm comm, const attn_mpi_lines_job *job,
                               int64_t *total) {
    if (!ctx) return ATTN_E_ARG;
    if (total) *total = 0;
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (!init || fin)
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "attn_mpi_lines_run: MPI is %s (the caller must call MPI_Init first)",
                             fin ? "already finalised" : "not initialised");
    if (comm == MPI_COMM_NULL)
        return attn_ctx_fail(ctx, ATTN_E_ARG,
                             "attn_mpi_lines_run: the communicator is MPI_COMM_NULL");
    lines_run r;
    memset(&r, 0, sizeof r);
    r.ctx = ctx, r.job = job;
    if (MPI_Comm_dup(comm, &r.comm) != MPI_SUCCESS)
        return attn_ctx_fail(ctx, ATTN_E_IO, "attn_mpi_lines_run: MPI_Comm_dup failed");
    MPI_Comm_size(r.comm, &r.P);
    MPI_Comm_rank(r.comm, &r.rank);
    MPI_Irecv(&r.note, 1, MPI_INT, MPI_ANY_SOURCE, TAG_FAIL, r.comm, &r.note_in);
    if (!(r.note_out = calloc((size_t)r.P, sizeof *r.note_out)))
        fail(&r, ATTN_E_NOMEM, "out of memory");
    /* arguments: the same on every rank, so every rank finds the same fault */
    if (!job || !job->each || job->batch < 1 || !job->input || !strcmp(job->input, "-"))
        fail(&r, ATTN_E_ARG, "attn_mpi_lines_run: %s",
             !job || !job->each ? "no job or no each callback"
             : job->batch < 1   ? "batch must be >= 1"
                                : "the input must be a file (not stdin) that every rank can read");
    attn_status st = agree(&r);
    int64_t begin = 0, end = 0, size = 0;
    if (!st) {
        /* rank 0 tries the output's directory now, not after hours of work */
        if (r.rank == 0 && job->output && strcmp(job->output, "-")) {
            attn_outfile *probe = NULL;
            if (attn_outfile_open(ctx, job->output, &probe))
                fail(&r, ATTN_E_IO, "%s", attn_ctx_last_error(ctx));
            attn_outfile_abort(probe);
        }
        open_range(&r, &begin, &end, &size);
        MPI_Exscan(&r.mine, &r.base, 1, MPI_INT64_T, MPI_SUM, r.comm);
        if (r.rank == 0) r.base = 0;
        MPI_Allreduce(&r.mine, &r.total, 1, MPI_INT64_T, MPI_SUM, r.comm);
        align_batches(&r, begin);
        if (!r.st && !(r.spool = tmpfile()))
            fail(&r, ATTN_E_IO, "cannot create a spool file in TMPDIR (%s): %s",
                 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", strerror(errno));
        st = agree(&r);
    }
    if (!st && job->start) {
        char m[MSG] = "";
        attn_status s2 = job->start(job->user, r.total, m, sizeof m);
        if (s2) fail(&r, s2, "%s", m[0] ? m : attn_status_str(s2));
        st = agree(&r);
    }
    if (!st) {
        stream(&r);
        st = agree(&r);
    }
    if (!st) st = write_out(&r);
    if (!st && total) *total = r.total;
    if (job && job->progress && r.rank == 0 && !st)
        fprintf(job->progress,
                "%s: %lld lines on %d ranks (rank 0: %lld), written in input order to %s\n",
                job->what ? job->what : "lines", (long long)r.total, r.P, (long long)r.mine,
                job->output && strcmp(job->output, "-") ? job->output : "stdout");
    /* the posted note receive is never matched now: every note was drained */
    MPI_Cancel(&r.note_in);
    MPI_Wait(&r.note_in, MPI_STATUS_IGNORE);
    free(r.note_out);
    if (r.in) fclose(r.in);
    if (r.spool) fclose(r.spool);
    MPI_Comm_free(&r.comm);
    return st;
}

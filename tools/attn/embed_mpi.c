/* attn embed under mpirun: the --input lines split over the ranks by byte
 * ranges (libattn_mpi's attn_mpi_lines_run), each rank embedding its own
 * lines and rank 0 writing one output in input order, byte for byte what a
 * single `attn embed` writes. MPI is initialised only when the launcher
 * announces more than one rank; a build without MPI refuses such a launch
 * (every rank would embed the whole input and race on the output). */
#include "cli_out.h"
#include "embed.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int embed_mpi_ranks(void) {
    const char *s = getenv("OMPI_COMM_WORLD_SIZE");
    long n = s ? strtol(s, NULL, 10) : 1;
    return n > 1 && n < 1 << 24 ? (int)n : 1;
}

/* What P > 1 ranks cannot do: decided before MPI starts, the same on every rank. */
static int check_usage(const embed_mpi_opts *o, int P) {
    if (o->show)
        return attn_cli_error(2, "embed: --show-attention runs in one process, not on %d MPI ranks",
                              P);
    if (o->bench)
        return attn_cli_error(2, "embed: --bench runs in one process, not on %d MPI ranks", P);
    if (!o->input || !strcmp(o->input, "-") || o->ntexts)
        return attn_cli_error(2,
                              "embed: on %d MPI ranks the texts come from --input FILE (a file "
                              "every rank reads its own lines of; no TEXT arguments, no stdin)",
                              P);
    return 0;
}

#ifndef ATTN_HAVE_MPI
int embed_mpi(const embed_mpi_opts *o) {
    int P = embed_mpi_ranks(), rc = check_usage(o, P);
    if (rc) return rc;
    return attn_cli_error(1,
                          "embed: launched on %d MPI ranks, but this attn was built without "
                          "MPI (install Open MPI, e.g. Debian's openmpi-bin libopenmpi-dev, "
                          "and rebuild; or run one process)",
                          P);
}
#else
#include <attn/mpi.h>

typedef struct mpi_embed {
    const embed_mpi_opts *o;
    session s;
    int64_t E;
    float *e;        /* one batch's embeddings */
    int failed_here; /* this rank printed its own error */
} mpi_embed;

/* A callback's failure: the message attn_cli_error printed goes to the
 * other ranks. */
static attn_status failed(mpi_embed *m, char *msg, size_t n) {
    snprintf(msg, n, "%s", attn_cli_last_error());
    m->failed_here = 1;
    return ATTN_E_FORMAT;
}

static attn_status start(void *user, int64_t total, char *msg, size_t n) {
    mpi_embed *m = user;
    (void)total;
    if (embed_open_model(&m->s, m->o->model, m->o->threads)) return failed(m, msg, n);
    m->E = attn_model_get_info(m->s.model)->hidden_size;
    if (!(m->e = malloc((size_t)(EMBED_BATCH * m->E) * sizeof *m->e))) {
        attn_cli_error(1, "out of memory for a batch of embeddings");
        return failed(m, msg, n);
    }
    return ATTN_OK;
}

/* One batch: the checks and rows of `attn embed` (cmd_embed.c), with the
 * lines' numbers in the whole file. */
static attn_status each(void *user, int64_t first, int64_t n, char *const *lines, const size_t *len,
                        FILE *out, char *msg, size_t msz) {
    mpi_embed *m = user;
    texts t;
    memset(&t, 0, sizeof t);
    embed_rows r = {&t, first - 1, m->e, m->E, m->o->id, NULL, NULL};
    int rc = 0;
    for (int64_t i = 0; i < n && !rc; i++)
        if (embed_push(&t, lines[i], len[i], "%s:%ld", m->o->input, (long)(first + i)))
            rc = attn_cli_error(1, "out of memory");
    for (int64_t i = 0; i < t.n && !rc; i++) {
        long bad = embed_utf8_error((const unsigned char *)t.s[i], t.len[i]);
        if (bad >= 0) rc = attn_cli_error(1, "%s: invalid UTF-8 at byte %ld", t.where[i], bad);
    }
    if (!rc && m->o->id && !strcmp(m->o->id, "tab")) rc = embed_split_ids(&t, &r);
    if (!rc) rc = embed_all(&m->s, &t, m->e, 0);
    if (!rc && (!m->o->format || !strcmp(m->o->format, "jsonl")))
        rc = embed_write_jsonl(out, &r);
    else if (!rc && fwrite(m->e, sizeof *m->e, (size_t)(n * m->E), out) != (size_t)(n * m->E))
        rc = attn_cli_error(1, "cannot write this rank's spool file");
    /* the session's token ids are per batch */
    if (m->s.ids)
        for (int64_t i = 0; i < t.n; i++)
            free(m->s.ids[i]);
    free(m->s.ids), free(m->s.len);
    m->s.ids = NULL, m->s.len = NULL;
    free(r.ids), free(r.idlen);
    embed_texts_free(&t);
    return rc ? failed(m, msg, msz) : ATTN_OK;
}

/* What precedes the rows: the .npy header, or the safetensors header of
 * one F32 tensor 'embeddings' [N, E] as attn_safetensors_write lays it out
 * (8-byte little-endian length, compact JSON, spaces to a multiple of 8);
 * tests/test_mpi_embed.sh checks the bytes against single-process runs. */
static attn_status header(void *user, int64_t total, FILE *out, char *msg, size_t n) {
    mpi_embed *m = user;
    (void)msg, (void)n;
    if (!strcmp(m->o->format, "npy")) {
        attn_cli_npy_header(out, total, m->E);
    } else if (!strcmp(m->o->format, "safetensors")) {
        char js[256];
        int jn = snprintf(js, sizeof js,
                          "{\"embeddings\":{\"dtype\":\"F32\",\"shape\":[%lld,%lld],"
                          "\"data_offsets\":[0,%lld]}}",
                          (long long)total, (long long)m->E,
                          (long long)(total * m->E * (int64_t)sizeof(float)));
        unsigned long long hl = ((unsigned long long)jn + 7) & ~7ull;
        for (int i = 0; i < 8; i++)
            putc((int)((hl >> (8 * i)) & 0xff), out);
        fwrite(js, 1, (size_t)jn, out);
        for (unsigned long long i = (unsigned long long)jn; i < hl; i++)
            putc(' ', out);
    }
    return ATTN_OK;
}

int embed_mpi(const embed_mpi_opts *o) {
    int P = embed_mpi_ranks(), rc = check_usage(o, P);
    if (rc) return rc;
    int prov, rank = 0;
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &prov) != MPI_SUCCESS)
        return attn_cli_error(1, "embed: MPI_Init failed");
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    mpi_embed m;
    memset(&m, 0, sizeof m);
    m.o = o;
    attn_ctx *ctx = NULL;
    if (attn_ctx_create(&ctx, 1)) {
        rc = attn_cli_error(1, "out of memory");
        MPI_Abort(MPI_COMM_WORLD, 1); /* no context to agree with */
    }
    attn_mpi_lines_job job = {o->input,    o->output,
                              EMBED_BATCH, start,
                              each,        o->format && strcmp(o->format, "jsonl") ? header : NULL,
                              &m,          rank == 0 ? stderr : NULL,
                              "embed"};
    if (attn_mpi_lines_run(ctx, MPI_COMM_WORLD, &job, NULL)) {
        /* the failing rank printed its own reason; every other one says why it stopped */
        rc = m.failed_here ? 1 : attn_cli_error(1, "embed: %s", attn_ctx_last_error(ctx));
    }
    free(m.e);
    embed_session_free(&m.s, 0);
    attn_ctx_free(ctx);
    MPI_Finalize();
    return rc;
}
#endif

/* attn/mpi.h: exact attention over many processes (libattn_mpi, optional).
 *
 * Ring attention: each of the P ranks of an MPI communicator holds its own
 * rows of one long sequence's q, k, v (and of out, lse, dout, the gradients
 * and the mask); the key/value chunks travel around the ring with
 * non-blocking sends and receives that overlap the local attention of the
 * chunk in hand, and each rank merges its partial (out, lse) exactly
 * (attn_sdpa_merge). The result is attn_sdpa_forward's over the whole
 * sequence, within the project's tolerance rule (docs/SCALING.md).
 *
 * This header and libattn_mpi exist only in builds that found MPI; libattn
 * itself never depends on MPI. Link with -lattn_mpi -lattn and your MPI.
 * MPI must be initialised by the caller (MPI_Init or MPI_Init_thread; any
 * thread level: only the calling thread makes MPI calls). */
#ifndef ATTN_MPI_H
#define ATTN_MPI_H

#include <mpi.h>

#include "attn.h"

#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Which rows of a sequence of n rows rank r of P holds.
 * CONTIGUOUS  chunk r of P equal chunks (sizes differ by at most one row).
 * ZIGZAG      chunks r and 2P-1-r of 2P equal chunks (striped): under a
 *             causal mask every rank then does the same work, where the
 *             contiguous split leaves the last rank with 2P-1 times the
 *             first one's. Use it for causal attention.
 * A rank's rows are its chunks in this order, concatenated. */
typedef enum attn_ring_layout {
    ATTN_RING_CONTIGUOUS = 0,
    ATTN_RING_ZIGZAG = 1,
} attn_ring_layout;

/* The rows rank `rank` of `nranks` holds of a sequence of n rows:
 * [start[c], start[c] + len[c]) for c = 0, 1 (len[1] = 0 for CONTIGUOUS;
 * a chunk may be empty when n < 2 * nranks). Chunk c of m chunks is
 * [floor(c*n/m), floor((c+1)*n/m)). Returns ATTN_OK, or ATTN_E_ARG (an
 * unknown layout, nranks < 1, rank outside [0, nranks), n < 0, NULL
 * start or len). */
ATTN_NODISCARD attn_status attn_ring_rows(attn_ring_layout layout, int nranks, int rank, int64_t n,
                                          int64_t start[2], int64_t len[2]);

/* What one call spent its time on, for measuring the overlap (all in
 * seconds on the calling rank, wall clock). */
typedef struct attn_ring_stats {
    double total_s;    /* the whole call */
    double compute_s;  /* local attention of chunk pairs and merges */
    double wait_s;     /* blocked in MPI waiting for a transfer: the
                        * communication the overlap did not hide */
    double work_cpu_s; /* CPU seconds of the process in its own work (packing,
                        * chunk-pair attention, merges, and the copies MPI
                        * makes while polled between them), not counting
                        * waits and collectives, where MPI may spin: the
                        * measure of a rank's load on a shared machine */
    int64_t bytes_sent;
    int steps; /* ring steps (P) */
} attn_ring_stats;

/* Ring attention, forward. Collective over comm: every rank calls it with
 * the same options and its own rows.
 * a: as for attn_sdpa_forward, with each rank's rows in `layout`:
 *   q [B,H,Tr,D], k [B,Hkv,Sr,D], v [B,Hkv,Sr,Dv], out [B,H,Tr,Dv],
 *   lse [B,H,Tr] (optional), where Tr, Sr are the rank's rows of the whole
 *   T, S (attn_ring_rows). T and S are the sums over the ranks.
 *   mask: the rank's query rows, every key: [B|1,H|1,Tr,S] (a row dim of 1
 *   broadcasts). kv_len [B]: global key lengths, the same on every rank.
 *   causal, align (bottom-right means p(i) = i + S - T of the whole
 *   sequence), window, scale, softcap: as in attn_sdpa_forward.
 *   GQA/MQA (Hkv < H): the Hkv heads travel.
 * Not supported (ATTN_E_UNSUPPORTED, on every rank): alibi_slopes and
 * dropout_p > 0, whose values depend on absolute positions the chunk
 * computations do not see.
 * stats: optional (NULL).
 * Every rank returns the same status; a failure found on one rank (its
 * shapes, its options differing from rank 0's) is reported by every rank
 * with the failing rank's message ("rank 2: ..."), and no rank writes its
 * out or lse unless all have passed the checks.
 * Returns ATTN_OK, ATTN_E_ARG (MPI not initialised or already finalised,
 * comm MPI_COMM_NULL, an unknown layout, more ranks than query rows or
 * keys, options or sizes that differ between ranks, kv_len out of [0, S],
 * a rank's row count that is not its share), ATTN_E_SHAPE, ATTN_E_LAYOUT,
 * ATTN_E_DTYPE (as attn_sdpa_forward), ATTN_E_UNSUPPORTED (ALiBi, dropout,
 * a chunk of more than INT_MAX floats), ATTN_E_NOMEM, ATTN_E_IO (an MPI
 * call failed; the message names it). */
ATTN_NODISCARD attn_status attn_ring_forward(attn_ctx *ctx, MPI_Comm comm, attn_ring_layout layout,
                                             const attn_sdpa_args *a, attn_ring_stats *stats);

/* Ring attention, backward: a and layout as for attn_ring_forward, with
 * out and lse as it wrote them (lse required); g as for attn_sdpa_backward,
 * with the rank's rows: dout, dq [B,H,Tr,..], dk, dv [B,Hkv,Sr,..], dmask
 * like the mask (a float mask with a row dim of Tr). dq is accumulated
 * locally; each K/V chunk's dk, dv travel with it around the ring and come
 * back to its owner. Deterministic: for a fixed P, layout and inputs the
 * gradients are bitwise the same on every run (fixed summation order, no
 * atomics), as attn_sdpa_backward is for a fixed thread count.
 * Returns as attn_ring_forward, plus ATTN_E_ARG when lse is missing, and
 * ATTN_E_UNSUPPORTED for a dmask of a mask broadcast over rows. */
ATTN_NODISCARD attn_status attn_ring_backward(attn_ctx *ctx, MPI_Comm comm, attn_ring_layout layout,
                                              const attn_sdpa_args *a, const attn_sdpa_grads *g,
                                              attn_ring_stats *stats);

/* ---- Data-parallel work over the lines of a text file ----
 *
 * attn_mpi_lines_run splits a file's lines over the ranks of comm by byte
 * ranges: rank r of P takes the lines that begin in bytes [r*Z/P,
 * (r+1)*Z/P) of the Z-byte file (it seeks there and skips to the next line
 * start), so no rank reads more than its range and the line it ends in.
 * Each rank hands its lines, in order and `batch` at a time, to `each`,
 * which appends their output bytes to a private spool (an unlinked
 * temporary file in TMPDIR); when every rank has succeeded, rank 0 writes
 * `header` and then every rank's spool in rank order, received in chunks of
 * at most 1 MiB, to `output` by the output-file rule (attn_outfile_open:
 * a temporary file renamed into place only on success). So the output is
 * the rows in input order, whatever P, and memory stays bounded by a batch.
 * Lines are as `attn embed --input` reads them: split at '\n', a '\r'
 * before it removed, a last line without '\n' kept, an empty line a line.
 *
 * A failure on any rank (its input, its `each`, its spool, memory) stops
 * every rank: the failing rank tells the others at once, they stop after
 * their current batch, and all return the first failing rank's status with
 * its message ("rank 2 of 4: FILE:17: ..."); nothing is written. */
typedef struct attn_mpi_lines_job {
    const char *input;  /* a regular file, the same on every rank (its size is checked) */
    const char *output; /* rank 0 writes it; NULL or "-": rank 0's stdout */
    int64_t batch;      /* lines per call of each (>= 1) */
    /* Every rank, once the input is checked, before any line (NULL: none):
     * e.g. load a model. total: the file's line count. */
    attn_status (*start)(void *user, int64_t total, char *msg, size_t msg_size);
    /* Every rank: lines[i], len[i] bytes (NUL-terminated, the line end
     * removed), is line first + i of the file (from 1); write the output of
     * these n lines to out. On failure return the status with a message. */
    attn_status (*each)(void *user, int64_t first, int64_t n, char *const *lines, const size_t *len,
                        FILE *out, char *msg, size_t msg_size);
    /* Rank 0, once every rank has succeeded: what precedes the rows (NULL:
     * nothing), for the total line count. */
    attn_status (*header)(void *user, int64_t total, FILE *out, char *msg, size_t msg_size);
    void *user;
    FILE *progress;   /* rank 0 reports its progress there every second (NULL: silent) */
    const char *what; /* the name in progress lines, e.g. "embed" */
} attn_mpi_lines_job;

/* Run job over comm (collective; every rank passes the same input, output,
 * batch). total (optional) gets the file's line count. Returns ATTN_OK, or
 * on every rank the first failing rank's status: ATTN_E_ARG (MPI not
 * initialised, comm MPI_COMM_NULL, batch < 1, input "-" or NULL, an input
 * that differs in size between ranks), ATTN_E_IO (input unreadable or not a
 * regular file, output not writable, spool write failed, an MPI call
 * failed), ATTN_E_FORMAT (an empty input), ATTN_E_NOMEM, or what a
 * callback returned. */
ATTN_NODISCARD attn_status attn_mpi_lines_run(attn_ctx *ctx, MPI_Comm comm,
                                              const attn_mpi_lines_job *job, int64_t *total);

#ifdef __cplusplus
}
#endif
#endif /* ATTN_MPI_H */

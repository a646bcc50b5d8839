/* attn ring: `attn sdpa` over MPI ranks (ring attention, libattn_mpi).
 * Run as `mpirun -np P attn ring IN OUT [options]`: every rank opens the
 * same IN header-only and reads just its own rows of q, k, v, mask, dout
 * (attn_ring_rows, attn_safetensors_read), runs attn_ring_forward (and
 * attn_ring_backward), and rank 0 gathers the rows and writes OUT, the same
 * tensors `attn sdpa` writes. Errors found on one rank are reported by
 * every rank, every rank exits with the same status, and OUT is written
 * (atomically, by rank 0) only when every rank succeeded. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(FILE *f) {
    fputs("usage: mpirun -np P attn ring IN.safetensors OUT.safetensors [options]\n"
          "\n"
          "Exact attention with the sequence split over P MPI ranks (ring attention):\n"
          "the same inputs and outputs as `attn sdpa` (see attn sdpa --help): q, k, v,\n"
          "optional mask, kv_len, dout; out, lse, and with --backward dq, dk, dv, dmask.\n"
          "Each rank keeps its own rows; K/V chunks travel around the ring while the\n"
          "chunk in hand is computed. ALiBi and dropout are not supported.\n"
          "\n"
          "options:\n"
          "  --causal              mask keys after the query's position p(i)\n"
          "  --align top-left|bottom-right\n"
          "  --window L,R          keep keys p(i)-L <= j <= p(i)+R; -1 = unbounded side\n"
          "  --scale X             score scale (default 1/sqrt(D))\n"
          "  --softcap X           s = X * tanh(s / X) (0 = off)\n"
          "  --split zigzag|contiguous\n"
          "                        rows per rank: chunks r and 2P-1-r of 2P (default;\n"
          "                        balances causal work) or chunk r of P\n"
          "  --threads N           threads per rank (default: ATTN_NUM_THREADS, else all cores)\n"
          "  --backward            also compute gradients from dout\n"
          "  --stats               rank 0 prints timings to stderr: compute, time blocked on\n"
          "                        transfers, and the same transfers timed alone\n"
          "  -h, --help            show this help\n"
          "\n"
          "Exit status: 0 success, 1 bad input or failure (on every rank), 2 bad usage.\n",
          f);
}

#ifndef ATTN_HAVE_MPI
int attn_cmd_ring(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        }
    return attn_cli_error(1, "ring: this attn was built without MPI (install Open MPI, e.g. "
                             "Debian's openmpi-bin libopenmpi-dev, and rebuild)");
}
#else
#include <attn/mpi.h>

/* attn_ring_rows for arguments already checked (an error gives no rows) */
static inline void ring_rows_of(attn_ring_layout l, int P, int rank, int64_t n, int64_t st[2],
                                int64_t len[2]) {
    if (attn_ring_rows(l, P, rank, n, st, len)) st[0] = st[1] = len[0] = len[1] = 0;
}

typedef struct ring_opts {
    const char *in, *out, *layout_name;
    attn_sdpa_args a;
    int threads, backward, stats;
    attn_ring_layout layout;
    cli_window window;
} ring_opts;

static int parse_layout(const char *cmd, const char *name, const char *v, void *dst) {
    if (!strcmp(v, "zigzag"))
        *(attn_ring_layout *)dst = ATTN_RING_ZIGZAG;
    else if (!strcmp(v, "contiguous"))
        *(attn_ring_layout *)dst = ATTN_RING_CONTIGUOUS;
    else
        return attn_cli_error(2, "%s: %s must be zigzag or contiguous, not '%s'", cmd, name, v);
    return 0;
}

static int parse_args(int argc, char **argv, ring_opts *o) {
    o->layout = ATTN_RING_ZIGZAG;
    const cli_opt opts[] = {
        {"--causal", CLI_FLAG, &o->a.causal, 0, 0, 0, NULL},
        {"--backward", CLI_FLAG, &o->backward, 0, 0, 0, NULL},
        {"--stats", CLI_FLAG, &o->stats, 0, 0, 0, NULL},
        CLI_OPT_ALIGN(&o->a.align),
        CLI_OPT_WINDOW(&o->window),
        {"--scale", CLI_FLOAT, &o->a.scale, -CLI_INF, CLI_INF, 0, NULL},
        {"--softcap", CLI_FLOAT, &o->a.softcap, 0, CLI_INF, 0, NULL},
        {"--split", CLI_CUSTOM, &o->layout, 0, 0, 0, parse_layout},
        CLI_OPT_THREADS(&o->threads),
    };
    const cli_spec spec = {"ring", opts, sizeof opts / sizeof opts[0], usage, CLI_POS_ANYWHERE, 2};
    const char *pos[2];
    int npos;
    int rc = attn_cli_parse(&spec, argc, argv, pos, &npos);
    if (rc >= 0) return rc;
    if (npos < 2)
        return attn_cli_error(2, "ring: expected IN.safetensors OUT.safetensors (see attn ring "
                                 "--help)");
    o->in = pos[0], o->out = pos[1];
    o->a.window = o->window.on;
    o->a.window_left = o->window.left;
    o->a.window_right = o->window.right;
    return -1;
}

typedef struct ring_run {
    attn_ctx *ctx;
    attn_safetensors *st;
    int P, rank;
    float *conv[8];
    int nconv;
    void *owned[32];
    int nowned;
    int32_t *kv_len;
    int rank3, mask_nd;
    int64_t mask_shape[4];
    char msg[512];
} ring_run;

static void *own(ring_run *r, size_t bytes) {
    void *p = calloc(bytes ? bytes : 1, 1);
    if (p) r->owned[r->nowned++] = p;
    return p;
}

/* Record a local failure's message; returns 1. */
static int fail(ring_run *r, const char *fmt, const char *what) {
    snprintf(r->msg, sizeof r->msg, fmt, what);
    return 1;
}

/* Every rank learns whether all succeeded; on failure every rank prints the
 * first failing rank's message. Returns 0 or 1. */
static int agree(ring_run *r, int failed) {
    int mine = failed ? r->rank : r->P, first;
    MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (first == r->P) return 0;
    MPI_Bcast(r->msg, sizeof r->msg, MPI_CHAR, first, MPI_COMM_WORLD);
    r->msg[sizeof r->msg - 1] = 0;
    attn_cli_error(1, "ring: rank %d of %d: %s", first, r->P, r->msg);
    return 1;
}

/* The rank's rows (chunks st/len of dim 2) of tensor `name`, whose 4-D
 * shape (leading dims of 1 added) is full's, read from the file alone:
 * only these rows' bytes are read (attn_safetensors_read on the header-only
 * handle), as F32 when as_f32, else in the file's dtype (a BOOL mask). A
 * row dim of 1 (a mask broadcast over rows) is read whole. */
static int take_rows(ring_run *r, const char *name, attn_tensor full, int as_f32,
                     const int64_t st[2], const int64_t len[2], attn_tensor *out) {
    int64_t sh[4] = {full.shape[0], full.shape[1], len[0] + len[1], full.shape[3]};
    int bcast = full.shape[2] == 1;
    if (bcast) sh[2] = 1;
    attn_dtype dt = as_f32 ? ATTN_F32 : full.dtype;
    size_t es = attn_dtype_size(dt), row = es * (size_t)sh[3];
    char *p = own(r, row * (size_t)(sh[0] * sh[1] * sh[2]));
    if (!p) return fail(r, "%s", "out of memory for this rank's rows");
    for (int64_t b = 0; b < sh[0]; b++)
        for (int64_t h = 0; h < sh[1]; h++) {
            int64_t i = 0;
            for (int c = 0; c < 2; c++) {
                int64_t n = bcast ? (c == 0) : len[c], src = bcast ? 0 : st[c];
                if (n == 0) continue;
                int64_t first = ((b * full.shape[1] + h) * full.shape[2] + src) * full.shape[3];
                if (attn_safetensors_read(r->ctx, r->st, name, first, n * sh[3], as_f32,
                                          p + ((b * sh[1] + h) * sh[2] + i) * row))
                    return fail(r, "%s", attn_ctx_last_error(r->ctx));
                i += n;
            }
        }
    *out = attn_tensor_make(p, dt, 4, sh);
    return 0;
}

/* Inputs as 4-D views: 3-D q/k/v/dout mean B = 1; a mask of 2 or 3 dims
 * broadcasts over the missing leading dims. */
static attn_tensor lift(attn_tensor t) {
    while (t.ndim < 4) {
        t = attn_cli_add_dim0(t);
        t.stride[0] = 0;
    }
    return t;
}

static int is_float(attn_dtype d) {
    return d == ATTN_F32 || d == ATTN_F64 || d == ATTN_F16 || d == ATTN_BF16;
}

/* The file's header (every rank opens it header-only: the tensors' rows are
 * read later, each rank its own), the shapes of q, k, v, dout, mask as 4-D
 * views without data, and the small tensors kv_len and alibi_slopes whole. */
static int load(ring_opts *o, ring_run *r, attn_sdpa_args *a, attn_tensor *dout) {
    static const char *const NAMES[] = {"q", "k", "v", "mask", "kv_len", "alibi_slopes", "dout"};
    const char *in = o->in;
    if (attn_safetensors_open_header(r->ctx, in, &r->st))
        return fail(r, "%s", attn_ctx_last_error(r->ctx));
    for (int i = 0; i < attn_safetensors_count(r->st); i++) {
        const char *n = attn_safetensors_name(r->st, i);
        int known = 0;
        for (size_t k = 0; k < sizeof NAMES / sizeof NAMES[0]; k++)
            known |= !strcmp(n, NAMES[k]);
        if (!known) {
            snprintf(r->msg, sizeof r->msg,
                     "%s: unknown tensor '%s' (inputs: q, k, v; optional "
                     "mask, kv_len, dout)",
                     in, n);
            return 1;
        }
    }
    const char *need[3] = {"q", "k", "v"};
    attn_tensor *dst[3] = {&a->q, &a->k, &a->v};
    for (int i = 0; i < 3 + o->backward; i++) {
        const char *name = i < 3 ? need[i] : "dout";
        attn_tensor *t = i < 3 ? dst[i] : dout;
        if (attn_safetensors_find(r->st, name) < 0) {
            snprintf(r->msg, sizeof r->msg, "%s: no tensor '%s'", in, name);
            return 1;
        }
        if (attn_safetensors_get(r->ctx, r->st, name, t))
            return fail(r, "%s", attn_ctx_last_error(r->ctx));
        if (!is_float(t->dtype)) {
            snprintf(r->msg, sizeof r->msg,
                     "%s: tensor '%s' has dtype %s, expected a float dtype (F32, F64, F16, BF16)",
                     in, name, attn_dtype_name(t->dtype));
            return 1;
        }
        if (i == 0) r->rank3 = t->ndim == 3;
        if (t->ndim != (r->rank3 ? 3 : 4)) {
            snprintf(r->msg, sizeof r->msg, "%s: tensor '%s' has %d dims, expected %s", in, name,
                     t->ndim, r->rank3 ? "3 [H,T,D] like q" : "4 [B,H,T,D] like q");
            return 1;
        }
        if (r->rank3) *t = attn_cli_add_dim0(*t);
    }
    if (attn_safetensors_find(r->st, "alibi_slopes") >= 0) {
        attn_tensor t;
        if (attn_safetensors_get(r->ctx, r->st, "alibi_slopes", &t))
            return fail(r, "%s", attn_ctx_last_error(r->ctx));
        int64_t n = attn_tensor_numel(&t);
        float *f = own(r, sizeof(float) * (size_t)n);
        if (!f) return fail(r, "%s", "out of memory");
        if (attn_safetensors_read(r->ctx, r->st, "alibi_slopes", 0, n, 1, f))
            return fail(r, "%s", attn_ctx_last_error(r->ctx));
        a->alibi_slopes = f; /* the library reports it unsupported */
    }
    if (attn_safetensors_find(r->st, "kv_len") >= 0) {
        attn_tensor kl;
        if (attn_safetensors_get(r->ctx, r->st, "kv_len", &kl))
            return fail(r, "%s", attn_ctx_last_error(r->ctx));
        int64_t n = attn_tensor_numel(&kl);
        kl.data = own(r, attn_dtype_size(kl.dtype) * (size_t)n);
        if (!kl.data) return fail(r, "%s", "out of memory");
        if ((kl.dtype == ATTN_I32 || kl.dtype == ATTN_I64) &&
            attn_safetensors_read(r->ctx, r->st, "kv_len", 0, n, 0, kl.data))
            return fail(r, "%s", attn_ctx_last_error(r->ctx));
        if (attn_cli_kv_len_of(&kl, in, a->q.shape[0], &r->kv_len))
            return fail(r, "%s", attn_cli_last_error());
        a->kv_len = r->kv_len;
    }
    if (attn_safetensors_find(r->st, "mask") >= 0) {
        attn_tensor m;
        if (attn_safetensors_get(r->ctx, r->st, "mask", &m))
            return fail(r, "%s", attn_ctx_last_error(r->ctx));
        if (m.ndim < 2) {
            snprintf(r->msg, sizeof r->msg,
                     "%s: mask has %d dims, expected [T,S] or "
                     "[B|1,H|1,T,S]",
                     in, m.ndim);
            return 1;
        }
        r->mask_nd = m.ndim;
        memcpy(r->mask_shape, m.shape, sizeof m.shape);
        a->mask = lift(m);
    }
    return 0;
}

/* Files that differ between ranks: names, dtypes and shapes must agree. */
static uint64_t file_hash(const attn_safetensors *st) {
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; st && i < attn_safetensors_count(st); i++) {
        const char *s[2] = {attn_safetensors_name(st, i), attn_safetensors_dtype_name(st, i)};
        for (int k = 0; k < 2; k++)
            for (const char *c = s[k]; c && *c; c++)
                h = (h ^ (unsigned char)*c) * 1099511628211ull;
        attn_tensor t;
        if (attn_safetensors_get(NULL, st, s[0], &t) == ATTN_OK)
            for (int d = 0; d < t.ndim; d++)
                h = (h ^ (uint64_t)t.shape[d]) * 1099511628211ull;
    }
    return h;
}

/* Rank 0 gathers every rank's rows of a [B,H,rows,w] result into full. */
static int gather(ring_run *r, attn_ring_layout layout, int64_t n, attn_tensor local,
                  attn_tensor *full) {
    int64_t B = local.shape[0], H = local.shape[1], w = local.shape[3];
    float *all = NULL, *tmp = NULL;
    int bad = 0;
    if (r->rank == 0) {
        all = own(r, sizeof(float) * (size_t)(B * H * n * w));
        tmp = malloc(sizeof(float) * (size_t)(B * H * (n / r->P + 2) * 2 * w + 1));
        bad = !all || !tmp;
    }
    MPI_Bcast(&bad, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (bad) {
        free(tmp);
        return fail(r, "%s", "rank 0: out of memory for the output");
    }
    if (r->rank != 0) {
        MPI_Send(local.data, (int)(B * H * local.shape[2] * w), MPI_FLOAT, 0, 7, MPI_COMM_WORLD);
        return 0;
    }
    for (int src = 0; src < r->P; src++) {
        int64_t st[2], len[2];
        ring_rows_of(layout, r->P, src, n, st, len);
        int64_t rows = len[0] + len[1];
        const float *p = local.data;
        if (src) {
            MPI_Recv(tmp, (int)(B * H * rows * w), MPI_FLOAT, src, 7, MPI_COMM_WORLD,
                     MPI_STATUS_IGNORE);
            p = tmp;
        }
        for (int64_t b = 0; b < B; b++)
            for (int64_t h = 0; h < H; h++) {
                int64_t i = 0;
                for (int c = 0; c < 2; c++)
                    for (int64_t k = 0; k < len[c]; k++, i++)
                        memcpy(all + ((b * H + h) * n + st[c] + k) * w,
                               p + ((b * H + h) * rows + i) * w, sizeof(float) * (size_t)w);
            }
    }
    free(tmp);
    int64_t sh[4] = {B, H, n, w};
    *full = attn_tensor_make(all, ATTN_F32, 4, sh);
    return 0;
}

/* The same K/V transfers as the ring, with no compute: what the overlap hides. */
static double transfers_alone(ring_run *r, int64_t count) {
    float *a = calloc((size_t)count + 1, sizeof(float)),
          *b = calloc((size_t)count + 1, sizeof(float));
    double t = 0;
    if (a && b) {
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = MPI_Wtime();
        for (int s = 0; s < r->P - 1; s++)
            MPI_Sendrecv(a, (int)count, MPI_FLOAT, (r->rank + 1) % r->P, 9, b, (int)count,
                         MPI_FLOAT, (r->rank + r->P - 1) % r->P, 9, MPI_COMM_WORLD,
                         MPI_STATUS_IGNORE);
        t = MPI_Wtime() - t0;
    }
    free(a), free(b);
    return t;
}

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void print_stats(ring_run *r, const char *what, const attn_ring_stats *s, double cpu,
                        int64_t kvcount) {
    double v[5] = {s->total_s, s->compute_s, s->wait_s, cpu, s->work_cpu_s}, mx[5];
    double w = -s->work_cpu_s, wmin;
    MPI_Reduce(v, mx, 5, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
    MPI_Reduce(&w, &wmin, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
    double alone = transfers_alone(r, kvcount), amax;
    MPI_Reduce(&alone, &amax, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
    if (r->rank == 0)
        fprintf(stderr,
                "ring %s: P=%d wall %.3f s (compute %.3f s, blocked on transfers %.4f s); cpu "
                "%.3f s, of it own work %.3f s (least loaded rank %.3f s); the %d transfers "
                "alone take %.4f s (%.1f MB each); max over ranks\n",
                what, r->P, mx[0], mx[1], mx[2], mx[3], mx[4], -wmin, r->P - 1, amax,
                kvcount * 4.0 / 1e6);
}

static int run(ring_opts *o, ring_run *r) {
    attn_sdpa_args full = o->a, a = o->a;
    attn_tensor dout_full = {0};
    int bad = attn_cli_ctx(&r->ctx, o->threads);
    if (bad) snprintf(r->msg, sizeof r->msg, "cannot create a context");
    if (!bad) bad = load(o, r, &full, &dout_full);
    if (agree(r, bad)) return 1;
    /* the same file on every rank */
    uint64_t h = file_hash(r->st), lo, hi;
    MPI_Allreduce(&h, &lo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(&h, &hi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
    if (lo != hi)
        bad =
            fail(r, "%s: the input differs between ranks (tensor names, dtypes or shapes)", o->in);
    if (agree(r, bad)) return 1;

    int64_t T = full.q.shape[2], S = full.k.shape[2], qs[2], ql[2], ks[2], kl[2];
    int has_mask = attn_safetensors_find(r->st, "mask") >= 0;
    if (T < r->P || S < r->P)
        bad = fail(r, "%s", "more ranks than query rows or keys: use at most min(T, S) ranks");
    /* the row dims are sliced before the library sees them: checked here */
    char rows_msg[160] = "";
    if (full.v.shape[2] != S)
        snprintf(rows_msg, sizeof rows_msg, "v has %lld rows, k has %lld: they must agree",
                 (long long)full.v.shape[2], (long long)S);
    else if (o->backward && dout_full.shape[2] != T)
        snprintf(rows_msg, sizeof rows_msg, "dout has %lld rows, q has %lld: they must agree",
                 (long long)dout_full.shape[2], (long long)T);
    else if (has_mask && full.mask.shape[2] != T && full.mask.shape[2] != 1)
        snprintf(rows_msg, sizeof rows_msg,
                 "mask has %lld query rows, expected T = %lld (or 1 to broadcast)",
                 (long long)full.mask.shape[2], (long long)T);
    if (!bad && rows_msg[0]) {
        snprintf(r->msg, sizeof r->msg, "%s: %s", o->in, rows_msg);
        bad = 1;
    }
    attn_tensor dout = {0};
    if (!bad) {
        ring_rows_of(o->layout, r->P, r->rank, T, qs, ql);
        ring_rows_of(o->layout, r->P, r->rank, S, ks, kl);
        /* a float mask of any dtype is read as F32; BOOL and U8 masks as they are */
        int mask_f32 = is_float(full.mask.dtype);
        bad = take_rows(r, "q", full.q, 1, qs, ql, &a.q) ||
              take_rows(r, "k", full.k, 1, ks, kl, &a.k) ||
              take_rows(r, "v", full.v, 1, ks, kl, &a.v) ||
              (has_mask && take_rows(r, "mask", full.mask, mask_f32, qs, ql, &a.mask)) ||
              (o->backward && take_rows(r, "dout", dout_full, 1, qs, ql, &dout));
        a.kv_len = full.kv_len, a.alibi_slopes = full.alibi_slopes;
    }
    if (agree(r, bad)) return 1;
    int64_t B = a.q.shape[0], H = a.q.shape[1], Tr = ql[0] + ql[1], Sr = kl[0] + kl[1];
    int64_t D = a.q.shape[3], Hkv = a.k.shape[1], Dv = a.v.shape[3];
    float *out = own(r, sizeof(float) * (size_t)(B * H * Tr * Dv));
    float *lse = own(r, sizeof(float) * (size_t)(B * H * Tr));
    if (!out || !lse) bad = fail(r, "%s", "out of memory for the output");
    if (agree(r, bad)) return 1;
    a.out = attn_tensor_f32_4d(out, B, H, Tr, Dv);
    int64_t ls[3] = {B, H, Tr};
    a.lse = attn_tensor_make(lse, ATTN_F32, 3, ls);
    attn_ring_stats fs, bs;
    double cpu = cpu_now();
    /* the library agrees across ranks itself: every rank gets the same status */
    if (attn_ring_forward(r->ctx, MPI_COMM_WORLD, o->layout, &a, &fs))
        return attn_cli_error(1, "ring: %s: %s", o->in, attn_ctx_last_error(r->ctx));
    int64_t kvc = B * Hkv * ((S + r->P - 1) / r->P) * (D + Dv);
    if (o->stats) print_stats(r, "forward", &fs, cpu_now() - cpu, kvc);
    attn_sdpa_grads g = {0};
    if (o->backward) {
        g.dout = dout;
        float *dq = own(r, sizeof(float) * (size_t)(B * H * Tr * D));
        float *dk = own(r, sizeof(float) * (size_t)(B * Hkv * Sr * D));
        float *dv = own(r, sizeof(float) * (size_t)(B * Hkv * Sr * Dv));
        bad = !dq || !dk || !dv;
        if (!bad && a.mask.data && a.mask.dtype == ATTN_F32 && a.mask.shape[2] == Tr &&
            full.mask.shape[2] == T) {
            float *dm = own(r, sizeof(float) * (size_t)attn_tensor_numel(&a.mask));
            bad = !dm;
            if (dm) g.dmask = attn_tensor_make(dm, ATTN_F32, 4, a.mask.shape);
        }
        if (bad) fail(r, "%s", "out of memory for the gradients");
        if (agree(r, bad)) return 1;
        g.dq = attn_tensor_f32_4d(dq, B, H, Tr, D);
        g.dk = attn_tensor_f32_4d(dk, B, Hkv, Sr, D);
        g.dv = attn_tensor_f32_4d(dv, B, Hkv, Sr, Dv);
        cpu = cpu_now();
        if (attn_ring_backward(r->ctx, MPI_COMM_WORLD, o->layout, &a, &g, &bs))
            return attn_cli_error(1, "ring: %s: backward: %s", o->in, attn_ctx_last_error(r->ctx));
        if (o->stats) print_stats(r, "backward", &bs, cpu_now() - cpu, 2 * kvc);
    }

    /* rank 0 gathers the rows and writes OUT */
    const char *names[6] = {"out", "lse", "dq", "dk", "dv", "dmask"};
    attn_tensor v[6];
    int n = 2;
    attn_tensor lse4 = attn_tensor_f32_4d(lse, B, H, Tr, 1);
    bad = gather(r, o->layout, T, a.out, &v[0]) || gather(r, o->layout, T, lse4, &v[1]);
    if (!bad && o->backward) {
        bad = gather(r, o->layout, T, g.dq, &v[2]) || gather(r, o->layout, S, g.dk, &v[3]) ||
              gather(r, o->layout, S, g.dv, &v[4]);
        n = 5;
        if (!bad && g.dmask.data) {
            /* [Bm,Hm,T,S]: rows are dim 2; as a [Bm*Hm... ] gather per row of S */
            bad = gather(r, o->layout, T, g.dmask, &v[5]);
            n = 6;
        }
    }
    if (agree(r, bad)) return 1;
    if (r->rank == 0) {
        v[1].ndim = 3; /* lse [B,H,T] */
        for (int i = 0; i < n; i++)
            if (r->rank3 && i < 5) v[i] = attn_cli_drop_dim0(v[i]);
        if (n == 6) { /* dmask in the mask's own shape */
            attn_tensor m = attn_tensor_make(v[5].data, ATTN_F32, r->mask_nd, r->mask_shape);
            v[5] = m;
        }
        if (attn_safetensors_write(r->ctx, o->out, n, names, v))
            bad = fail(r, "%s", attn_ctx_last_error(r->ctx));
    }
    return agree(r, bad);
}

int attn_cmd_ring(int argc, char **argv) {
    int prov;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &prov);
    ring_opts o;
    memset(&o, 0, sizeof o);
    ring_run r;
    memset(&r, 0, sizeof r);
    MPI_Comm_size(MPI_COMM_WORLD, &r.P);
    MPI_Comm_rank(MPI_COMM_WORLD, &r.rank);
    /* bad usage and --help are the same on every rank: rank 0 prints them */
    FILE *keep[2] = {stdout, stderr}, *null = r.rank ? fopen("/dev/null", "w") : NULL;
    if (null) stdout = stderr = null;
    int rc = parse_args(argc, argv, &o);
    if (null) {
        stdout = keep[0], stderr = keep[1];
        fclose(null);
    }
    if (rc < 0) rc = run(&o, &r);
    for (int i = 0; i < r.nconv; i++)
        attn_buffer_free(r.conv[i]);
    for (int i = 0; i < r.nowned; i++)
        free(r.owned[i]);
    free(r.kv_len);
    attn_safetensors_close(r.st);
    attn_ctx_free(r.ctx);
    MPI_Finalize();
    return rc;
}
#endif

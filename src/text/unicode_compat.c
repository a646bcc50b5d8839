/* Where Hugging Face's tokenizer and utf8proc's Unicode data disagree.
 *
 * The reference (the Rust `tokenizers` library behind BertTokenizerFast)
 * takes general categories (punctuation, nonspacing marks, "other") and
 * canonical decompositions from crates frozen at an old Unicode version, and
 * lowercasing from Rust's standard library (Unicode 16). utf8proc 2.8 has
 * Unicode 15.0. These tables list every code point where that makes the
 * result differ; they were found by running all 1,112,064 scalar values
 * through both (tests/data/tokenizer/codepoints.txt holds the reference's
 * answer for each one, and test_tokenizer checks them all, so a different
 * utf8proc version shows up there as a list of differing code points). */
#include "text/text_internal.h"

typedef struct range {
    int32_t lo, hi;
} range;

/* Characters the reference does not know (added to Unicode after its tables,
 * or reclassified since): for it they are plain word characters, neither
 * punctuation, nor marks to strip, nor format characters to delete, with
 * combining class 0 and no decomposition. */
static const range plain[] = {
    {0x61D, 0x61D},     {0x7FD, 0x7FD},     {0x890, 0x891},     {0x898, 0x89F},
    {0x8CA, 0x8E2},     {0x9FD, 0x9FE},     {0xA76, 0xA76},     {0xAFA, 0xAFF},
    {0xB55, 0xB55},     {0xC04, 0xC04},     {0xC3C, 0xC3C},     {0xC77, 0xC77},
    {0xC84, 0xC84},     {0xD00, 0xD00},     {0xD3B, 0xD3C},     {0xD81, 0xD81},
    {0xEBA, 0xEBA},     {0xECE, 0xECE},     {0x180F, 0x180F},   {0x1885, 0x1886},
    {0x1ABF, 0x1ACE},   {0x1B7D, 0x1B7E},   {0x1DF6, 0x1DFB},   {0x2E43, 0x2E4F},
    {0x2E52, 0x2E5D},   {0xA82C, 0xA82C},   {0xA8C5, 0xA8C5},   {0xA8FF, 0xA8FF},
    {0xA9BD, 0xA9BD},   {0x10D24, 0x10D27}, {0x10EAB, 0x10EAD}, {0x10EFD, 0x10EFF},
    {0x10F46, 0x10F50}, {0x10F55, 0x10F59}, {0x10F82, 0x10F89}, {0x11070, 0x11070},
    {0x11073, 0x11074}, {0x110C2, 0x110C2}, {0x110CD, 0x110CD}, {0x111CF, 0x111CF},
    {0x1123E, 0x1123E}, {0x11241, 0x11241}, {0x1133B, 0x1133B}, {0x11438, 0x1143F},
    {0x11442, 0x11444}, {0x11446, 0x11446}, {0x1144B, 0x1144F}, {0x1145A, 0x1145B},
    {0x1145D, 0x1145E}, {0x11660, 0x1166C}, {0x116B9, 0x116B9}, {0x1182F, 0x11837},
    {0x11839, 0x1183B}, {0x11938, 0x11938}, {0x1193B, 0x1193C}, {0x1193E, 0x1193E},
    {0x11943, 0x11946}, {0x119D4, 0x119D7}, {0x119DA, 0x119DB}, {0x119E0, 0x119E0},
    {0x119E2, 0x119E2}, {0x11A01, 0x11A0A}, {0x11A33, 0x11A38}, {0x11A3B, 0x11A47},
    {0x11A51, 0x11A56}, {0x11A59, 0x11A5B}, {0x11A8A, 0x11A96}, {0x11A98, 0x11A9C},
    {0x11A9E, 0x11AA2}, {0x11B00, 0x11B09}, {0x11C30, 0x11C36}, {0x11C38, 0x11C3D},
    {0x11C3F, 0x11C3F}, {0x11C41, 0x11C45}, {0x11C70, 0x11C71}, {0x11C92, 0x11CA7},
    {0x11CAA, 0x11CB0}, {0x11CB2, 0x11CB3}, {0x11CB5, 0x11CB6}, {0x11D31, 0x11D36},
    {0x11D3A, 0x11D3A}, {0x11D3C, 0x11D3D}, {0x11D3F, 0x11D45}, {0x11D47, 0x11D47},
    {0x11D90, 0x11D91}, {0x11D95, 0x11D95}, {0x11D97, 0x11D97}, {0x11EF3, 0x11EF4},
    {0x11EF7, 0x11EF8}, {0x11F00, 0x11F01}, {0x11F36, 0x11F3A}, {0x11F40, 0x11F40},
    {0x11F42, 0x11F4F}, {0x11FFF, 0x11FFF}, {0x12FF1, 0x12FF2}, {0x13430, 0x13440},
    {0x13447, 0x13455}, {0x16E97, 0x16E9A}, {0x16F4F, 0x16F4F}, {0x16FE2, 0x16FE2},
    {0x16FE4, 0x16FE4}, {0x1CF00, 0x1CF2D}, {0x1CF30, 0x1CF46}, {0x1E000, 0x1E006},
    {0x1E008, 0x1E018}, {0x1E01B, 0x1E021}, {0x1E023, 0x1E024}, {0x1E026, 0x1E02A},
    {0x1E08F, 0x1E08F}, {0x1E130, 0x1E136}, {0x1E2AE, 0x1E2AE}, {0x1E2EC, 0x1E2EF},
    {0x1E4EC, 0x1E4EF}, {0x1E944, 0x1E94A}, {0x1E95E, 0x1E95F},
};

/* Punctuation for the reference (U+166D was Po until Unicode 12, U+111C9
 * until Unicode 13), not in Unicode 15. */
static const range punct[] = {{0x166D, 0x166D}, {0x111C9, 0x111C9}};

/* A nonspacing mark (stripped) for the reference: U+1734 was Mn until
 * Unicode 14. */
static const range mark[] = {{0x1734, 0x1734}};

/* Lowercase mappings of Unicode 16 (Rust's) that Unicode 15 does not have:
 * c in [lo, hi] lowercases to c + delta. */
static const struct {
    int32_t lo, hi, delta;
} lower[] = {
    {0x1C89, 0x1C89, 1},    {0xA7CB, 0xA7CB, -42343}, {0xA7CC, 0xA7CC, 1}, {0xA7CE, 0xA7CE, 1},
    {0xA7D2, 0xA7D2, 1},    {0xA7D4, 0xA7D4, 1},      {0xA7DA, 0xA7DA, 1}, {0xA7DC, 0xA7DC, -42561},
    {0x10D50, 0x10D65, 32}, {0x16EA0, 0x16EB8, 27},
};

static int in(const range *r, size_t n, int32_t c) {
    size_t a = 0, b = n; /* binary search over sorted, disjoint ranges */
    while (a < b) {
        size_t m = (a + b) / 2;
        if (c < r[m].lo)
            b = m;
        else if (c > r[m].hi)
            a = m + 1;
        else
            return 1;
    }
    return 0;
}

int attn__hf_compat_class(int32_t c) {
    if (c < 0x61d) return ATTN_HF_SAME;
    if (in(plain, sizeof plain / sizeof plain[0], c)) return ATTN_HF_PLAIN;
    if (in(punct, sizeof punct / sizeof punct[0], c)) return ATTN_HF_PUNCT;
    if (in(mark, sizeof mark / sizeof mark[0], c)) return ATTN_HF_MARK;
    return ATTN_HF_SAME;
}

int32_t attn__hf_compat_lower(int32_t c) {
    for (size_t i = 0; i < sizeof lower / sizeof lower[0]; i++)
        if (c >= lower[i].lo && c <= lower[i].hi) return c + lower[i].delta;
    return -1;
}

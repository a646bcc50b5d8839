/* The fuzz targets' check: abort on a broken property, so libFuzzer reports
 * the input and the ctest programs that include the targets fail. */
#ifndef ATTN_FUZZ_CHECK_H
#define ATTN_FUZZ_CHECK_H

#include <stdlib.h>

#define FUZZ_CHECK(c)                                                                              \
    do {                                                                                           \
        if (!(c)) abort();                                                                         \
    } while (0)

#endif

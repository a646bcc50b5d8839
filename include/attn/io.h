/* attn/io.h: tensor files (safetensors).
 * Users include <attn/attn.h>, which includes this file. */
#ifndef ATTN_IO_H
#define ATTN_IO_H

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* (to be filled in by the safetensors reader/writer) */

#ifdef __cplusplus
}
#endif
#endif /* ATTN_IO_H */

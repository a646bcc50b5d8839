/* attn/io.h: tensor files (safetensors).
 * Users include <attn/attn.h>, which includes this file.
 *
 * Format: 8 bytes little-endian header length N, N bytes of JSON
 *   {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]},
 *    ..., "__metadata__": {"key": "value"}}
 * then the data section; offsets are relative to its start, tensors are
 * row-major, little-endian, and tile the data section with no gap or overlap. */
#ifndef ATTN_IO_H
#define ATTN_IO_H

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* An open tensor file: its header, parsed and validated, and its data, read
 * into memory owned by the handle. Opaque. A handle is read-only after open,
 * so several threads may call the accessors at once (each with its own ctx). */
typedef struct attn_safetensors attn_safetensors;

/* Limits of attn_safetensors_open (real checkpoints hold at most a few
 * thousand tensors per file, with names under 200 bytes). */
#define ATTN_SAFETENSORS_MAX_HEADER (100 * 1024 * 1024)
#define ATTN_SAFETENSORS_MAX_TENSORS 65536
#define ATTN_SAFETENSORS_MAX_NAME 1024

/* Open and read a whole safetensors file. The header is checked completely
 * before *out is set: a JSON object with unique, non-empty names, each entry
 * with a known dtype, a shape of non-negative integers and data_offsets
 * [begin, end] whose length is numel * dtype size; together the tensors must
 * cover the data section exactly (no gap, no overlap, nothing past its end).
 * Dtypes F32 F64 F16 BF16 I32 I64 U8 BOOL are served; I8 I16 U16 U32 U64
 * F8_E4M3 F8_E5M2 are accepted in the file, but attn_safetensors_get on them
 * returns ATTN_E_DTYPE. BOOL bytes other than 0 read as 1 (true).
 * Every tensor's data is stored 8-byte aligned (64 bytes
 * for tensors of 64 bytes or more), whatever its offset in the file.
 * Limits, checked by a scan of the header's bytes before it is parsed (a
 * hostile 100 MB header of 1.45M tensors no longer costs 1.7 GB): the header
 * at most ATTN_SAFETENSORS_MAX_HEADER bytes (100 MiB, about the reference
 * implementation), at most ATTN_SAFETENSORS_MAX_TENSORS entries and names of
 * at most ATTN_SAFETENSORS_MAX_NAME bytes (as JSON text); ATTN_E_FORMAT
 * beyond them.
 * On failure *out is NULL and the message names the file, the tensor and what
 * is wrong. Returns ATTN_OK, ATTN_E_ARG (NULL argument), ATTN_E_IO (cannot
 * open or read; not a regular file), ATTN_E_FORMAT (corrupt or truncated),
 * ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_safetensors_open(attn_ctx *ctx, const char *path,
                                                 attn_safetensors **out);

/* As attn_safetensors_open, from len bytes at buf (copied: buf may be freed
 * after the call). Messages call the file "<memory>". Returns the statuses
 * of attn_safetensors_open except ATTN_E_IO. */
ATTN_NODISCARD attn_status attn_safetensors_open_memory(attn_ctx *ctx, const void *buf, size_t len,
                                                        attn_safetensors **out);

/* As attn_safetensors_open, but only the header is read and checked (the
 * same checks); the tensor bytes stay in the file, which the handle keeps
 * open until attn_safetensors_close. Names, dtypes and shapes come from the
 * usual accessors; attn_safetensors_get gives views with data NULL, and
 * attn_safetensors_get_f32 fails (ATTN_E_ARG): read ranges of elements with
 * attn_safetensors_read. For a process that needs a slice of a big file
 * (each rank of `attn ring` reads its own rows). */
ATTN_NODISCARD attn_status attn_safetensors_open_header(attn_ctx *ctx, const char *path,
                                                        attn_safetensors **out);

/* Elements [first, first + n) of tensor `name` (flat, C order) into dst:
 * with as_f32, converted to float32 (F32, F64, F16, BF16 only, as
 * attn_safetensors_get_f32); else the file's own bytes (n * dtype size;
 * BOOL as 0 or 1). Works on any handle; on a header-only one it reads just
 * those bytes from the file. Returns as attn_safetensors_get, plus
 * ATTN_E_ARG (NULL dst, a range outside the tensor), ATTN_E_DTYPE (as_f32
 * on a non-float tensor), ATTN_E_IO (the read failed: the file shrank or
 * changed), ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_safetensors_read(attn_ctx *ctx, const attn_safetensors *st,
                                                 const char *name, int64_t first, int64_t n,
                                                 int as_f32, void *dst);

/* Free a handle and its data; views obtained from it become invalid.
 * attn_safetensors_close(NULL) is a no-op. */
void attn_safetensors_close(attn_safetensors *st);

/* Number of tensors (the "__metadata__" entry is not a tensor). */
int attn_safetensors_count(const attn_safetensors *st);

/* Name of tensor i, 0 <= i < count, in the order of their data in the file;
 * NULL if i is out of range. Owned by st. */
const char *attn_safetensors_name(const attn_safetensors *st, int i);

/* Index of the tensor called name, or -1 if there is none. */
int attn_safetensors_find(const attn_safetensors *st, const char *name);

/* Dtype name of tensor i as written in the file ("F32", "I8", ...) and its
 * rank (which may exceed ATTN_MAX_DIMS); NULL / -1 if i is out of range. */
const char *attn_safetensors_dtype_name(const attn_safetensors *st, int i);
int attn_safetensors_ndim(const attn_safetensors *st, int i);

/* A contiguous view of tensor `name` in the file's own dtype. view->data
 * points into memory owned by st (valid until close; the caller may modify
 * it in place). A 0-dim tensor gives ndim 0 and one element.
 * Returns ATTN_OK, ATTN_E_ARG (NULL argument), ATTN_E_NOTFOUND (no such
 * tensor; the message names it and the file), ATTN_E_DTYPE (a dtype attn has
 * no attn_dtype for), ATTN_E_UNSUPPORTED (more than ATTN_MAX_DIMS dims). */
ATTN_NODISCARD attn_status attn_safetensors_get(attn_ctx *ctx, const attn_safetensors *st,
                                                const char *name, attn_tensor *view);

/* Tensor `name` converted to float32: F32, F64 (rounded to nearest), F16 and
 * BF16 (exact) are accepted. *data is a fresh 64-byte aligned buffer of
 * numel floats that the caller frees with attn_buffer_free; view describes it
 * (contiguous, dtype F32). On failure *data is NULL.
 * Returns as attn_safetensors_get, plus ATTN_E_DTYPE for integer and boolean
 * tensors and ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_safetensors_get_f32(attn_ctx *ctx, const attn_safetensors *st,
                                                    const char *name, float **data,
                                                    attn_tensor *view);

/* Value of key in the "__metadata__" object, or NULL when the file has no
 * such key. Owned by st. */
const char *attn_safetensors_metadata(const attn_safetensors *st, const char *key);

/* Write n tensors to a safetensors file at path. names[i] names tensors[i]:
 * non-empty, valid UTF-8, unique, not "__metadata__". Views may be strided
 * (any strides, including 0 and negative) and are written contiguously, in
 * dtypes F32 F64 F16 BF16 I32 I64 U8 BOOL, with 0..ATTN_MAX_DIMS dims; a view
 * with no elements may have data == NULL. Tensors are laid out by decreasing
 * element size (then in the given order) so each stays aligned, and the
 * header is padded with spaces so the data section starts 8-byte aligned.
 * path is written by the output-file rule (attn_outfile_open below): a new
 * path or a regular file atomically (temporary file in path's directory,
 * fsync, rename; on any failure path is left as it was), a device or FIFO
 * in place; a read-only file, a directory or a dangling link is refused
 * (ATTN_E_IO). Returns ATTN_OK, ATTN_E_ARG (NULL or invalid name, duplicate name,
 * n < 0, NULL data with elements), ATTN_E_SHAPE (a negative size, or a size
 * whose byte count overflows), ATTN_E_DTYPE, ATTN_E_UNSUPPORTED (ndim outside
 * 0..4, as attn_safetensors_get), ATTN_E_IO, ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_safetensors_write(attn_ctx *ctx, const char *path, int n,
                                                  const char *const *names,
                                                  const attn_tensor *tensors);

/* As attn_safetensors_write, plus nmeta "__metadata__" string pairs:
 * meta[2*i] is a key, meta[2*i+1] its value (valid UTF-8; keys unique).
 * nmeta == 0 writes no "__metadata__" entry. Returns the statuses of
 * attn_safetensors_write; ATTN_E_ARG also for a NULL, duplicate or non-UTF-8
 * key or value. */
ATTN_NODISCARD attn_status attn_safetensors_write_meta(attn_ctx *ctx, const char *path, int n,
                                                       const char *const *names,
                                                       const attn_tensor *tensors, int nmeta,
                                                       const char *const *meta);

/* Output files: what writing to a path means, for every file the library
 * and the attn tool write (attn_safetensors_write, `attn sdpa/mha` outputs,
 * `attn embed --output`, ...). The rule:
 * - a new path, or an existing regular file: written atomically (a
 *   temporary file in the same directory, fsync, rename over path); on any
 *   failure path is left as it was. A replaced file keeps its permission
 *   bits;
 * - a regular file without write permission (no write bit, or access(2)
 *   denies it): refused, ATTN_E_IO; root gets no exception;
 * - a symbolic link: followed; the file it names is written by this rule
 *   and the link stays a link; a link to nothing is refused;
 * - a character device (/dev/null, a terminal) or a FIFO: written through
 *   in place, never replaced by a regular file (opening a FIFO waits for a
 *   reader, as the shell's > does);
 * - a directory, block device or socket: refused.
 * Whether the output is one of the caller's inputs is the caller's check
 * (the attn tool refuses it as bad usage).
 * Use: attn_outfile_open, write(2) to attn_outfile_fd, then
 * attn_outfile_commit (which closes and frees) or attn_outfile_abort. */
typedef struct attn_outfile attn_outfile;

/* Open path for writing by the rule above. Returns ATTN_OK, ATTN_E_ARG (NULL
 * or empty path), ATTN_E_IO (refused, or the file cannot be created; the
 * message says which), ATTN_E_NOMEM. */
ATTN_NODISCARD attn_status attn_outfile_open(attn_ctx *ctx, const char *path, attn_outfile **out);

/* The descriptor to write to (owned by o: do not close it), -1 for NULL. */
int attn_outfile_fd(const attn_outfile *o);

/* Finish: fsync and rename for a regular file, close for a device or FIFO.
 * Frees o whatever the result. Returns ATTN_OK, ATTN_E_ARG (o NULL) or
 * ATTN_E_IO (a failed fsync, close or rename: the temporary file is removed
 * and path left as it was). */
ATTN_NODISCARD attn_status attn_outfile_commit(attn_ctx *ctx, attn_outfile *o);

/* Give up: remove the temporary file (path is left as it was), free o.
 * NULL is a no-op. Bytes already written to a device or FIFO stay written. */
void attn_outfile_abort(attn_outfile *o);

/* Free a buffer the library allocated for the caller (attn_safetensors_get_f32,
 * ...). attn_buffer_free(NULL) is a no-op. */
void attn_buffer_free(void *p);

#ifdef __cplusplus
}
#endif
#endif /* ATTN_IO_H */

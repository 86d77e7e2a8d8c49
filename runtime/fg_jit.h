/* fg_jit: variant -> CUBIN, through the caches.
 *   generate source -> key -> memory -> disk -> (per-key lock) disk again ->
 *   NVRTC -> store (disk, or memory when the disk is unusable). */
#ifndef FG_JIT_H
#define FG_JIT_H

#include "fg_cache.h"
#include "fg_ctx.h"

/* The cache key of a variant's source for its target (fagen version, template
 * set hash, name, source, sorted NVRTC options, NVRTC fingerprint, target). */
fagen_status fg_jit_key(const fagen_variant *v, const char *source, unsigned char key[32],
                        fg_err *err);

/* Produces the CUBIN of a valid variant.  *from_disk (may be NULL) tells
 * whether it came from the disk cache.  The caller frees out with
 * fg_cache_blob_free.  On FAGEN_E_COMPILE the NVRTC log is kept in ctx. */
fagen_status fg_jit_cubin(fagen_ctx *ctx, const fagen_variant *v, fg_cache_blob *out,
                          int *from_disk, fg_err *err);

/* Frees the in-memory CUBIN store. */
void fg_jit_release(fagen_ctx *ctx);

#endif

/* fg_tool_util: the pieces fagen-bench and fagen-autotune share outside
 * timing: option lists, variant ordering by name, and compiling a list of
 * variants in parallel threads.  Public fagen API only. */
#ifndef FG_TOOL_UTIL_H
#define FG_TOOL_UTIL_H

#include <stddef.h>

#include "fagen.h"

/* Parses "64,128,256" (positive integers) into out[cap].  Returns the count,
 * or -1 on a malformed list. */
int fg_parse_int_list(const char *s, int *out, int cap);

/* strcmp of the two variants' names: the deterministic order ties break by. */
int fg_variant_name_cmp(const fagen_variant *a, const fagen_variant *b);

/* Called once per variant as it finishes, with the compile's status; calls
 * are serialized (never two at once), `done` counts finished variants. */
typedef void fg_compiled_fn(void *user, size_t i, fagen_status st, size_t done);

/* Compiles vs[0..n) into ctx's cache with `jobs` threads (at most 64;
 * 0: one per CPU).  Returns the thread count used. */
int fg_compile_all(fagen_ctx *ctx, const fagen_variant *vs, size_t n, int jobs,
                   fg_compiled_fn *on_done, void *user);

/* The same in the background, so that the caller can use each variant as
 * soon as it is compiled (the tuner measures on the GPU meanwhile): the
 * threads take vs[] in index order.  vs must outlive the queue.  Returns
 * NULL when out of memory or no thread starts. */
typedef struct fg_compile_queue fg_compile_queue;
fg_compile_queue *fg_compile_start(fagen_ctx *ctx, const fagen_variant *vs, size_t n, int jobs,
                                   fg_compiled_fn *on_done, void *user);
/* Blocks until vs[i] has been compiled (successfully or not). */
void fg_compile_wait(fg_compile_queue *q, size_t i);
/* How many variants have been compiled so far. */
size_t fg_compile_done(fg_compile_queue *q);
/* Waits for the threads and frees the queue; with `cancel`, variants not yet
 * started are skipped (on_done is not called for them).  Returns the thread
 * count used. */
int fg_compile_finish(fg_compile_queue *q, int cancel);

#endif

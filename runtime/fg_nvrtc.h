/* fg_nvrtc: NVRTC, loaded at run time.
 *
 * Search order (the first that exists wins; FAGEN_NVRTC, when set, is the only
 * candidate, so that a wrong explicit choice is an error, not a silent
 * fallback):
 *   1. $FAGEN_NVRTC (a library file)
 *   2. $CUDA_HOME/lib64, $CUDA_PATH/lib64 (libnvrtc.so.13, .so.12, .so)
 *   3. /usr/local/cuda/lib64
 *   4. the NVIDIA pip wheels beside libfagen (nvidia/cu13/lib, nvidia/cuda_nvrtc/lib,
 *      one and two levels up)
 *   5. the dynamic loader's own path (LD_LIBRARY_PATH, ld.so.cache)
 */
#ifndef FG_NVRTC_H
#define FG_NVRTC_H

#include <stddef.h>

#include "fagen.h"
#include "fg_base.h"

/* The candidate paths of steps 1-4, in order, "; "-separated, and whether the
 * loader path (step 5) follows.  Exposed for tests. */
void fg_nvrtc_candidates(char *out, size_t size, int *then_loader);

/* A fingerprint of the NVRTC that would be loaded (resolved file name and
 * size), found without loading it, for cache keys.  Returns FAGEN_OK or
 * FAGEN_E_NO_NVRTC (message lists every path tried). */
fagen_status fg_nvrtc_fingerprint(char *out, size_t size, fg_err *err);

/* Loads NVRTC (once per process).  Returns FAGEN_OK or FAGEN_E_NO_NVRTC. */
fagen_status fg_nvrtc_load(fg_err *err);

/* NVRTC's version, loading it if needed. */
fagen_status fg_nvrtc_version(int *major, int *minor, fg_err *err);

/* The option that skips NVRTC's builtin declarations; fg_nvrtc_compile drops
 * it for an NVRTC older than 12.4, which does not know it. */
#define FG_NVRTC_MINIMAL "--minimal"

/* The compile options for a target, sorted (they are part of cache keys);
 * cap must be at least 7. */
size_t fg_nvrtc_options(const fagen_target *t, char opts[][64], size_t cap);

typedef struct fg_nvrtc_result {
  unsigned char *cubin; /* malloc'd */
  size_t cubin_size;
  char *log;            /* malloc'd, NUL-terminated, never NULL on return */
  double seconds;
  char version[32];     /* "13.0" */
  int registers, spill_stores, spill_loads, stack_bytes, static_smem;
} fg_nvrtc_result;

/* Compiles src to a CUBIN for t.  name is the program name NVRTC shows in
 * messages.  On FAGEN_E_COMPILE the log is in out->log (caller frees it
 * with fg_nvrtc_result_free either way).  Returns FAGEN_OK, FAGEN_E_NO_NVRTC,
 * FAGEN_E_COMPILE or FAGEN_E_NO_MEMORY. */
fagen_status fg_nvrtc_compile(const char *src, const char *name, const fagen_target *t,
                              fg_nvrtc_result *out, fg_err *err);
void fg_nvrtc_result_free(fg_nvrtc_result *r);

/* Parses a ptxas -v report into the result's resource fields; a field the
 * log does not report is -1. */
void fg_nvrtc_parse_ptxas(const char *log, fg_nvrtc_result *r);

/* Finds ptxas's "Potential Performance Loss" note in a compile log (as when
 * it serializes the wgmma products of a Hopper kernel: C7510-C7520) and
 * copies its text, from the message number on, into line (NUL-terminated,
 * truncated to cap).  Returns 1 if the log holds one, else 0. */
int fg_ptxas_perf_loss(const char *log, char *line, size_t cap);

#endif

/* fg_cache: the on-disk kernel cache.
 *
 * Root: $FAGEN_CACHE_DIR, else $XDG_CACHE_HOME/fagen (only if absolute), else
 * $HOME/.cache/fagen.  Kernels live in ROOT/kernels/NAME.KEY16.fgk, where KEY
 * is a SHA-256 over everything that changes the CUBIN.  File format (all
 * integers little-endian):
 *
 *   0   8  magic "FAGENKC\0"
 *   8   4  format version (FG_CACHE_FORMAT)
 *   12  4  header size (128)
 *   16  32 key
 *   48  8  payload length
 *   56  32 SHA-256 of the payload
 *   88  40 zero
 *   128    payload: records of (u32 tag, u32 length, bytes): name, target,
 *          NVRTC version, CUBIN, ptxas log, registers, spills, stack, shared
 *          memory, threads, compile time.  Unknown tags are skipped.
 *
 * A file is written to a temporary name in the same folder, fsync'ed and
 * renamed.  A per-key lock (ROOT/kernels/NAME.KEY16.lock, flock'ed, removed
 * by its holder) makes N processes that miss the same key compile it once.
 * A file that fails any check is never loaded; the next compile replaces it.
 * Beyond the size cap ($FAGEN_CACHE_MAX_BYTES, default 1 GiB) the least
 * recently used files go (a hit refreshes a file's modification time).
 * An unusable folder degrades the cache to memory only, with one warning. */
#ifndef FG_CACHE_H
#define FG_CACHE_H

#include <pthread.h>
#include <stddef.h>

#include "fagen.h"
#include "fg_base.h"
#include "fg_log.h"

#define FG_CACHE_FORMAT 1
#define FG_CACHE_HEADER 128
#define FG_CACHE_DEFAULT_MAX ((unsigned long long)1 << 30)

typedef struct fg_cache_meta {
  char name[FAGEN_VARIANT_NAME_MAX];
  char target[16];
  char nvrtc_version[32];
  int registers, spill_stores, spill_loads, stack_bytes, static_smem;
  int threads, dynamic_smem;
  double compile_seconds;
} fg_cache_meta;

typedef struct fg_cache_blob {
  fg_cache_meta meta;
  unsigned char *cubin; /* malloc'd */
  size_t cubin_size;
  char *log;            /* malloc'd, may be NULL */
} fg_cache_blob;

typedef struct fg_cache {
  char root[1024];    /* "" when no root could be determined */
  char dir[1100];     /* root/kernels */
  int disabled;       /* FAGEN_CACHE_DISABLE=1 */
  int degraded;       /* the folder proved unusable: memory only */
  unsigned long long max_bytes;
  const fg_log *log;
  pthread_mutex_t mu; /* guards degraded */
} fg_cache;

/* Reads the environment.  Touches no file. */
void fg_cache_init(fg_cache *c, const fg_log *log);
void fg_cache_destroy(fg_cache *c);

/* 1 if the disk may be used (not disabled, not degraded, root known). */
int fg_cache_usable(fg_cache *c);

/* Looks up key: 1 and a filled blob on a hit (caller frees with
 * fg_cache_blob_free), 0 on a miss or a bad file (logged). */
int fg_cache_load(fg_cache *c, const unsigned char key[32], const char *name, fg_cache_blob *out);

/* Stores blob under key.  Failures degrade the cache (one warning); returns 1
 * if the file was written. */
int fg_cache_store(fg_cache *c, const unsigned char key[32], const fg_cache_blob *blob);

/* Takes the per-key lock; returns a descriptor, or -1 when the cache is not
 * usable (then the caller proceeds without the lock). */
int fg_cache_lock(fg_cache *c, const unsigned char key[32], const char *name);
void fg_cache_unlock(fg_cache *c, int fd, const unsigned char key[32], const char *name);

/* Removes the file of key if present (used when a bad file was not replaced). */
void fg_cache_remove(fg_cache *c, const unsigned char key[32], const char *name);

/* Evicts least recently used files until the total is within max_bytes. */
void fg_cache_evict(fg_cache *c);

void fg_cache_blob_free(fg_cache_blob *b);

/* Serialization, exposed for tests. */
int fg_cache_encode(const unsigned char key[32], const fg_cache_blob *blob, fg_buf *out);
/* Returns 1 if data is a well-formed file for key (key NULL: any key). */
int fg_cache_decode(const unsigned char *data, size_t size, const unsigned char key[32],
                    fg_cache_blob *out, char *why, size_t why_size);

/* One listed cache file. */
typedef struct fg_cache_file {
  char path[1400]; /* dir (< 1100) + '/' + file name (< 256) */
  char name[FAGEN_VARIANT_NAME_MAX];
  long long bytes;
  double mtime;
  int valid;
  fg_cache_meta meta;
} fg_cache_file;

/* Lists ROOT/kernels (valid or not).  *files is malloc'd.  Returns FAGEN_OK
 * (an absent folder lists nothing) or FAGEN_E_IO / FAGEN_E_NO_MEMORY. */
fagen_status fg_cache_scan(fg_cache *c, int decode, fg_cache_file **files, size_t *n, fg_err *err);

/* Removes every kernel file; *removed counts them. */
fagen_status fg_cache_clear(fg_cache *c, size_t *removed, fg_err *err);

#endif

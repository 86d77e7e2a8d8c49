/* The public face of the kernel cache (fagen cache ls|info|clear). */
#include <stdlib.h>
#include <string.h>

#include "fg_ctx.h"

FAGEN_API fagen_status fagen_cache_info(fagen_ctx *ctx, fagen_cache_status *out) {
  fg_err err;
  if (!ctx || !out) {
    fg_fail(&err, FAGEN_E_NULL_POINTER, "fagen_cache_info: NULL argument");
    return fg_ctx_fail(ctx, &err);
  }
  memset(out, 0, sizeof *out);
  fg_strlcpy(out->dir, ctx->cache.dir, sizeof out->dir);
  out->enabled = !ctx->cache.disabled;
  out->usable = fg_cache_usable(&ctx->cache);
  out->max_bytes = ctx->cache.max_bytes;
  fg_cache_file *files;
  size_t n;
  if (fg_cache_scan(&ctx->cache, 0, &files, &n, &err) != FAGEN_OK) return fg_ctx_fail(ctx, &err);
  for (size_t i = 0; i < n; i++) out->total_bytes += (unsigned long long)files[i].bytes;
  out->files = n;
  free(files);
  return FAGEN_OK;
}

static int fg_entry_by_time(const void *a, const void *b) {
  const fagen_cache_entry *x = a, *y = b;
  if (x->last_used != y->last_used) return x->last_used < y->last_used ? -1 : 1;
  return strcmp(x->file, y->file);
}

FAGEN_API fagen_status fagen_cache_list(fagen_ctx *ctx, fagen_cache_entry **entries,
                                        size_t *count) {
  fg_err err;
  if (!ctx || !entries || !count) {
    fg_fail(&err, FAGEN_E_NULL_POINTER, "fagen_cache_list: NULL argument");
    return fg_ctx_fail(ctx, &err);
  }
  *entries = NULL;
  *count = 0;
  fg_cache_file *files;
  size_t n;
  if (fg_cache_scan(&ctx->cache, 1, &files, &n, &err) != FAGEN_OK) return fg_ctx_fail(ctx, &err);
  fagen_cache_entry *e = calloc(n ? n : 1, sizeof *e);
  if (!e) {
    free(files);
    fg_fail(&err, FAGEN_E_NO_MEMORY, "out of memory");
    return fg_ctx_fail(ctx, &err);
  }
  for (size_t i = 0; i < n; i++) {
    const fg_cache_file *f = &files[i];
    fg_strlcpy(e[i].name, f->valid ? f->meta.name : f->name, sizeof e[i].name);
    const char *slash = strrchr(f->path, '/');
    fg_strlcpy(e[i].file, slash ? slash + 1 : f->path, sizeof e[i].file);
    fg_strlcpy(e[i].target, f->meta.target, sizeof e[i].target);
    fg_strlcpy(e[i].nvrtc_version, f->meta.nvrtc_version, sizeof e[i].nvrtc_version);
    e[i].bytes = f->bytes;
    e[i].last_used = f->mtime;
    e[i].valid = f->valid;
    e[i].registers = f->meta.registers;
    e[i].spill_store_bytes = f->meta.spill_stores;
    e[i].compile_seconds = f->meta.compile_seconds;
  }
  free(files);
  qsort(e, n, sizeof *e, fg_entry_by_time);
  *entries = e;
  *count = n;
  return FAGEN_OK;
}

FAGEN_API fagen_status fagen_cache_clear(fagen_ctx *ctx, size_t *removed) {
  fg_err err;
  if (!ctx) {
    fg_fail(&err, FAGEN_E_NULL_POINTER, "fagen_cache_clear: ctx is NULL");
    return fg_ctx_fail(ctx, &err);
  }
  size_t n = 0;
  fagen_status st = fg_cache_clear(&ctx->cache, &n, &err);
  if (removed) *removed = n;
  return st == FAGEN_OK ? FAGEN_OK : fg_ctx_fail(ctx, &err);
}

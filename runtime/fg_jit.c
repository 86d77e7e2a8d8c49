#include "fg_jit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fg_gen.h"
#include "fg_nvrtc.h"
#include "fg_sha256.h"
#include "fg_templates.h"
#include "fg_variant.h"

struct fg_memcubin {
  fg_memcubin *next;
  unsigned char key[32];
  fg_cache_blob blob;
};

fagen_status fg_jit_key(const fagen_variant *v, const char *source, unsigned char key[32],
                        fg_err *err) {
  /* The generated source stands for the templates and the generator: it is
   * all that reaches NVRTC. */
  char gen_rev[64], nvrtc_id[512], name[FAGEN_VARIANT_NAME_MAX], target[16];
  snprintf(gen_rev, sizeof gen_rev, "generator rev %d", FG_GEN_REVISION);
  fagen_status st = fg_nvrtc_fingerprint(nvrtc_id, sizeof nvrtc_id, err);
  if (st != FAGEN_OK) return st;
  fagen_variant_name(v, name, sizeof name);
  fagen_target_name(&v->target, 1, target, sizeof target);
  char opts[8][64];
  size_t nopt = fg_nvrtc_options(&v->target, opts, 8);
  fg_sha256 s;
  fg_sha256_init(&s);
  const char *parts[] = {"fagen-kernel-cache-key-v1", FAGEN_VERSION_STRING, gen_rev, name, source};
  for (size_t i = 0; i < FG_ARRAY_LEN(parts); i++) fg_sha256_update(&s, parts[i], strlen(parts[i]) + 1);
  for (size_t i = 0; i < nopt; i++) fg_sha256_update(&s, opts[i], strlen(opts[i]) + 1);
  fg_sha256_update(&s, nvrtc_id, strlen(nvrtc_id) + 1);
  fg_sha256_update(&s, target, strlen(target) + 1);
  fg_sha256_final(&s, key);
  return FAGEN_OK;
}

static int fg_blob_copy(fg_cache_blob *dst, const fg_cache_blob *src) {
  memset(dst, 0, sizeof *dst);
  dst->meta = src->meta;
  dst->cubin = malloc(src->cubin_size ? src->cubin_size : 1);
  dst->log = fg_strdup(src->log);
  if (!dst->cubin || (src->log && !dst->log)) {
    fg_cache_blob_free(dst);
    return 0;
  }
  memcpy(dst->cubin, src->cubin, src->cubin_size);
  dst->cubin_size = src->cubin_size;
  return 1;
}

static int fg_mem_find(fagen_ctx *ctx, const unsigned char key[32], fg_cache_blob *out) {
  int found = 0, ok = 1;
  pthread_mutex_lock(&ctx->mu);
  for (fg_memcubin *m = ctx->mem; m; m = m->next)
    if (memcmp(m->key, key, 32) == 0) {
      found = 1;
      ok = fg_blob_copy(out, &m->blob);
      break;
    }
  pthread_mutex_unlock(&ctx->mu);
  return found && ok;
}

static void fg_mem_add(fagen_ctx *ctx, const unsigned char key[32], const fg_cache_blob *blob) {
  fg_memcubin *m = calloc(1, sizeof *m);
  if (!m) return;
  if (!fg_blob_copy(&m->blob, blob)) {
    free(m);
    return;
  }
  memcpy(m->key, key, 32);
  pthread_mutex_lock(&ctx->mu);
  m->next = ctx->mem;
  ctx->mem = m;
  pthread_mutex_unlock(&ctx->mu);
}

void fg_jit_release(fagen_ctx *ctx) {
  fg_memcubin *m = ctx->mem;
  while (m) {
    fg_memcubin *next = m->next;
    fg_cache_blob_free(&m->blob);
    free(m);
    m = next;
  }
  ctx->mem = NULL;
}

fagen_status fg_jit_cubin(fagen_ctx *ctx, const fagen_variant *v, fg_cache_blob *out,
                          int *from_disk, fg_err *err) {
  memset(out, 0, sizeof *out);
  if (from_disk) *from_disk = 0;
  fg_resources res;
  fagen_status st = fg_variant_check(v, &res, err);
  if (st != FAGEN_OK) return st;
  char name[FAGEN_VARIANT_NAME_MAX];
  fagen_variant_name(v, name, sizeof name);

  fg_buf src;
  fg_buf_init(&src);
  st = fg_gen_source(v, &src, err);
  unsigned char key[32];
  if (st == FAGEN_OK) st = fg_jit_key(v, src.data, key, err);
  if (st != FAGEN_OK) {
    fg_buf_free(&src);
    return st;
  }
  if (fg_mem_find(ctx, key, out)) {
    fg_buf_free(&src);
    fg_logf(&ctx->log, FAGEN_LOG_DEBUG, "memory cache hit %s", name);
    return FAGEN_OK;
  }
  if (fg_cache_load(&ctx->cache, key, name, out)) {
    fg_buf_free(&src);
    if (from_disk) *from_disk = 1;
    fg_logf(&ctx->log, FAGEN_LOG_INFO, "cache hit %s", name);
    return FAGEN_OK;
  }
  fg_logf(&ctx->log, FAGEN_LOG_INFO, "cache miss %s", name);
  /* Another process may be compiling the same key: wait for it, then look
     again before compiling ourselves. */
  int lock = fg_cache_lock(&ctx->cache, key, name);
  if (lock >= 0 && fg_cache_load(&ctx->cache, key, name, out)) {
    fg_cache_unlock(&ctx->cache, lock, key, name);
    fg_buf_free(&src);
    if (from_disk) *from_disk = 1;
    fg_logf(&ctx->log, FAGEN_LOG_INFO, "cache hit %s (compiled by another process)", name);
    return FAGEN_OK;
  }
  fg_nvrtc_result r;
  st = fg_nvrtc_compile(src.data, name, &v->target, &r, err);
  fg_buf_free(&src);
  if (st != FAGEN_OK) {
    if (st == FAGEN_E_COMPILE) fg_ctx_set_compile_log(ctx, r.log);
    fg_nvrtc_result_free(&r);
    fg_cache_unlock(&ctx->cache, lock, key, name);
    return st;
  }
  out->cubin = r.cubin;
  out->cubin_size = r.cubin_size;
  out->log = r.log;
  r.cubin = NULL;
  r.log = NULL;
  fg_cache_meta *m = &out->meta;
  fg_strlcpy(m->name, name, sizeof m->name);
  fagen_target_name(&v->target, 1, m->target, sizeof m->target);
  fg_strlcpy(m->nvrtc_version, r.version, sizeof m->nvrtc_version);
  m->registers = r.registers;
  m->spill_stores = r.spill_stores;
  m->spill_loads = r.spill_loads;
  m->stack_bytes = r.stack_bytes;
  m->static_smem = r.static_smem;
  m->threads = res.threads;
  m->dynamic_smem = res.smem_bytes;
  m->compile_seconds = r.seconds;
  fg_nvrtc_result_free(&r);
  /* The kernel is correct but slower than its design (a template change
     made ptxas serialize its wgmma products, say): say so where users and
     template authors look, not only in the log the cache keeps. */
  char loss[256];
  if (fg_ptxas_perf_loss(out->log, loss, sizeof loss))
    fg_logf(&ctx->log, FAGEN_LOG_WARN, "%s: ptxas reports %s", name, loss);
  fg_logf(&ctx->log, FAGEN_LOG_INFO,
          "compiled %s in %.3f s (NVRTC %s; %d registers, %d/%d bytes spilled, %d bytes stack)",
          name, m->compile_seconds, m->nvrtc_version, m->registers, m->spill_stores,
          m->spill_loads, m->stack_bytes);
  int stored = fg_cache_store(&ctx->cache, key, out);
  fg_cache_unlock(&ctx->cache, lock, key, name);
  if (stored)
    fg_cache_evict(&ctx->cache);
  else
    fg_mem_add(ctx, key, out);
  return FAGEN_OK;
}

static void fg_fill_info(const fg_cache_blob *b, int from_disk, fagen_kernel_info *info) {
  memset(info, 0, sizeof *info);
  fg_strlcpy(info->name, b->meta.name, sizeof info->name);
  info->registers = b->meta.registers;
  info->spill_store_bytes = b->meta.spill_stores;
  info->spill_load_bytes = b->meta.spill_loads;
  info->stack_bytes = b->meta.stack_bytes;
  info->static_smem_bytes = b->meta.static_smem;
  info->dynamic_smem_bytes = b->meta.dynamic_smem;
  info->threads = b->meta.threads;
  info->compile_seconds = b->meta.compile_seconds;
  info->cubin_bytes = b->cubin_size;
  info->from_disk_cache = from_disk;
}

FAGEN_API fagen_status fagen_cubin(fagen_ctx *ctx, const fagen_variant *v, void **cubin,
                                   size_t *size, fagen_kernel_info *info) {
  fg_err err;
  if (!ctx || !v || !cubin || !size) {
    fg_fail(&err, FAGEN_E_NULL_POINTER, "fagen_cubin: NULL argument");
    return fg_ctx_fail(ctx, &err);
  }
  *cubin = NULL;
  *size = 0;
  fg_cache_blob blob;
  int from_disk = 0;
  if (fg_jit_cubin(ctx, v, &blob, &from_disk, &err) != FAGEN_OK) return fg_ctx_fail(ctx, &err);
  if (info) fg_fill_info(&blob, from_disk, info);
  *cubin = blob.cubin; /* handed over: malloc'd, released with fagen_free */
  *size = blob.cubin_size;
  blob.cubin = NULL;
  fg_cache_blob_free(&blob);
  return FAGEN_OK;
}

FAGEN_API fagen_status fagen_compile(fagen_ctx *ctx, const fagen_variant *v,
                                     fagen_kernel_info *info) {
  fg_err err;
  if (!ctx || !v) {
    fg_fail(&err, FAGEN_E_NULL_POINTER, "fagen_compile: ctx or variant is NULL");
    return fg_ctx_fail(ctx, &err);
  }
  fg_cache_blob blob;
  int from_disk = 0;
  fagen_status st = fg_jit_cubin(ctx, v, &blob, &from_disk, &err);
  if (st != FAGEN_OK) return fg_ctx_fail(ctx, &err);
  if (info) fg_fill_info(&blob, from_disk, info);
  fg_cache_blob_free(&blob);
  return FAGEN_OK;
}

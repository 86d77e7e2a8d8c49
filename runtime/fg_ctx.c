#include "fg_ctx.h"

#include <stdlib.h>
#include <string.h>

#include "fg_jit.h"
#include "fg_kernels.h"

FAGEN_API fagen_status fagen_ctx_create(fagen_ctx **out) {
  if (!out) {
    fg_set_last_error(FAGEN_E_NULL_POINTER, "fagen_ctx_create: out is NULL");
    return FAGEN_E_NULL_POINTER;
  }
  *out = NULL;
  fagen_ctx *ctx = calloc(1, sizeof *ctx);
  if (!ctx) {
    fg_set_last_error(FAGEN_E_NO_MEMORY, "fagen_ctx_create: out of memory");
    return FAGEN_E_NO_MEMORY;
  }
  pthread_mutex_init(&ctx->mu, NULL);
  pthread_cond_init(&ctx->loaded, NULL);
  fg_log_init(&ctx->log);
  fg_cache_init(&ctx->cache, &ctx->log);
  *out = ctx;
  return FAGEN_OK;
}

FAGEN_API void fagen_ctx_destroy(fagen_ctx *ctx) {
  if (!ctx) return;
  fg_kernels_release(ctx);
  fg_jit_release(ctx);
  fg_err err;
  const fg_cuda_api *cu = NULL;
  for (int d = 0; d < FG_MAX_DEVICES; d++)
    if (ctx->primary[d]) {
      if (!cu) cu = fg_cuda(&err);
      CUdevice dev;
      if (cu && cu->device_get(&dev, d) == CUDA_SUCCESS) cu->primary_ctx_release(dev);
    }
  for (int i = 0; i < ctx->n_tunes; i++) fg_tune_free(&ctx->tunes[i]);
  fg_cache_destroy(&ctx->cache);
  free(ctx->compile_log);
  pthread_cond_destroy(&ctx->loaded);
  pthread_mutex_destroy(&ctx->mu);
  free(ctx);
}

static int fg_same_class(const fagen_device_class *a, const fagen_device_class *b) {
  return strcmp(a->name, b->name) == 0 && a->target.arch == b->target.arch &&
         a->target.arch_specific == b->target.arch_specific && a->sm_count == b->sm_count;
}

const fg_tune_state *fg_ctx_tune(fagen_ctx *ctx, const fagen_device_class *dc) {
  pthread_mutex_lock(&ctx->mu);
  const fg_tune_state *st = NULL;
  for (int i = 0; i < ctx->n_tunes && !st; i++)
    if (fg_same_class(&ctx->tunes[i].dc, dc)) st = &ctx->tunes[i];
  if (!st && ctx->n_tunes < FG_MAX_TUNE) { /* first use: read the tables (once) */
    fg_tune_load(&ctx->tunes[ctx->n_tunes], dc, &ctx->cache, &ctx->log);
    st = &ctx->tunes[ctx->n_tunes++];
  }
  pthread_mutex_unlock(&ctx->mu);
  return st;
}

fagen_status fg_ctx_fail(fagen_ctx *ctx, const fg_err *err) {
  if (ctx) {
    pthread_mutex_lock(&ctx->mu);
    fg_strlcpy(ctx->errmsg, err->msg, sizeof ctx->errmsg);
    pthread_mutex_unlock(&ctx->mu);
  }
  return fg_publish(err);
}

void fg_ctx_set_compile_log(fagen_ctx *ctx, const char *log) {
  char *copy = fg_strdup(log ? log : "");
  pthread_mutex_lock(&ctx->mu);
  free(ctx->compile_log);
  ctx->compile_log = copy;
  pthread_mutex_unlock(&ctx->mu);
}

static _Thread_local char fg_errmsg_copy[4096];

/* The per-thread copy handed out by fagen_compile_log: logs have no useful
 * bound, so it is heap memory, released by the key's destructor when the
 * thread exits. */
static pthread_key_t fg_log_key;
static pthread_once_t fg_log_key_once = PTHREAD_ONCE_INIT;
static void fg_log_key_init(void) { pthread_key_create(&fg_log_key, free); }

FAGEN_API const char *fagen_errmsg(const fagen_ctx *ctx) {
  if (!ctx) return fagen_last_error();
  fagen_ctx *c = (fagen_ctx *)ctx;
  pthread_mutex_lock(&c->mu);
  fg_strlcpy(fg_errmsg_copy, c->errmsg, sizeof fg_errmsg_copy);
  pthread_mutex_unlock(&c->mu);
  return fg_errmsg_copy;
}

FAGEN_API const char *fagen_compile_log(const fagen_ctx *ctx) {
  if (!ctx) return "";
  fagen_ctx *c = (fagen_ctx *)ctx;
  pthread_once(&fg_log_key_once, fg_log_key_init);
  pthread_mutex_lock(&c->mu);
  char *copy = fg_strdup(c->compile_log ? c->compile_log : "");
  pthread_mutex_unlock(&c->mu);
  free(pthread_getspecific(fg_log_key));
  pthread_setspecific(fg_log_key, copy);
  return copy ? copy : "";
}

FAGEN_API fagen_status fagen_set_log_callback(fagen_ctx *ctx, fagen_log_fn fn, void *user,
                                              fagen_log_level max_level) {
  if (!ctx) {
    fg_set_last_error(FAGEN_E_NULL_POINTER, "fagen_set_log_callback: ctx is NULL");
    return FAGEN_E_NULL_POINTER;
  }
  if (fn) {
    ctx->log.fn = fn;
    ctx->log.user = user;
    ctx->log.max = max_level;
  } else {
    fg_log_init(&ctx->log);
  }
  return FAGEN_OK;
}

/* Streams that name no context of their own. */
static int fg_stream_is_special(CUstream s) {
  return s == NULL || s == CU_STREAM_LEGACY || s == CU_STREAM_PER_THREAD;
}

fagen_status fg_scope_enter(fagen_ctx *ctx, const fg_cuda_api *cu, CUstream stream, fg_scope *s,
                            fg_err *err) {
  memset(s, 0, sizeof *s);
  FG_CU_TRY(cu, err, cu->ctx_get_current(&s->cuctx), "cuCtxGetCurrent");
  if (!s->cuctx && !fg_stream_is_special(stream))
    FG_CU_TRY(cu, err, cu->stream_get_ctx(stream, &s->cuctx), "cuStreamGetCtx");
  if (!s->cuctx) {
    /* No context anywhere: the primary context of device 0, retained once
       per fagen context (autograd and XLA threads can have none current). */
    pthread_mutex_lock(&ctx->mu);
    CUcontext prim = ctx->primary[0];
    pthread_mutex_unlock(&ctx->mu);
    if (!prim) {
      CUdevice dev;
      FG_CU_TRY(cu, err, cu->device_get(&dev, 0), "cuDeviceGet(0)");
      FG_CU_TRY(cu, err, cu->primary_ctx_retain(&prim, dev), "cuDevicePrimaryCtxRetain");
      pthread_mutex_lock(&ctx->mu);
      if (ctx->primary[0]) { /* another thread won the race: keep one retain */
        prim = ctx->primary[0];
        pthread_mutex_unlock(&ctx->mu);
        cu->primary_ctx_release(dev);
      } else {
        ctx->primary[0] = prim;
        pthread_mutex_unlock(&ctx->mu);
      }
    }
    s->cuctx = prim;
  }
  CUcontext cur = NULL;
  cu->ctx_get_current(&cur);
  if (cur != s->cuctx) {
    FG_CU_TRY(cu, err, cu->ctx_push_current(s->cuctx), "cuCtxPushCurrent");
    s->pushed = 1;
  }
  CUresult rc = cu->ctx_get_device(&s->dev);
  if (rc != CUDA_SUCCESS) {
    fg_scope_leave(cu, s);
    return fg_cuda_fail(err, rc, "cuCtxGetDevice");
  }
  int d = (int)s->dev;
  if (d < 0 || d >= FG_MAX_DEVICES) {
    fg_scope_leave(cu, s);
    return fg_fail(err, FAGEN_E_NO_DEVICE, "device ordinal %d is beyond fagen's limit of %d", d,
                   FG_MAX_DEVICES);
  }
  pthread_mutex_lock(&ctx->mu);
  int known = ctx->target_known[d];
  s->target = ctx->targets[d];
  s->sm_count = ctx->sm_counts[d];
  pthread_mutex_unlock(&ctx->mu);
  if (!known) {
    fagen_status st = fg_cuda_device_target(s->dev, &s->target, err);
    if (st == FAGEN_OK) {
      rc = cu->device_get_attribute(&s->sm_count, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
                                    s->dev);
      if (rc != CUDA_SUCCESS)
        st = fg_cuda_fail(err, rc, "cuDeviceGetAttribute(MULTIPROCESSOR_COUNT)");
    }
    if (st != FAGEN_OK) {
      fg_scope_leave(cu, s);
      return st;
    }
    pthread_mutex_lock(&ctx->mu);
    ctx->targets[d] = s->target;
    ctx->sm_counts[d] = s->sm_count;
    ctx->target_known[d] = 1;
    pthread_mutex_unlock(&ctx->mu);
  }
  return FAGEN_OK;
}

void fg_scope_leave(const fg_cuda_api *cu, fg_scope *s) {
  if (s->pushed) {
    CUcontext popped;
    cu->ctx_pop_current(&popped);
    s->pushed = 0;
  }
}

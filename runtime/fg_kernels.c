#include "fg_kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fg_jit.h"
#include "fg_variant.h"

#define FG_FN_PER_KERNEL 8
#define FG_SMEM_DEFAULT_LIMIT (48 * 1024)

enum { FG_K_LOADING, FG_K_READY };

struct fg_kernel {
  fg_kernel *next;
  fagen_variant v;
  int state;
  CUlibrary lib;
  CUkernel kern[FG_KFN]; /* NULL where the module has no such kernel */
  int threads[FG_KFN], smem[FG_KFN];
  int nfn;
  struct {
    CUcontext cuctx;
    CUfunction fn[FG_KFN];
  } fns[FG_FN_PER_KERNEL];
};

static const char *const fg_kfn_suffix[FG_KFN] = {"", "_pre", "_post", "_dq"};

static unsigned fg_variant_hash(const fagen_variant *v) {
  const int f[] = {(int)v->op,  v->head_dim, v->block_q, v->block_kv,      v->warps,
                   v->stages,  v->causal,   (int)v->dtype, v->target.arch, v->target.arch_specific,
                   (int)v->features, v->pingpong, v->prefetch_q};
  unsigned h = 2166136261u;
  for (size_t i = 0; i < FG_ARRAY_LEN(f); i++) {
    h ^= (unsigned)f[i];
    h *= 16777619u;
  }
  return h % FG_KMAP_BUCKETS;
}

static int fg_variant_eq(const fagen_variant *a, const fagen_variant *b) {
  return a->op == b->op && a->head_dim == b->head_dim && a->block_q == b->block_q &&
         a->block_kv == b->block_kv && a->warps == b->warps && a->stages == b->stages &&
         a->causal == b->causal && a->features == b->features && a->dtype == b->dtype && a->target.arch == b->target.arch &&
         a->target.arch_specific == b->target.arch_specific && a->pingpong == b->pingpong &&
         a->prefetch_q == b->prefetch_q;
}

/* Compiles and loads v (ctx->mu not held). */
static fagen_status fg_kernel_load(fagen_ctx *ctx, const fg_cuda_api *cu, fg_kernel *k,
                                   fg_err *err) {
  fg_cache_blob blob;
  fagen_status st = fg_jit_cubin(ctx, &k->v, &blob, NULL, err);
  if (st != FAGEN_OK) return st;
  CUresult rc = cu->library_load_data(&k->lib, blob.cubin, NULL, NULL, 0, NULL, NULL, 0);
  if (rc != CUDA_SUCCESS) {
    fg_cache_blob_free(&blob);
    return fg_cuda_fail(err, rc, "cuLibraryLoadData");
  }
  rc = cu->library_get_kernel(&k->kern[FG_KFN_MAIN], k->lib, blob.meta.name);
  if (rc != CUDA_SUCCESS) {
    cu->library_unload(k->lib);
    k->lib = NULL;
    fg_cache_blob_free(&blob);
    return fg_cuda_fail(err, rc, "cuLibraryGetKernel");
  }
  k->threads[FG_KFN_MAIN] = blob.meta.threads;
  k->smem[FG_KFN_MAIN] = blob.meta.dynamic_smem;
  const fagen_op op = k->v.op;
  if (op == FAGEN_OP_BWD || op == FAGEN_OP_BWD_DET || op == FAGEN_OP_BWD_WGMMA) {
    /* The backward's helpers; their launch shapes come from the resource
     * model that the template checks against.  Both atomic-dQ families
     * (bwd, bwdwg) have NAME_pre and NAME_post, the deterministic one
     * NAME_pre and NAME_dq. */
    fg_resources res;
    fagen_status hst = fg_variant_check(&k->v, &res, err);
    const int atomic = op != FAGEN_OP_BWD_DET;
    const int need[FG_KFN] = {1, 1, atomic, !atomic};
    const int threads[FG_KFN] = {0, res.aux_threads, res.aux_threads, FG_BWD_DQ_THREADS};
    const int smem[FG_KFN] = {0, 0, 0, res.bwd_dq_smem};
    for (int i = 1; hst == FAGEN_OK && i < FG_KFN; i++) {
      if (!need[i]) continue;
      char sym[FAGEN_VARIANT_NAME_MAX + 8];
      snprintf(sym, sizeof sym, "%s%s", blob.meta.name, fg_kfn_suffix[i]);
      rc = cu->library_get_kernel(&k->kern[i], k->lib, sym);
      if (rc != CUDA_SUCCESS) hst = fg_cuda_fail(err, rc, "cuLibraryGetKernel (backward helper)");
      k->threads[i] = threads[i];
      k->smem[i] = smem[i];
    }
    if (hst != FAGEN_OK) {
      cu->library_unload(k->lib);
      k->lib = NULL;
      fg_cache_blob_free(&blob);
      return hst;
    }
  }
  fg_cache_blob_free(&blob);
  return FAGEN_OK;
}

/* The functions of a ready kernel in cuctx; called with ctx->mu held. */
static fagen_status fg_kernel_function(const fg_cuda_api *cu, fg_kernel *k, CUcontext cuctx,
                                       CUfunction fn[FG_KFN], fg_err *err) {
  for (int i = 0; i < k->nfn; i++)
    if (k->fns[i].cuctx == cuctx) {
      memcpy(fn, k->fns[i].fn, sizeof k->fns[i].fn);
      return FAGEN_OK;
    }
  CUfunction f[FG_KFN] = {NULL};
  for (int i = 0; i < FG_KFN; i++) {
    if (!k->kern[i]) continue;
    FG_CU_TRY(cu, err, cu->kernel_get_function(&f[i], k->kern[i]), "cuKernelGetFunction");
    if (k->smem[i] > FG_SMEM_DEFAULT_LIMIT)
      FG_CU_TRY(cu, err,
                cu->func_set_attribute(f[i], CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                       k->smem[i]),
                "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)");
  }
  if (k->nfn < FG_FN_PER_KERNEL) { /* beyond that, resolve each time (rare: many contexts) */
    k->fns[k->nfn].cuctx = cuctx;
    memcpy(k->fns[k->nfn].fn, f, sizeof f);
    k->nfn++;
  }
  memcpy(fn, f, sizeof f);
  return FAGEN_OK;
}

fagen_status fg_kernel_get(fagen_ctx *ctx, const fg_cuda_api *cu, const fg_scope *s,
                           const fagen_variant *v, fg_launchable *out, fg_err *err) {
  if (v->target.arch != s->target.arch || v->target.arch_specific != s->target.arch_specific) {
    char name[FAGEN_VARIANT_NAME_MAX];
    fagen_variant_name(v, name, sizeof name);
    return fg_fail(err, FAGEN_E_UNSUPPORTED_ARCH,
                   "variant %s is built for sm_%d%s but the device is sm_%d%s", name,
                   v->target.arch, v->target.arch_specific ? "a" : "", s->target.arch,
                   s->target.arch_specific ? "a" : "");
  }
  unsigned b = fg_variant_hash(v);
  pthread_mutex_lock(&ctx->mu);
  for (;;) {
    fg_kernel *k = ctx->kernels[b];
    while (k && !fg_variant_eq(&k->v, v)) k = k->next;
    if (k && k->state == FG_K_READY) {
      fagen_status st = fg_kernel_function(cu, k, s->cuctx, out->fns, err);
      out->fn = out->fns[FG_KFN_MAIN];
      memcpy(out->fn_threads, k->threads, sizeof k->threads);
      memcpy(out->fn_smem, k->smem, sizeof k->smem);
      out->threads = k->threads[FG_KFN_MAIN];
      out->smem = k->smem[FG_KFN_MAIN];
      pthread_mutex_unlock(&ctx->mu);
      return st;
    }
    if (k) { /* another thread is loading it */
      pthread_cond_wait(&ctx->loaded, &ctx->mu);
      continue;
    }
    k = calloc(1, sizeof *k);
    if (!k) {
      pthread_mutex_unlock(&ctx->mu);
      return fg_fail(err, FAGEN_E_NO_MEMORY, "out of memory");
    }
    k->v = *v;
    k->state = FG_K_LOADING;
    k->next = ctx->kernels[b];
    ctx->kernels[b] = k;
    pthread_mutex_unlock(&ctx->mu);

    fagen_status st = fg_kernel_load(ctx, cu, k, err);

    pthread_mutex_lock(&ctx->mu);
    if (st != FAGEN_OK) { /* unlink and let waiters try themselves */
      fg_kernel **pp = &ctx->kernels[b];
      while (*pp != k) pp = &(*pp)->next;
      *pp = k->next;
      free(k);
      pthread_cond_broadcast(&ctx->loaded);
      pthread_mutex_unlock(&ctx->mu);
      return st;
    }
    k->state = FG_K_READY;
    pthread_cond_broadcast(&ctx->loaded);
  }
}

void fg_kernels_release(fagen_ctx *ctx) {
  fg_err err;
  const fg_cuda_api *cu = NULL;
  for (int b = 0; b < FG_KMAP_BUCKETS; b++) {
    fg_kernel *k = ctx->kernels[b];
    while (k) {
      fg_kernel *next = k->next;
      if (k->lib) {
        if (!cu) cu = fg_cuda(&err);
        if (cu) cu->library_unload(k->lib);
      }
      free(k);
      k = next;
    }
    ctx->kernels[b] = NULL;
  }
}

FAGEN_API fagen_status fagen_prepare(fagen_ctx *ctx, const fagen_variant *variants, size_t n) {
  fg_err err;
  if (!ctx || (n && !variants)) {
    fg_fail(&err, FAGEN_E_NULL_POINTER, "fagen_prepare: NULL argument");
    return fg_ctx_fail(ctx, &err);
  }
  const fg_cuda_api *cu = fg_cuda(&err);
  if (!cu) return fg_ctx_fail(ctx, &err);
  fg_scope s;
  fagen_status st = fg_scope_enter(ctx, cu, NULL, &s, &err);
  if (st != FAGEN_OK) return fg_ctx_fail(ctx, &err);
  for (size_t i = 0; st == FAGEN_OK && i < n; i++) {
    fg_launchable l;
    st = fg_kernel_get(ctx, cu, &s, &variants[i], &l, &err);
  }
  fg_scope_leave(cu, &s);
  return st == FAGEN_OK ? FAGEN_OK : fg_ctx_fail(ctx, &err);
}

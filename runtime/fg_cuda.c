#include "fg_cuda.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "fg_variant.h"

static pthread_mutex_t fg_cuda_mu = PTHREAD_MUTEX_INITIALIZER;
static fg_cuda_api fg_cu_api;
static int fg_cu_state; /* 0 not tried, 1 ready, 2 failed (fg_cu_failure says why) */
static fg_err fg_cu_failure;

/* cuGetProcAddress_v2 (CUDA 12.0+). */
typedef CUresult (*fg_get_proc_fn)(const char *symbol, void **pfn, int cuda_version,
                                   cuuint64_t flags, CUdriverProcAddressQueryResult *status);

static fagen_status fg_cuda_load(fg_err *err) {
  void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!h)
    return fg_fail(err, FAGEN_E_NO_DRIVER,
                   "the CUDA driver (libcuda.so.1) could not be loaded: %s; GPU calls need an "
                   "NVIDIA driver (generation and compilation work without one)",
                   dlerror());
  fg_get_proc_fn get_proc = (fg_get_proc_fn)dlsym(h, "cuGetProcAddress_v2");
  if (!get_proc) {
    dlclose(h);
    return fg_fail(err, FAGEN_E_NO_DRIVER,
                   "the CUDA driver is too old: libcuda.so.1 has no cuGetProcAddress_v2 (fagen "
                   "needs a driver for CUDA 12.0 or newer)");
  }
  fg_cuda_api api;
  memset(&api, 0, sizeof api);
#define FG_CUDA_GET_(field, sym)                                                                \
  {                                                                                             \
    CUdriverProcAddressQueryResult q = CU_GET_PROC_ADDRESS_SUCCESS;                             \
    void *fn = NULL;                                                                            \
    if (get_proc(#sym, &fn, FG_CUDA_ABI, CU_GET_PROC_ADDRESS_DEFAULT, &q) != CUDA_SUCCESS ||   \
        !fn) {                                                                                  \
      dlclose(h);                                                                               \
      return fg_fail(err, FAGEN_E_NO_DRIVER, "the CUDA driver has no entry point %s (ABI %d)", \
                     #sym, FG_CUDA_ABI);                                                        \
    }                                                                                           \
    *(void **)&api.field = fn;                                                                  \
  }
  FG_CUDA_FN_LIST(FG_CUDA_GET_)
#undef FG_CUDA_GET_
  CUresult rc = api.init(0);
  if (rc == CUDA_ERROR_NO_DEVICE)
    return fg_fail(err, FAGEN_E_NO_DEVICE, "the CUDA driver reports no device (cuInit: no CUDA-capable device)");
  if (rc != CUDA_SUCCESS) {
    const char *name = NULL, *text = NULL;
    api.get_error_name(rc, &name);
    api.get_error_string(rc, &text);
    return fg_fail(err, (rc == CUDA_ERROR_STUB_LIBRARY || rc == CUDA_ERROR_SYSTEM_DRIVER_MISMATCH) ? FAGEN_E_NO_DRIVER : FAGEN_E_NO_DEVICE,
                   "cuInit failed: %s (%s)", name ? name : "?", text ? text : "?");
  }
  api.driver_get_version(&api.driver_version);
  fg_cu_api = api;
  return FAGEN_OK;
}

const fg_cuda_api *fg_cuda(fg_err *err) {
  /* Loaded once; a failure is remembered too, so that a machine without a
     driver does not dlopen on every call. */
  pthread_mutex_lock(&fg_cuda_mu);
  if (!fg_cu_state) {
    fg_cu_state = fg_cuda_load(&fg_cu_failure) == FAGEN_OK ? 1 : 2;
  }
  int state = fg_cu_state;
  if (state == 2 && err) *err = fg_cu_failure;
  pthread_mutex_unlock(&fg_cuda_mu);
  return state == 1 ? &fg_cu_api : NULL;
}

fagen_status fg_cuda_fail(fg_err *err, CUresult rc, const char *what) {
  const char *name = NULL, *text = NULL;
  if (fg_cu_state) {
    fg_cu_api.get_error_name(rc, &name);
    fg_cu_api.get_error_string(rc, &text);
  }
  return fg_fail(err, FAGEN_E_CUDA, "%s failed: %s (%s)", what, name ? name : "CUDA error",
                 text ? text : "no description");
}

fagen_status fg_cuda_device_target(CUdevice dev, fagen_target *out, fg_err *err) {
  int major = 0, minor = 0;
  const fg_cuda_api *cu = &fg_cu_api;
  FG_CU_TRY(cu, err, cu->device_get_attribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev),
            "cuDeviceGetAttribute(compute capability)");
  FG_CU_TRY(cu, err, cu->device_get_attribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev),
            "cuDeviceGetAttribute(compute capability)");
  fagen_target t = {major * 10 + minor, 1};
  if (!fg_target_supported(&t)) t.arch_specific = 0;
  if (!fg_target_supported(&t))
    return fg_fail(err, FAGEN_E_UNSUPPORTED_ARCH,
                   "the GPU has compute capability %d.%d; fagen's kernels need 8.0 or newer",
                   major, minor);
  *out = t;
  return FAGEN_OK;
}

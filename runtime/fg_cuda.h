/* fg_cuda: the CUDA driver API, loaded at run time from libcuda.so.1.
 *
 * libfagen never links libcuda: it dlopens it at the first GPU call, takes
 * cuGetProcAddress and fetches every entry point with a pinned ABI version
 * (FG_CUDA_ABI), so a newer driver keeps giving the semantics we were written
 * against.  Types and prototypes come from the toolkit's cuda.h (headers
 * only). */
#ifndef FG_CUDA_H
#define FG_CUDA_H

#include <cuda.h>

#include "fagen.h"
#include "fg_base.h"

/* Entry points are requested as of CUDA 12.0. */
#define FG_CUDA_ABI 12000

#define FG_CUDA_FN_LIST(X)                                \
  X(init, cuInit)                                         \
  X(driver_get_version, cuDriverGetVersion)               \
  X(get_error_name, cuGetErrorName)                       \
  X(get_error_string, cuGetErrorString)                   \
  X(device_get, cuDeviceGet)                              \
  X(device_get_count, cuDeviceGetCount)                   \
  X(device_get_attribute, cuDeviceGetAttribute)           \
  X(device_get_name, cuDeviceGetName)                     \
  X(primary_ctx_retain, cuDevicePrimaryCtxRetain)         \
  X(primary_ctx_release, cuDevicePrimaryCtxRelease)       \
  X(ctx_get_current, cuCtxGetCurrent)                     \
  X(ctx_set_current, cuCtxSetCurrent)                     \
  X(ctx_push_current, cuCtxPushCurrent)                   \
  X(ctx_pop_current, cuCtxPopCurrent)                     \
  X(ctx_get_device, cuCtxGetDevice)                       \
  X(ctx_synchronize, cuCtxSynchronize)                    \
  X(stream_get_ctx, cuStreamGetCtx)                       \
  X(stream_create, cuStreamCreate)                        \
  X(stream_destroy, cuStreamDestroy)                      \
  X(stream_synchronize, cuStreamSynchronize)              \
  X(stream_begin_capture, cuStreamBeginCapture)           \
  X(stream_end_capture, cuStreamEndCapture)               \
  X(stream_is_capturing, cuStreamIsCapturing)             \
  X(graph_instantiate, cuGraphInstantiateWithFlags)       \
  X(graph_launch, cuGraphLaunch)                          \
  X(graph_destroy, cuGraphDestroy)                        \
  X(graph_exec_destroy, cuGraphExecDestroy)               \
  X(library_load_data, cuLibraryLoadData)                 \
  X(library_unload, cuLibraryUnload)                      \
  X(library_get_kernel, cuLibraryGetKernel)               \
  X(kernel_get_function, cuKernelGetFunction)             \
  X(func_set_attribute, cuFuncSetAttribute)               \
  X(func_get_attribute, cuFuncGetAttribute)               \
  X(launch_kernel, cuLaunchKernel)                        \
  X(mem_alloc, cuMemAlloc)                                \
  X(mem_free, cuMemFree)                                  \
  X(mem_alloc_async, cuMemAllocAsync)                     \
  X(mem_free_async, cuMemFreeAsync)                       \
  X(memcpy_htod, cuMemcpyHtoD)                            \
  X(memcpy_dtoh, cuMemcpyDtoH)                            \
  X(memset_d8, cuMemsetD8)                                \
  X(memset_d32_async, cuMemsetD32Async)                  \
  X(event_create, cuEventCreate)                          \
  X(event_destroy, cuEventDestroy)                        \
  X(event_record, cuEventRecord)                          \
  X(event_synchronize, cuEventSynchronize)                \
  X(event_elapsed_time, cuEventElapsedTime)              \
  X(tensor_map_encode_tiled, cuTensorMapEncodeTiled)

#define FG_CUDA_FIELD_(field, sym) __typeof__(&sym) field;
typedef struct fg_cuda_api {
  FG_CUDA_FN_LIST(FG_CUDA_FIELD_)
  int driver_version; /* e.g. 13000 */
} fg_cuda_api;
#undef FG_CUDA_FIELD_

/* Loads the driver and cuInit(0), once per process.  Returns the table, or
 * NULL with FAGEN_E_NO_DRIVER (libcuda.so.1 missing or too old) or
 * FAGEN_E_NO_DEVICE (cuInit reports no device) in err. */
const fg_cuda_api *fg_cuda(fg_err *err);

/* Records a failed driver call as FAGEN_E_CUDA with the call and the
 * driver's error name and text. */
fagen_status fg_cuda_fail(fg_err *err, CUresult rc, const char *what);

/* Like fg_cuda, then runs `body` when rc is not CUDA_SUCCESS. */
#define FG_CU_TRY(api, err, call, what)                  \
  do {                                                   \
    CUresult fg_rc_ = (call);                            \
    if (fg_rc_ != CUDA_SUCCESS) return fg_cuda_fail((err), fg_rc_, (what)); \
  } while (0)

/* The compile target of a device: sm_90a for compute capability 9.0 (the
 * architecture-specific target, which wgmma needs), sm_MN otherwise, and
 * sm_100a/103a/120a/121a likewise for those.  Returns FAGEN_OK, FAGEN_E_CUDA
 * or FAGEN_E_UNSUPPORTED_ARCH (older than sm_80). */
fagen_status fg_cuda_device_target(CUdevice dev, fagen_target *out, fg_err *err);

#endif

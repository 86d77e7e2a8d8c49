/* Device classes and version facts (public API). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fg_ctx.h"
#include "fg_nvrtc.h"
#include "fg_templates.h"

FAGEN_API fagen_status fagen_device_class_slug(const fagen_device_class *dc, char *buf,
                                               size_t size) {
  if (!dc || !buf) return FAGEN_E_NULL_POINTER;
  char name[160];
  size_t k = 0;
  int dash = 0;
  for (const char *p = dc->name; *p && k + 1 < sizeof name; p++) {
    if (isalnum((unsigned char)*p)) {
      if (dash && k) name[k++] = '-';
      name[k++] = (char)tolower((unsigned char)*p);
      dash = 0;
    } else {
      dash = 1;
    }
  }
  name[k] = '\0';
  int n = snprintf(buf, size, "sm%d%s-%s-%dsm", dc->target.arch, dc->target.arch_specific ? "a" : "",
                   k ? name : "unnamed", dc->sm_count);
  if (n < 0 || (size_t)n >= size) return FAGEN_E_BUFFER_TOO_SMALL;
  return FAGEN_OK;
}

fagen_status fg_device_class_of(const fg_cuda_api *cu, CUdevice dev, const fagen_target *t,
                                fagen_device_class *out, fg_err *err) {
  memset(out, 0, sizeof *out);
  FG_CU_TRY(cu, err, cu->device_get_name(out->name, (int)sizeof out->name, dev), "cuDeviceGetName");
  FG_CU_TRY(cu, err,
            cu->device_get_attribute(&out->sm_count, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev),
            "cuDeviceGetAttribute(MULTIPROCESSOR_COUNT)");
  out->target = *t;
  return FAGEN_OK;
}

FAGEN_API fagen_status fagen_device_class_current(fagen_ctx *ctx, fagen_device_class *out) {
  fg_err err;
  if (!ctx || !out) {
    fg_fail(&err, FAGEN_E_NULL_POINTER, "fagen_device_class_current: NULL argument");
    return fg_ctx_fail(ctx, &err);
  }
  const fg_cuda_api *cu = fg_cuda(&err);
  if (!cu) return fg_ctx_fail(ctx, &err);
  fg_scope s;
  if (fg_scope_enter(ctx, cu, NULL, &s, &err) != FAGEN_OK) return fg_ctx_fail(ctx, &err);
  fagen_status st = fg_device_class_of(cu, s.dev, &s.target, out, &err);
  fg_scope_leave(cu, &s);
  return st == FAGEN_OK ? FAGEN_OK : fg_ctx_fail(ctx, &err);
}

FAGEN_API fagen_status fagen_template_hash(char out[65]) {
  fg_err err;
  if (!out) return FAGEN_E_NULL_POINTER;
  return fg_templates_hash(out, &err) == FAGEN_OK ? FAGEN_OK : fg_publish(&err);
}

FAGEN_API fagen_status fagen_nvrtc_version(int *major, int *minor) {
  fg_err err;
  int a, b;
  if (fg_nvrtc_version(&a, &b, &err) != FAGEN_OK) return fg_publish(&err);
  if (major) *major = a;
  if (minor) *minor = b;
  return FAGEN_OK;
}

FAGEN_API fagen_status fagen_driver_version(int *version) {
  fg_err err;
  const fg_cuda_api *cu = fg_cuda(&err);
  if (!cu) return fg_publish(&err);
  if (version) *version = cu->driver_version;
  return FAGEN_OK;
}

FAGEN_API fagen_status fagen_tune_table_path(fagen_ctx *ctx, const fagen_device_class *dc,
                                             char *buf, size_t size) {
  fg_err err;
  if (!ctx || !dc || !buf) {
    fg_fail(&err, FAGEN_E_NULL_POINTER, "fagen_tune_table_path: NULL argument");
    return fg_ctx_fail(ctx, &err);
  }
  if (!fg_tune_user_path(dc, &ctx->cache, buf, size)) {
    fg_fail(&err, FAGEN_E_NOT_FOUND,
            "no user tuning table location: set FAGEN_TUNE_DIR, FAGEN_CACHE_DIR or HOME");
    return fg_ctx_fail(ctx, &err);
  }
  return FAGEN_OK;
}

FAGEN_API fagen_status fagen_device_class_parse(const char *spec, fagen_device_class *out) {
  if (!spec || !out) {
    fg_set_last_error(FAGEN_E_NULL_POINTER, "fagen_device_class_parse: NULL argument");
    return FAGEN_E_NULL_POINTER;
  }
  const char *c2 = strrchr(spec, ',');
  const char *c1 = c2 ? c2 - 1 : NULL;
  while (c1 && c1 > spec && *c1 != ',') c1--;
  fagen_device_class dc;
  memset(&dc, 0, sizeof dc);
  char target[32];
  size_t nl = c1 ? (size_t)(c1 - spec) : 0, tl = c2 && c1 ? (size_t)(c2 - c1 - 1) : 0;
  char *end = NULL;
  long sms = c2 ? strtol(c2 + 1, &end, 10) : 0;
  int ok = c1 && c1 > spec && nl < sizeof dc.name && tl > 0 && tl < sizeof target && end &&
           end != c2 + 1 && !*end && sms > 0 && sms < 100000;
  if (ok) {
    memcpy(dc.name, spec, nl);
    memcpy(target, c1 + 1, tl);
    target[tl] = '\0';
    ok = fagen_target_parse(target, &dc.target) == FAGEN_OK;
  }
  if (!ok) {
    char msg[300];
    snprintf(msg, sizeof msg,
             "'%.200s' is not a device class; expected \"NAME,TARGET,SMS\", e.g. "
             "\"NVIDIA A100-SXM4-80GB,sm_80,108\"",
             spec);
    fg_set_last_error(FAGEN_E_INVALID_ARGUMENT, msg);
    return FAGEN_E_INVALID_ARGUMENT;
  }
  dc.sm_count = (int)sms;
  *out = dc;
  return FAGEN_OK;
}

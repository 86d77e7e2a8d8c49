#include "fg_xla.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* Whether a struct that XLA sized as `size` bytes holds `field` of `type`. */
#define FG_HAS_FIELD(size, type, field) \
  ((size) >= offsetof(type, field) + sizeof(((type *)0)->field))

XLA_FFI_Error *fg_xla_error(const XLA_FFI_Api *api, XLA_FFI_Error_Code code, const char *fmt,
                            ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  XLA_FFI_Error_Create_Args a;
  memset(&a, 0, sizeof a);
  a.struct_size = XLA_FFI_Error_Create_Args_STRUCT_SIZE;
  a.extension_start = NULL;
  a.message = msg;
  a.errc = code;
  return api->XLA_FFI_Error_Create(&a);
}

XLA_FFI_Error *fg_xla_check_frame(const XLA_FFI_CallFrame *frame) {
  /* Without an API table no error can even be created: XLA never does this. */
  if (!frame || !frame->api) return NULL;
  const XLA_FFI_Api *api = frame->api;
  if (!FG_HAS_FIELD(frame->struct_size, XLA_FFI_CallFrame, attrs) ||
      !FG_HAS_FIELD(api->struct_size, XLA_FFI_Api, XLA_FFI_Stream_Get))
    return fg_xla_error(api, XLA_FFI_Error_Code_FAILED_PRECONDITION,
                        "fagen_jax: this XLA's FFI call frame (%zu bytes) or API table (%zu "
                        "bytes) is older than the header fagen_jax was built with",
                        frame->struct_size, api->struct_size);
  return NULL;
}

int fg_xla_metadata(XLA_FFI_CallFrame *frame, XLA_FFI_Handler_Traits traits,
                    XLA_FFI_Error **err) {
  *err = NULL;
  /* The extension's base struct was renamed between jaxlib releases
     (XLA_FFI_Extension_Base, then XLA_FFI_InternalExtension); reaching it as
     the metadata extension's first member works with either name. */
  if (!frame->extension_start) return 0;
  XLA_FFI_Metadata_Extension *m = (XLA_FFI_Metadata_Extension *)frame->extension_start;
  if (m->extension_base.type != XLA_FFI_Extension_Metadata) return 0;
  if (m->extension_base.struct_size < XLA_FFI_Metadata_Extension_STRUCT_SIZE || !m->metadata ||
      m->metadata->struct_size < XLA_FFI_Metadata_STRUCT_SIZE) {
    *err = fg_xla_error(frame->api, XLA_FFI_Error_Code_INVALID_ARGUMENT,
                        "fagen_jax: XLA's metadata query is smaller than this header's");
    return 1;
  }
  XLA_FFI_Metadata *md = m->metadata;
  md->api_version.struct_size = XLA_FFI_Api_Version_STRUCT_SIZE;
  md->api_version.extension_start = NULL;
  md->api_version.major_version = XLA_FFI_API_MAJOR;
  md->api_version.minor_version = XLA_FFI_API_MINOR;
  md->traits = traits;
  /* The handlers keep no XLA-owned state (fagen's context holds the loaded
     kernels), so there is no state type to report; the field lies past the
     core size, so it is written only when XLA's struct has it. */
  if (FG_HAS_FIELD(md->struct_size, XLA_FFI_Metadata, state_type_id))
    md->state_type_id.type_id = 0;
  return 1;
}

/* Index of attribute `name` (attributes come sorted by name), or -1. */
static int64_t fg_xla_attr_index(const XLA_FFI_CallFrame *frame, const char *name) {
  const XLA_FFI_Attrs *at = &frame->attrs;
  size_t len = strlen(name);
  for (int64_t i = 0; i < at->size; i++) {
    const XLA_FFI_ByteSpan *n = at->names[i];
    if (n->len == len && memcmp(n->ptr, name, len) == 0) return i;
  }
  return -1;
}

/* The scalar attribute `name`, or an error. */
static XLA_FFI_Error *fg_xla_scalar(const XLA_FFI_CallFrame *frame, const char *name,
                                    const XLA_FFI_Scalar **out) {
  int64_t i = fg_xla_attr_index(frame, name);
  if (i < 0)
    return fg_xla_error(frame->api, XLA_FFI_Error_Code_INVALID_ARGUMENT,
                        "fagen_jax: attribute '%s' is missing", name);
  if (frame->attrs.types[i] != XLA_FFI_AttrType_SCALAR)
    return fg_xla_error(frame->api, XLA_FFI_Error_Code_INVALID_ARGUMENT,
                        "fagen_jax: attribute '%s' is not a scalar", name);
  *out = (const XLA_FFI_Scalar *)frame->attrs.attrs[i];
  return NULL;
}

XLA_FFI_Error *fg_xla_attr_i64(const XLA_FFI_CallFrame *frame, const char *name, int64_t *out) {
  const XLA_FFI_Scalar *s;
  XLA_FFI_Error *e = fg_xla_scalar(frame, name, &s);
  if (e) return e;
  switch (s->dtype) {
  case XLA_FFI_DataType_PRED: *out = *(const uint8_t *)s->value != 0; return NULL;
  case XLA_FFI_DataType_S8: *out = *(const int8_t *)s->value; return NULL;
  case XLA_FFI_DataType_S16: *out = *(const int16_t *)s->value; return NULL;
  case XLA_FFI_DataType_S32: *out = *(const int32_t *)s->value; return NULL;
  case XLA_FFI_DataType_S64: *out = *(const int64_t *)s->value; return NULL;
  case XLA_FFI_DataType_U8: *out = *(const uint8_t *)s->value; return NULL;
  case XLA_FFI_DataType_U16: *out = *(const uint16_t *)s->value; return NULL;
  case XLA_FFI_DataType_U32: *out = *(const uint32_t *)s->value; return NULL;
  default:
    return fg_xla_error(frame->api, XLA_FFI_Error_Code_INVALID_ARGUMENT,
                        "fagen_jax: attribute '%s' has type %d, expected an integer", name,
                        (int)s->dtype);
  }
}

XLA_FFI_Error *fg_xla_attr_f64(const XLA_FFI_CallFrame *frame, const char *name, double *out) {
  const XLA_FFI_Scalar *s;
  XLA_FFI_Error *e = fg_xla_scalar(frame, name, &s);
  if (e) return e;
  if (s->dtype == XLA_FFI_DataType_F32) {
    *out = *(const float *)s->value;
    return NULL;
  }
  if (s->dtype == XLA_FFI_DataType_F64) {
    *out = *(const double *)s->value;
    return NULL;
  }
  return fg_xla_error(frame->api, XLA_FFI_Error_Code_INVALID_ARGUMENT,
                      "fagen_jax: attribute '%s' has type %d, expected a float", name,
                      (int)s->dtype);
}

/* Entry i of args or rets (one layout: size, types, pointers). */
static XLA_FFI_Error *fg_xla_buffer(const XLA_FFI_CallFrame *frame, const char *what,
                                    int64_t size, int is_buffer, void *ptr, int64_t i,
                                    XLA_FFI_Buffer **out) {
  if (i >= size)
    return fg_xla_error(frame->api, XLA_FFI_Error_Code_INVALID_ARGUMENT,
                        "fagen_jax: %s %lld is missing (the call has %lld)", what, (long long)i,
                        (long long)size);
  XLA_FFI_Buffer *b = (XLA_FFI_Buffer *)ptr;
  if (!is_buffer || !b || b->rank < 1)
    return fg_xla_error(frame->api, XLA_FFI_Error_Code_INVALID_ARGUMENT,
                        "fagen_jax: %s %lld is not an array buffer", what, (long long)i);
  *out = b;
  return NULL;
}

XLA_FFI_Error *fg_xla_arg(const XLA_FFI_CallFrame *frame, int64_t i, XLA_FFI_Buffer **out) {
  const XLA_FFI_Args *a = &frame->args;
  int ok = i < a->size && a->types[i] == XLA_FFI_ArgType_BUFFER;
  return fg_xla_buffer(frame, "argument", a->size, ok, i < a->size ? a->args[i] : NULL, i, out);
}

XLA_FFI_Error *fg_xla_ret(const XLA_FFI_CallFrame *frame, int64_t i, XLA_FFI_Buffer **out) {
  const XLA_FFI_Rets *r = &frame->rets;
  int ok = i < r->size && r->types[i] == XLA_FFI_RetType_BUFFER;
  return fg_xla_buffer(frame, "result", r->size, ok, i < r->size ? r->rets[i] : NULL, i, out);
}

XLA_FFI_Error *fg_xla_stream(const XLA_FFI_CallFrame *frame, void **stream) {
  XLA_FFI_Stream_Get_Args a;
  memset(&a, 0, sizeof a);
  a.struct_size = XLA_FFI_Stream_Get_Args_STRUCT_SIZE;
  a.extension_start = NULL;
  a.ctx = frame->ctx;
  a.stream = NULL;
  XLA_FFI_Error *e = frame->api->XLA_FFI_Stream_Get(&a);
  if (e) return e;
  *stream = a.stream;
  return NULL;
}

int64_t fg_xla_dims_product(const XLA_FFI_Buffer *b, int64_t from, int64_t to) {
  int64_t p = 1;
  for (int64_t i = from; i < to; i++) p *= b->dims[i];
  return p;
}

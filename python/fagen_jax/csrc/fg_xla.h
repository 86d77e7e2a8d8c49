/*
 * fg_xla.h — the small part of the XLA FFI C API (xla/ffi/api/c_api.h, shipped
 * by jaxlib) that the fagen handlers use: errors, attributes, buffers, the
 * stream and the metadata query.  Only core fields of the header are read,
 * and every struct handed to XLA has its struct_size filled, so the library
 * keeps working across jaxlib releases that only append fields.
 */
#ifndef FG_XLA_H
#define FG_XLA_H

#include <stdint.h>

#include "xla/ffi/api/c_api.h"

/* A new XLA error carrying a printf-formatted message (XLA copies it). */
XLA_FFI_Error *fg_xla_error(const XLA_FFI_Api *api, XLA_FFI_Error_Code code, const char *fmt,
                            ...) __attribute__((format(printf, 3, 4)));

/* Checks that XLA's call frame and API table hold every field read here.
 * Returns NULL or the error to hand back. */
XLA_FFI_Error *fg_xla_check_frame(const XLA_FFI_CallFrame *frame);

/* If the frame is XLA's metadata query (an extension of type Metadata), fills
 * it with this header's API version and traits and returns 1: the handler
 * then returns *err (NULL on success) without doing anything else. */
int fg_xla_metadata(XLA_FFI_CallFrame *frame, XLA_FFI_Handler_Traits traits,
                    XLA_FFI_Error **err);

/* A scalar attribute by name, converted: integers (and booleans) to int64,
 * floats to double.  A missing attribute or another type is an error. */
XLA_FFI_Error *fg_xla_attr_i64(const XLA_FFI_CallFrame *frame, const char *name, int64_t *out);
XLA_FFI_Error *fg_xla_attr_f64(const XLA_FFI_CallFrame *frame, const char *name, double *out);

/* Argument i / result i as a buffer, checked to be a buffer of rank >= 1. */
XLA_FFI_Error *fg_xla_arg(const XLA_FFI_CallFrame *frame, int64_t i, XLA_FFI_Buffer **out);
XLA_FFI_Error *fg_xla_ret(const XLA_FFI_CallFrame *frame, int64_t i, XLA_FFI_Buffer **out);

/* The platform stream of the call (a CUstream on CUDA). */
XLA_FFI_Error *fg_xla_stream(const XLA_FFI_CallFrame *frame, void **stream);

/* Product of dims [from, to) of a buffer (1 for an empty range). */
int64_t fg_xla_dims_product(const XLA_FFI_Buffer *b, int64_t from, int64_t to);

#endif /* FG_XLA_H */

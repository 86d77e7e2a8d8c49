#include "fg_base.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

fagen_status fg_failv(fg_err *err, fagen_status status, const char *fmt, va_list ap) {
  if (err) {
    err->status = status;
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
  }
  return status;
}

fagen_status fg_fail(fg_err *err, fagen_status status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fg_failv(err, status, fmt, ap);
  va_end(ap);
  return status;
}

void fg_err_prefix(fg_err *err, const char *fmt, ...) {
  if (!err) return;
  char prefix[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(prefix, sizeof prefix, fmt, ap);
  va_end(ap);
  size_t pl = strlen(prefix) + 2; /* "prefix: " */
  size_t cap = sizeof err->msg;
  size_t ml = strlen(err->msg);
  if (pl + ml + 1 > cap) ml = cap - 1 - pl;
  memmove(err->msg + pl, err->msg, ml);
  err->msg[pl + ml] = '\0';
  memcpy(err->msg, prefix, pl - 2);
  err->msg[pl - 2] = ':';
  err->msg[pl - 1] = ' ';
}

static _Thread_local char fg_last_error_msg[4096];

void fg_set_last_error(fagen_status status, const char *msg) {
  if (status == FAGEN_OK) return;
  fg_strlcpy(fg_last_error_msg, msg && *msg ? msg : fagen_strerror(status),
             sizeof fg_last_error_msg);
}

fagen_status fg_publish(const fg_err *err) {
  fg_set_last_error(err->status, err->msg);
  return err->status;
}

FAGEN_API const char *fagen_last_error(void) { return fg_last_error_msg; }

#define FG_STATUS_TEXT_CASE_(name, code, text) \
  case name:                                   \
    return text;
#define FG_STATUS_NAME_CASE_(name, code, text) \
  case name:                                   \
    return #name;

FAGEN_API const char *fagen_strerror(fagen_status status) {
  switch (status) { FAGEN_STATUS_LIST(FG_STATUS_TEXT_CASE_) }
  return "unknown status";
}

FAGEN_API const char *fagen_status_name(fagen_status status) {
  switch (status) { FAGEN_STATUS_LIST(FG_STATUS_NAME_CASE_) }
  return "FAGEN_UNKNOWN";
}

FAGEN_API const char *fagen_version(void) { return FAGEN_VERSION_STRING; }

FAGEN_API void fagen_free(void *ptr) { free(ptr); }

void fg_buf_init(fg_buf *b) { memset(b, 0, sizeof *b); }

void fg_buf_free(fg_buf *b) {
  free(b->data);
  fg_buf_init(b);
}

void fg_buf_reset(fg_buf *b) {
  b->len = 0;
  b->oom = 0;
  if (b->data) b->data[0] = '\0';
}

int fg_buf_reserve(fg_buf *b, size_t extra) {
  if (b->oom) return 0;
  if (extra > ((size_t)-1) / 2 - b->len) {
    b->oom = 1;
    return 0;
  }
  size_t need = b->len + extra + 1;
  if (need <= b->cap) return 1;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < need) cap *= 2;
  char *p = realloc(b->data, cap);
  if (!p) {
    b->oom = 1;
    return 0;
  }
  b->data = p;
  b->cap = cap;
  return 1;
}

int fg_buf_append(fg_buf *b, const void *data, size_t n) {
  if (!fg_buf_reserve(b, n)) return 0;
  if (n) memcpy(b->data + b->len, data, n);
  b->len += n;
  b->data[b->len] = '\0';
  return 1;
}

int fg_buf_puts(fg_buf *b, const char *s) { return fg_buf_append(b, s, strlen(s)); }

int fg_buf_putc(fg_buf *b, char c) { return fg_buf_append(b, &c, 1); }

int fg_buf_printf(fg_buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char small[512];
  int n = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n < 0) {
    b->oom = 1;
    return 0;
  }
  if ((size_t)n < sizeof small) return fg_buf_append(b, small, (size_t)n);
  if (!fg_buf_reserve(b, (size_t)n)) return 0;
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
  return 1;
}

char *fg_buf_take(fg_buf *b) {
  if (b->oom) {
    fg_buf_free(b);
    return NULL;
  }
  char *p = b->data;
  if (!p && !b->oom) p = calloc(1, 1);
  fg_buf_init(b);
  return p;
}

char *fg_strdup(const char *s) {
  if (!s) return NULL;
  size_t n = strlen(s) + 1;
  char *p = malloc(n);
  if (p) memcpy(p, s, n);
  return p;
}

void fg_strlcpy(char *dst, const char *src, size_t size) {
  if (!size) return;
  size_t n = strlen(src);
  if (n >= size) n = size - 1;
  memcpy(dst, src, n);
  dst[n] = '\0';
}

/* fg_base: the small pieces every module uses — a growable byte buffer and the
 * internal error record that becomes fagen_errmsg / fagen_last_error. */
#ifndef FG_BASE_H
#define FG_BASE_H

#include <stdarg.h>
#include <stddef.h>

#include "fagen.h"

#if defined(__GNUC__)
#define FG_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define FG_PRINTF(fmt, args)
#endif

#define FG_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Internal error record: a status and its message.  Functions that can fail
 * take a fg_err * (may be NULL) and return the status they record. */
typedef struct fg_err {
  fagen_status status;
  char msg[4096];
} fg_err;

/* Records status and the formatted message in err (if not NULL); returns
 * status, so that `return fg_fail(err, FAGEN_E_IO, "...")` reads naturally. */
fagen_status fg_fail(fg_err *err, fagen_status status, const char *fmt, ...) FG_PRINTF(3, 4);
fagen_status fg_failv(fg_err *err, fagen_status status, const char *fmt, va_list ap);

/* Prepends "prefix: " to err's message (keeps the status). */
void fg_err_prefix(fg_err *err, const char *fmt, ...) FG_PRINTF(2, 3);

/* The thread-local last error behind fagen_last_error(). */
void fg_set_last_error(fagen_status status, const char *msg);
/* Publishes err as the thread's last error and returns its status. */
fagen_status fg_publish(const fg_err *err);

/* A growable byte buffer that is always NUL-terminated once non-empty.  After a
 * failed allocation it keeps its old contents and sets oom; later appends are
 * no-ops, so callers can check once at the end. */
typedef struct fg_buf {
  char *data;
  size_t len;
  size_t cap;
  int oom;
} fg_buf;

void fg_buf_init(fg_buf *b);
void fg_buf_free(fg_buf *b);
void fg_buf_reset(fg_buf *b);
int fg_buf_reserve(fg_buf *b, size_t extra);
int fg_buf_append(fg_buf *b, const void *data, size_t n);
int fg_buf_puts(fg_buf *b, const char *s);
int fg_buf_putc(fg_buf *b, char c);
int fg_buf_printf(fg_buf *b, const char *fmt, ...) FG_PRINTF(2, 3);
/* Hands the data to the caller (malloc'd, NUL-terminated, never NULL unless
 * out of memory) and leaves the buffer empty. */
char *fg_buf_take(fg_buf *b);

/* strdup that returns NULL on NULL input. */
char *fg_strdup(const char *s);

/* Copies src into dst[size], truncating; always NUL-terminates when size > 0. */
void fg_strlcpy(char *dst, const char *src, size_t size);

#endif

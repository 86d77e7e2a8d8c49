/* fg_embedded: files built into libfagen by tools/fg_embed.c (the templates,
 * the shipped tuning tables). */
#ifndef FG_EMBEDDED_H
#define FG_EMBEDDED_H

#include <stddef.h>

typedef struct fg_embedded_file {
  const char *name; /* file name, e.g. "fwd_sm80.cu.tpl" */
  const unsigned char *data;
  size_t size;
} fg_embedded_file;

#endif

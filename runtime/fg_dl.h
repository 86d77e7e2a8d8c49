/* fg_dl: finding and opening shared libraries at run time. */
#ifndef FG_DL_H
#define FG_DL_H

#include <stddef.h>

/* Directory that holds libfagen itself ("" if unknown), for paths relative to
 * an installed wheel. */
void fg_dl_self_dir(char *out, size_t size);

/* Appends "path" to a "; "-separated list (for error messages). */
void fg_dl_note(char *list, size_t size, const char *path);

#endif

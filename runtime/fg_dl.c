#include "fg_dl.h"

#include <dlfcn.h>
#include <string.h>

#include "fg_base.h"

void fg_dl_self_dir(char *out, size_t size) {
  Dl_info info;
  out[0] = '\0';
  if (dladdr((void *)&fg_dl_self_dir, &info) && info.dli_fname) {
    fg_strlcpy(out, info.dli_fname, size);
    char *slash = strrchr(out, '/');
    if (slash)
      *slash = '\0';
    else
      out[0] = '\0';
  }
}

void fg_dl_note(char *list, size_t size, const char *path) {
  size_t n = strlen(list);
  if (n + 3 >= size) return;
  if (n) {
    memcpy(list + n, "; ", 2);
    n += 2;
  }
  fg_strlcpy(list + n, path, size - n);
}

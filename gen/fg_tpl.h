/* fg_tpl: translates template text into a Lua chunk.
 *
 * Tag syntax
 *   {{ expr }}    the value of a Lua expression, inserted into the output
 *   {% code %}    Lua statements (control flow, local definitions)
 *   {# text #}    a comment, dropped
 * An opener counts only when a blank (space, tab, newline) follows it, so
 * inline PTX such as asm("{%0, %1}") and "{#pragma" pass through as text; a
 * literal "{{ " in CUDA code is written "{ { ".  A {% %} or {# #} tag alone
 * on its line (only blanks around it) removes the whole line, so control flow
 * does not leave blank lines behind.  Tag contents cannot contain their own
 * closing delimiter.
 *
 * Line parity: the Lua chunk has its statements on the same line numbers as
 * the template, so Lua errors name the template's own file and line. */
#ifndef FG_TPL_H
#define FG_TPL_H

#include <stddef.h>

#include "fg_base.h"

/* Translates text[0..len) of the template displayed as `display` (e.g.
 * "templates/fwd.cu.tpl") into Lua code appended to lua.  Each text segment
 * becomes _T(file_id, line, "text"), each expression _E(file_id, line, value).  Returns
 * FAGEN_OK, FAGEN_E_TEMPLATE (unterminated tag, with file:line) or
 * FAGEN_E_NO_MEMORY. */
fagen_status fg_tpl_translate(const char *display, const char *text, size_t len, int file_id,
                              fg_buf *lua, fg_err *err);

#endif

#include "fg_tpl.h"

#include <string.h>

static int fg_is_blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

static size_t fg_count_newlines(const char *s, size_t n) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++) k += s[i] == '\n';
  return k;
}

/* Appends s[0..n) as a Lua quoted string literal. */
static void fg_lua_quote(fg_buf *b, const char *s, size_t n) {
  fg_buf_putc(b, '"');
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    switch (c) {
      case '"': fg_buf_puts(b, "\\\""); break;
      case '\\': fg_buf_puts(b, "\\\\"); break;
      case '\n': fg_buf_puts(b, "\\n"); break;
      case '\t': fg_buf_puts(b, "\\t"); break;
      default:
        if (c < 32 || c == 127)
          fg_buf_printf(b, "\\%03u", c); /* always three digits: no digit can follow ambiguously */
        else
          fg_buf_putc(b, (char)c);
    }
  }
  fg_buf_putc(b, '"');
}

/* Emits newlines into the Lua code so that its line count catches up with the
 * template's.  *debt counts newlines already emitted ahead of the template
 * (after a `--` comment inside a tag forced one). */
static void fg_newlines(fg_buf *lua, size_t n, size_t *debt) {
  size_t pay = n < *debt ? n : *debt;
  *debt -= pay;
  for (size_t i = pay; i < n; i++) fg_buf_putc(lua, '\n');
}

/* Lua code of a tag may end in a `--` line comment, which would swallow what
 * follows on the same Lua line: end such code with a newline (paid back by the
 * next template newline). */
static void fg_close_code(fg_buf *lua, const char *code, size_t n, size_t *debt) {
  size_t last_nl = 0;
  for (size_t i = 0; i < n; i++)
    if (code[i] == '\n') last_nl = i + 1;
  for (size_t i = last_nl; i + 1 < n; i++)
    if (code[i] == '-' && code[i + 1] == '-') {
      fg_buf_putc(lua, '\n');
      (*debt)++;
      return;
    }
}

fagen_status fg_tpl_translate(const char *display, const char *text, size_t len, int file_id,
                              fg_buf *lua, fg_err *err) {
  size_t pos = 0;
  size_t line = 1; /* template line at pos */
  size_t debt = 0;
  while (pos < len) {
    /* Find the next tag opening. */
    size_t t = pos;
    char kind = 0;
    while (t + 2 < len) {
      /* An opener is followed by a blank: "{%0, %1}" in inline PTX is text. */
      if (text[t] == '{' && (text[t + 1] == '{' || text[t + 1] == '%' || text[t + 1] == '#') &&
          (fg_is_blank(text[t + 2]) || text[t + 2] == '\n')) {
        kind = text[t + 1];
        break;
      }
      t++;
    }
    if (!kind) t = len;

    size_t text_end = t; /* end of the literal text before the tag */
    size_t tag_end = t;  /* first byte after the tag (and a trimmed line end) */
    size_t inner_begin = t + 2, inner_end = t + 2;
    if (kind) {
      const char *close = kind == '{' ? "}}" : kind == '%' ? "%}" : "#}";
      size_t c = t + 2;
      while (c + 1 < len && !(text[c] == close[0] && text[c + 1] == close[1])) c++;
      if (c + 1 >= len)
        return fg_fail(err, FAGEN_E_TEMPLATE, "%s:%zu: unterminated '{%c' tag (no '%s')",
                       display, line + fg_count_newlines(text + pos, t - pos), kind, close);
      inner_end = c;
      tag_end = c + 2;
      if (kind != '{') {
        /* Standalone: only blanks between the line start and the tag, and
         * between the tag and the line end. */
        size_t ls = t;
        while (ls > pos && fg_is_blank(text[ls - 1])) ls--;
        int at_line_start = (ls == 0) || text[ls - 1] == '\n';
        /* ls == pos with pos mid-line means a previous tag sits on this line. */
        if (ls == pos && pos > 0 && text[pos - 1] != '\n') at_line_start = 0;
        size_t le = tag_end;
        while (le < len && fg_is_blank(text[le])) le++;
        if (at_line_start && (le == len || text[le] == '\n')) {
          text_end = ls;
          tag_end = le < len ? le + 1 : le;
        }
      }
    }

    if (text_end > pos) {
      fg_buf_printf(lua, " _T(%d,%zu,", file_id, line);
      fg_lua_quote(lua, text + pos, text_end - pos);
      fg_buf_puts(lua, ")");
      size_t nl = fg_count_newlines(text + pos, text_end - pos);
      fg_newlines(lua, nl, &debt);
      line += nl;
    }
    if (!kind) break;

    /* Blanks trimmed before a standalone tag contain no newline. */
    const char *inner = text + inner_begin;
    size_t inner_len = inner_end - inner_begin;
    size_t inner_nl = fg_count_newlines(inner, inner_len);
    if (kind == '%') {
      fg_buf_putc(lua, ' ');
      fg_buf_append(lua, inner, inner_len);
      fg_buf_putc(lua, ' ');
      fg_close_code(lua, inner, inner_len, &debt); /* its own newlines are in the code */
    } else if (kind == '{') {
      size_t b = 0, e = inner_len;
      while (b < e && (fg_is_blank(inner[b]) || inner[b] == '\n')) b++;
      while (e > b && (fg_is_blank(inner[e - 1]) || inner[e - 1] == '\n')) e--;
      if (b == e)
        return fg_fail(err, FAGEN_E_TEMPLATE, "%s:%zu: empty expression tag '{{ }}'", display,
                       line);
      fg_buf_printf(lua, " _E(%d,%zu,", file_id, line);
      fg_buf_append(lua, inner, inner_len);
      fg_close_code(lua, inner, inner_len, &debt);
      fg_buf_puts(lua, ")");
    } else {
      fg_newlines(lua, inner_nl, &debt); /* comment: keep its line count */
    }
    line += inner_nl;
    /* A standalone tag also consumed its line's newline. */
    size_t tail_nl = fg_count_newlines(text + inner_end, tag_end - inner_end);
    fg_newlines(lua, tail_nl, &debt);
    line += tail_nl;
    pos = tag_end;
  }
  if (lua->oom) return fg_fail(err, FAGEN_E_NO_MEMORY, "out of memory translating %s", display);
  return FAGEN_OK;
}

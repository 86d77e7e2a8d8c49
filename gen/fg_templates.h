/* fg_templates: where template text comes from.  The templates/ folder is
 * built into the library (tools/fg_embed.c), so a deployed libfagen needs no
 * files beside it; FAGEN_TEMPLATE_DIR points at a folder to use instead while
 * developing templates. */
#ifndef FG_TEMPLATES_H
#define FG_TEMPLATES_H

#include <stddef.h>

#include "fg_base.h"

#include "fg_embedded.h"

/* Generated at build time from templates/ (sorted by name). */
extern const fg_embedded_file fg_embedded_templates[];
extern const size_t fg_embedded_templates_count;

/* Reads template `name` (an fg_tpl_loader; user is ignored).  Returns FAGEN_OK,
 * FAGEN_E_TEMPLATE (no such template), FAGEN_E_IO (unreadable file in
 * FAGEN_TEMPLATE_DIR) or FAGEN_E_NO_MEMORY. */
fagen_status fg_template_read(void *user, const char *name, fg_buf *text, fg_err *err);

/* SHA-256 (hex) over the generator revision and the templates of the forward
 * kernels of both families (fg_table_templates: name and bytes), the hash tuning tables
 * record: it changes whenever anything that shapes a forward kernel changes.
 * Returns FAGEN_OK or FAGEN_E_IO (a template of the set unreadable). */
extern const char *const fg_table_templates[];
extern const size_t fg_table_templates_count;
fagen_status fg_templates_hash(char hex[65], fg_err *err);

#endif

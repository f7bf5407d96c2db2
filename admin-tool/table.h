/* table: aligned text tables for a terminal, with column widths taken from
 * the data, measured in display columns of UTF-8 text. */
#ifndef POCKITY_ADMIN_TABLE_H
#define POCKITY_ADMIN_TABLE_H

#include <stdio.h>

/*
 * Cells are copied when added and made safe to print: control characters
 * (a terminal escape in a user's name, a line break in a comment) and bytes
 * that are not valid UTF-8 become '?', tabs and line breaks a space. A cell
 * wider than the table's cap (TABLE_CELL_MAX columns by default) is cut and
 * ends with "…". Columns are separated by two spaces; the last one is not
 * padded. A NULL cell prints as "-".
 *
 * Printing is incremental: table_flush() prints the rows added since the last
 * flush, the header only the first time, and columns only ever widen, so a
 * table fed in batches (audit --follow) stays as aligned as it can.
 */

#define TABLE_CELL_MAX 48

struct table;

/* A table of ncols columns (1 to 16) whose header cells are headers[0..ncols)
 * (headers NULL: no header line). Returns NULL when out of memory. */
struct table *table_new(size_t ncols, const char *const *headers);

/* Cap each cell at max display columns (at least 4); 0 means no cap. */
void table_set_cell_max(struct table *t, size_t max);

/* Add one row of ncols cells. Returns 0 or -1 when out of memory. */
int table_add(struct table *t, const char *const *cells);

/* Print the rows added since the last flush to f (see above). */
void table_flush(struct table *t, FILE *f);

/* Rows added and not flushed yet. */
size_t table_pending(const struct table *t);

/* Free t. NULL is accepted. */
void table_free(struct table *t);

/* The display width of a NUL-terminated UTF-8 string (invalid bytes count 1,
 * combining marks 0, East Asian wide characters and emoji 2). */
size_t table_width(const char *s);

#endif

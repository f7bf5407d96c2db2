/* table: aligned tables measured in display columns, with safe cell text. */
#include "table.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

#define TABLE_MAX_COLS 16
#define CELL_MAX_BYTES (64 * 1024) /* bytes of one sanitised cell */

struct table {
    size_t ncols;
    size_t cell_max;               /* display columns; 0 = no cap */
    char **header;                 /* ncols cells, or NULL */
    int header_done;               /* the header has been printed */
    size_t widths[TABLE_MAX_COLS]; /* display widths so far, never shrinking */
    char **cells;                  /* rows not flushed yet, ncols cells each */
    size_t rows, alloc;
};

/* Decode one UTF-8 sequence at s (NUL-terminated). Returns its length and the
 * code point in *cp, or 0 for an invalid or truncated sequence. */
static size_t utf8_decode(const unsigned char *s, uint32_t *cp)
{
    uint32_t c = s[0], min;
    size_t n;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if ((c & 0xe0) == 0xc0) {
        n = 2, c &= 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        n = 3, c &= 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
        n = 4, c &= 0x07, min = 0x10000;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return n;
}

/* Display columns of one code point: 0 for combining marks and zero-width
 * characters, 2 for East Asian wide ranges and emoji, 1 otherwise. */
static size_t cp_width(uint32_t c)
{
    static const uint32_t zero[][2] = {
            {0x0300, 0x036f}, {0x0483, 0x0489}, {0x0591, 0x05bd}, {0x0610, 0x061a},
            {0x064b, 0x065f}, {0x200b, 0x200f}, {0x20d0, 0x20ff}, {0xfe00, 0xfe0f},
            {0xfe20, 0xfe2f}, {0xfeff, 0xfeff},
    };
    static const uint32_t wide[][2] = {
            {0x1100, 0x115f},   {0x2e80, 0x303e},   {0x3041, 0x33ff},   {0x3400, 0x4dbf},
            {0x4e00, 0x9fff},   {0xa000, 0xa4cf},   {0xac00, 0xd7a3},   {0xf900, 0xfaff},
            {0xfe30, 0xfe4f},   {0xff00, 0xff60},   {0xffe0, 0xffe6},   {0x1f300, 0x1f64f},
            {0x1f680, 0x1f6ff}, {0x1f900, 0x1f9ff}, {0x1fa70, 0x1faff}, {0x20000, 0x2fffd},
            {0x30000, 0x3fffd},
    };
    for (size_t i = 0; i < sizeof(zero) / sizeof(zero[0]); i++)
        if (c >= zero[i][0] && c <= zero[i][1])
            return 0;
    for (size_t i = 0; i < sizeof(wide) / sizeof(wide[0]); i++)
        if (c >= wide[i][0] && c <= wide[i][1])
            return 2;
    return 1;
}

size_t table_width(const char *s)
{
    size_t w = 0;
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        uint32_t cp;
        size_t n = utf8_decode(p, &cp);
        if (n == 0) {
            w++;
            p++;
        } else {
            w += cp_width(cp);
            p += n;
        }
    }
    return w;
}

/* A printable copy of s, at most max display columns (0: no cap), or NULL
 * when out of memory. */
static char *sanitize(const char *s, size_t max)
{
    struct buf b;
    size_t w = 0;
    buf_init(&b, CELL_MAX_BYTES);
    const unsigned char *p = (const unsigned char *)(s ? s : "-");
    while (*p) {
        uint32_t cp;
        size_t n = utf8_decode(p, &cp);
        const char *out = (const char *)p;
        size_t outlen = n, cw;
        if (n == 0 || cp == 0x7f || (cp >= 0x80 && cp < 0xa0)) {
            out = "?", outlen = 1, cw = 1, n = n ? n : 1;
        } else if (cp == '\t' || cp == '\n' || cp == '\r') {
            out = " ", outlen = 1, cw = 1;
        } else if (cp < 0x20 || cp == 0x2028 || cp == 0x2029 || (cp >= 0x202a && cp <= 0x202e) ||
                   (cp >= 0x2066 && cp <= 0x2069)) {
            /* control characters, and bidi overrides that reorder what follows */
            out = "?", outlen = 1, cw = 1;
        } else {
            cw = cp_width(cp);
        }
        /* Leave room for the ellipsis when something follows that would not fit. */
        if (max && w + cw > max - 1 && table_width((const char *)p) + w > max) {
            buf_adds(&b, "\xe2\x80\xa6"); /* "…" */
            break;
        }
        if (buf_add(&b, out, outlen) != 0)
            break; /* over CELL_MAX_BYTES: keep what fits */
        w += cw;
        p += n;
    }
    return buf_detach(&b, NULL);
}

struct table *table_new(size_t ncols, const char *const *headers)
{
    if (ncols == 0 || ncols > TABLE_MAX_COLS)
        return NULL;
    struct table *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->ncols = ncols;
    t->cell_max = TABLE_CELL_MAX;
    if (headers) {
        t->header = calloc(ncols, sizeof(char *));
        if (!t->header)
            goto fail;
        for (size_t i = 0; i < ncols; i++) {
            if (!(t->header[i] = sanitize(headers[i], 0)))
                goto fail;
            size_t w = table_width(t->header[i]);
            if (w > t->widths[i])
                t->widths[i] = w;
        }
    }
    return t;
fail:
    table_free(t);
    return NULL;
}

void table_set_cell_max(struct table *t, size_t max)
{
    t->cell_max = max && max < 4 ? 4 : max;
}

int table_add(struct table *t, const char *const *cells)
{
    if (t->rows == t->alloc) {
        size_t alloc = t->alloc ? t->alloc * 2 : 16;
        char **more = realloc(t->cells, alloc * t->ncols * sizeof(char *));
        if (!more)
            return -1;
        t->cells = more;
        t->alloc = alloc;
    }
    char **row = t->cells + t->rows * t->ncols;
    for (size_t i = 0; i < t->ncols; i++) {
        if (!(row[i] = sanitize(cells[i], t->cell_max))) {
            while (i--)
                free(row[i]);
            return -1;
        }
    }
    t->rows++;
    return 0;
}

size_t table_pending(const struct table *t)
{
    return t->rows;
}

static void print_row(const struct table *t, char *const *row, FILE *f)
{
    /* No padding after the last non-empty cell: lines end without blanks. */
    size_t last = t->ncols;
    while (last > 1 && row[last - 1][0] == '\0')
        last--;
    for (size_t i = 0; i < last; i++) {
        fputs(row[i], f);
        if (i + 1 == last)
            break;
        for (size_t w = table_width(row[i]); w < t->widths[i] + 2; w++)
            fputc(' ', f);
    }
    fputc('\n', f);
}

static void free_rows(struct table *t)
{
    for (size_t i = 0; i < t->rows * t->ncols; i++)
        free(t->cells[i]);
    t->rows = 0;
}

void table_flush(struct table *t, FILE *f)
{
    for (size_t r = 0; r < t->rows; r++) {
        for (size_t i = 0; i < t->ncols; i++) {
            size_t w = table_width(t->cells[r * t->ncols + i]);
            if (w > t->widths[i])
                t->widths[i] = w;
        }
    }
    if (t->header && !t->header_done) {
        print_row(t, t->header, f);
        t->header_done = 1;
    }
    for (size_t r = 0; r < t->rows; r++)
        print_row(t, t->cells + r * t->ncols, f);
    free_rows(t);
}

void table_free(struct table *t)
{
    if (!t)
        return;
    free_rows(t);
    free(t->cells);
    if (t->header)
        for (size_t i = 0; i < t->ncols; i++)
            free(t->header[i]);
    free(t->header);
    free(t);
}

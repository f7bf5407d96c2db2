/* buf: a growable byte buffer with a hard size cap, so data read from the
 * network can never make us allocate without bound (after curl's dynbuf). */
#ifndef POCKITY_BUF_H
#define POCKITY_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
    char *data;   /* always NUL-terminated when non-NULL; may hold NULs inside */
    size_t len;   /* bytes used, excluding the terminating NUL */
    size_t alloc; /* bytes allocated */
    size_t max;   /* len may never exceed this */
};

/* Initialise an empty buffer that may grow to max bytes. Allocates nothing. */
void buf_init(struct buf *b, size_t max);

/* Free the contents; b is left empty and reusable with the same cap. */
void buf_release(struct buf *b);

/* Forget the contents but keep the allocation. */
void buf_reset(struct buf *b);

/* Append n bytes. Returns 0, -ENOMEM, or -E2BIG when the cap would be passed
 * (the buffer is then unchanged). */
int buf_add(struct buf *b, const void *data, size_t n);

/* Make room for n more bytes at once (e.g. a body of known length), so that
 * adding them does not grow b step by step. Same errors as buf_add. */
int buf_reserve(struct buf *b, size_t n);

/* Append a NUL-terminated string. Same returns as buf_add. */
int buf_adds(struct buf *b, const char *s);

/* Append formatted text. Same returns as buf_add. */
int buf_addf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vaddf(struct buf *b, const char *fmt, va_list ap);

/* Take the contents: returns a malloc'd NUL-terminated string the caller owns
 * (an empty string for an empty buffer, NULL only when out of memory) and
 * leaves b empty. *len_out receives the length when not NULL. */
char *buf_detach(struct buf *b, size_t *len_out);

#endif

/* format: how pockity-admin reads and writes sizes, counts, times and money. */
#ifndef POCKITY_ADMIN_FORMAT_H
#define POCKITY_ADMIN_FORMAT_H

#include <stddef.h>
#include <stdint.h>

/* Parse a byte size: a whole or decimal number with an optional unit, case
 * ignored, spaces allowed before it: B; KB MB GB TB PB (powers of 1000);
 * KiB MiB GiB TiB PiB and K M G T P (powers of 1024). "10GiB", "500MB",
 * "1.5 TiB", "1048576". A fraction of a byte is dropped. Returns 0 with
 * *out set, or -1 for anything else (negative, overflow past INT64_MAX). */
int format_parse_size(const char *s, int64_t *out);

/* Parse a decimal integer in [min, max] with nothing around it. Returns 0 or
 * -1. */
int format_parse_int(const char *s, int64_t min, int64_t max, int64_t *out);

/* Parse "true"/"false" (also yes/no, 1/0, on/off). Returns 1, 0 or -1. */
int format_parse_bool(const char *s);

/* "0 B", "512 B", "1.5 KiB", "10 GiB" (binary units, at most one decimal,
 * exact values without one). Returns out. */
char *format_size(int64_t bytes, char *out, size_t outlen);

/* A count with thousands separators: "1,234,567". Returns out. */
char *format_count(int64_t n, char *out, size_t outlen);

/* Unix seconds as "2026-01-02 15:04:05Z" (UTC). Returns out. */
char *format_time(int64_t t, char *out, size_t outlen);

/* Money in minor units with its ISO 4217 currency: "19.99 EUR", "-1.50 USD",
 * "500 JPY" (the currency's decimals: 0 for JPY, 3 for KWD, else 2). A NULL
 * currency prints the amount alone, with two decimals. Returns out. */
char *format_money(int64_t minor, const char *currency, char *out, size_t outlen);

/* The number of decimals of currency's minor unit (0, 2 or 3; 2 for codes
 * not known to be otherwise). */
int format_currency_decimals(const char *currency);

/* Whether s is an ISO 4217 code as the API takes it: three letters A-Z. */
int format_is_currency(const char *s);

/* Parse an amount written in currency's major unit into minor units: "12.50"
 * is 1250 for USD, "12" is 1200, "500" is 500 for JPY, an optional leading
 * '-' negates. At most the currency's decimals may follow the point (none and
 * no point for a currency without decimals). Returns 0 with *out set, or -1
 * (nothing else around it, no overflow past INT64 bounds). */
int format_parse_money(const char *s, const char *currency, int64_t *out);

/* Parse a point in time into Unix seconds (UTC), for options such as
 * --since: "2026-01-02", "2026-01-02 15:04", "2026-01-02T15:04:05" (a final
 * 'Z' allowed), or a duration before now: "45s", "30m", "2h", "7d", "2w".
 * Returns 0 with *out set, or -1. */
int format_parse_time(const char *s, int64_t now, int64_t *out);

/* used out of total as a percentage, "12%" ("-" when total is 0). */
char *format_percent(int64_t used, int64_t total, char *out, size_t outlen);

#endif

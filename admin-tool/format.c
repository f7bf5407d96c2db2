/* format: sizes with units, counts, UTC times and money for pockity-admin. */
#include "format.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static const struct {
    const char *unit;
    uint64_t mult;
} size_units[] = {
        {"", 1},
        {"b", 1},
        {"kb", 1000ull},
        {"mb", 1000000ull},
        {"gb", 1000000000ull},
        {"tb", 1000000000000ull},
        {"pb", 1000000000000000ull},
        {"k", 1ull << 10},
        {"m", 1ull << 20},
        {"g", 1ull << 30},
        {"t", 1ull << 40},
        {"p", 1ull << 50},
        {"kib", 1ull << 10},
        {"mib", 1ull << 20},
        {"gib", 1ull << 30},
        {"tib", 1ull << 40},
        {"pib", 1ull << 50},
};

int format_parse_size(const char *s, int64_t *out)
{
    uint64_t whole = 0, frac = 0, scale = 1;
    const char *p = s;
    if (!isdigit((unsigned char)*p))
        return -1;
    for (; isdigit((unsigned char)*p); p++) {
        if (whole > (UINT64_MAX - 9) / 10)
            return -1;
        whole = whole * 10 + (uint64_t)(*p - '0');
    }
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return -1;
        for (; isdigit((unsigned char)*p); p++) {
            if (scale < 1000000000ull) { /* digits past the ninth are dropped */
                frac = frac * 10 + (uint64_t)(*p - '0');
                scale *= 10;
            }
        }
    }
    if (*p == ' ') {
        while (*p == ' ')
            p++;
        if (!*p) /* spaces, then nothing */
            return -1;
    }
    for (size_t i = 0; i < sizeof(size_units) / sizeof(size_units[0]); i++) {
        if (strcasecmp(p, size_units[i].unit) != 0)
            continue;
        uint64_t m = size_units[i].mult;
        if (whole && m > (uint64_t)INT64_MAX / whole)
            return -1;
        uint64_t v = whole * m;
        /* frac < scale <= 1e9 and m <= 2^50 or 1e15: split to stay in 64 bits */
        uint64_t extra = (m / scale) * frac + (m % scale) * frac / scale;
        if (v > (uint64_t)INT64_MAX - extra)
            return -1;
        *out = (int64_t)(v + extra);
        return 0;
    }
    return -1;
}

int format_parse_int(const char *s, int64_t min, int64_t max, int64_t *out)
{
    int neg = *s == '-';
    const char *p = s + neg;
    uint64_t v = 0, limit = (uint64_t)INT64_MAX + (uint64_t)neg;
    if (!isdigit((unsigned char)*p))
        return -1;
    for (; isdigit((unsigned char)*p); p++) {
        uint64_t d = (uint64_t)(*p - '0');
        if (v > (limit - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    if (*p)
        return -1;
    int64_t n = neg ? (int64_t)(0 - v) : (int64_t)v;
    if (n < min || n > max)
        return -1;
    *out = n;
    return 0;
}

int format_parse_bool(const char *s)
{
    static const char *const yes[] = {"true", "yes", "1", "on"};
    static const char *const no[] = {"false", "no", "0", "off"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(s, yes[i]) == 0)
            return 1;
        if (strcasecmp(s, no[i]) == 0)
            return 0;
    }
    return -1;
}

char *format_size(int64_t bytes, char *out, size_t outlen)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    if (bytes < 0) {
        snprintf(out, outlen, "%lld B", (long long)bytes);
        return out;
    }
    size_t u = 0;
    uint64_t v = (uint64_t)bytes;
    while (u + 1 < sizeof(units) / sizeof(units[0]) && v >= (1ull << (10 * (u + 1))))
        u++;
    if (u == 0) {
        snprintf(out, outlen, "%llu B", (unsigned long long)v);
        return out;
    }
    uint64_t div = 1ull << (10 * u);
    if (v % div == 0) {
        snprintf(out, outlen, "%llu %s", (unsigned long long)(v / div), units[u]);
    } else {
        /* tenths, rounded down so 1023.99 KiB never reads as 1024.0 KiB */
        uint64_t tenths = v / (div / 1024) * 10 / 1024;
        snprintf(out, outlen, "%llu.%llu %s", (unsigned long long)(tenths / 10),
                 (unsigned long long)(tenths % 10), units[u]);
    }
    return out;
}

char *format_count(int64_t n, char *out, size_t outlen)
{
    char digits[32];
    int len = snprintf(digits, sizeof(digits), "%lld", (long long)n);
    size_t o = 0, start = n < 0 ? 1 : 0;
    for (int i = 0; i < len && o + 1 < outlen; i++) {
        if (i > (int)start && (len - i) % 3 == 0) {
            out[o++] = ',';
            if (o + 1 >= outlen)
                break;
        }
        out[o++] = digits[i];
    }
    if (outlen)
        out[o < outlen ? o : outlen - 1] = '\0';
    return out;
}

char *format_time(int64_t t, char *out, size_t outlen)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&tt, &tm) || strftime(out, outlen, "%Y-%m-%d %H:%M:%SZ", &tm) == 0)
        snprintf(out, outlen, "%lld", (long long)t);
    return out;
}

/* ISO 4217 currencies whose minor unit is not the cent. */
int format_currency_decimals(const char *currency)
{
    static const char *const zero[] = {"BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW",
                                       "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"};
    static const char *const three[] = {"BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"};
    if (!currency)
        return 2;
    for (size_t i = 0; i < sizeof(zero) / sizeof(zero[0]); i++)
        if (strcmp(currency, zero[i]) == 0)
            return 0;
    for (size_t i = 0; i < sizeof(three) / sizeof(three[0]); i++)
        if (strcmp(currency, three[i]) == 0)
            return 3;
    return 2;
}

int format_is_currency(const char *s)
{
    if (!s)
        return 0;
    for (int i = 0; i < 3; i++)
        if (s[i] < 'A' || s[i] > 'Z')
            return 0;
    return s[3] == '\0';
}

char *format_money(int64_t minor, const char *currency, char *out, size_t outlen)
{
    int dec = format_currency_decimals(currency);
    uint64_t v = minor < 0 ? 0 - (uint64_t)minor : (uint64_t)minor;
    const char *sign = minor < 0 ? "-" : "";
    const char *sep = currency ? " " : "", *cur = currency ? currency : "";
    if (dec == 0) {
        snprintf(out, outlen, "%s%llu%s%s", sign, (unsigned long long)v, sep, cur);
    } else {
        uint64_t div = dec == 3 ? 1000 : 100;
        snprintf(out, outlen, "%s%llu.%0*llu%s%s", sign, (unsigned long long)(v / div), dec,
                 (unsigned long long)(v % div), sep, cur);
    }
    return out;
}

int format_parse_money(const char *s, const char *currency, int64_t *out)
{
    int dec = format_currency_decimals(currency);
    int neg = *s == '-';
    const char *p = s + neg;
    uint64_t v = 0, limit = (uint64_t)INT64_MAX + (uint64_t)neg;
    int frac_digits = 0;
    if (!isdigit((unsigned char)*p))
        return -1;
    for (; isdigit((unsigned char)*p); p++) {
        uint64_t d = (uint64_t)(*p - '0');
        if (v > (limit - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return -1;
    }
    /* The fraction's digits, then zeros up to the currency's decimals. */
    for (; frac_digits < dec; frac_digits++) {
        uint64_t d = 0;
        if (isdigit((unsigned char)*p))
            d = (uint64_t)(*p++ - '0');
        if (v > (limit - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    if (*p) /* more decimals than the currency has, or anything else */
        return -1;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

/* Read exactly n digits at *p into *out, advancing *p. */
static int digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return -1;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

static int parse_duration(const char *s, int64_t now, int64_t *out)
{
    static const struct {
        char unit;
        int64_t seconds;
    } units[] = {{'s', 1}, {'m', 60}, {'h', 3600}, {'d', 86400}, {'w', 7 * 86400}};
    size_t n = strlen(s);
    if (n < 2)
        return -1;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (s[n - 1] != units[i].unit)
            continue;
        char num[24];
        int64_t count;
        if (n - 1 >= sizeof(num))
            return -1;
        memcpy(num, s, n - 1);
        num[n - 1] = '\0';
        /* at most about 100 years back */
        if (format_parse_int(num, 0, 3200000000LL / units[i].seconds, &count) != 0)
            return -1;
        *out = now - count * units[i].seconds;
        return 0;
    }
    return -1;
}

int format_parse_time(const char *s, int64_t now, int64_t *out)
{
    const char *p = s;
    struct tm tm = {0};
    int year, mon, day, hour = 0, min = 0, sec = 0;
    if (isdigit((unsigned char)s[0]) && parse_duration(s, now, out) == 0)
        return 0;
    if (digits(&p, 4, &year) || *p++ != '-' || digits(&p, 2, &mon) || *p++ != '-' ||
        digits(&p, 2, &day))
        return -1;
    if (*p == ' ' || *p == 'T') {
        p++;
        if (digits(&p, 2, &hour) || *p++ != ':' || digits(&p, 2, &min))
            return -1;
        if (*p == ':') {
            p++;
            if (digits(&p, 2, &sec))
                return -1;
        }
        if (*p == 'Z')
            p++;
    }
    if (*p || year < 1970 || mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 ||
        sec > 59)
        return -1;
    tm.tm_year = year - 1900;
    tm.tm_mon = mon - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = min;
    tm.tm_sec = sec;
    time_t t = timegm(&tm);
    /* timegm normalises 2026-02-30 to March: refuse a date that moved */
    struct tm back;
    if (t == (time_t)-1 || !gmtime_r(&t, &back) || back.tm_mday != day || back.tm_mon != mon - 1)
        return -1;
    *out = (int64_t)t;
    return 0;
}

char *format_percent(int64_t used, int64_t total, char *out, size_t outlen)
{
    if (total <= 0)
        snprintf(out, outlen, "-");
    else
        /* rounded down, so a full pocket is the only one that reads 100% */
        snprintf(out, outlen, "%lld%%", (long long)((long double)used * 100 / total));
    return out;
}

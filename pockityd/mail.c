/* mail: RFC 5322 plain-text messages (pure builder) and their delivery over
 * SMTP with libcurl. */
#include "mail.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "buf.h"
#include "config.h"
#include "secret.h"

#define LINE_MAX_QP   76 /* RFC 2045: encoded lines of at most 76 characters */
#define SUBJECT_PLAIN 69 /* "Subject: " + this fits in 78 characters */
#define WORD_INPUT                                                                                 \
    39 /* bytes per encoded word: 52 base64 + 12 = 64, so "Subject: " + a word fits 76 */
#define MESSAGE_MAX     (4 * MAIL_BODY_MAX)
#define SEND_TIMEOUT    60L
#define CONNECT_TIMEOUT 10L

bool mail_enabled(const struct config *cfg)
{
    return cfg->smtp_url && *cfg->smtp_url;
}

/* ---- Checks */

static bool has_control(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return true;
    return false;
}

static bool is_ascii(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p >= 0x80)
            return false;
    return true;
}

bool mail_address_ok(const char *s)
{
    if (!s)
        return false;
    size_t n = strlen(s);
    if (n < 3 || n > MAIL_ADDRESS_MAX)
        return false;
    const char *at = strchr(s, '@');
    if (!at || at == s || !at[1] || strchr(at + 1, '@'))
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p <= 0x20 || *p == 0x7f || strchr("<>()[],;:\\\"", *p))
            return false;
    return true;
}

int mail_address(const char *from, char *out, size_t outlen)
{
    if (!from || has_control(from))
        return -EINVAL;
    const char *lt = strrchr(from, '<');
    const char *start = from, *end = from + strlen(from);
    if (lt) {
        const char *gt = strchr(lt, '>');
        if (!gt || gt[1] != '\0')
            return -EINVAL;
        start = lt + 1;
        end = gt;
    }
    size_t n = (size_t)(end - start);
    if (n + 1 > outlen)
        return -EINVAL;
    memcpy(out, start, n);
    out[n] = '\0';
    return mail_address_ok(out) ? 0 : -EINVAL;
}

/* atext of RFC 5322 plus '.' (a dot-atom), for message ids and names. */
static bool is_atext(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-/=?^_`{|}~.", ch));
}

static bool message_id_ok(const char *s)
{
    const char *at = s ? strchr(s, '@') : NULL;
    if (!at || at == s || !at[1] || strchr(at + 1, '@') || strlen(s) > 200)
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p != '@' && !is_atext(*p))
            return false;
    return true;
}

/* ---- Encoders */

static int add_base64(struct buf *b, const unsigned char *in, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char out[4];
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[0] = tab[(v >> 18) & 63];
        out[1] = tab[(v >> 12) & 63];
        out[2] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        out[3] = i + 2 < n ? tab[v & 63] : '=';
        int rc = buf_add(b, out, 4);
        if (rc)
            return rc;
    }
    return 0;
}

/* s as RFC 2047 encoded words ("=?UTF-8?B?...?="), folded onto continuation
 * lines, never splitting a UTF-8 sequence between two words. */
static int add_encoded_words(struct buf *b, const char *s)
{
    size_t n = strlen(s);
    bool first = true;
    while (n > 0) {
        size_t take = n < WORD_INPUT ? n : WORD_INPUT;
        while (take < n && take > 1 && ((unsigned char)s[take] & 0xc0) == 0x80)
            take--;
        int rc = buf_adds(b, first ? "=?UTF-8?B?" : "\r\n =?UTF-8?B?");
        if (!rc)
            rc = add_base64(b, (const unsigned char *)s, take);
        if (!rc)
            rc = buf_adds(b, "?=");
        if (rc)
            return rc;
        s += take;
        n -= take;
        first = false;
    }
    return 0;
}

/* From: a bare address, or a display name (plain, quoted or encoded) and the
 * address in angle brackets. */
static int add_from(struct buf *b, const char *from)
{
    char addr[MAIL_ADDRESS_MAX + 1];
    if (mail_address(from, addr, sizeof(addr)) != 0)
        return -EINVAL;
    const char *lt = strrchr(from, '<');
    if (!lt)
        return buf_addf(b, "From: %s\r\n", addr);
    size_t n = (size_t)(lt - from);
    while (n && from[n - 1] == ' ')
        n--;
    const char *name = from;
    while (n && *name == ' ') {
        name++;
        n--;
    }
    if (n == 0)
        return buf_addf(b, "From: <%s>\r\n", addr);
    char *dn = strndup(name, n);
    if (!dn)
        return -ENOMEM;
    int rc = buf_adds(b, "From: ");
    bool plain = true;
    for (const unsigned char *p = (const unsigned char *)dn; *p && plain; p++)
        plain = *p == ' ' || (is_atext(*p) && *p != '.');
    if (rc == 0 && plain) {
        rc = buf_adds(b, dn);
    } else if (rc == 0 && is_ascii(dn) && strlen(dn) < 60) {
        rc = buf_adds(b, "\"");
        for (const char *p = dn; *p && rc == 0; p++)
            rc = (*p == '"' || *p == '\\') ? buf_addf(b, "\\%c", *p) : buf_add(b, p, 1);
        if (rc == 0)
            rc = buf_adds(b, "\"");
    } else if (rc == 0) {
        rc = add_encoded_words(b, dn);
    }
    /* Fold before the address when the line would pass 78 characters. */
    size_t line = b->len - (size_t)(strrchr(b->data, '\n') + 1 - b->data);
    if (rc == 0)
        rc = buf_addf(b, "%s<%s>\r\n", line + strlen(addr) + 3 > 78 ? "\r\n " : " ", addr);
    free(dn);
    return rc;
}

static int add_subject(struct buf *b, const char *subject)
{
    if (is_ascii(subject) && strlen(subject) <= SUBJECT_PLAIN)
        return buf_addf(b, "Subject: %s\r\n", subject);
    int rc = buf_adds(b, "Subject: ");
    if (!rc)
        rc = add_encoded_words(b, subject);
    return rc ? rc : buf_adds(b, "\r\n");
}

/* One line of text (without its end) in quoted-printable, with soft line
 * breaks so that no encoded line passes LINE_MAX_QP characters. */
static int add_qp_line(struct buf *b, const unsigned char *s, size_t n)
{
    size_t col = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = s[i];
        bool last = i + 1 == n;
        bool literal = (ch >= 33 && ch <= 126 && ch != '=') || ((ch == ' ' || ch == '\t') && !last);
        size_t width = literal ? 1 : 3;
        int rc = 0;
        if (col + width > LINE_MAX_QP - 1) {
            rc = buf_adds(b, "=\r\n");
            col = 0;
        }
        if (!rc)
            rc = literal ? buf_add(b, &ch, 1) : buf_addf(b, "=%02X", ch);
        if (rc)
            return rc;
        col += width;
    }
    return buf_adds(b, "\r\n");
}

/* The body in quoted-printable: LF, CRLF and a lone CR all end a line. */
static int add_qp_body(struct buf *b, const char *body)
{
    const char *p = body;
    while (*p) {
        size_t n = strcspn(p, "\r\n");
        int rc = add_qp_line(b, (const unsigned char *)p, n);
        if (rc)
            return rc;
        p += n;
        if (p[0] == '\r' && p[1] == '\n')
            p += 2;
        else if (*p)
            p++;
    }
    return 0;
}

static void rfc5322_date(int64_t t, char *out, size_t outlen)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    snprintf(out, outlen, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday % 7], tm.tm_mday,
             months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

int mail_build(const struct mail_message *m, char **out, size_t *outlen)
{
    *out = NULL;
    *outlen = 0;
    if (!m->from || !m->to || !m->subject || !m->body || !m->message_id)
        return -EINVAL;
    if (has_control(m->from) || has_control(m->subject) || !mail_address_ok(m->to) ||
        !message_id_ok(m->message_id) || strlen(m->subject) > 998 ||
        strlen(m->body) > MAIL_BODY_MAX)
        return -EINVAL;
    char date[64];
    rfc5322_date(m->date, date, sizeof(date));
    struct buf b;
    buf_init(&b, MESSAGE_MAX);
    int rc = buf_addf(&b, "Date: %s\r\n", date);
    if (!rc)
        rc = add_from(&b, m->from);
    if (!rc)
        rc = buf_addf(&b, "To: %s\r\n", m->to);
    if (!rc)
        rc = add_subject(&b, m->subject);
    if (!rc)
        rc = buf_addf(&b,
                      "Message-ID: <%s>\r\n"
                      "MIME-Version: 1.0\r\n"
                      "Content-Type: text/plain; charset=utf-8\r\n"
                      "Content-Transfer-Encoding: quoted-printable\r\n"
                      "Auto-Submitted: auto-generated\r\n"
                      "\r\n",
                      m->message_id);
    if (!rc)
        rc = add_qp_body(&b, m->body);
    if (rc) {
        buf_release(&b);
        return rc == -E2BIG ? -EINVAL : rc;
    }
    *out = buf_detach(&b, outlen);
    return *out ? 0 : -ENOMEM;
}

/* ---- People's formats */

/* Decimals of an ISO 4217 currency's minor unit. */
static int currency_decimals(const char *currency)
{
    static const char zero[] =
            "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF";
    static const char three[] = "BHD IQD JOD KWD LYD OMR TND";
    if (!currency || strlen(currency) != 3)
        return 2;
    if (strstr(zero, currency))
        return 0;
    if (strstr(three, currency))
        return 3;
    return 2;
}

void mail_format_amount(int64_t minor, const char *currency, char *out, size_t outlen)
{
    int dec = currency_decimals(currency);
    uint64_t mag = minor < 0 ? (uint64_t)0 - (uint64_t)minor : (uint64_t)minor;
    uint64_t unit = dec == 0 ? 1 : dec == 3 ? 1000 : 100;
    const char *sign = minor < 0 ? "-" : "";
    const char *cur = currency && *currency ? currency : "";
    if (dec == 0)
        snprintf(out, outlen, "%s%" PRIu64 " %s", sign, mag, cur);
    else
        snprintf(out, outlen, "%s%" PRIu64 ".%0*" PRIu64 " %s", sign, mag / unit, dec, mag % unit,
                 cur);
}

void mail_format_time(int64_t t, char *out, size_t outlen)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    snprintf(out, outlen, "%04d-%02d-%02d %02d:%02d UTC", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min);
}

/* ---- Sending */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static int curl_init_rc;

static void curl_global(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

struct upload {
    const char *p;
    size_t left;
};

static size_t read_cb(char *dst, size_t size, size_t nmemb, void *arg)
{
    struct upload *u = arg;
    size_t n = size * nmemb;
    if (n > u->left)
        n = u->left;
    memcpy(dst, u->p, n);
    u->p += n;
    u->left -= n;
    return n;
}

static bool scheme_ok(const char *url, bool *implicit_tls)
{
    *implicit_tls = strncasecmp(url, "smtps://", 8) == 0;
    return *implicit_tls || strncasecmp(url, "smtp://", 7) == 0;
}

int mail_send(const struct config *cfg, const char *to, const char *subject, const char *body,
              char *err, size_t errlen)
{
    char from[MAIL_ADDRESS_MAX + 1], mid[300], rnd[16], hex[33], envelope[MAIL_ADDRESS_MAX + 3];
    bool implicit_tls = false;
    if (errlen)
        err[0] = '\0';
    if (!mail_enabled(cfg) || !scheme_ok(cfg->smtp_url, &implicit_tls)) {
        snprintf(err, errlen, "[smtp] url must be smtp://HOST[:PORT] or smtps://HOST[:PORT]");
        return -EINVAL;
    }
    if (!cfg->smtp_from || mail_address(cfg->smtp_from, from, sizeof(from)) != 0) {
        snprintf(err, errlen, "[smtp] from must be an address or 'Name <address>'");
        return -EINVAL;
    }
    if (!mail_address_ok(to)) {
        snprintf(err, errlen, "'%.80s' is not a usable address", to ? to : "");
        return -EINVAL;
    }
    if (secret_random(rnd, sizeof(rnd)) != 0 || secret_hex_encode(rnd, sizeof(rnd), hex, 33)) {
        snprintf(err, errlen, "no randomness for a message id");
        return -EIO;
    }
    snprintf(mid, sizeof(mid), "%s%s", hex, strchr(from, '@'));
    struct mail_message m = {.from = cfg->smtp_from,
                             .to = to,
                             .subject = subject,
                             .body = body,
                             .message_id = mid,
                             .date = (int64_t)time(NULL)};
    char *text = NULL;
    size_t len = 0;
    int rc = mail_build(&m, &text, &len);
    if (rc) {
        snprintf(err, errlen, rc == -ENOMEM ? "out of memory" : "the message is malformed");
        return rc == -ENOMEM ? -EIO : rc;
    }

    pthread_once(&curl_once, curl_global);
    CURL *h = curl_init_rc == 0 ? curl_easy_init() : NULL;
    snprintf(envelope, sizeof(envelope), "<%s>", to);
    struct curl_slist *rcpt = h ? curl_slist_append(NULL, envelope) : NULL;
    if (!rcpt) {
        snprintf(err, errlen, "cannot set up libcurl");
        rc = -EIO;
        goto out;
    }
    char cerr[CURL_ERROR_SIZE] = "";
    char mail_from[MAIL_ADDRESS_MAX + 3];
    snprintf(mail_from, sizeof(mail_from), "<%s>", from);
    struct upload up = {text, len};
    curl_easy_setopt(h, CURLOPT_URL, cfg->smtp_url);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
#else
    curl_easy_setopt(h, CURLOPT_PROTOCOLS, (long)(CURLPROTO_SMTP | CURLPROTO_SMTPS));
#endif
    curl_easy_setopt(h, CURLOPT_MAIL_FROM, mail_from);
    curl_easy_setopt(h, CURLOPT_MAIL_RCPT, rcpt);
    curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(h, CURLOPT_READFUNCTION, read_cb);
    curl_easy_setopt(h, CURLOPT_READDATA, &up);
    curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)len);
    /* A login is never sent in clear: with a user, TLS is required like
     * with require_tls. */
    bool login = cfg->smtp_user && *cfg->smtp_user;
    curl_easy_setopt(h, CURLOPT_USE_SSL,
                     (cfg->smtp_require_tls || implicit_tls || login) ? (long)CURLUSESSL_ALL
                                                                      : (long)CURLUSESSL_TRY);
    if (login) {
        curl_easy_setopt(h, CURLOPT_USERNAME, cfg->smtp_user);
        curl_easy_setopt(h, CURLOPT_PASSWORD, cfg->smtp_password ? cfg->smtp_password : "");
    }
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, SEND_TIMEOUT);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
    CURLcode cc = curl_easy_perform(h);
    if (cc != CURLE_OK) {
        long code = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
        if (cc == CURLE_USE_SSL_FAILED)
            snprintf(err, errlen, "the server offers no TLS and %s",
                     login ? "[smtp] user is set (a login is never sent in clear)"
                           : "[smtp] require_tls is set");
        else
            snprintf(err, errlen, "%s", cerr[0] ? cerr : curl_easy_strerror(cc));
        /* A 5xx reply is the server's final word on this message, except a
         * refused login, which the operator can mend. */
        rc = code >= 500 && code < 600 && cc != CURLE_LOGIN_DENIED ? -EPERM : -EIO;
    }
out:
    curl_slist_free_all(rcpt);
    if (h)
        curl_easy_cleanup(h);
    free(text);
    return rc;
}

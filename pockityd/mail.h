/* mail: plain-text email — RFC 5322 messages built by a pure function, and
 * sending them through the configured SMTP server with libcurl. */
#ifndef POCKITYD_MAIL_H
#define POCKITYD_MAIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config;

#define MAIL_ADDRESS_MAX 254   /* bytes of an address (RFC 5321 path limit) */
#define MAIL_BODY_MAX    65536 /* bytes of a message's text, before encoding */

/* Whether an SMTP server is configured ([smtp] url). Without one, email
 * verification is off and no notification is sent. */
bool mail_enabled(const struct config *cfg);

/* What a message says. Every header value must be one line: CR, LF and other
 * control characters are refused, so no value can inject a header. */
struct mail_message {
    const char *from;       /* "addr@host" or "Display Name <addr@host>" */
    const char *to;         /* one bare address */
    const char *subject;    /* UTF-8; encoded (RFC 2047) when not short ASCII */
    const char *body;       /* UTF-8 text, lines ended by LF or CRLF */
    const char *message_id; /* "left@domain", without the angle brackets */
    int64_t date;           /* unix seconds, written as UTC */
};

/* Build the message's text: Date, From, To, Subject, Message-ID, MIME-Version,
 * Content-Type text/plain; charset=utf-8 and a quoted-printable body, every
 * line ended by CRLF and at most 78 characters long. Dot-stuffing is left to
 * the SMTP client (libcurl does it). On success returns 0 and *out, a
 * NUL-terminated string the caller frees, of *outlen bytes. Returns -EINVAL
 * for a header value with a control character, a malformed address or
 * message id, or a body over MAIL_BODY_MAX; -ENOMEM. */
int mail_build(const struct mail_message *m, char **out, size_t *outlen);

/* The bare address of a From value: "Pockity <no-reply@example.com>" and
 * "no-reply@example.com" both give "no-reply@example.com". Returns 0, or
 * -EINVAL when it is not one of these shapes or the address is malformed. */
int mail_address(const char *from, char *out, size_t outlen);

/* Whether s is a plausible bare address: local@domain, printable ASCII or
 * UTF-8 without spaces, controls or any of "<>()[],;:\\\"", one '@', at most
 * MAIL_ADDRESS_MAX bytes. */
bool mail_address_ok(const char *s);

/* An amount of money for people: minor units with the currency's decimals
 * (2 for most, 0 for JPY and its kind, 3 for BHD and its kind), e.g.
 * (123456, "EUR") → "1234.56 EUR", (-5, "USD") → "-0.05 USD". out is always
 * NUL-terminated. */
void mail_format_amount(int64_t minor, const char *currency, char *out, size_t outlen);

/* A date for people: "2025-07-08 14:00 UTC". */
void mail_format_time(int64_t t, char *out, size_t outlen);

/* Send one message to one address through the configured server, with a
 * fresh Message-ID and the current date. The connection uses TLS from the
 * start for smtps://, STARTTLS when the server offers it for smtp:// (required
 * when [smtp] require_tls is set), and logs in when [smtp] user is set. Blocks
 * for at most about a minute. Returns 0 once the server accepted the message;
 * -EINVAL for an unusable setting or message; -EPERM when the server refused
 * it for good (a 5xx reply other than a refused login, e.g. an unknown
 * recipient); -EIO when
 * the server is unreachable, answers 4xx or times out (worth another try). err (errlen bytes) gets
 * the reason, never the password. Thread-safe. */
int mail_send(const struct config *cfg, const char *to, const char *subject, const char *body,
              char *err, size_t errlen);

#endif

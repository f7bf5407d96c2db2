/* Unit tests for xml: the bounded DOM over expat and the escaper. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"
#include "xml.h"

/* Parse a NUL-terminated document with the given limits. */
static int parse(const char *s, const struct xml_limits *limits, struct xml_doc **doc)
{
    return xml_parse(s, strlen(s), limits, doc);
}

static void assert_refused(const char *s, int expected)
{
    struct xml_doc *doc = (struct xml_doc *)1;
    assert_int_equal(parse(s, NULL, &doc), expected);
    assert_null(doc);
}

static void test_tree(void **state)
{
    const char *s = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                    "<!-- a comment --><?pi data?>\n"
                    "<a attr=\"x\"><b>1</b><c><d>deep</d></c><e/><b>2</b><b></b></a>\n";
    struct xml_doc *doc;
    assert_int_equal(parse(s, NULL, &doc), 0);
    const struct xml_node *a = xml_root(doc);
    assert_string_equal(xml_name(a), "a");
    assert_string_equal(xml_text(a), "");
    assert_int_equal(xml_child_count(a, NULL), 5);
    assert_int_equal(xml_child_count(a, "b"), 3);
    assert_int_equal(xml_child_count(a, "zz"), 0);

    const struct xml_node *b = xml_child(a, "b");
    assert_non_null(b);
    assert_string_equal(xml_text(b), "1");
    b = xml_next_sibling(b, "b");
    assert_string_equal(xml_text(b), "2");
    b = xml_next_sibling(b, "b");
    assert_non_null(b);
    assert_string_equal(xml_text(b), "");
    assert_int_equal(xml_text_len(b), 0);
    assert_null(xml_next_sibling(b, "b"));
    assert_null(xml_next_sibling(b, NULL));

    const struct xml_node *first = xml_child(a, NULL);
    assert_string_equal(xml_name(first), "b");
    assert_string_equal(xml_name(xml_next_sibling(first, NULL)), "c");

    const struct xml_node *c = xml_child(a, "c");
    assert_string_equal(xml_child_text(c, "d"), "deep");
    assert_null(xml_child(a, "d")); /* children only, not descendants */
    assert_null(xml_child_text(a, "missing"));
    assert_string_equal(xml_child_text(a, "e"), "");
    assert_null(xml_child(xml_child(a, "e"), NULL));
    xml_doc_free(doc);
    xml_doc_free(NULL);
}

static void test_text(void **state)
{
    const char *s = "<r>"
                    "<ent>x &amp; y &lt;&gt;&quot;&apos; &#233;&#x1F600;</ent>"
                    "<cdata><![CDATA[<not> & a tag]]>tail</cdata>"
                    "<mixed>one<child>in</child>two<child/>three</mixed>"
                    "<ws>  lead and trail\t\n</ws>"
                    "<utf>\xc3\xa9t\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80</utf>"
                    "</r>";
    struct xml_doc *doc;
    assert_int_equal(parse(s, NULL, &doc), 0);
    const struct xml_node *r = xml_root(doc);
    assert_string_equal(xml_child_text(r, "ent"), "x & y <>\"' \xc3\xa9\xf0\x9f\x98\x80");
    assert_string_equal(xml_child_text(r, "cdata"), "<not> & a tagtail");
    const struct xml_node *mixed = xml_child(r, "mixed");
    assert_string_equal(xml_text(mixed), "onetwothree");
    assert_int_equal(xml_text_len(mixed), 11);
    assert_string_equal(xml_child_text(mixed, "child"), "in");
    assert_string_equal(xml_child_text(r, "ws"), "  lead and trail\t\n");
    assert_string_equal(xml_child_text(r, "utf"),
                        "\xc3\xa9t\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
    xml_doc_free(doc);
}

static void test_namespaces(void **state)
{
    const char *s = "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
                    "<Name>bucket</Name>"
                    "<s3:Extra xmlns:s3=\"urn:x\"><s3:Inner>v</s3:Inner></s3:Extra>"
                    "</ListBucketResult>";
    struct xml_doc *doc;
    assert_int_equal(parse(s, NULL, &doc), 0);
    const struct xml_node *r = xml_root(doc);
    assert_string_equal(xml_name(r), "ListBucketResult");
    assert_string_equal(xml_child_text(r, "Name"), "bucket");
    assert_string_equal(xml_child_text(xml_child(r, "Extra"), "Inner"), "v");
    xml_doc_free(doc);
}

/* "<a>" * n + "</a>" * n */
static char *nested(size_t n)
{
    char *s = malloc(7 * n + 1);
    assert_non_null(s);
    for (size_t i = 0; i < n; i++)
        memcpy(s + 3 * i, "<a>", 3);
    for (size_t i = 0; i < n; i++)
        memcpy(s + 3 * n + 4 * i, "</a>", 4);
    s[7 * n] = '\0';
    return s;
}

static void test_limit_depth(void **state)
{
    struct xml_limits lim = xml_default_limits;
    lim.max_depth = 5;
    struct xml_doc *doc;
    char *s = nested(5);
    assert_int_equal(parse(s, &lim, &doc), 0);
    xml_doc_free(doc);
    free(s);
    s = nested(6);
    doc = (struct xml_doc *)1;
    assert_int_equal(parse(s, &lim, &doc), -E2BIG);
    assert_null(doc);
    free(s);

    /* the default limit */
    s = nested(32);
    assert_int_equal(parse(s, NULL, &doc), 0);
    xml_doc_free(doc);
    free(s);
    s = nested(33);
    assert_int_equal(parse(s, NULL, &doc), -E2BIG);
    free(s);
}

static void test_limit_elements(void **state)
{
    struct xml_limits lim = xml_default_limits;
    lim.max_elements = 4;
    struct xml_doc *doc;
    assert_int_equal(parse("<r><a/><a/><a/></r>", &lim, &doc), 0);
    xml_doc_free(doc);
    assert_int_equal(parse("<r><a/><a/><a/><a/></r>", &lim, &doc), -E2BIG);
    assert_null(doc);
    lim.max_elements = 0;
    assert_int_equal(parse("<r/>", &lim, &doc), -E2BIG);
}

static void test_limit_text(void **state)
{
    struct xml_limits lim = xml_default_limits;
    lim.max_text = 10;
    struct xml_doc *doc;
    /* the text of every element counts, whitespace included */
    assert_int_equal(parse("<r> <a>1234</a><b>&amp;678</b> </r>", &lim, &doc), 0);
    xml_doc_free(doc);
    assert_int_equal(parse("<r> <a>1234</a><b>&amp;6789</b> </r>", &lim, &doc), -E2BIG);
    assert_null(doc);
    assert_int_equal(parse("<r><![CDATA[12345678901]]></r>", &lim, &doc), -E2BIG);
}

static void test_limit_input(void **state)
{
    struct xml_limits lim = xml_default_limits;
    const char *s = "<r>abc</r>";
    struct xml_doc *doc;
    lim.max_input = strlen(s);
    assert_int_equal(parse(s, &lim, &doc), 0);
    xml_doc_free(doc);
    lim.max_input = strlen(s) - 1;
    assert_int_equal(parse(s, &lim, &doc), -E2BIG);
    assert_null(doc);
}

static void test_doctype_refused(void **state)
{
    /* billion laughs */
    assert_refused("<?xml version=\"1.0\"?>\n"
                   "<!DOCTYPE lolz [\n"
                   " <!ENTITY lol \"lol\">\n"
                   " <!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\n"
                   " <!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">\n"
                   " <!ENTITY lol4 \"&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;\">\n"
                   "]>\n"
                   "<lolz>&lol4;</lolz>",
                   -EINVAL);
    /* external entity */
    assert_refused("<!DOCTYPE r [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]><r>&xxe;</r>",
                   -EINVAL);
    /* parameter entity */
    assert_refused("<!DOCTYPE r [<!ENTITY % p SYSTEM \"http://127.0.0.1/x\"> %p;]><r/>", -EINVAL);
    /* even a harmless DOCTYPE */
    assert_refused("<!DOCTYPE r><r/>", -EINVAL);
    assert_refused("<!DOCTYPE r SYSTEM \"r.dtd\"><r/>", -EINVAL);
    /* an entity that was never declared */
    assert_refused("<r>&lol;</r>", -EINVAL);
}

static void test_malformed(void **state)
{
    struct xml_doc *doc = (struct xml_doc *)1;
    assert_int_equal(xml_parse("", 0, NULL, &doc), -EINVAL);
    assert_null(doc);
    assert_int_equal(xml_parse(NULL, 0, NULL, &doc), -EINVAL);
    assert_int_equal(xml_parse("<r/>", 0, NULL, &doc), -EINVAL);

    assert_refused("   \n", -EINVAL);
    assert_refused("not xml at all", -EINVAL);
    assert_refused("<a><b></a></b>", -EINVAL);
    assert_refused("<a></b>", -EINVAL);
    assert_refused("<a/><b/>", -EINVAL);
    assert_refused("<a/>trailing", -EINVAL);
    assert_refused("<a>&#1;</a>", -EINVAL);
    assert_refused("<a>&#0;</a>", -EINVAL);
    assert_refused("<a>\x01</a>", -EINVAL);
    assert_refused("<a>x & y</a>", -EINVAL);
    assert_refused("<a>x < y</a>", -EINVAL);
    assert_refused("<a b=c/>", -EINVAL);
    assert_refused("<?xml version=\"1.0\" encoding=\"x-klingon\"?><a/>", -EINVAL);
    /* invalid UTF-8: a stray byte, a truncated sequence, an overlong '/',
     * a surrogate */
    assert_refused("<a>\xff</a>", -EINVAL);
    assert_refused("<a>\xc3</a>", -EINVAL);
    assert_refused("<a>\xc0\xaf</a>", -EINVAL);
    assert_refused("<a>\xed\xa0\x80</a>", -EINVAL);

    /* a NUL byte inside the input */
    const char nul[] = "<a>x\0y</a>";
    assert_int_equal(xml_parse(nul, sizeof(nul) - 1, NULL, &doc), -EINVAL);
    assert_null(doc);
}

static void test_truncated(void **state)
{
    const char *s = "<?xml version=\"1.0\"?><ListBucketResult xmlns=\"http://x/\">"
                    "<Contents><Key>a &amp; b</Key><Size>10</Size></Contents>"
                    "<![CDATA[x]]><!-- c --></ListBucketResult>";
    size_t len = strlen(s);
    struct xml_doc *doc;
    assert_int_equal(xml_parse(s, len, NULL, &doc), 0);
    xml_doc_free(doc);
    /* every proper prefix is refused, and never as a limit error */
    for (size_t n = 0; n < len; n++) {
        doc = (struct xml_doc *)1;
        assert_int_equal(xml_parse(s, n, NULL, &doc), -EINVAL);
        assert_null(doc);
    }
}

static void test_garbage(void **state)
{
    unsigned char data[512];
    uint32_t x = 12345;
    for (int round = 0; round < 200; round++) {
        for (size_t i = 0; i < sizeof(data); i++) {
            x = x * 1103515245u + 12345u;
            data[i] = (unsigned char)(x >> 16);
        }
        if (round % 2)
            data[0] = '<'; /* get past the first byte sometimes */
        struct xml_doc *doc = (struct xml_doc *)1;
        int rc = xml_parse((const char *)data, sizeof(data), NULL, &doc);
        assert_true(rc == -EINVAL || rc == -E2BIG);
        assert_null(doc);
    }
}

static void test_big_inputs(void **state)
{
    const size_t size = 10u << 20;
    char *s = malloc(size + 16);
    assert_non_null(s);
    struct xml_doc *doc;

    /* 10 MB of nesting stops at the depth limit */
    for (size_t i = 0; i + 3 <= size; i += 3)
        memcpy(s + i, "<a>", 3);
    assert_int_equal(xml_parse(s, size - size % 3, NULL, &doc), -E2BIG);
    assert_null(doc);

    /* 10 MB of empty siblings stops at the element limit */
    memcpy(s, "<r>", 3);
    size_t n = 3;
    while (n + 4 + 4 <= size) {
        memcpy(s + n, "<a/>", 4);
        n += 4;
    }
    memcpy(s + n, "</r>", 4);
    n += 4;
    assert_int_equal(xml_parse(s, n, NULL, &doc), -E2BIG);
    assert_null(doc);

    /* 10 MB of text fits the default limits, and is kept whole */
    memcpy(s, "<r>", 3);
    memset(s + 3, 'x', size);
    memcpy(s + 3 + size, "</r>", 4);
    assert_int_equal(xml_parse(s, size + 7, NULL, &doc), 0);
    assert_int_equal(xml_text_len(xml_root(doc)), size);
    assert_int_equal(strlen(xml_text(xml_root(doc))), size);
    xml_doc_free(doc);

    /* a text past 16 MiB does not */
    free(s);
    const size_t big = (16u << 20) + 1;
    s = malloc(big + 7);
    assert_non_null(s);
    memcpy(s, "<r>", 3);
    memset(s + 3, 'x', big);
    memcpy(s + 3 + big, "</r>", 4);
    assert_int_equal(xml_parse(s, big + 7, NULL, &doc), -E2BIG);
    free(s);
}

static void test_many_elements(void **state)
{
    /* a listing-sized document: 20,000 elements, all reachable in order */
    struct buf b;
    buf_init(&b, 4u << 20);
    assert_int_equal(buf_adds(&b, "<r>"), 0);
    for (int i = 0; i < 10000; i++)
        assert_int_equal(buf_addf(&b, "<C><K>k%d</K></C>", i), 0);
    assert_int_equal(buf_adds(&b, "</r>"), 0);
    struct xml_doc *doc;
    assert_int_equal(xml_parse(b.data, b.len, NULL, &doc), 0);
    const struct xml_node *r = xml_root(doc);
    assert_int_equal(xml_child_count(r, "C"), 10000);
    int i = 0;
    char want[32];
    for (const struct xml_node *c = xml_child(r, "C"); c; c = xml_next_sibling(c, "C"), i++) {
        snprintf(want, sizeof(want), "k%d", i);
        assert_string_equal(xml_child_text(c, "K"), want);
    }
    assert_int_equal(i, 10000);
    xml_doc_free(doc);
    buf_release(&b);
}

static void test_escape(void **state)
{
    struct buf b;
    buf_init(&b, 1024);
    const char *s = "a<b>&\"c'\t\n\r\xc3\xa9\xf0\x9f\x98\x80";
    assert_int_equal(xml_escape(&b, s, strlen(s)), 0);
    assert_string_equal(b.data, "a&lt;b&gt;&amp;&quot;c&apos;\t\n&#13;\xc3\xa9\xf0\x9f\x98\x80");
    buf_reset(&b);
    assert_int_equal(xml_escape(&b, "", 0), 0);
    assert_int_equal(b.len, 0);

    /* what XML 1.0 cannot carry is refused, and b is left as it was */
    assert_int_equal(buf_adds(&b, "keep"), 0);
    static const char *const bad[] = {
            "a\x01",
            "\x1f",
            "x\x0by",
            "\x7f\x80",
            "\xc3",
            "\xc0\xaf",
            "\xed\xa0\x80",
            "\xef\xbf\xbe",
            "\xef\xbf\xbf",
            "\xf4\x90\x80\x80",
            "\xf8\x88\x80\x80\x80",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(xml_escape(&b, bad[i], strlen(bad[i])), -EILSEQ);
        assert_string_equal(b.data, "keep");
    }
    const char nul[] = "a\0b";
    assert_int_equal(xml_escape(&b, nul, 3), -EILSEQ);
    assert_string_equal(b.data, "keep");
    /* DEL is a valid XML character */
    assert_int_equal(xml_escape(&b, "\x7f", 1), 0);
    assert_string_equal(b.data, "keep\x7f");

    /* the buffer's cap: -E2BIG, b unchanged */
    struct buf small;
    buf_init(&small, 8);
    assert_int_equal(buf_adds(&small, "ab"), 0);
    assert_int_equal(xml_escape(&small, "&&", 2), -E2BIG);
    assert_string_equal(small.data, "ab");
    assert_int_equal(small.len, 2);
    assert_int_equal(xml_escape(&small, "&", 1), 0);
    assert_string_equal(small.data, "ab&amp;");
    buf_release(&small);
    buf_release(&b);
}

static void test_escape_round_trip(void **state)
{
    /* every byte XML can carry survives escape + parse, CR included */
    char s[256];
    size_t n = 0;
    for (int c = 1; c < 128; c++)
        if (c >= 0x20 || c == '\t' || c == '\n' || c == '\r')
            s[n++] = (char)c;
    memcpy(s + n, "\r\n\xc3\xa9\xe2\x82\xac", 7);
    n += 7;
    struct buf b;
    buf_init(&b, 4096);
    assert_int_equal(buf_adds(&b, "<k>"), 0);
    assert_int_equal(xml_escape(&b, s, n), 0);
    assert_int_equal(buf_adds(&b, "</k>"), 0);
    struct xml_doc *doc;
    assert_int_equal(xml_parse(b.data, b.len, NULL, &doc), 0);
    assert_int_equal(xml_text_len(xml_root(doc)), n);
    assert_memory_equal(xml_text(xml_root(doc)), s, n);
    xml_doc_free(doc);
    buf_release(&b);
}

/* What each_item saw: the texts of the <item> children it dropped. */
struct each_log {
    char seen[8][32];
    int n;
    int fail_at;       /* the item to stop the parse at, or -1 */
    int keep;          /* keep the items instead */
    int bad_root;      /* calls with another root than <r> */
    int subs_ok;       /* dropped items whose every <sub> of 1024 bytes read back whole */
    size_t base, peak; /* bytes allocated before the parse, and at most during */
};

static int each_item(void *arg, const struct xml_node *root, const struct xml_node *c)
{
    struct each_log *log = arg;
    log->bad_root += strcmp(xml_name(root), "r") != 0;
    size_t used = mallinfo2().uordblks;
    if (used > log->peak)
        log->peak = used;
    if (strcmp(xml_name(c), "item") != 0)
        return 0;
    if (log->n == log->fail_at)
        return -EIO;
    size_t n_subs = 0, whole = 0;
    for (const struct xml_node *k = xml_child(c, NULL); k; k = xml_next_sibling(k, NULL), n_subs++)
        whole += strcmp(xml_name(k), "sub") == 0 && xml_text_len(k) == 1024 &&
                 strspn(xml_text(k), "y") == 1024;
    log->subs_ok += n_subs == 200 && whole == 200;
    if (log->n < 8) {
        const char *sub = xml_child_text(c, "sub");
        snprintf(log->seen[log->n], sizeof(log->seen[0]), "%s%s%s", xml_text(c), sub ? "+" : "",
                 sub ? sub : "");
    }
    log->n++;
    return log->keep ? 0 : 1;
}

static void test_each_drops_items(void **state)
{
    const char *s = "<r><item>1</item><keep>a</keep><item>2<sub>x</sub></item><item>3</item>"
                    "<keep>b<sub>y</sub></keep><item>4</item></r>";
    struct each_log log = {.fail_at = -1};
    struct xml_doc *doc;
    assert_int_equal(xml_parse_each(s, strlen(s), NULL, each_item, &log, &doc), 0);
    assert_int_equal(log.n, 4);
    assert_int_equal(log.bad_root, 0);
    assert_string_equal(log.seen[0], "1");
    assert_string_equal(log.seen[1], "2+x");
    assert_string_equal(log.seen[2], "3");
    assert_string_equal(log.seen[3], "4");
    /* the kept children stay, in order, with their own children */
    const struct xml_node *r = xml_root(doc);
    assert_int_equal(xml_child_count(r, NULL), 2);
    assert_null(xml_child(r, "item"));
    const struct xml_node *a = xml_child(r, NULL);
    assert_string_equal(xml_text(a), "a");
    const struct xml_node *b = xml_next_sibling(a, NULL);
    assert_string_equal(xml_text(b), "b");
    assert_string_equal(xml_child_text(b, "sub"), "y");
    assert_null(xml_next_sibling(b, NULL));
    xml_doc_free(doc);

    /* all dropped: a root without children */
    s = "<r><item>1</item><item>2</item></r>";
    log = (struct each_log){.fail_at = -1};
    assert_int_equal(xml_parse_each(s, strlen(s), NULL, each_item, &log, &doc), 0);
    assert_int_equal(log.n, 2);
    assert_null(xml_child(xml_root(doc), NULL));
    xml_doc_free(doc);
}

static void test_each_stops(void **state)
{
    const char *s = "<r><item>1</item><item>2</item><item>3</item></r>";
    struct each_log log = {.fail_at = 1};
    struct xml_doc *doc = (struct xml_doc *)1;
    assert_int_equal(xml_parse_each(s, strlen(s), NULL, each_item, &log, &doc), -EIO);
    assert_null(doc);
    assert_int_equal(log.n, 1);
    /* the parser's own refusals still come first */
    log = (struct each_log){.fail_at = -1};
    s = "<r><item>1</item><item>2</r>";
    assert_int_equal(xml_parse_each(s, strlen(s), NULL, each_item, &log, &doc), -EINVAL);
    assert_null(doc);
}

/* Dropped items larger than the arena's chunks, between kept ones: the
 * memory a rewind frees (and the chunk it keeps for the next) never
 * overlaps what the kept ones hold. */
static void test_each_rewinds_chunks(void **state)
{
    struct buf b;
    buf_init(&b, 64u << 20);
    char piece[1024];
    memset(piece, 'y', sizeof(piece));
    assert_int_equal(buf_adds(&b, "<r>"), 0);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(buf_addf(&b, "<keep>k%d<sub>ks%d</sub></keep><item>i%d", i, i, i), 0);
        for (int k = 0; k < 200; k++) { /* about 220 KB of nodes and texts */
            assert_int_equal(buf_adds(&b, "<sub>"), 0);
            assert_int_equal(buf_add(&b, piece, sizeof(piece)), 0);
            assert_int_equal(buf_adds(&b, "</sub>"), 0);
        }
        assert_int_equal(buf_adds(&b, "</item>"), 0);
    }
    assert_int_equal(buf_adds(&b, "</r>"), 0);
    struct each_log log = {.fail_at = -1};
    struct xml_doc *doc;
    assert_int_equal(xml_parse_each(b.data, b.len, NULL, each_item, &log, &doc), 0);
    assert_int_equal(log.n, 6);
    assert_int_equal(log.bad_root, 0);
    assert_int_equal(log.subs_ok, 6);
    for (int i = 0; i < 6; i++) {
        char want[8];
        snprintf(want, sizeof(want), "i%d+", i);
        assert_memory_equal(log.seen[i], want, strlen(want));
        assert_int_equal(strspn(log.seen[i] + strlen(want), "y"),
                         strlen(log.seen[i]) - strlen(want));
    }
    const struct xml_node *k = xml_child(xml_root(doc), NULL);
    for (int i = 0; i < 6; i++, k = xml_next_sibling(k, NULL)) {
        char text[8], sub[8];
        snprintf(text, sizeof(text), "k%d", i);
        snprintf(sub, sizeof(sub), "ks%d", i);
        assert_non_null(k);
        assert_string_equal(xml_name(k), "keep");
        assert_string_equal(xml_text(k), text);
        assert_string_equal(xml_child_text(k, "sub"), sub);
    }
    assert_null(k);
    xml_doc_free(doc);
    buf_release(&b);
}

/* A long list costs one item's memory at a time: 20,000 items of 512 bytes,
 * every 1000th of 100 KiB instead (a chunk of its own each: 2 MiB of them),
 * 12 MiB as a tree. */
static void test_each_memory(void **state)
{
    struct buf b;
    buf_init(&b, 64u << 20);
    char text[100 * 1024];
    memset(text, 'x', sizeof(text));
    assert_int_equal(buf_adds(&b, "<r>"), 0);
    for (int i = 0; i < 20000; i++) {
        size_t n = i % 1000 == 999 ? sizeof(text) : 512;
        assert_int_equal(buf_adds(&b, "<item><sub>s</sub>"), 0);
        assert_int_equal(buf_add(&b, text, n), 0);
        assert_int_equal(buf_adds(&b, "</item>"), 0);
    }
    assert_int_equal(buf_adds(&b, "</r>"), 0);
    /* the tree kept first: it shows whether the allocator's statistics see
     * this test's allocations (a sanitizer's allocator reports none) */
    int measured = 1;
    for (int keep = 1; keep >= 0; keep--) {
        struct each_log log = {.fail_at = -1, .keep = keep};
        log.base = log.peak = mallinfo2().uordblks;
        struct xml_doc *doc;
        assert_int_equal(xml_parse_each(b.data, b.len, NULL, each_item, &log, &doc), 0);
        assert_int_equal(log.n, 20000);
        assert_int_equal(xml_child_count(xml_root(doc), NULL), keep ? 20000 : 0);
        xml_doc_free(doc);
        if (keep && log.peak - log.base < (10u << 20)) {
            measured = 0;
            print_message("memory bound not checked: malloc's statistics do not see the "
                          "tree (another allocator, e.g. a sanitizer's)\n");
        }
        if (!keep && measured)
            assert_true(log.peak - log.base < (1u << 20));
    }
    buf_release(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_tree),
            cmocka_unit_test(test_text),
            cmocka_unit_test(test_namespaces),
            cmocka_unit_test(test_limit_depth),
            cmocka_unit_test(test_limit_elements),
            cmocka_unit_test(test_limit_text),
            cmocka_unit_test(test_limit_input),
            cmocka_unit_test(test_doctype_refused),
            cmocka_unit_test(test_malformed),
            cmocka_unit_test(test_truncated),
            cmocka_unit_test(test_garbage),
            cmocka_unit_test(test_big_inputs),
            cmocka_unit_test(test_many_elements),
            cmocka_unit_test(test_escape),
            cmocka_unit_test(test_escape_round_trip),
            cmocka_unit_test(test_each_drops_items),
            cmocka_unit_test(test_each_stops),
            cmocka_unit_test(test_each_rewinds_chunks),
            cmocka_unit_test(test_each_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

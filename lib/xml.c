/* xml: bounded DOM over expat, arena-allocated, with DTDs refused; and an
 * escaper for XML character data. */
#include "xml.h"

#include <errno.h>
#include <limits.h>
#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <expat.h>

const struct xml_limits xml_default_limits = {
        .max_input = 64u << 20,
        .max_depth = 32,
        .max_elements = 200000,
        .max_text = 16u << 20,
};

struct xml_node {
    const char *name;
    const char *text;
    size_t text_len;
    struct xml_node *first_child;
    struct xml_node *last_child;
    struct xml_node *next;
};

/* Arena: a list of chunks; each allocation bumps a pointer in the newest one.
 * Allocations larger than a quarter chunk get a chunk of their own, on a list
 * of their own, so that the bump list stays in allocation order: a mark of
 * both lists' heads can be rewound to (arena_rewind), freeing what came since.
 * One chunk freed by a rewind is kept for the next: a document decoded child
 * by child (xml_parse_each) reuses the same memory instead of asking the
 * system for fresh pages per child. */
#define ARENA_CHUNK (64u * 1024u)

struct arena_chunk {
    struct arena_chunk *next;
    size_t used;
    size_t size;
    alignas(max_align_t) unsigned char data[];
};

struct xml_doc {
    struct arena_chunk *chunks; /* bump chunks, newest first */
    struct arena_chunk *big;    /* dedicated chunks, newest first */
    struct arena_chunk *spare;  /* a free bump chunk */
    struct xml_node *root;
};

struct arena_mark {
    struct arena_chunk *chunk, *big;
    size_t used;
};

static void *arena_alloc(struct xml_doc *doc, size_t n)
{
    const size_t align = alignof(max_align_t);
    n = (n + align - 1) & ~(align - 1);
    struct arena_chunk *c = doc->chunks;
    if (c && c->size - c->used >= n) {
        void *p = c->data + c->used;
        c->used += n;
        return p;
    }
    int dedicated = n > ARENA_CHUNK / 4;
    size_t size = dedicated ? n : ARENA_CHUNK;
    if (size > SIZE_MAX - sizeof(*c))
        return NULL;
    if (!dedicated && doc->spare) {
        c = doc->spare;
        doc->spare = NULL;
    } else if (!(c = malloc(sizeof(*c) + size))) {
        return NULL;
    }
    c->size = size;
    c->used = n;
    struct arena_chunk **list = dedicated ? &doc->big : &doc->chunks;
    c->next = *list;
    *list = c;
    return c->data;
}

static char *arena_strndup(struct xml_doc *doc, const char *s, size_t n)
{
    char *p = arena_alloc(doc, n + 1);
    if (!p)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static struct arena_mark arena_mark(const struct xml_doc *doc)
{
    return (struct arena_mark){doc->chunks, doc->big, doc->chunks ? doc->chunks->used : 0};
}

/* Free everything allocated since m. */
static void arena_rewind(struct xml_doc *doc, struct arena_mark m)
{
    while (doc->chunks != m.chunk) {
        struct arena_chunk *c = doc->chunks;
        doc->chunks = c->next;
        if (!doc->spare)
            doc->spare = c;
        else
            free(c);
    }
    while (doc->big != m.big) {
        struct arena_chunk *c = doc->big;
        doc->big = c->next;
        free(c);
    }
    if (m.chunk)
        m.chunk->used = m.used;
}

static void free_chunks(struct arena_chunk *c)
{
    while (c) {
        struct arena_chunk *next = c->next;
        free(c);
        c = next;
    }
}

void xml_doc_free(struct xml_doc *doc)
{
    if (!doc)
        return;
    free_chunks(doc->chunks);
    free_chunks(doc->big);
    free(doc->spare);
    free(doc);
}

/* Parser state. stack[d] is the open element at depth d + 1, texts[d] its text
 * so far; the text buffers are reused by later elements at the same depth. */
struct parse_ctx {
    XML_Parser parser;
    const struct xml_limits *limits;
    struct xml_doc *doc;
    struct xml_node **stack;
    struct buf *texts;
    size_t stack_n; /* entries in stack and texts */
    size_t depth;
    size_t n_elements;
    size_t n_text;
    int error; /* our own reason for stopping expat, 0 if none */
    xml_each_fn each;
    void *each_arg;
    struct arena_mark child_mark; /* before the root's open child */
    struct xml_node *child_prev;  /* the root's child before it */
};

static void stop(struct parse_ctx *ctx, int error)
{
    if (!ctx->error)
        ctx->error = error;
    XML_StopParser(ctx->parser, XML_FALSE);
}

static const char *local_name(const char *name)
{
    const char *colon = strrchr(name, ':');
    return colon ? colon + 1 : name;
}

static void XMLCALL on_start(void *data, const XML_Char *name, const XML_Char **attrs)
{
    struct parse_ctx *ctx = data;
    if (ctx->error)
        return;
    if (ctx->depth >= ctx->limits->max_depth || ctx->depth >= ctx->stack_n ||
        ctx->n_elements >= ctx->limits->max_elements) {
        stop(ctx, -E2BIG);
        return;
    }
    if (ctx->depth == 1 && ctx->each) {
        ctx->child_mark = arena_mark(ctx->doc);
        ctx->child_prev = ctx->stack[0]->last_child;
    }
    struct xml_node *node = arena_alloc(ctx->doc, sizeof(*node));
    const char *local = local_name(name);
    char *copy = node ? arena_strndup(ctx->doc, local, strlen(local)) : NULL;
    if (!copy) {
        stop(ctx, -ENOMEM);
        return;
    }
    *node = (struct xml_node){.name = copy, .text = ""};
    if (ctx->depth == 0) {
        ctx->doc->root = node;
    } else {
        struct xml_node *parent = ctx->stack[ctx->depth - 1];
        if (parent->last_child)
            parent->last_child->next = node;
        else
            parent->first_child = node;
        parent->last_child = node;
    }
    ctx->stack[ctx->depth] = node;
    buf_reset(&ctx->texts[ctx->depth]);
    ctx->depth++;
    ctx->n_elements++;
}

/* Hand a complete child of the root to ctx->each; drop it if told to. */
static void child_done(struct parse_ctx *ctx, struct xml_node *node)
{
    int rc = ctx->each(ctx->each_arg, ctx->stack[0], node);
    if (rc < 0) {
        stop(ctx, rc);
    } else if (rc > 0) {
        struct xml_node *root = ctx->stack[0];
        root->last_child = ctx->child_prev;
        if (ctx->child_prev)
            ctx->child_prev->next = NULL;
        else
            root->first_child = NULL;
        arena_rewind(ctx->doc, ctx->child_mark);
    }
}

static void XMLCALL on_end(void *data, const XML_Char *name)
{
    struct parse_ctx *ctx = data;
    if (ctx->error || ctx->depth == 0)
        return;
    ctx->depth--;
    struct xml_node *node = ctx->stack[ctx->depth];
    struct buf *text = &ctx->texts[ctx->depth];
    if (text->len) {
        char *copy = arena_strndup(ctx->doc, text->data, text->len);
        if (!copy) {
            stop(ctx, -ENOMEM);
            return;
        }
        node->text = copy;
        node->text_len = text->len;
    }
    if (ctx->depth == 1 && ctx->each)
        child_done(ctx, node);
}

static void XMLCALL on_text(void *data, const XML_Char *s, int len)
{
    struct parse_ctx *ctx = data;
    if (ctx->error || ctx->depth == 0 || len <= 0)
        return;
    if ((size_t)len > ctx->limits->max_text - ctx->n_text) {
        stop(ctx, -E2BIG);
        return;
    }
    int rc = buf_add(&ctx->texts[ctx->depth - 1], s, (size_t)len);
    if (rc) {
        stop(ctx, rc == -E2BIG ? -E2BIG : -ENOMEM);
        return;
    }
    ctx->n_text += (size_t)len;
}

static void XMLCALL on_doctype(void *data, const XML_Char *name, const XML_Char *sysid,
                               const XML_Char *pubid, int has_internal_subset)
{
    stop(data, -EINVAL);
}

static void XMLCALL on_entity(void *data, const XML_Char *name, int is_param, const XML_Char *value,
                              int value_len, const XML_Char *base, const XML_Char *sysid,
                              const XML_Char *pubid, const XML_Char *notation)
{
    stop(data, -EINVAL);
}

/* Feed expat in slices: XML_Parse takes an int length, slicing lets a
 * handler's stop take effect before the rest of a large input is scanned, and
 * expat copies what it is fed into a buffer of its own, which stays about
 * twice a slice instead of growing to the input's size. */
#define FEED_SLICE (64u << 10)

static int run_parser(struct parse_ctx *ctx, const char *data, size_t len)
{
    size_t off = 0;
    do {
        size_t n = len - off < FEED_SLICE ? len - off : FEED_SLICE;
        int final = off + n == len;
        if (XML_Parse(ctx->parser, data + off, (int)n, final) != XML_STATUS_OK) {
            if (ctx->error)
                return ctx->error;
            return XML_GetErrorCode(ctx->parser) == XML_ERROR_NO_MEMORY ? -ENOMEM : -EINVAL;
        }
        if (ctx->error)
            return ctx->error;
        off += n;
    } while (off < len);
    return ctx->doc->root ? 0 : -EINVAL;
}

int xml_parse(const char *data, size_t len, const struct xml_limits *limits, struct xml_doc **out)
{
    return xml_parse_each(data, len, limits, NULL, NULL, out);
}

int xml_parse_each(const char *data, size_t len, const struct xml_limits *limits, xml_each_fn each,
                   void *arg, struct xml_doc **out)
{
    *out = NULL;
    if (!limits)
        limits = &xml_default_limits;
    if (len > limits->max_input)
        return -E2BIG;
    if (!data && len)
        return -EINVAL;
    if (len == 0 || limits->max_depth == 0 || limits->max_elements == 0)
        return len == 0 ? -EINVAL : -E2BIG;

    int rc = -ENOMEM;
    struct parse_ctx ctx = {.limits = limits, .each = each, .each_arg = arg};
    /* a start tag takes at least 3 bytes ("<a>"), so len bytes never open more
     * than len / 3 elements at once: no need for a stack of max_depth */
    size_t stack_n = limits->max_depth < len / 3 + 1 ? limits->max_depth : len / 3 + 1;
    ctx.doc = calloc(1, sizeof(*ctx.doc));
    ctx.stack = calloc(stack_n, sizeof(*ctx.stack));
    ctx.texts = calloc(stack_n, sizeof(*ctx.texts));
    if (!ctx.doc || !ctx.stack || !ctx.texts)
        goto out;
    ctx.stack_n = stack_n;
    for (size_t i = 0; i < stack_n; i++)
        buf_init(&ctx.texts[i], limits->max_text);
    ctx.parser = XML_ParserCreate(NULL);
    if (!ctx.parser)
        goto out;
    XML_SetUserData(ctx.parser, &ctx);
    XML_SetElementHandler(ctx.parser, on_start, on_end);
    XML_SetCharacterDataHandler(ctx.parser, on_text);
    XML_SetStartDoctypeDeclHandler(ctx.parser, on_doctype);
    XML_SetEntityDeclHandler(ctx.parser, on_entity);
    XML_SetParamEntityParsing(ctx.parser, XML_PARAM_ENTITY_PARSING_NEVER);

    rc = run_parser(&ctx, data, len);

out:
    if (ctx.parser)
        XML_ParserFree(ctx.parser);
    if (ctx.texts)
        for (size_t i = 0; i < stack_n; i++)
            buf_release(&ctx.texts[i]);
    free(ctx.texts);
    free(ctx.stack);
    if (rc == 0)
        *out = ctx.doc;
    else
        xml_doc_free(ctx.doc);
    return rc;
}

const struct xml_node *xml_root(const struct xml_doc *doc)
{
    return doc->root;
}

const char *xml_name(const struct xml_node *node)
{
    return node->name;
}

const char *xml_text(const struct xml_node *node)
{
    return node->text;
}

size_t xml_text_len(const struct xml_node *node)
{
    return node->text_len;
}

static const struct xml_node *first_named(const struct xml_node *n, const char *name)
{
    while (n && name && strcmp(n->name, name) != 0)
        n = n->next;
    return n;
}

const struct xml_node *xml_child(const struct xml_node *node, const char *name)
{
    return first_named(node->first_child, name);
}

const struct xml_node *xml_next_sibling(const struct xml_node *node, const char *name)
{
    return first_named(node->next, name);
}

size_t xml_child_count(const struct xml_node *node, const char *name)
{
    size_t n = 0;
    for (const struct xml_node *c = xml_child(node, name); c; c = xml_next_sibling(c, name))
        n++;
    return n;
}

const char *xml_child_text(const struct xml_node *node, const char *name)
{
    const struct xml_node *c = xml_child(node, name);
    return c ? c->text : NULL;
}

/* Length of the valid UTF-8 sequence at s (at most left bytes) encoding a
 * character XML 1.0 allows, or 0. */
static size_t xml_char_len(const unsigned char *s, size_t left)
{
    unsigned c = s[0];
    if (c < 0x80)
        return (c >= 0x20 || c == '\t' || c == '\n' || c == '\r') ? 1 : 0;
    size_t n;
    unsigned cp, min;
    if ((c & 0xe0) == 0xc0) {
        n = 2, cp = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        n = 3, cp = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
        n = 4, cp = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n > left)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) || cp == 0xfffe || cp == 0xffff)
        return 0;
    return n;
}

static const char *escape_for(unsigned char c)
{
    switch (c) {
    case '&':
        return "&amp;";
    case '<':
        return "&lt;";
    case '>':
        return "&gt;";
    case '"':
        return "&quot;";
    case '\'':
        return "&apos;";
    case '\r':
        return "&#13;";
    default:
        return NULL;
    }
}

int xml_escape(struct buf *b, const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        size_t n = xml_char_len(p + i, len - i);
        if (!n)
            return -EILSEQ;
        i += n;
    }

    size_t old_len = b->len;
    size_t run = 0; /* start of the pending run of bytes copied as is */
    int rc = 0;
    for (size_t i = 0; i < len && !rc; i++) {
        const char *esc = escape_for(p[i]);
        if (!esc)
            continue;
        rc = buf_add(b, s + run, i - run);
        if (!rc)
            rc = buf_adds(b, esc);
        run = i + 1;
    }
    if (!rc)
        rc = buf_add(b, s + run, len - run);
    if (rc && b->data) {
        b->len = old_len;
        b->data[old_len] = '\0';
    }
    return rc;
}

/* xml: a small read-only DOM over expat for bounded, hostile-safe parsing of
 * whole in-memory documents, and an escaper for building XML text. */
#ifndef POCKITY_XML_H
#define POCKITY_XML_H

#include <stddef.h>

#include "buf.h"

/* Bounds on what one document may make us build. A document that passes one
 * gets -E2BIG from xml_parse, never a partial tree. */
struct xml_limits {
    size_t max_input;    /* bytes of input accepted */
    size_t max_depth;    /* nesting of elements; the root element is depth 1 */
    size_t max_elements; /* elements in the whole document */
    size_t max_text;     /* bytes of character data in the whole document, whitespace
                          * between elements included */
};

/* Defaults: 64 MiB of input, depth 32, 200,000 elements, 16 MiB of text. A
 * ListObjectsV2 page of 1000 keys is about 8,000 elements and well under 1 MiB. */
extern const struct xml_limits xml_default_limits;

struct xml_doc;
struct xml_node;

/* Parse len bytes at data (need not be NUL-terminated) into a tree, under
 * limits (NULL for xml_default_limits). On success returns 0 and *out receives
 * a document the caller frees with xml_doc_free; otherwise *out is NULL and the
 * result is:
 *   -EINVAL  not well-formed XML (empty or truncated input, garbage, invalid
 *            UTF-8, an undefined entity), or a document with a DOCTYPE: DTDs
 *            and entity declarations are refused outright, which closes the
 *            entity-expansion ("billion laughs") and external-entity attacks
 *   -E2BIG   the input or the tree would pass one of the limits
 *   -ENOMEM  an allocation failed
 *
 * The tree holds elements only, each with its local name and its text.
 * Names lose any "prefix:" (S3 uses a default namespace, so lookups are by
 * local name); attributes, comments and processing instructions are dropped.
 * An element's text is the concatenation of the character data directly inside
 * it (CDATA sections included, entities and character references decoded by
 * expat, UTF-8, never containing a NUL byte); that of its child elements is
 * theirs. Whitespace is kept as is: container elements of pretty-printed
 * documents have whitespace text. */
int xml_parse(const char *data, size_t len, const struct xml_limits *limits, struct xml_doc **out);

/* xml_parse, handing each child element of the root to each(arg, root,
 * child) as soon as it is complete (its own children and text with it; the
 * root has its name, and the children kept so far). When each returns 1 the
 * child is dropped from the tree and its memory used again for the next; 0
 * keeps it; a negative value stops the parse, which returns that value. A
 * long list (a ListObjectsV2 page) decoded this way holds one item at a time
 * instead of a tree of them all. */
typedef int (*xml_each_fn)(void *arg, const struct xml_node *root, const struct xml_node *child);
int xml_parse_each(const char *data, size_t len, const struct xml_limits *limits, xml_each_fn each,
                   void *arg, struct xml_doc **out);

/* Free a document and every node and string in it. Accepts NULL. */
void xml_doc_free(struct xml_doc *doc);

/* The root element; never NULL for a parsed document. Nodes and strings
 * returned below belong to the document and live until xml_doc_free. */
const struct xml_node *xml_root(const struct xml_doc *doc);

/* The element's local name. */
const char *xml_name(const struct xml_node *node);

/* The element's text; never NULL ("" when empty). */
const char *xml_text(const struct xml_node *node);

/* Length of xml_text(node) in bytes. */
size_t xml_text_len(const struct xml_node *node);

/* The first child element named name (any element when name is NULL), or
 * NULL when there is none. */
const struct xml_node *xml_child(const struct xml_node *node, const char *name);

/* The next sibling element after node named name (any when NULL), or NULL.
 * Iterate over the children called "Contents" with:
 *   for (c = xml_child(n, "Contents"); c; c = xml_next_sibling(c, "Contents")) */
const struct xml_node *xml_next_sibling(const struct xml_node *node, const char *name);

/* The number of child elements named name (all children when NULL). */
size_t xml_child_count(const struct xml_node *node, const char *name);

/* The text of the first child element named name, or NULL when node has no
 * such child ("" when the child exists but is empty). */
const char *xml_child_text(const struct xml_node *node, const char *name);

/* Append len bytes of s to b as XML character data, escaping & < > " and '
 * as entities and CR as "&#13;" (so a receiving parser does not normalise it
 * to LF). XML 1.0 cannot carry NUL, the other C0 control characters except
 * TAB, LF and CR, U+FFFE, U+FFFF or surrogates, and s must be valid UTF-8:
 * rather than send different bytes, such input is refused.
 * Returns 0; -EILSEQ when s holds something XML cannot carry; -E2BIG or
 * -ENOMEM from b. On error b is left as it was. */
int xml_escape(struct buf *b, const char *s, size_t len);

#endif

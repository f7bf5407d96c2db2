/* Integration tests of the S3 and STS client against the real local Ceph RGW
 * (scripts/s3-local). Every object lives under a prefix unique to the run and
 * is deleted at the end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "s3.h"

static struct s3_config cfg;
static struct s3_client *root;
static char run_prefix[64];
static const char *role_arn;

/* The run's key for name. Results rotate through several buffers, so that
 * two key_of() calls in one call's arguments do not overwrite each other. */
static char *key_of(const char *name)
{
    static __thread char keys[8][4096];
    static __thread unsigned next;
    char *key = keys[next++ % 8];
    snprintf(key, sizeof(keys[0]), "%s%s", run_prefix, name);
    return key;
}

static void fill_random(unsigned char *p, size_t n, unsigned int seed)
{
    uint64_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (unsigned char)x;
    }
}

static int put_mem(struct s3_client *c, const char *key, const void *data, size_t len)
{
    struct s3_mem m = {.data = (void *)data, .len = len};
    struct s3_source src = s3_source_mem(&m);
    char etag[S3_ETAG_MAX];
    return s3_put_object(c, key, &src, NULL, etag);
}

/* GET a whole object into a malloc'd buffer. */
static int get_all(struct s3_client *c, const char *key, unsigned char **out, size_t *len)
{
    struct s3_head h;
    int rc = s3_head_object(c, key, &h);
    if (rc)
        return rc;
    size_t size = (size_t)h.size;
    s3_head_release(&h);
    unsigned char *buf = malloc(size ? size : 1);
    struct s3_mem m = {.data = buf, .len = size};
    struct s3_sink sink = s3_sink_mem(&m);
    uint64_t got = 0;
    rc = s3_get_object(c, key, 0, 0, &sink, NULL, &got);
    if (rc || got != size) {
        free(buf);
        return rc ? rc : S3_ERR_BAD_RESPONSE;
    }
    *out = buf;
    *len = size;
    return S3_OK;
}

/* Delete everything under prefix; returns the number of objects deleted. */
static size_t delete_prefix(struct s3_client *c, const char *prefix)
{
    size_t total = 0;
    for (;;) {
        struct s3_list_page page;
        if (s3_list_objects(c, prefix, NULL, NULL, NULL, 1000, &page) != S3_OK)
            return total;
        if (page.n_objects == 0) {
            s3_list_page_release(&page);
            return total;
        }
        const char **keys = calloc(page.n_objects, sizeof(*keys));
        for (size_t i = 0; i < page.n_objects; i++)
            keys[i] = page.objects[i].key;
        struct s3_delete_result res;
        assert_int_equal(s3_delete_objects(c, keys, page.n_objects, &res), S3_OK);
        assert_int_equal(res.n_failures, 0);
        total += res.n_deleted;
        s3_delete_result_release(&res);
        free(keys);
        s3_list_page_release(&page);
    }
}

static int setup(void **state)
{
    const char *need[] = {"POCKITY_S3_ENDPOINT",   "POCKITY_S3_REGION",     "POCKITY_S3_BUCKET",
                          "POCKITY_S3_ACCESS_KEY", "POCKITY_S3_SECRET_KEY", "POCKITY_S3_ROLE_ARN"};
    for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++)
        if (!getenv(need[i]))
            return -1;
    cfg.endpoint = getenv("POCKITY_S3_ENDPOINT");
    cfg.region = getenv("POCKITY_S3_REGION");
    cfg.bucket = getenv("POCKITY_S3_BUCKET");
    cfg.access_key = getenv("POCKITY_S3_ACCESS_KEY");
    cfg.secret_key = getenv("POCKITY_S3_SECRET_KEY");
    cfg.request_timeout_ms = 30000;
    role_arn = getenv("POCKITY_S3_ROLE_ARN");
    snprintf(run_prefix, sizeof(run_prefix), "itest-%ld-%d/", (long)time(NULL), (int)getpid());
    return s3_client_new(&cfg, &root) == S3_OK ? 0 : -1;
}

static int teardown(void **state)
{
    if (root) {
        delete_prefix(root, run_prefix);
        s3_client_free(root);
    }
    return 0;
}

static void test_put_get_head_delete(void **state)
{
    const char *key = key_of("basic/hello.txt");
    assert_int_equal(put_mem(root, key, "hello, world", 12), S3_OK);
    struct s3_head h;
    assert_int_equal(s3_head_object(root, key, &h), S3_OK);
    assert_int_equal(h.size, 12);
    assert_true(h.etag[0] == '"');
    assert_true(h.last_modified > 0);
    s3_head_release(&h);
    unsigned char *data;
    size_t len;
    assert_int_equal(get_all(root, key, &data, &len), S3_OK);
    assert_int_equal(len, 12);
    assert_memory_equal(data, "hello, world", 12);
    free(data);
    assert_int_equal(s3_delete_object(root, key), S3_OK);
    assert_int_equal(s3_head_object(root, key, &h), S3_ERR_NOT_FOUND);
    char buf[4];
    struct s3_mem m = {.data = buf, .len = sizeof(buf)};
    struct s3_sink sink = s3_sink_mem(&m);
    assert_int_equal(s3_get_object(root, key, 0, 0, &sink, NULL, NULL), S3_ERR_NOT_FOUND);
    assert_non_null(strstr(s3_last_error_detail(), "NoSuchKey"));
    /* deleting again is not an error */
    assert_int_equal(s3_delete_object(root, key), S3_OK);
    /* an empty object */
    assert_int_equal(put_mem(root, key_of("basic/empty"), "", 0), S3_OK);
    assert_int_equal(s3_head_object(root, key_of("basic/empty"), &h), S3_OK);
    assert_int_equal(h.size, 0);
    s3_head_release(&h);
}

static void test_metadata_round_trip(void **state)
{
    const char *key = key_of("meta/file");
    struct s3_meta meta[] = {
            {"mode", "33188"}, {"uid", "1000"}, {"gid", "1000"}, {"mtime", "1700000000.123456789"}};
    struct s3_put_opts opts = {.content_type = "text/plain", .meta = meta, .n_meta = 4};
    struct s3_mem m = {.data = "x", .len = 1};
    struct s3_source src = s3_source_mem(&m);
    char etag[S3_ETAG_MAX];
    assert_int_equal(s3_put_object(root, key, &src, &opts, etag), S3_OK);
    struct s3_head h;
    assert_int_equal(s3_head_object(root, key, &h), S3_OK);
    assert_string_equal(h.etag, etag);
    assert_string_equal(h.content_type, "text/plain");
    assert_string_equal(s3_head_meta(&h, "mode"), "33188");
    assert_string_equal(s3_head_meta(&h, "uid"), "1000");
    assert_string_equal(s3_head_meta(&h, "gid"), "1000");
    assert_string_equal(s3_head_meta(&h, "mtime"), "1700000000.123456789");
    s3_head_release(&h);

    /* copy keeping metadata, then copy replacing it */
    char etag2[S3_ETAG_MAX];
    assert_int_equal(s3_copy_object(root, key, key_of("meta/copy"), 0, NULL, etag2), S3_OK);
    assert_int_equal(s3_head_object(root, key_of("meta/copy"), &h), S3_OK);
    assert_string_equal(s3_head_meta(&h, "mode"), "33188");
    s3_head_release(&h);
    struct s3_meta meta2[] = {{"mode", "33261"}};
    struct s3_put_opts opts2 = {.meta = meta2, .n_meta = 1};
    assert_int_equal(s3_copy_object(root, key, key_of("meta/copy"), 1, &opts2, etag2), S3_OK);
    assert_int_equal(s3_head_object(root, key_of("meta/copy"), &h), S3_OK);
    assert_string_equal(s3_head_meta(&h, "mode"), "33261");
    assert_null(s3_head_meta(&h, "uid"));
    s3_head_release(&h);
    /* copying a missing object */
    assert_int_equal(s3_copy_object(root, key_of("meta/missing"), key_of("meta/x"), 0, NULL, etag2),
                     S3_ERR_NOT_FOUND);
}

static const char *const awkward[] = {
        "with space",
        "plus+sign",
        "percent%20literal",
        "question?mark",
        "hash#tag",
        "amp&and=eq",
        "unicode-\xc3\xa9\xe6\x97\xa5\xe6\x9c\xac-\xf0\x9f\x98\x80",
        "double//slash",
        "dot/./seg",
        "tilde~star*paren()",
        "semi;colon:comma,quote'\"<>",
        "trailing-space ",
        "back\\slash",
        "ctrl-\x01-\x1f-byte",
};

static void test_awkward_keys(void **state)
{
    size_t n = sizeof(awkward) / sizeof(awkward[0]);
    char name[1200];
    for (size_t i = 0; i < n; i++) {
        snprintf(name, sizeof(name), "awk/%s", awkward[i]);
        const char *key = key_of(name);
        assert_int_equal(put_mem(root, key, awkward[i], strlen(awkward[i])), S3_OK);
        unsigned char *data;
        size_t len;
        assert_int_equal(get_all(root, key, &data, &len), S3_OK);
        assert_int_equal(len, strlen(awkward[i]));
        assert_memory_equal(data, awkward[i], len);
        free(data);
    }
    /* a long key: 900 bytes, multibyte characters included */
    char longname[1000];
    size_t off = (size_t)snprintf(longname, sizeof(longname), "awk/");
    while (off + 3 < 900) {
        memcpy(longname + off, "\xc3\xa9", 2);
        off += 2;
        longname[off++] = 'x';
    }
    longname[off] = '\0';
    assert_int_equal(put_mem(root, key_of(longname), "L", 1), S3_OK);

    /* the listing returns every key byte for byte */
    struct s3_list_page page;
    assert_int_equal(s3_list_objects(root, key_of("awk/"), NULL, NULL, NULL, 0, &page), S3_OK);
    assert_int_equal(page.n_objects, n + 1);
    for (size_t i = 0; i < n; i++) {
        snprintf(name, sizeof(name), "awk/%s", awkward[i]);
        int found = 0;
        for (size_t j = 0; j < page.n_objects; j++)
            found |= strcmp(page.objects[j].key, key_of(name)) == 0;
        if (!found)
            fail_msg("key '%s' missing from the listing", awkward[i]);
    }
    s3_list_page_release(&page);
    assert_int_equal(delete_prefix(root, key_of("awk/")), n + 1);
}

static void test_ranged_reads(void **state)
{
    size_t size = 1 << 20;
    unsigned char *data = malloc(size);
    fill_random(data, size, 7);
    const char *key = key_of("range/blob");
    assert_int_equal(put_mem(root, key, data, size), S3_OK);
    const struct {
        uint64_t off, len;
    } ranges[] = {{0, 1}, {1, 4095}, {4096, 65536}, {size - 10, 10}, {size - 1, 1}, {12345, 0}};
    for (size_t i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++) {
        size_t want = ranges[i].len ? ranges[i].len : size - ranges[i].off;
        unsigned char *buf = malloc(want);
        struct s3_mem m = {.data = buf, .len = want};
        struct s3_sink sink = s3_sink_mem(&m);
        struct s3_head h;
        uint64_t got;
        assert_int_equal(s3_get_object(root, key, ranges[i].off, ranges[i].len, &sink, &h, &got),
                         S3_OK);
        assert_int_equal(got, want);
        assert_int_equal(h.size, size);
        assert_memory_equal(buf, data + ranges[i].off, want);
        s3_head_release(&h);
        free(buf);
    }
    char b[8];
    struct s3_mem m = {.data = b, .len = sizeof(b)};
    struct s3_sink sink = s3_sink_mem(&m);
    assert_int_equal(s3_get_object(root, key, size + 100, 8, &sink, NULL, NULL), S3_ERR_BAD_RANGE);
    /* conditional: the object's own ETag reads, another is refused before any byte */
    struct s3_head h0;
    assert_int_equal(s3_head_object(root, key, &h0), S3_OK);
    uint64_t got = 99;
    assert_int_equal(s3_get_object_if(root, key, h0.etag, 8, 8, &sink, NULL, &got), S3_OK);
    assert_int_equal(got, 8);
    assert_memory_equal(b, data + 8, 8);
    m.used = 0;
    assert_int_equal(s3_get_object_if(root, key, "\"0123456789abcdef0123456789abcdef\"", 8, 8,
                                      &sink, NULL, &got),
                     S3_ERR_PRECONDITION);
    assert_int_equal(got, 0);
    assert_int_equal(m.used, 0);
    s3_head_release(&h0);
    free(data);
}

static void test_list_pagination_and_delimiter(void **state)
{
    /* 1100 objects: two pages of 1000 and 100 */
    char name[128];
    for (int i = 0; i < 1100; i++) {
        snprintf(name, sizeof(name), "many/f%05d", i);
        assert_int_equal(put_mem(root, key_of(name), "", 0), S3_OK);
    }
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof(name), "many/sub%d/x", i);
        assert_int_equal(put_mem(root, key_of(name), "", 0), S3_OK);
    }
    size_t total = 0, prefixes = 0, pages = 0;
    char *token = NULL;
    for (;;) {
        struct s3_list_page page;
        assert_int_equal(s3_list_objects(root, key_of("many/"), "/", token, NULL, 0, &page), S3_OK);
        pages++;
        total += page.n_objects;
        prefixes += page.n_prefixes;
        free(token);
        token = page.next_token ? strdup(page.next_token) : NULL;
        int more = page.is_truncated;
        s3_list_page_release(&page);
        if (!more)
            break;
        assert_non_null(token);
    }
    free(token);
    assert_int_equal(total, 1100);
    assert_int_equal(prefixes, 3);
    assert_int_equal(pages, 2);
    /* start-after and a small page */
    struct s3_list_page page;
    assert_int_equal(
            s3_list_objects(root, key_of("many/"), NULL, NULL, key_of("many/f01097"), 2, &page),
            S3_OK);
    assert_int_equal(page.n_objects, 2);
    assert_string_equal(page.objects[0].key, key_of("many/f01098"));
    assert_true(page.is_truncated);
    s3_list_page_release(&page);
    assert_int_equal(delete_prefix(root, key_of("many/")), 1103);
}

static void test_delete_objects_batch(void **state)
{
    const char *keys[5];
    char names[5][160];
    for (int i = 0; i < 4; i++) {
        snprintf(names[i], sizeof(names[i]), "%sbatch/%d & <%d>", run_prefix, i, i);
        keys[i] = names[i];
        assert_int_equal(put_mem(root, keys[i], "d", 1), S3_OK);
    }
    snprintf(names[4], sizeof(names[4]), "%sbatch/missing", run_prefix);
    keys[4] = names[4];
    struct s3_delete_result res;
    assert_int_equal(s3_delete_objects(root, keys, 5, &res), S3_OK);
    assert_int_equal(res.n_failures, 0);
    s3_delete_result_release(&res);
    struct s3_list_page page;
    assert_int_equal(s3_list_objects(root, key_of("batch/"), NULL, NULL, NULL, 0, &page), S3_OK);
    assert_int_equal(page.n_objects, 0);
    s3_list_page_release(&page);
    assert_int_equal(s3_delete_objects(root, keys, S3_MAX_DELETE + 1, NULL), S3_ERR_INVALID_ARG);
}

struct part_job {
    const unsigned char *data;
    size_t off, len;
    int number;
    const char *key;
    const char *upload_id;
    char etag[S3_ETAG_MAX];
    int rc;
};

static void *upload_part_thread(void *arg)
{
    struct part_job *j = arg;
    struct s3_mem m = {.data = (void *)(j->data + j->off), .len = j->len};
    struct s3_source src = s3_source_mem(&m);
    j->rc = s3_multipart_upload_part(root, j->key, j->upload_id, j->number, &src, j->etag);
    return NULL;
}

static void test_multipart_100mib(void **state)
{
    const size_t size = 100u << 20, part = 8u << 20;
    const int nparts = (int)((size + part - 1) / part);
    unsigned char *data = malloc(size);
    fill_random(data, size, 42);
    const char *key = strdup(key_of("mp/big.bin"));
    struct s3_meta meta[] = {{"mode", "33188"}};
    struct s3_put_opts opts = {.meta = meta, .n_meta = 1};
    char *upload_id = NULL;
    assert_int_equal(s3_multipart_create(root, key, &opts, &upload_id), S3_OK);
    assert_non_null(upload_id);

    /* the upload is listed while in progress */
    struct s3_upload_list ul;
    assert_int_equal(s3_multipart_list_uploads(root, key_of("mp/"), NULL, NULL, &ul), S3_OK);
    assert_int_equal(ul.n_uploads, 1);
    assert_string_equal(ul.uploads[0].upload_id, upload_id);
    s3_upload_list_release(&ul);

    /* parts in parallel, four at a time */
    struct part_job *jobs = calloc((size_t)nparts, sizeof(*jobs));
    for (int base = 0; base < nparts; base += 4) {
        pthread_t th[4];
        int n = 0;
        for (int i = base; i < nparts && i < base + 4; i++, n++) {
            jobs[i] = (struct part_job){
                    .data = data,
                    .off = (size_t)i * part,
                    .len = (size_t)i * part + part > size ? size - (size_t)i * part : part,
                    .number = i + 1,
                    .key = key,
                    .upload_id = upload_id};
            pthread_create(&th[n], NULL, upload_part_thread, &jobs[i]);
        }
        for (int i = 0; i < n; i++)
            pthread_join(th[i], NULL);
    }
    int *numbers = calloc((size_t)nparts, sizeof(int));
    const char **etags = calloc((size_t)nparts, sizeof(char *));
    for (int i = 0; i < nparts; i++) {
        assert_int_equal(jobs[i].rc, S3_OK);
        numbers[i] = jobs[i].number;
        etags[i] = jobs[i].etag;
    }
    struct s3_part_list pl;
    assert_int_equal(s3_multipart_list_parts(root, key, upload_id, 0, &pl), S3_OK);
    assert_int_equal(pl.n_parts, nparts);
    assert_int_equal(pl.parts[0].size, part);
    assert_int_equal(pl.parts[nparts - 1].number, nparts);
    s3_part_list_release(&pl);
    char etag[S3_ETAG_MAX];
    assert_int_equal(
            s3_multipart_complete(root, key, upload_id, numbers, etags, (size_t)nparts, etag),
            S3_OK);
    assert_non_null(strchr(etag, '-')); /* multipart ETags end in -N */
    char want[S3_ETAG_MAX];
    assert_int_equal(s3_multipart_etag(etags, (size_t)nparts, want), 0);
    assert_string_equal(want, etag); /* RGW's is the MD5 of the parts' MD5s */
    const char *not_md5[] = {etags[0], "\"0123\""};
    assert_int_equal(s3_multipart_etag(not_md5, 2, want), -1);

    unsigned char *back;
    size_t len;
    assert_int_equal(get_all(root, key, &back, &len), S3_OK);
    assert_int_equal(len, size);
    assert_memory_equal(back, data, size);
    free(back);
    struct s3_head h;
    assert_int_equal(s3_head_object(root, key, &h), S3_OK);
    assert_string_equal(h.etag, etag);
    assert_string_equal(s3_head_meta(&h, "mode"), "33188");
    s3_head_release(&h);

    /* server-side part copies of the big object, reordered halves */
    char *copy_id = NULL;
    const char *copy_key = strdup(key_of("mp/copy.bin"));
    assert_int_equal(s3_multipart_create(root, copy_key, NULL, &copy_id), S3_OK);
    char e1[S3_ETAG_MAX], e2[S3_ETAG_MAX];
    assert_int_equal(
            s3_multipart_copy_part(root, copy_key, copy_id, 1, key, size / 2, size - 1, e1), S3_OK);
    assert_int_equal(s3_multipart_copy_part(root, copy_key, copy_id, 2, key, 0, size / 2 - 1, e2),
                     S3_OK);
    int nums[] = {1, 2};
    const char *ets[] = {e1, e2};
    assert_int_equal(s3_multipart_complete(root, copy_key, copy_id, nums, ets, 2, etag), S3_OK);
    assert_int_equal(get_all(root, copy_key, &back, &len), S3_OK);
    assert_int_equal(len, size);
    assert_memory_equal(back, data + size / 2, size / 2);
    assert_memory_equal(back + size / 2, data, size / 2);
    free(back);

    /* abort: the upload is gone afterwards */
    char *abort_id = NULL;
    assert_int_equal(s3_multipart_create(root, key_of("mp/aborted"), NULL, &abort_id), S3_OK);
    struct s3_mem m = {.data = data, .len = 5u << 20};
    struct s3_source src = s3_source_mem(&m);
    assert_int_equal(s3_multipart_upload_part(root, key_of("mp/aborted"), abort_id, 1, &src, e1),
                     S3_OK);
    assert_int_equal(s3_multipart_abort(root, key_of("mp/aborted"), abort_id), S3_OK);
    assert_int_equal(s3_multipart_list_parts(root, key_of("mp/aborted"), abort_id, 0, &pl),
                     S3_ERR_NO_UPLOAD);
    assert_int_equal(s3_head_object(root, key_of("mp/aborted"), &h), S3_ERR_NOT_FOUND);
    /* completing with a part that is too small is refused */
    free(abort_id);
    assert_int_equal(s3_multipart_create(root, key_of("mp/small"), NULL, &abort_id), S3_OK);
    struct s3_mem sm = {.data = data, .len = 1024};
    struct s3_source ssrc = s3_source_mem(&sm);
    assert_int_equal(s3_multipart_upload_part(root, key_of("mp/small"), abort_id, 1, &ssrc, e1),
                     S3_OK);
    assert_int_equal(s3_multipart_upload_part(root, key_of("mp/small"), abort_id, 2, &ssrc, e2),
                     S3_OK);
    int rc = s3_multipart_complete(root, key_of("mp/small"), abort_id, nums, ets, 2, etag);
    assert_int_not_equal(rc, S3_OK);
    assert_int_equal(s3_multipart_abort(root, key_of("mp/small"), abort_id), S3_OK);

    free(abort_id);
    free(copy_id);
    free((char *)copy_key);
    free(numbers);
    free(etags);
    free(jobs);
    free(upload_id);
    free((char *)key);
    free(data);
}

static void test_signed_payload(void **state)
{
    struct s3_config c2 = cfg;
    c2.sign_payload = 1;
    struct s3_client *c;
    assert_int_equal(s3_client_new(&c2, &c), S3_OK);
    unsigned char data[100000];
    fill_random(data, sizeof(data), 3);
    assert_int_equal(put_mem(c, key_of("signed/blob"), data, sizeof(data)), S3_OK);
    unsigned char *back;
    size_t len;
    assert_int_equal(get_all(c, key_of("signed/blob"), &back, &len), S3_OK);
    assert_int_equal(len, sizeof(data));
    assert_memory_equal(back, data, len);
    free(back);
    s3_client_free(c);
    /* wrong secret: refused, never retried. S3 says SignatureDoesNotMatch;
     * RGW with STS enabled says AccessDenied (its STS engine's denial is the
     * one it reports, whatever the local engine found). */
    c2.secret_key = "wrong-secret";
    assert_int_equal(s3_client_new(&c2, &c), S3_OK);
    int rc = put_mem(c, key_of("signed/x"), "x", 1);
    assert_true(rc == S3_ERR_AUTH || rc == S3_ERR_ACCESS_DENIED);
    struct s3_stats st;
    s3_client_stats(c, &st);
    assert_int_equal(st.requests, 1);
    s3_client_free(c);
}

/* The session policy DESIGN.md gives for one pocket. */
static char *pocket_policy(const char *prefix, int writable)
{
    static char policy[2048];
    snprintf(
            policy, sizeof(policy),
            "{\"Version\":\"2012-10-17\",\"Statement\":["
            "{\"Effect\":\"Allow\",\"Action\":[\"s3:ListBucket\"],\"Resource\":\"arn:aws:s3:::%s\","
            "\"Condition\":{\"StringLike\":{\"s3:prefix\":[\"%s\",\"%s*\"]}}},"
            "{\"Effect\":\"Allow\",\"Action\":[\"s3:GetObject\"%s],"
            "\"Resource\":\"arn:aws:s3:::%s/%s*\"}]}",
            cfg.bucket, prefix, prefix,
            writable ? ",\"s3:PutObject\",\"s3:DeleteObject\",\"s3:AbortMultipartUpload\","
                       "\"s3:ListMultipartUploadParts\""
                     : "",
            cfg.bucket, prefix);
    return policy;
}

static struct s3_client *session_client(const char *prefix, int writable)
{
    struct sts_credentials cr;
    int rc = sts_assume_role(root, role_arn, "itest", pocket_policy(prefix, writable), 900, &cr);
    if (rc != S3_OK)
        fail_msg("assume role: %s (%s)", s3_strerror(rc), s3_last_error_detail());
    assert_non_null(cr.session_token);
    assert_true(cr.expiration > time(NULL) + 800 && cr.expiration < time(NULL) + 1000);
    struct s3_config c2 = cfg;
    c2.access_key = cr.access_key;
    c2.secret_key = cr.secret_key;
    c2.session_token = cr.session_token;
    struct s3_client *c;
    assert_int_equal(s3_client_new(&c2, &c), S3_OK);
    sts_credentials_release(&cr);
    return c;
}

static void test_sts_prefix_isolation(void **state)
{
    char mine[128], other[128];
    snprintf(mine, sizeof(mine), "%spockets/aaa/", run_prefix);
    snprintf(other, sizeof(other), "%spockets/bbb/", run_prefix);
    char other_key[160];
    snprintf(other_key, sizeof(other_key), "%ssecret.txt", other);
    assert_int_equal(put_mem(root, other_key, "theirs", 6), S3_OK);

    struct s3_client *c = session_client(mine, 1);
    char key[200];
    snprintf(key, sizeof(key), "%sdir/file with space+plus.txt", mine);
    /* inside the prefix: write, read, list, copy, multipart, delete */
    assert_int_equal(put_mem(c, key, "mine", 4), S3_OK);
    unsigned char *back;
    size_t len;
    assert_int_equal(get_all(c, key, &back, &len), S3_OK);
    assert_memory_equal(back, "mine", 4);
    free(back);
    struct s3_list_page page;
    assert_int_equal(s3_list_objects(c, mine, "/", NULL, NULL, 0, &page), S3_OK);
    assert_int_equal(page.n_prefixes, 1);
    s3_list_page_release(&page);
    char copy[200];
    snprintf(copy, sizeof(copy), "%scopy", mine);
    char etag[S3_ETAG_MAX];
    assert_int_equal(s3_copy_object(c, key, copy, 0, NULL, etag), S3_OK);
    char *uid = NULL;
    assert_int_equal(s3_multipart_create(c, copy, NULL, &uid), S3_OK);
    assert_int_equal(s3_multipart_abort(c, copy, uid), S3_OK);
    free(uid);
    assert_int_equal(s3_delete_object(c, copy), S3_OK);

    /* outside: another pocket and the bucket root */
    char theirs[200];
    snprintf(theirs, sizeof(theirs), "%sintruder", other);
    assert_int_equal(put_mem(c, theirs, "x", 1), S3_ERR_ACCESS_DENIED);
    assert_int_equal(put_mem(c, "at-root", "x", 1), S3_ERR_ACCESS_DENIED);
    char b[8];
    struct s3_mem m = {.data = b, .len = sizeof(b)};
    struct s3_sink sink = s3_sink_mem(&m);
    assert_int_equal(s3_get_object(c, other_key, 0, 0, &sink, NULL, NULL), S3_ERR_ACCESS_DENIED);
    assert_int_equal(s3_delete_object(c, other_key), S3_ERR_ACCESS_DENIED);
    assert_int_equal(s3_list_objects(c, other, NULL, NULL, NULL, 0, &page), S3_ERR_ACCESS_DENIED);
    assert_int_equal(s3_list_objects(c, NULL, NULL, NULL, NULL, 0, &page), S3_ERR_ACCESS_DENIED);
    assert_int_equal(s3_copy_object(c, other_key, copy, 0, NULL, etag), S3_ERR_ACCESS_DENIED);
    /* a prefix that merely starts like ours is someone else's */
    char sibling[200];
    snprintf(sibling, sizeof(sibling), "%spockets/aaab/x", run_prefix);
    assert_int_equal(put_mem(c, sibling, "x", 1), S3_ERR_ACCESS_DENIED);
    /* the other object is untouched */
    assert_int_equal(get_all(root, other_key, &back, &len), S3_OK);
    assert_memory_equal(back, "theirs", 6);
    free(back);
    s3_client_free(c);

    /* a read-only session reads but cannot write or delete */
    c = session_client(mine, 0);
    assert_int_equal(get_all(c, key, &back, &len), S3_OK);
    free(back);
    assert_int_equal(put_mem(c, key, "overwrite", 9), S3_ERR_ACCESS_DENIED);
    assert_int_equal(s3_delete_object(c, key), S3_ERR_ACCESS_DENIED);
    s3_client_free(c);

    /* A tampered session token is refused. The damage is in the token's
     * first block: RGW 16.2 encrypts its tokens (AES-CBC) without
     * authenticating them, so damage elsewhere is caught only when it breaks
     * the decoding, and damage inside the embedded session policy makes RGW
     * drop that policy and grant the role's full rights. */
    struct sts_credentials cr;
    assert_int_equal(sts_assume_role(root, role_arn, "itest", pocket_policy(mine, 1), 900, &cr),
                     S3_OK);
    cr.session_token[3] ^= 0x01;
    struct s3_config c2 = cfg;
    c2.access_key = cr.access_key;
    c2.secret_key = cr.secret_key;
    c2.session_token = cr.session_token;
    assert_int_equal(s3_client_new(&c2, &c), S3_OK);
    int rc = put_mem(c, key, "x", 1);
    assert_true(rc == S3_ERR_AUTH || rc == S3_ERR_ACCESS_DENIED || rc == S3_ERR_INVALID);
    s3_client_free(c);
    sts_credentials_release(&cr);

    /* bad AssumeRole requests */
    assert_int_equal(sts_assume_role(root, role_arn, "x", "{not json", 900, &cr) == S3_OK, 0);
    assert_int_equal(
            sts_assume_role(root, "arn:aws:iam:::role/no-such-role", "x", NULL, 900, &cr) == S3_OK,
            0);
    assert_int_equal(sts_assume_role(root, role_arn, "x", NULL, 10, &cr), S3_ERR_INVALID_ARG);
}

struct hammer {
    int id;
    int failures;
};

static void *hammer_thread(void *arg)
{
    struct hammer *hm = arg;
    char name[64], data[256];
    for (int i = 0; i < 25; i++) {
        snprintf(name, sizeof(name), "conc/t%d/o%d", hm->id, i);
        snprintf(data, sizeof(data), "thread %d object %d", hm->id, i);
        char key[128];
        snprintf(key, sizeof(key), "%s%s", run_prefix, name);
        if (put_mem(root, key, data, strlen(data)) != S3_OK) {
            hm->failures++;
            continue;
        }
        unsigned char *back;
        size_t len;
        if (get_all(root, key, &back, &len) != S3_OK) {
            hm->failures++;
            continue;
        }
        if (len != strlen(data) || memcmp(back, data, len) != 0)
            hm->failures++;
        free(back);
    }
    return NULL;
}

/* Requests sign with a signing key the client keeps for the day: one made
 * with a wrong secret is refused, and once the right one is set, the next
 * request of the same day signs with a key of the new secret. */
static void test_credentials_change(void **state)
{
    (void)state;
    struct s3_config bad = cfg;
    bad.secret_key = "not-the-secret";
    bad.max_retries = -1;
    struct s3_client *c = NULL;
    assert_int_equal(s3_client_new(&bad, &c), S3_OK);
    const char *key = key_of("creds/blob");
    assert_int_equal(put_mem(root, key, "x", 1), S3_OK);
    struct s3_head h; /* a HEAD's refusal has no body: 403 is all it says */
    assert_int_equal(s3_head_object(c, key, &h), S3_ERR_ACCESS_DENIED);
    /* again, with the key the client kept: still wrong */
    assert_int_equal(s3_head_object(c, key, &h), S3_ERR_ACCESS_DENIED);
    assert_int_equal(s3_client_set_credentials(c, cfg.access_key, cfg.secret_key, NULL), S3_OK);
    assert_int_equal(s3_head_object(c, key, &h), S3_OK);
    assert_int_equal(h.size, 1);
    s3_head_release(&h);
    assert_int_equal(s3_client_set_credentials(c, cfg.access_key, "wrong-again", NULL), S3_OK);
    assert_int_equal(s3_head_object(c, key, &h), S3_ERR_ACCESS_DENIED);
    s3_client_free(c);
}

static void test_concurrency_and_connection_reuse(void **state)
{
    struct s3_stats before, after;
    s3_client_stats(root, &before);
    pthread_t th[8];
    struct hammer hm[8];
    for (int i = 0; i < 8; i++) {
        hm[i] = (struct hammer){.id = i};
        pthread_create(&th[i], NULL, hammer_thread, &hm[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(hm[i].failures, 0);
    }
    s3_client_stats(root, &after);
    uint64_t requests = after.requests - before.requests;
    uint64_t connects = after.connects - before.connects;
    assert_true(requests >= 8 * 25 * 3);
    /* keep-alive: far fewer connections than requests */
    if (connects > 32)
        fail_msg("%llu connections for %llu requests", (unsigned long long)connects,
                 (unsigned long long)requests);
    assert_int_equal(delete_prefix(root, key_of("conc/")), 200);
}

int main(void)
{
    if (!getenv("POCKITY_S3_ENDPOINT")) {
        printf("skipped: POCKITY_S3_ENDPOINT not set (run ./scripts/test, or eval "
               "\"$(scripts/s3-local env)\")\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_put_get_head_delete),
            cmocka_unit_test(test_metadata_round_trip),
            cmocka_unit_test(test_awkward_keys),
            cmocka_unit_test(test_ranged_reads),
            cmocka_unit_test(test_list_pagination_and_delimiter),
            cmocka_unit_test(test_delete_objects_batch),
            cmocka_unit_test(test_multipart_100mib),
            cmocka_unit_test(test_signed_payload),
            cmocka_unit_test(test_sts_prefix_isolation),
            cmocka_unit_test(test_credentials_change),
            cmocka_unit_test(test_concurrency_and_connection_reuse),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

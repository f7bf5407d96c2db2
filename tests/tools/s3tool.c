/* s3tool: a small S3 command line over lib/s3 for test scripts.
 *
 *   s3tool put KEY FILE [CONTENT_TYPE] | get KEY FILE | head KEY | rm KEY
 *          | ls PREFIX | parts KEY UPLOAD_ID   (the parts of an upload: NUMBER SIZE)
 *
 * Credentials and endpoint from the environment: POCKITY_S3_ENDPOINT,
 * POCKITY_S3_REGION, POCKITY_S3_BUCKET, POCKITY_S3_ACCESS_KEY,
 * POCKITY_S3_SECRET_KEY and optionally POCKITY_S3_SESSION_TOKEN.
 * Exit status: 0 success, 3 access denied, 4 not found (object or upload), 1 any other failure,
 * 2 usage. The error is printed as "error: CODE: detail". */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "s3.h"

#define USAGE                                                                                      \
    "usage: s3tool put KEY FILE [CONTENT_TYPE] | get KEY FILE | head KEY | rm KEY | ls PREFIX "    \
    "| parts KEY UPLOAD_ID\n"

static int fail(int rc)
{
    fprintf(stderr, "error: %s: %s\n", s3_strerror(rc), s3_last_error_detail());
    if (rc == S3_ERR_ACCESS_DENIED)
        return 3;
    if (rc == S3_ERR_NOT_FOUND || rc == S3_ERR_NO_UPLOAD)
        return 4;
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fputs(USAGE, stderr);
        return 2;
    }
    struct s3_config cfg = {
            .endpoint = getenv("POCKITY_S3_ENDPOINT"),
            .region = getenv("POCKITY_S3_REGION"),
            .bucket = getenv("POCKITY_S3_BUCKET"),
            .access_key = getenv("POCKITY_S3_ACCESS_KEY"),
            .secret_key = getenv("POCKITY_S3_SECRET_KEY"),
            .session_token = getenv("POCKITY_S3_SESSION_TOKEN"),
            .max_retries = 2,
    };
    struct s3_client *c;
    int rc = s3_client_new(&cfg, &c);
    if (rc) {
        fprintf(stderr, "error: bad S3 settings in the environment\n");
        return 2;
    }
    const char *op = argv[1], *key = argv[2];
    int status = 0;
    if (!strcmp(op, "put") && (argc == 4 || argc == 5)) {
        int fd = open(argv[3], O_RDONLY);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) != 0) {
            perror(argv[3]);
            status = 1;
        } else {
            struct s3_fd f = {.fd = fd};
            struct s3_source src = s3_source_fd(&f, (uint64_t)st.st_size);
            char etag[S3_ETAG_MAX];
            struct s3_put_opts opts = {.content_type = argc == 5 ? argv[4] : NULL};
            rc = s3_put_object(c, key, &src, &opts, etag);
            status = rc ? fail(rc) : (printf("%s\n", etag), 0);
        }
        if (fd >= 0)
            close(fd);
    } else if (!strcmp(op, "get") && argc == 4) {
        int fd = open(argv[3], O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) {
            perror(argv[3]);
            status = 1;
        } else {
            struct s3_fd f = {.fd = fd};
            struct s3_sink sink = s3_sink_fd(&f);
            rc = s3_get_object(c, key, 0, 0, &sink, NULL, NULL);
            status = rc ? fail(rc) : 0;
            close(fd);
        }
    } else if (!strcmp(op, "head") && argc == 3) {
        struct s3_head h;
        rc = s3_head_object(c, key, &h);
        if (rc) {
            status = fail(rc);
        } else {
            printf("size %llu\netag %s\nmodified %lld\n", (unsigned long long)h.size, h.etag,
                   (long long)h.last_modified);
            for (size_t i = 0; i < h.n_meta; i++)
                printf("meta %s %s\n", h.meta[i].name, h.meta[i].value);
            s3_head_release(&h);
        }
    } else if (!strcmp(op, "rm") && argc == 3) {
        rc = s3_delete_object(c, key);
        status = rc ? fail(rc) : 0;
    } else if (!strcmp(op, "ls") && argc == 3) {
        char *token = NULL;
        do {
            struct s3_list_page page;
            rc = s3_list_objects(c, key, NULL, token, NULL, 0, &page);
            free(token);
            token = NULL;
            if (rc) {
                status = fail(rc);
                break;
            }
            for (size_t i = 0; i < page.n_objects; i++)
                printf("%llu %s\n", (unsigned long long)page.objects[i].size, page.objects[i].key);
            if (page.is_truncated && page.next_token)
                token = strdup(page.next_token);
            s3_list_page_release(&page);
        } while (token);
    } else if (!strcmp(op, "parts") && argc == 4) {
        int marker = 0;
        do {
            struct s3_part_list list;
            rc = s3_multipart_list_parts(c, key, argv[3], marker, &list);
            if (rc) {
                status = fail(rc);
                break;
            }
            for (size_t i = 0; i < list.n_parts; i++)
                printf("%d %llu\n", list.parts[i].number, (unsigned long long)list.parts[i].size);
            marker = list.is_truncated ? list.next_marker : 0;
            s3_part_list_release(&list);
        } while (marker);
    } else {
        fputs(USAGE, stderr);
        status = 2;
    }
    s3_client_free(c);
    return status;
}

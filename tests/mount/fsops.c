/* fsops: system calls the shell cannot make, checked on a pockityfs mount.
 * usage: fsops io DIR | fsops names DIR PREFIX_LEN | fsops rename DIR
 * Prints each failed check and exits 1 when any failed. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int failures;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s (errno %s)\n", __FILE__, __LINE__, #cond,     \
                    strerror(errno));                                                              \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

#define CHECK_ERRNO(call, want)                                                                    \
    do {                                                                                           \
        errno = 0;                                                                                 \
        int r_ = (call);                                                                           \
        if (r_ != -1 || errno != (want)) {                                                         \
            fprintf(stderr, "%s:%d: %s gave %d (%s), want %s\n", __FILE__, __LINE__, #call, r_,    \
                    strerror(errno), strerror(want));                                              \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

static char *path_in(const char *dir, const char *name)
{
    static char buf[8192];
    snprintf(buf, sizeof(buf), "%s/%s", dir, name);
    return buf;
}

/* Compare the file at path with the n bytes of want. */
static void check_content(const char *path, const unsigned char *want, size_t n)
{
    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    unsigned char *got = malloc(n + 16);
    ssize_t r = 0, t = 0;
    while ((r = read(fd, got + t, n + 16 - (size_t)t)) > 0)
        t += r;
    CHECK(t == (ssize_t)n);
    CHECK(t != (ssize_t)n || memcmp(got, want, n) == 0);
    free(got);
    close(fd);
}

static void test_io(const char *dir)
{
    const size_t size = 5u << 20;
    unsigned char *model = calloc(1, size);
    char *p = strdup(path_in(dir, "io.bin"));
    int fd = open(p, O_CREAT | O_RDWR | O_TRUNC, 0644);
    CHECK(fd >= 0);
    /* random writes at offsets around block edges, beyond the end, in holes */
    const struct {
        off_t off;
        size_t len;
    } w[] = {{0, 100}, {(1 << 20) - 3, 10}, {3 << 20, 4096}, {(2 << 20) + 7, 1}, {50, 20}};
    size_t end = 0;
    for (size_t i = 0; i < sizeof(w) / sizeof(w[0]); i++) {
        unsigned char buf[4096];
        for (size_t j = 0; j < w[i].len; j++)
            buf[j] = (unsigned char)(i * 31 + j + 1);
        CHECK(pwrite(fd, buf, w[i].len, w[i].off) == (ssize_t)w[i].len);
        memcpy(model + w[i].off, buf, w[i].len);
        if ((size_t)w[i].off + w[i].len > end)
            end = (size_t)w[i].off + w[i].len;
    }
    unsigned char rb[64];
    CHECK(pread(fd, rb, 20, 50) == 20 && memcmp(rb, model + 50, 20) == 0);
    CHECK(fsync(fd) == 0);
    CHECK(close(fd) == 0);
    check_content(p, model, end);

    /* reopen: rewrite the middle of the uploaded file, then shrink and grow */
    fd = open(p, O_RDWR);
    CHECK(fd >= 0);
    CHECK(pwrite(fd, "MIDDLE", 6, (3 << 20) + 100) == 6);
    memcpy(model + (3 << 20) + 100, "MIDDLE", 6);
    CHECK(ftruncate(fd, (1 << 20) + 5) == 0);
    end = (1 << 20) + 5;
    memset(model + end, 0, size - end);
    CHECK(ftruncate(fd, 2 << 20) == 0);
    end = 2 << 20;
    struct stat st;
    CHECK(fstat(fd, &st) == 0 && st.st_size == (off_t)end);
    CHECK(close(fd) == 0);
    check_content(p, model, end);

    /* O_APPEND adds at the end whatever the offset */
    fd = open(p, O_WRONLY | O_APPEND);
    CHECK(fd >= 0);
    CHECK(lseek(fd, 0, SEEK_SET) == 0);
    CHECK(write(fd, "tail", 4) == 4);
    memcpy(model + end, "tail", 4);
    end += 4;
    CHECK(close(fd) == 0);
    check_content(p, model, end);

    /* truncate by name, no handle open */
    CHECK(truncate(p, 10) == 0);
    check_content(p, model, 10);
    CHECK(stat(p, &st) == 0 && st.st_size == 10);
    CHECK(unlink(p) == 0);
    CHECK_ERRNO(stat(p, &st), ENOENT);

    /* an unlinked file stays readable through its open descriptor */
    fd = open(p, O_CREAT | O_RDWR, 0600);
    CHECK(write(fd, "still here", 10) == 10);
    CHECK(fsync(fd) == 0);
    CHECK(unlink(p) == 0);
    CHECK(pread(fd, rb, 10, 0) == 10 && memcmp(rb, "still here", 10) == 0);
    CHECK(close(fd) == 0);
    CHECK_ERRNO(stat(p, &st), ENOENT);
    free(p);
    free(model);
}

static void test_rename(const char *dir)
{
    char a[4096], b[4096];
    snprintf(a, sizeof(a), "%s/ra", dir);
    snprintf(b, sizeof(b), "%s/rb", dir);
    int fd = open(a, O_CREAT | O_WRONLY, 0644);
    CHECK(write(fd, "AAA", 3) == 3);
    CHECK(close(fd) == 0);
    fd = open(b, O_CREAT | O_WRONLY, 0644);
    CHECK(write(fd, "BB", 2) == 2);
    CHECK(close(fd) == 0);
    CHECK_ERRNO(renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_NOREPLACE), EEXIST);
    errno = 0;
    int r = renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE);
    CHECK(r == -1 && (errno == EINVAL || errno == ENOTSUP));
    check_content(a, (const unsigned char *)"AAA", 3);
    check_content(b, (const unsigned char *)"BB", 2);
    CHECK(rename(a, b) == 0);
    check_content(b, (const unsigned char *)"AAA", 3);
    struct stat st;
    CHECK_ERRNO(stat(a, &st), ENOENT);
    /* a file over a directory, a directory over a file */
    char d[4096];
    snprintf(d, sizeof(d), "%s/rdir", dir);
    CHECK(mkdir(d, 0755) == 0);
    CHECK_ERRNO(rename(b, d), EISDIR);
    CHECK_ERRNO(rename(d, b), ENOTDIR);
    CHECK(renameat2(AT_FDCWD, b, AT_FDCWD, a, RENAME_NOREPLACE) == 0);
    CHECK(unlink(a) == 0);
    CHECK(rmdir(d) == 0);
    /* hard links cannot exist on S3 */
    fd = open(a, O_CREAT | O_WRONLY, 0644);
    CHECK(close(fd) == 0);
    CHECK_ERRNO(link(a, b), EPERM);
    CHECK(unlink(a) == 0);
}

/* Names: 255 bytes work, 256 do not; keys up to 1024 bytes with the prefix. */
static void test_names(const char *dir, size_t prefix_len)
{
    char name[300];
    memset(name, 'n', 255);
    name[255] = '\0';
    char *p = strdup(path_in(dir, name));
    int fd = open(p, O_CREAT | O_WRONLY, 0644);
    CHECK(fd >= 0 && close(fd) == 0);
    CHECK(unlink(p) == 0);
    free(p);
    name[255] = 'n';
    name[256] = '\0';
    CHECK_ERRNO(open(path_in(dir, name), O_CREAT | O_WRONLY, 0644), ENAMETOOLONG);
    CHECK_ERRNO(mkdir(path_in(dir, name), 0755), ENAMETOOLONG);

    /* deep path: directories of 100 bytes until the key passes 1024 bytes */
    char path[8192];
    size_t base = strlen(dir);
    snprintf(path, sizeof(path), "%s", dir);
    size_t key_len = prefix_len + strlen("deep"); /* relative key so far */
    snprintf(path + strlen(path), sizeof(path) - strlen(path), "/deep");
    CHECK(mkdir(path, 0755) == 0);
    char comp[101];
    memset(comp, 'd', 100);
    comp[100] = '\0';
    while (key_len + 1 + 100 + 1 <= 1024) {
        snprintf(path + strlen(path), sizeof(path) - strlen(path), "/%s", comp);
        key_len += 101;
        CHECK(mkdir(path, 0755) == 0);
    }
    /* a file whose key is exactly 1024 bytes works, one more byte does not */
    size_t room = 1024 - key_len - 1;
    char leaf[300];
    memset(leaf, 'f', room);
    leaf[room] = '\0';
    snprintf(path + strlen(path), sizeof(path) - strlen(path), "/%s", leaf);
    fd = open(path, O_CREAT | O_WRONLY, 0644);
    CHECK(fd >= 0 && write(fd, "x", 1) == 1 && close(fd) == 0);
    strcat(path, "g");
    CHECK_ERRNO(open(path, O_CREAT | O_WRONLY, 0644), ENAMETOOLONG);
    (void)base;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "io") == 0)
        test_io(argv[2]);
    else if (argc >= 3 && strcmp(argv[1], "rename") == 0)
        test_rename(argv[2]);
    else if (argc >= 4 && strcmp(argv[1], "names") == 0)
        test_names(argv[2], strtoul(argv[3], NULL, 10));
    else {
        fprintf(stderr, "usage: fsops io DIR | fsops rename DIR | fsops names DIR PREFIX_LEN\n");
        return 2;
    }
    if (failures)
        fprintf(stderr, "%d check(s) failed\n", failures);
    return failures ? 1 : 0;
}

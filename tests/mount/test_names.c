/* Unit tests of pockityfs/names: a move waits for the changes below its
 * names, holds back new ones there and lets others through; a path computed
 * before a move ended is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <unistd.h>

#include "names.h"

static struct names n;
static volatile int begun;

static void *mover(void *arg)
{
    (void)arg;
    names_move_begin(&n, "a", "z");
    begun = 1;
    return NULL;
}

static void test_move(void **state)
{
    (void)state;
    names_init(&n);
    uint64_t v = names_moves(&n);
    assert_int_equal(names_enter(&n, "a/b", v, 1), 0);
    assert_int_equal(names_enter(&n, "ab", v, 1), 0); /* not below a */
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, mover, NULL), 0);
    usleep(100000);
    assert_int_equal(begun, 0); /* a/b is under way */
    names_leave(&n, "a/b");
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(begun, 1);
    /* a path computed before the move began may be an old name */
    assert_int_equal(names_enter(&n, "q/r", v, 0), -EAGAIN);
    /* during the move: below either name waits, elsewhere goes on */
    uint64_t during = names_moves(&n);
    assert_int_equal(during % 2, 1);
    assert_int_equal(names_enter(&n, "a/c", during, 0), -EBUSY);
    assert_int_equal(names_enter(&n, "z", during, 0), -EBUSY);
    assert_int_equal(names_enter(&n, "q/r", during, 0), 0);
    names_leave(&n, "q/r");
    names_move_end(&n);
    assert_int_equal(names_moves(&n), v + 2);
    /* a path computed before the move ended may be an old name */
    assert_int_equal(names_enter(&n, "a/c", v, 1), -EAGAIN);
    assert_int_equal(names_enter(&n, "z/c", names_moves(&n), 1), 0);
    names_leave(&n, "z/c");
    names_leave(&n, "ab");
    names_destroy(&n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_move)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

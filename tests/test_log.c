/* Tests of common/base/log: the live progress line of a terminal and the log lines
 * written while it is up (through a pseudo-terminal standing in for stderr). */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"

static void s_call(void *fn)
{
    (*(void (**)(void))fn)();
}

/* Runs fn with stderr on a raw pseudo-terminal (or a pipe when tty is 0) and returns
 * what it wrote (static buffer). */
static const char *s_capture(int tty, void (*fn)(void))
{
    static char out[4096];
    char *got = wisp_test_capture_stderr(tty, s_call, &fn);
    snprintf(out, sizeof out, "%s", got);
    free(got);
    return out;
}

static int s_live; /* wisp_log_progress_live() while the line was up */

static void s_progress_with_a_log_line(void)
{
    wisp_log_progress("%d/%d files", 1, 10);
    s_live = wisp_log_progress_live();
    WISP_LOGW("a warning %d", 7);
    wisp_log_progress("%d/%d files", 2, 10);
    wisp_log_progress_end();
    assert_false(wisp_log_progress_live());
    WISP_LOGW("after");
}

static void test_log_lines_never_overwrite_the_progress_line(void **state)
{
    (void)state;
    const char *out = s_capture(1, s_progress_with_a_log_line);
    /* drawn in place; a log line first erases it, then draws it again below itself */
    const char *a = strstr(out, "\r1/10 files\033[K");
    const char *b = strstr(out, "\r\033[K");
    const char *w = strstr(out, "a warning 7\n1/10 files\033[K");
    const char *c = strstr(out, "\r2/10 files\033[K\n");
    if (!a || !b || !w || !c || !(a < b && b < w && w < c))
        fail_msg("unexpected terminal output: '%s'", out);
    /* after the end the next log line is plain */
    const char *after = strstr(out, "after\n");
    assert_non_null(after);
    assert_true(after > c);
    assert_null(strstr(c + strlen("\r2/10 files"), "2/10 files"));
    assert_true(s_live);
}

static void test_no_progress_line_when_stderr_is_not_a_terminal(void **state)
{
    (void)state;
    const char *out = s_capture(0, s_progress_with_a_log_line);
    assert_null(strstr(out, "files"));
    assert_null(strchr(out, '\r'));
    assert_non_null(strstr(out, "a warning 7\n"));
    assert_false(s_live);
}

static void s_one_line(void)
{
    WISP_LOGW("from a worker");
}

/* WISP_LOG_ERASE_LINE=1 (set by `wisp run` on a terminal): a worker's line, which
 * reaches the terminal through a pipe, erases the coordinator's progress line first. */
static void test_erase_env_makes_every_line_erase_the_terminal_line(void **state)
{
    (void)state;
    setenv(WISP_LOG_ERASE_ENV, "1", 1);
    wisp_log_init('W', 1, WISP_LOG_INFO);
    const char *out = s_capture(0, s_one_line);
    assert_true(strncmp(out, "\r\033[K20", 6) == 0);
    assert_non_null(strstr(out, " W1 W s_one_line: from a worker\n"));
    unsetenv(WISP_LOG_ERASE_ENV);
    wisp_log_init('L', 0, WISP_LOG_INFO);
    out = s_capture(0, s_one_line);
    assert_null(strchr(out, '\r'));
}

int main(void)
{
    wisp_log_init('L', 0, WISP_LOG_INFO);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_log_lines_never_overwrite_the_progress_line),
        cmocka_unit_test(test_no_progress_line_when_stderr_is_not_a_terminal),
        cmocka_unit_test(test_erase_env_makes_every_line_erase_the_terminal_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

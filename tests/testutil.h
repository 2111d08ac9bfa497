/* Test helpers shared by every cmocka test. */
#ifndef WISP_TESTUTIL_H
#define WISP_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

/* Fails the current test unless |got-want| <= atol + rtol*|want| everywhere; on failure
 * prints label, max abs and rel error and the first bad index. Also fails on NaN/Inf
 * in got where want is finite. */
void wisp_assert_close(const float *got, const float *want, size_t n, double atol, double rtol,
                       const char *label);

/* Max |a-b| and max |b| over n elements (for tolerances relative to a tensor's scale). */
double wisp_max_abs_diff(const float *a, const float *b, size_t n);
double wisp_max_abs(const float *a, size_t n);

/* Directory holding committed fixtures (tests/data, or $WISP_TEST_DATA). */
const char *wisp_test_data_dir(void);

/* A fresh temporary directory for this test process (removed by the caller if wanted). */
const char *wisp_test_tmpdir(void);

/* Runs fn(ctx) with stderr (fd 2) on a raw pseudo-terminal (tty 1: isatty(2) holds,
 * no newline translation) or a pipe (tty 0), and returns everything it wrote,
 * malloc'd and NUL-terminated (the caller frees it). A thread drains the terminal
 * while fn runs, so fn may write more than the terminal buffers. */
char *wisp_test_capture_stderr(int tty, void (*fn)(void *), void *ctx);

/* CPU seconds used by this process (CLOCK_PROCESS_CPUTIME_ID): for the few tests that
 * guard against a quadratic path, so that a loaded machine does not decide them. */
double wisp_test_cpu_seconds(void);

/* Reads a small binary golden file of float32 values; returns count or fails the test. */
float *wisp_test_read_f32(const char *path, size_t *count);

#endif

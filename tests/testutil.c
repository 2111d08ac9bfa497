#include "testutil.h"

#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

void wisp_assert_close(const float *got, const float *want, size_t n, double atol, double rtol,
                       const char *label)
{
    double max_abs = 0, max_rel = 0;
    size_t first_bad = (size_t)-1;
    for (size_t i = 0; i < n; i++) {
        double g = got[i], w = want[i];
        double d = fabs(g - w);
        int bad = !(d <= atol + rtol * fabs(w)); /* NaN compares false: counted as bad */
        if (!isfinite(g) && isfinite(w))
            bad = 1;
        if (d > max_abs || isnan(d))
            max_abs = isnan(d) ? INFINITY : d;
        if (fabs(w) > 0 && d / fabs(w) > max_rel)
            max_rel = d / fabs(w);
        if (bad && first_bad == (size_t)-1)
            first_bad = i;
    }
    if (first_bad != (size_t)-1) {
        fail_msg("%s: %zu values, max abs err %.3g, max rel err %.3g; first bad index %zu: "
                 "got %.9g want %.9g (atol %.1g rtol %.1g)",
                 label, n, max_abs, max_rel, first_bad, (double)got[first_bad],
                 (double)want[first_bad], atol, rtol);
    }
}

double wisp_max_abs_diff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > m || isnan(d))
            m = isnan(d) ? INFINITY : d;
    }
    return m;
}

double wisp_max_abs(const float *a, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs((double)a[i]) > m)
            m = fabs((double)a[i]);
    return m;
}

const char *wisp_test_data_dir(void)
{
    const char *d = getenv("WISP_TEST_DATA");
    return d ? d : "tests/data";
}

const char *wisp_test_tmpdir(void)
{
    static char dir[256];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/wisp-test-XXXXXX");
        if (!mkdtemp(dir))
            fail_msg("cannot create a temporary directory");
    }
    return dir;
}

float *wisp_test_read_f32(const char *path, size_t *count)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("%s: cannot open golden file", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (len < 0 || len % 4 != 0)
        fail_msg("%s: size %ld is not a multiple of 4", path, len);
    float *v = malloc((size_t)len + 4);
    if (!v || fread(v, 1, (size_t)len, f) != (size_t)len)
        fail_msg("%s: read failed", path);
    fclose(f);
    *count = (size_t)len / 4;
    return v;
}

/* The reading end of a capture, drained by its own thread. */
typedef struct {
    int fd;
    char *buf;
    size_t len, cap;
} s_drain_t;

static void *s_drain(void *arg)
{
    s_drain_t *d = arg;
    for (;;) {
        if (d->cap - d->len < 4096) {
            size_t cap = d->cap ? 2 * d->cap : 65536;
            char *nb = realloc(d->buf, cap);
            if (!nb)
                break;
            d->buf = nb;
            d->cap = cap;
        }
        ssize_t r = read(d->fd, d->buf + d->len, d->cap - d->len - 1);
        if (r <= 0) /* EOF of a pipe, EIO of a terminal whose other side closed */
            break;
        d->len += (size_t)r;
    }
    return NULL;
}

char *wisp_test_capture_stderr(int tty, void (*fn)(void *), void *ctx)
{
    int m = -1, s = -1, p[2];
    if (tty) {
        m = posix_openpt(O_RDWR | O_NOCTTY);
        assert_true(m >= 0 && grantpt(m) == 0 && unlockpt(m) == 0);
        s = open(ptsname(m), O_RDWR | O_NOCTTY);
        assert_true(s >= 0);
        struct termios t;
        assert_int_equal(tcgetattr(s, &t), 0);
        cfmakeraw(&t); /* no \n -> \r\n translation: the bytes as written */
        assert_int_equal(tcsetattr(s, TCSANOW, &t), 0);
    } else {
        assert_int_equal(pipe(p), 0);
        m = p[0];
        s = p[1];
    }
    s_drain_t d = {m, NULL, 0, 0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, s_drain, &d), 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(s, 2);
    fn(ctx);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(s); /* the last writer gone: the drain sees EOF (pipe) or EIO (terminal) */
    pthread_join(th, NULL);
    close(m);
    if (!d.buf)
        d.buf = calloc(1, 1);
    assert_non_null(d.buf);
    d.buf[d.len] = '\0';
    return d.buf;
}

double wisp_test_cpu_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

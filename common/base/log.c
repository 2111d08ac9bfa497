#include "base/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Process-wide logging settings; written once by main() before threads start. The
 * live progress line (its text, and whether it is on the terminal now) is part of
 * them: a log line must erase it first and draw it again after itself. */
static struct {
    char role;
    int rank;
    wisp_log_level_t threshold;
    int progress_live;
    char progress[512];
    int erase; /* WISP_LOG_ERASE_ENV: start every line by erasing the terminal line */
} s_log = {'L', 0, WISP_LOG_INFO, 0, "", 0};

void wisp_log_init(char role, int rank, wisp_log_level_t threshold)
{
    s_log.role = role;
    s_log.rank = rank;
    s_log.threshold = threshold;
    const char *e = getenv(WISP_LOG_ERASE_ENV);
    s_log.erase = e && strcmp(e, "1") == 0;
}

void wisp_log_set_level(wisp_log_level_t threshold)
{
    s_log.threshold = threshold;
}

wisp_log_level_t wisp_log_level(void)
{
    return s_log.threshold;
}

int wisp_log_parse_level(const char *name)
{
    static const char *names[] = {"debug", "info", "warn", "error", "off"};
    for (int i = 0; i < 5; i++)
        if (name && strcmp(name, names[i]) == 0)
            return i;
    return -1;
}

void wisp_log_write(wisp_log_level_t level, const char *func, const char *fmt, ...)
{
    if (level < s_log.threshold)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char line[2048];
    int n = snprintf(line, sizeof line,
                     "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %c%d %c %s: ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, s_log.role, s_log.rank, "DIWE"[level], func);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof line)
        vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    /* One fputs per line so concurrent ranks sharing stderr interleave by line. */
    size_t len = strlen(line);
    if (len + 1 < sizeof line) {
        line[len] = '\n';
        line[len + 1] = '\0';
    }
    if (s_log.progress_live) /* erase the progress line, log, draw it again below */
        fprintf(stderr, "\r\033[K%s%s\033[K", line, s_log.progress);
    else
        fprintf(stderr, "%s%s", s_log.erase ? "\r\033[K" : "", line);
    fflush(stderr);
}

void wisp_log_progress(const char *fmt, ...)
{
    if (!isatty(2))
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s_log.progress, sizeof s_log.progress, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\r%s\033[K", s_log.progress);
    fflush(stderr);
    s_log.progress_live = 1;
}

void wisp_log_progress_end(void)
{
    if (!s_log.progress_live)
        return;
    fputc('\n', stderr);
    fflush(stderr);
    s_log.progress_live = 0;
    s_log.progress[0] = '\0';
}

int wisp_log_progress_live(void)
{
    return s_log.progress_live;
}

/* fuzz_util.h: helpers shared by the libFuzzer harnesses (the pattern is in
 * docs/TESTING.md): every input is handed to wisp the way a real file or message
 * would be, and a harness only aborts when wisp breaks one of its own invariants
 * (the sanitizers catch the rest). */
#ifndef WISP_FUZZ_UTIL_H
#define WISP_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "base/err.h"
#include "base/log.h"

/* Aborts (a finding) with a message when cond is false. */
#define FUZZ_CHECK(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz invariant broken: " __VA_ARGS__);                                \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Errors are the expected outcome of most inputs: keep them out of the log. */
static inline void fuzz_quiet(void)
{
    wisp_log_set_level(WISP_LOG_OFF);
}

/* A failed call must leave a message; a successful one none. */
static inline void fuzz_check_error(int rc, const wisp_error_t *err)
{
    FUZZ_CHECK(rc <= 0, "return code %d is positive", rc);
    FUZZ_CHECK(rc == 0 || (err->code == rc && err->msg[0]), "error %d without a message (%s)", rc,
               err->msg);
    FUZZ_CHECK(rc != 0 || err->code == 0, "success with an error recorded: %s", err->msg);
    FUZZ_CHECK(!strchr(err->msg, '\n'), "error message spans lines: %s", err->msg);
}

/* The input as a NUL-terminated malloc'd copy (free() it). */
static inline char *fuzz_strndup(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        abort();
    if (size)
        memcpy(s, data, size);
    s[size] = 0;
    return s;
}

/* The input as a file: one memfd per process, rewritten for every input; the
 * returned path (/proc/self/fd/N) opens it like a regular file, without disk I/O. */
static inline const char *fuzz_file(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("wisp-fuzz", 0);
        if (fd < 0)
            abort();
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) != 0 || (size && pwrite(fd, data, size, 0) != (ssize_t)size))
        abort();
    return path;
}

#endif

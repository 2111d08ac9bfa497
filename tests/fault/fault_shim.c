/* LD_PRELOAD shim for the fault campaign (tests/fault/campaign.py): once the file
 * named by WISP_FAULT_TRIGGER exists, every write-side call on a path under
 * WISP_FAULT_DIR fails with errno WISP_FAULT_ERRNO (a number, default EROFS = 30):
 * the output file system "turns read-only" (or EIO, ENOSPC) at a moment the campaign
 * picks, in every process of the run that inherits the environment (coordinator,
 * worker rank 0).
 *
 * Covered: open/openat/fopen with a write or create flag, write/pwrite/writev,
 * fwrite/fflush/fputs (the buffered writers' own flushes go through glibc-internal
 * write calls that no shim can see, so the FILE calls themselves are wrapped),
 * fsync/fdatasync, ftruncate, rename, mkdir, unlink. Reads are never touched, so a
 * resumed run (started without the shim) reads what the failing run left.
 *
 * Built by the campaign with `cc -shared -fPIC -O1 -o fault_shim.so fault_shim.c -ldl`.
 * Not part of libwisp: a test tool only. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static int s_tripped; /* sticky: once the file system failed it stays failed */

/* 1 when the fault is active (the trigger file exists). */
static int s_active(void)
{
    if (s_tripped)
        return 1;
    const char *trig = getenv("WISP_FAULT_TRIGGER");
    if (!trig || !*trig)
        return 0;
    struct stat st;
    if (stat(trig, &st) == 0)
        s_tripped = 1;
    return s_tripped;
}

static int s_err(void)
{
    const char *e = getenv("WISP_FAULT_ERRNO");
    long v = e ? strtol(e, NULL, 10) : 0;
    return v > 0 && v < 4096 ? (int)v : EROFS;
}

/* 1 when path (absolute or relative to the cwd) lies under WISP_FAULT_DIR. */
static int s_under(const char *path)
{
    const char *dir = getenv("WISP_FAULT_DIR");
    if (!dir || !*dir || !path)
        return 0;
    char buf[4096];
    if (path[0] != '/') {
        if (!getcwd(buf, sizeof buf - 1))
            return 0;
        size_t n = strlen(buf);
        snprintf(buf + n, sizeof buf - n, "/%s", path);
        path = buf;
    }
    size_t n = strlen(dir);
    return strncmp(path, dir, n) == 0 && (path[n] == '/' || path[n] == '\0');
}

static int s_fd_under(int fd)
{
    char link[64], target[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n <= 0)
        return 0;
    target[n] = '\0';
    return s_under(target);
}

static int s_fail_fd(int fd)
{
    if (fd < 0 || !s_active() || !s_fd_under(fd))
        return 0;
    errno = s_err();
    return 1;
}

static int s_fail_path(const char *path)
{
    if (!s_active() || !s_under(path))
        return 0;
    errno = s_err();
    return 1;
}

#define REAL(ret, name, ...)                                                                  \
    static ret (*real_##name)(__VA_ARGS__);                                                   \
    if (!real_##name)                                                                         \
    *(void **)&real_##name = dlsym(RTLD_NEXT, #name)

ssize_t write(int fd, const void *buf, size_t n)
{
    REAL(ssize_t, write, int, const void *, size_t);
    if (s_fail_fd(fd))
        return -1;
    return real_write(fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    REAL(ssize_t, pwrite, int, const void *, size_t, off_t);
    if (s_fail_fd(fd))
        return -1;
    return real_pwrite(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
    REAL(ssize_t, pwrite64, int, const void *, size_t, off_t);
    if (s_fail_fd(fd))
        return -1;
    return real_pwrite64(fd, buf, n, off);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    REAL(ssize_t, writev, int, const struct iovec *, int);
    if (s_fail_fd(fd))
        return -1;
    return real_writev(fd, iov, cnt);
}

int fsync(int fd)
{
    REAL(int, fsync, int);
    if (s_fail_fd(fd))
        return -1;
    return real_fsync(fd);
}

int fdatasync(int fd)
{
    REAL(int, fdatasync, int);
    if (s_fail_fd(fd))
        return -1;
    return real_fdatasync(fd);
}

int ftruncate(int fd, off_t len)
{
    REAL(int, ftruncate, int, off_t);
    if (s_fail_fd(fd))
        return -1;
    return real_ftruncate(fd, len);
}

int ftruncate64(int fd, off_t len)
{
    REAL(int, ftruncate64, int, off_t);
    if (s_fail_fd(fd))
        return -1;
    return real_ftruncate64(fd, len);
}

static int s_writes(int flags)
{
    return (flags & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND)) != 0;
}

int open(const char *path, int flags, ...)
{
    REAL(int, open, const char *, int, ...);
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    if (s_writes(flags) && s_fail_path(path))
        return -1;
    return real_open(path, flags, mode);
}

int open64(const char *path, int flags, ...)
{
    REAL(int, open64, const char *, int, ...);
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    if (s_writes(flags) && s_fail_path(path))
        return -1;
    return real_open64(path, flags, mode);
}

int openat(int dirfd, const char *path, int flags, ...)
{
    REAL(int, openat, int, const char *, int, ...);
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    /* dirfd-relative paths are resolved against the cwd: wisp opens by full path */
    if (s_writes(flags) && s_fail_path(path))
        return -1;
    return real_openat(dirfd, path, flags, mode);
}

FILE *fopen(const char *path, const char *mode)
{
    REAL(FILE *, fopen, const char *, const char *);
    if (strpbrk(mode, "wa+") && s_fail_path(path))
        return NULL;
    return real_fopen(path, mode);
}

FILE *fopen64(const char *path, const char *mode)
{
    REAL(FILE *, fopen64, const char *, const char *);
    if (strpbrk(mode, "wa+") && s_fail_path(path))
        return NULL;
    return real_fopen64(path, mode);
}

size_t fwrite(const void *buf, size_t size, size_t n, FILE *fp)
{
    REAL(size_t, fwrite, const void *, size_t, size_t, FILE *);
    if (s_fail_fd(fileno(fp)))
        return 0;
    return real_fwrite(buf, size, n, fp);
}

int fputs(const char *s, FILE *fp)
{
    REAL(int, fputs, const char *, FILE *);
    if (s_fail_fd(fileno(fp)))
        return EOF;
    return real_fputs(s, fp);
}

int fprintf(FILE *fp, const char *fmt, ...)
{
    if (s_fail_fd(fileno(fp)))
        return -1;
    va_list ap;
    va_start(ap, fmt);
    int n = vfprintf(fp, fmt, ap);
    va_end(ap);
    return n;
}

int fflush(FILE *fp)
{
    REAL(int, fflush, FILE *);
    if (fp && s_fail_fd(fileno(fp)))
        return EOF;
    return real_fflush(fp);
}

int rename(const char *from, const char *to)
{
    REAL(int, rename, const char *, const char *);
    if (s_fail_path(from) || s_fail_path(to))
        return -1;
    return real_rename(from, to);
}

int mkdir(const char *path, mode_t mode)
{
    REAL(int, mkdir, const char *, mode_t);
    if (s_fail_path(path))
        return -1;
    return real_mkdir(path, mode);
}

int unlink(const char *path)
{
    REAL(int, unlink, const char *);
    if (s_fail_path(path))
        return -1;
    return real_unlink(path);
}

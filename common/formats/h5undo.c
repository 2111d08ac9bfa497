#include "formats/h5undo.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "base/util.h"

#define S_MAGIC      "WISPUL01"
#define S_BOOT_BYTES 40
#define S_HDR_FIXED  (8 + S_BOOT_BYTES + 8 + 8 + 4) /* magic, boot, size, probe, meta_len */
#define S_PAGE       512u
#define S_ENTRY_HDR  24 /* offset u64, len u64, hash u64 */
#define S_MAX_META   (1u << 20)
#define S_HASH_INIT  0xcbf29ce484222325ull

typedef struct s_file s_file_t;

struct wisp_h5undo {
    char *log_path;
    char *tmp_path;   /* LOG.tmp: the next header, renamed over LOG */
    hid_t driver;     /* registered driver, -1 before */
    int log_fd;       /* the log, open for appending; -1 before the first checkpoint */
    uint64_t log_off; /* bytes in the log */
    uint64_t ckpt_eof;
    uint64_t *saved; /* (saved_words) bit p: page p saved since the checkpoint */
    size_t saved_words;
    size_t *touched; /* indices of the nonzero words of saved, to clear them */
    size_t n_touched, touched_cap;
    uint8_t *scratch; /* old bytes of the pages a write covers */
    size_t scratch_cap;
    s_file_t *file; /* the open file (the one writes are logged for), NULL when none */
    wisp_h5undo_stats_t stats;
};

struct s_file {
    H5FD_t pub; /* first: HDF5 handles the driver's file as an H5FD_t */
    int fd;
    haddr_t eoa, eof;
    dev_t dev;
    ino_t ino;
    wisp_h5undo_t *u;
};

typedef struct {
    wisp_h5undo_t *u;
} s_fapl_t;

/* FNV-1a-style 64-bit hash over 8-byte words (then the tail bytes): detects a torn
 * or damaged entry, at memory speed. */
static uint64_t s_hash(uint64_t h, const void *data, size_t n)
{
    const uint8_t *p = data;
    size_t k = 0;
    for (; k + 8 <= n; k += 8) {
        uint64_t w;
        memcpy(&w, p + k, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
    }
    for (; k < n; k++)
        h = (h ^ p[k]) * 0x100000001b3ull;
    return h;
}

static int s_pread_all(int fd, void *buf, size_t n, uint64_t off)
{
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0) { /* past the end of the file: zeros, as HDF5 expects */
            memset(p, 0, n);
            return 0;
        }
        p += r;
        off += (uint64_t)r;
        n -= (size_t)r;
    }
    return 0;
}

static int s_pwrite_all(int fd, const void *buf, size_t n, uint64_t off)
{
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        p += w;
        off += (uint64_t)w;
        n -= (size_t)w;
    }
    return 0;
}

/* The kernel's boot id (36 characters), "" when unknown (then no log is trusted). */
static void s_boot_id(char out[S_BOOT_BYTES])
{
    memset(out, 0, S_BOOT_BYTES);
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (!f)
        return;
    if (!fgets(out, S_BOOT_BYTES, f))
        out[0] = '\0';
    fclose(f);
    out[strcspn(out, "\n")] = '\0';
    memset(out + strlen(out), 0, S_BOOT_BYTES - strlen(out));
}

/* Hash of the first and the last page of a file of size eof: recorded at each
 * checkpoint and compared after a rollback, so a file replaced or damaged behind the
 * writer's back (not the one the log was written for) is refused. -1 on I/O error. */
static int s_probe(int fd, uint64_t eof, uint64_t *out)
{
    uint8_t pg[S_PAGE];
    uint64_t h = s_hash(S_HASH_INIT, &eof, 8);
    size_t n = eof < S_PAGE ? (size_t)eof : S_PAGE;
    if (s_pread_all(fd, pg, n, 0) < 0)
        return -1;
    h = s_hash(h, pg, n);
    if (s_pread_all(fd, pg, n, eof - n) < 0)
        return -1;
    *out = s_hash(h, pg, n);
    return 0;
}

/* ---------------------------------------------------------------- logging */

/* Appends one entry: the checkpoint bytes of [off, off + len), then marks its pages. */
static int s_append(wisp_h5undo_t *u, uint64_t off, const uint8_t *bytes, size_t len)
{
    uint64_t len64 = len, hdr[3];
    uint64_t h = s_hash(S_HASH_INIT, &off, 8);
    h = s_hash(h, &len64, 8);
    hdr[0] = off;
    hdr[1] = len64;
    hdr[2] = s_hash(h, bytes, len);
    struct iovec iov[2] = {{hdr, sizeof hdr}, {(void *)bytes, len}};
    size_t left = sizeof hdr + len;
    while (left > 0) {
        ssize_t w = writev(u->log_fd, iov, 2);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        left -= (size_t)w;
        u->log_off += (uint64_t)w;
        for (int k = 0; k < 2 && w > 0; k++) { /* a short write: go on after its end */
            size_t d = (size_t)w < iov[k].iov_len ? (size_t)w : iov[k].iov_len;
            iov[k].iov_base = (uint8_t *)iov[k].iov_base + d;
            iov[k].iov_len -= d;
            w -= (ssize_t)d;
        }
    }
    for (uint64_t p = off / S_PAGE; p < (off + len + S_PAGE - 1) / S_PAGE; p++) {
        size_t w = (size_t)(p / 64);
        if (u->saved[w] == 0) {
            if (u->n_touched == u->touched_cap) {
                size_t cap = u->touched_cap ? 2 * u->touched_cap : 1024;
                size_t *t = realloc(u->touched, cap * sizeof *t);
                if (!t)
                    return -1;
                u->touched = t;
                u->touched_cap = cap;
            }
            u->touched[u->n_touched++] = w;
        }
        u->saved[w] |= 1ull << (p % 64);
    }
    u->stats.entries++;
    u->stats.bytes += len;
    u->stats.total_bytes += len;
    return 0;
}

/* Before a write of buf (NULL: a cut) over [addr, addr + size) of f: saves the
 * checkpoint bytes of every page below the checkpoint's size that the write changes
 * and that was not saved yet (consecutive pages as one entry). */
static int s_save(wisp_h5undo_t *u, s_file_t *f, uint64_t addr, size_t size, const uint8_t *buf)
{
    const uint64_t lim = u->ckpt_eof;
    if (addr >= lim || size == 0)
        return 0;
    const uint64_t end = addr + size < lim ? addr + size : lim;
    const uint64_t r0 = addr / S_PAGE * S_PAGE;
    const uint64_t r1 =
        (end + S_PAGE - 1) / S_PAGE * S_PAGE < lim ? (end + S_PAGE - 1) / S_PAGE * S_PAGE : lim;
    if (r1 - r0 > u->scratch_cap) {
        uint8_t *s = realloc(u->scratch, r1 - r0);
        if (!s)
            return -1;
        u->scratch = s;
        u->scratch_cap = r1 - r0;
    }
    if (s_pread_all(f->fd, u->scratch, r1 - r0, r0) < 0)
        return -1;
    uint64_t run0 = 0, run1 = 0; /* pending run of pages to save */
    for (uint64_t ps = r0; ps < r1; ps += S_PAGE) {
        uint64_t pe = ps + S_PAGE < lim ? ps + S_PAGE : lim, p = ps / S_PAGE;
        int changed = 0;
        if (!(u->saved[p / 64] >> (p % 64) & 1)) {
            uint64_t o0 = addr > ps ? addr : ps, o1 = addr + size < pe ? addr + size : pe;
            changed = !buf || memcmp(buf + (o0 - addr), u->scratch + (o0 - r0), o1 - o0) != 0;
        }
        if (changed && run1 == ps) {
            run1 = pe;
            continue;
        }
        if (run1 > run0 && s_append(u, run0, u->scratch + (run0 - r0), run1 - run0) < 0)
            return -1;
        run0 = run1 = changed ? ps : 0;
        if (changed)
            run1 = pe;
    }
    if (run1 > run0 && s_append(u, run0, u->scratch + (run0 - r0), run1 - run0) < 0)
        return -1;
    return 0;
}

/* ---------------------------------------------------------------- the driver */

static void *s_fapl_get(H5FD_t *file)
{
    s_fapl_t *fa = malloc(sizeof *fa);
    if (fa)
        fa->u = ((s_file_t *)file)->u;
    return fa;
}

static void *s_fapl_copy(const void *old)
{
    s_fapl_t *fa = malloc(sizeof *fa);
    if (fa)
        memcpy(fa, old, sizeof *fa);
    return fa;
}

static herr_t s_fapl_free(void *fa)
{
    free(fa);
    return 0;
}

/* Pushes what failed, with errno's text, onto HDF5's error stack, as HDF5's own sec2
 * driver does: the caller's message (wisp_h5_fail) quotes the innermost entry, so a full
 * disk reads "No space left on device" instead of a bare "cannot create file". */
static void s_push_errno(const char *func, hid_t maj, hid_t min, const char *what)
{
    int e = errno;
    H5Epush2(H5E_DEFAULT, __FILE__, func, __LINE__, H5E_ERR_CLS, maj, min, "%s: %s", what,
             strerror(e));
    errno = e;
}

static H5FD_t *s_open(const char *name, unsigned flags, hid_t fapl, haddr_t maxaddr)
{
    (void)maxaddr;
    const s_fapl_t *fa = H5Pget_driver_info(fapl);
    if (!fa || !fa->u)
        return NULL;
    int o = (flags & H5F_ACC_RDWR) ? O_RDWR : O_RDONLY;
    o |= (flags & H5F_ACC_TRUNC) ? O_TRUNC : 0;
    o |= (flags & H5F_ACC_CREAT) ? O_CREAT : 0;
    o |= (flags & H5F_ACC_EXCL) ? O_EXCL : 0;
    int fd = open(name, o | O_CLOEXEC, 0666);
    struct stat st;
    s_file_t *f = NULL;
    if (fd < 0 || fstat(fd, &st) != 0 || !(f = calloc(1, sizeof *f))) {
        s_push_errno(__func__, H5E_FILE, H5E_CANTOPENFILE, "unable to open file");
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    f->fd = fd;
    f->eof = (haddr_t)st.st_size;
    f->dev = st.st_dev;
    f->ino = st.st_ino;
    f->u = fa->u;
    /* HDF5 may probe a file (open, close) before the real open: the last one opened
     * is the one whose writes are logged. */
    fa->u->file = f;
    return &f->pub;
}

static herr_t s_close(H5FD_t *file)
{
    s_file_t *f = (s_file_t *)file;
    int rc = close(f->fd);
    if (f->u && f->u->file == f)
        f->u->file = NULL;
    free(f);
    return rc == 0 ? 0 : -1;
}

static int s_cmp(const H5FD_t *a, const H5FD_t *b)
{
    const s_file_t *x = (const s_file_t *)a, *y = (const s_file_t *)b;
    if (x->dev != y->dev)
        return x->dev < y->dev ? -1 : 1;
    if (x->ino != y->ino)
        return x->ino < y->ino ? -1 : 1;
    return 0;
}

static herr_t s_query(const H5FD_t *file, unsigned long *flags)
{
    (void)file;
    *flags = H5FD_FEAT_AGGREGATE_METADATA | H5FD_FEAT_ACCUMULATE_METADATA | H5FD_FEAT_DATA_SIEVE |
             H5FD_FEAT_AGGREGATE_SMALLDATA;
    return 0;
}

static haddr_t s_get_eoa(const H5FD_t *file, H5FD_mem_t type)
{
    (void)type;
    return ((const s_file_t *)file)->eoa;
}

static herr_t s_set_eoa(H5FD_t *file, H5FD_mem_t type, haddr_t addr)
{
    (void)type;
    ((s_file_t *)file)->eoa = addr;
    return 0;
}

static haddr_t s_get_eof(const H5FD_t *file, H5FD_mem_t type)
{
    (void)type;
    return ((const s_file_t *)file)->eof;
}

static herr_t s_get_handle(H5FD_t *file, hid_t fapl, void **handle)
{
    (void)fapl;
    *handle = &((s_file_t *)file)->fd;
    return 0;
}

static herr_t s_read(H5FD_t *file, H5FD_mem_t type, hid_t dxpl, haddr_t addr, size_t size,
                     void *buf)
{
    (void)type;
    (void)dxpl;
    s_file_t *f = (s_file_t *)file;
    if (addr == HADDR_UNDEF || addr + size > f->eoa || addr + size < addr)
        return -1;
    if (s_pread_all(f->fd, buf, size, addr) == 0)
        return 0;
    s_push_errno(__func__, H5E_IO, H5E_READERROR, "file read failed");
    return -1;
}

static herr_t s_write(H5FD_t *file, H5FD_mem_t type, hid_t dxpl, haddr_t addr, size_t size,
                      const void *buf)
{
    (void)type;
    (void)dxpl;
    s_file_t *f = (s_file_t *)file;
    if (addr == HADDR_UNDEF || addr + size > f->eoa || addr + size < addr)
        return -1;
    /* The checkpoint bytes first: the log entry is complete before the file changes. */
    if (f->u && f->u->file == f && s_save(f->u, f, addr, size, buf) < 0) {
        s_push_errno(__func__, H5E_IO, H5E_WRITEERROR, "rollback log write failed");
        return -1;
    }
    if (s_pwrite_all(f->fd, buf, size, addr) < 0) {
        s_push_errno(__func__, H5E_IO, H5E_WRITEERROR, "file write failed");
        return -1;
    }
    if (addr + size > f->eof)
        f->eof = addr + size;
    return 0;
}

static herr_t s_truncate(H5FD_t *file, hid_t dxpl, hbool_t closing)
{
    (void)dxpl;
    (void)closing;
    s_file_t *f = (s_file_t *)file;
    if (f->eoa == f->eof)
        return 0;
    if (f->eoa < f->eof && f->u && f->u->file == f &&
        s_save(f->u, f, f->eoa, (size_t)(f->eof - f->eoa), NULL) < 0) {
        s_push_errno(__func__, H5E_IO, H5E_WRITEERROR, "rollback log write failed");
        return -1;
    }
    if (ftruncate(f->fd, (off_t)f->eoa) != 0) {
        s_push_errno(__func__, H5E_IO, H5E_SEEKERROR, "file truncate failed");
        return -1;
    }
    f->eof = f->eoa;
    return 0;
}

static herr_t s_lock(H5FD_t *file, hbool_t rw)
{
    s_file_t *f = (s_file_t *)file;
    if (flock(f->fd, (rw ? LOCK_EX : LOCK_SH) | LOCK_NB) != 0 && errno != ENOSYS)
        return -1;
    return 0;
}

static herr_t s_unlock(H5FD_t *file)
{
    s_file_t *f = (s_file_t *)file;
    if (flock(f->fd, LOCK_UN) != 0 && errno != ENOSYS)
        return -1;
    return 0;
}

static const H5FD_class_t s_class = {
    .name = "wisp_undo",
    .maxaddr = (haddr_t)INT64_MAX,
    .fc_degree = H5F_CLOSE_WEAK,
    .fapl_size = sizeof(s_fapl_t),
    .fapl_get = s_fapl_get,
    .fapl_copy = s_fapl_copy,
    .fapl_free = s_fapl_free,
    .open = s_open,
    .close = s_close,
    .cmp = s_cmp,
    .query = s_query,
    .get_eoa = s_get_eoa,
    .set_eoa = s_set_eoa,
    .get_eof = s_get_eof,
    .get_handle = s_get_handle,
    .read = s_read,
    .write = s_write,
    .truncate = s_truncate,
    .lock = s_lock,
    .unlock = s_unlock,
    .fl_map = H5FD_FLMAP_DICHOTOMY,
};

/* ---------------------------------------------------------------- public */

wisp_h5undo_t *wisp_h5undo_new(const char *log_path, wisp_error_t *err)
{
    wisp_h5undo_t *u = calloc(1, sizeof *u);
    size_t n = strlen(log_path);
    if (!u || !(u->log_path = strdup(log_path)) || !(u->tmp_path = malloc(n + 5))) {
        wisp_h5undo_destroy(&u);
        wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", log_path);
        return NULL;
    }
    memcpy(u->tmp_path, log_path, n);
    memcpy(u->tmp_path + n, ".tmp", 5);
    u->log_fd = -1;
    if ((u->driver = H5FDregister(&s_class)) < 0) {
        wisp_h5undo_destroy(&u);
        wisp_error_set(err, WISP_ERR_HDF5, "%s: cannot register the HDF5 file driver", log_path);
        return NULL;
    }
    return u;
}

int wisp_h5undo_set_fapl(wisp_h5undo_t *u, hid_t fapl, const char *file, wisp_error_t *err)
{
    s_fapl_t fa = {u};
    if (H5Pset_driver(fapl, u->driver, &fa) < 0)
        return wisp_error_set(err, WISP_ERR_HDF5, "%s: cannot set the HDF5 file driver", file);
    return WISP_OK;
}

/* Writes a new log holding only the header (checkpoint at file size eof, meta), by
 * LOG.tmp and a rename, and makes it the log appended to; the page marks start over. */
static int s_new_log(wisp_h5undo_t *u, int file_fd, uint64_t eof, const void *meta, size_t n,
                     wisp_error_t *err)
{
    size_t len = S_HDR_FIXED + n + 8;
    uint64_t probe = 0;
    if (s_probe(file_fd, eof, &probe) < 0)
        return wisp_error_set(err, WISP_ERR_IO, "%s: cannot read the file: %s", u->log_path,
                              strerror(errno));
    uint8_t *b = malloc(len);
    if (!b)
        return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", u->log_path);
    uint32_t n32 = (uint32_t)n;
    memcpy(b, S_MAGIC, 8);
    s_boot_id((char *)b + 8);
    memcpy(b + 8 + S_BOOT_BYTES, &eof, 8);
    memcpy(b + 8 + S_BOOT_BYTES + 8, &probe, 8);
    memcpy(b + 8 + S_BOOT_BYTES + 16, &n32, 4);
    if (n)
        memcpy(b + S_HDR_FIXED, meta, n);
    uint64_t h = s_hash(S_HASH_INIT, b, S_HDR_FIXED + n);
    memcpy(b + S_HDR_FIXED + n, &h, 8);
    int fd = open(u->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || s_pwrite_all(fd, b, len, 0) < 0 || lseek(fd, (off_t)len, SEEK_SET) < 0 ||
        rename(u->tmp_path, u->log_path) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        free(b);
        return wisp_error_set(err, WISP_ERR_IO, "%s: cannot write the rollback log: %s",
                              u->log_path, strerror(e));
    }
    free(b);
    if (u->log_fd >= 0)
        close(u->log_fd);
    u->log_fd = fd;
    u->log_off = len;
    for (size_t k = 0; k < u->n_touched; k++)
        u->saved[u->touched[k]] = 0;
    u->n_touched = 0;
    size_t words = (size_t)((eof / S_PAGE + 64) / 64);
    if (words > u->saved_words) {
        uint64_t *s = realloc(u->saved, words * sizeof *s);
        if (!s) {
            /* The log is valid but the marks cannot cover the file: no checkpoint. */
            close(u->log_fd);
            u->log_fd = -1;
            unlink(u->log_path);
            return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", u->log_path);
        }
        memset(s + u->saved_words, 0, (words - u->saved_words) * sizeof *s);
        u->saved = s;
        u->saved_words = words;
    }
    u->ckpt_eof = eof;
    u->stats.entries = u->stats.bytes = 0;
    u->stats.checkpoints++;
    return WISP_OK;
}

int wisp_h5undo_checkpoint(wisp_h5undo_t *u, const void *meta, size_t n, wisp_error_t *err)
{
    struct stat st;
    if (n > S_MAX_META)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: checkpoint meta of %zu bytes", u->log_path,
                              n);
    if (!u->file)
        return wisp_error_set(err, WISP_ERR_STATE, "%s: checkpoint without an open file",
                              u->log_path);
    if (fstat(u->file->fd, &st) != 0)
        return wisp_error_set(err, WISP_ERR_IO, "%s: %s", u->log_path, strerror(errno));
    return s_new_log(u, u->file->fd, (uint64_t)st.st_size, meta, n, err);
}

int wisp_h5undo_has_checkpoint(const wisp_h5undo_t *u)
{
    return u->log_fd >= 0;
}

void wisp_h5undo_get_stats(const wisp_h5undo_t *u, wisp_h5undo_stats_t *out)
{
    *out = u->stats;
}

void wisp_h5undo_destroy(wisp_h5undo_t **pu)
{
    if (!pu || !*pu)
        return;
    wisp_h5undo_t *u = *pu;
    if (u->driver >= 0 && u->driver != 0)
        H5FDunregister(u->driver);
    if (u->log_fd >= 0)
        close(u->log_fd);
    free(u->log_path);
    free(u->tmp_path);
    free(u->saved);
    free(u->touched);
    free(u->scratch);
    free(u);
    *pu = NULL;
}

/* Reads and checks the log's header: *eof, *probe, *meta (malloc'd). */
static int s_read_header(wisp_h5undo_t *u, FILE *lf, uint64_t *eof, uint64_t *probe, uint8_t **meta,
                         size_t *n, wisp_error_t *err)
{
    uint8_t fx[S_HDR_FIXED];
    char boot[S_BOOT_BYTES];
    uint32_t n32 = 0;
    uint64_t h_read = 0;
    const char *l = u->log_path;
    if (fread(fx, 1, sizeof fx, lf) != sizeof fx || memcmp(fx, S_MAGIC, 8) != 0)
        return wisp_error_set(err, WISP_ERR_STATE, "%s: not a rollback log", l);
    memcpy(eof, fx + 8 + S_BOOT_BYTES, 8);
    memcpy(probe, fx + 8 + S_BOOT_BYTES + 8, 8);
    memcpy(&n32, fx + 8 + S_BOOT_BYTES + 16, 4);
    if (n32 > S_MAX_META)
        return wisp_error_set(err, WISP_ERR_STATE, "%s: corrupt header", l);
    /* The hash runs over the header as one run of bytes (it works in 8-byte words). */
    uint8_t *all = malloc(sizeof fx + (size_t)n32), *m = malloc((size_t)n32 + 1);
    if (!all || !m) {
        free(all);
        free(m);
        return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", l);
    }
    memcpy(all, fx, sizeof fx);
    int ok = fread(all + sizeof fx, 1, n32, lf) == n32 && fread(&h_read, 8, 1, lf) == 1 &&
             s_hash(S_HASH_INIT, all, sizeof fx + n32) == h_read;
    memcpy(m, all + sizeof fx, n32);
    free(all);
    if (!ok) {
        free(m);
        return wisp_error_set(err, WISP_ERR_STATE, "%s: torn or corrupt header", l);
    }
    s_boot_id(boot);
    if (!boot[0] || memcmp(boot, fx + 8, S_BOOT_BYTES) != 0) {
        free(m);
        return wisp_error_set(err, WISP_ERR_STATE,
                              "%s: written before a reboot or on another host (the page cache "
                              "that made it valid is gone)",
                              l);
    }
    *meta = m;
    *n = n32;
    return WISP_OK;
}

static int s_cmp_range(const void *a, const void *b)
{
    const uint64_t *x = a, *y = b;
    return x[0] < y[0] ? -1 : x[0] > y[0];
}

/* 1 when the ranges (n pairs [off, end), sorted here) cover [lo, hi). */
static int s_covers(uint64_t *ranges, size_t n, uint64_t lo, uint64_t hi)
{
    if (n > 1) /* ranges is NULL when n is 0, which qsort must not be given */
        qsort(ranges, n, 2 * sizeof *ranges, s_cmp_range);
    for (size_t k = 0; k < n && lo < hi; k++)
        if (ranges[2 * k] <= lo && ranges[2 * k + 1] > lo)
            lo = ranges[2 * k + 1];
    return lo >= hi;
}

/* Writes every intact entry of the log (after its header) back into fd. A file now
 * shorter (cur_size) than its checkpoint (ckpt_eof) was cut by the writer, which saved
 * the cut pages first: the entries must cover [cur_size, ckpt_eof). */
static int s_apply(wisp_h5undo_t *u, FILE *lf, int fd, uint64_t ckpt_eof, uint64_t cur_size,
                   wisp_error_t *err)
{
    uint8_t *buf = NULL;
    uint64_t *cut = NULL; /* entries reaching past cur_size, as [off, end) pairs */
    size_t cap = 0, n_cut = 0, cut_cap = 0;
    int rc = WISP_OK;
    uint64_t hdr[3];
    while (fread(hdr, 1, sizeof hdr, lf) == sizeof hdr) {
        uint64_t off = hdr[0], len = hdr[1];
        if (len == 0 || len > ckpt_eof || off > ckpt_eof - len) {
            rc = wisp_error_set(err, WISP_ERR_STATE, "%s: corrupt entry", u->log_path);
            break;
        }
        if (len > cap) {
            uint8_t *q = realloc(buf, (size_t)len);
            if (!q) {
                rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", u->log_path);
                break;
            }
            buf = q;
            cap = (size_t)len;
        }
        if (fread(buf, 1, (size_t)len, lf) != len)
            break; /* torn last entry: its file write had not started */
        uint64_t h = s_hash(s_hash(s_hash(S_HASH_INIT, &off, 8), &len, 8), buf, (size_t)len);
        if (h != hdr[2]) {
            rc = wisp_error_set(err, WISP_ERR_STATE, "%s: damaged entry at offset %llu",
                                u->log_path, (unsigned long long)off);
            break;
        }
        if (s_pwrite_all(fd, buf, (size_t)len, off) < 0) {
            rc = wisp_error_set(err, WISP_ERR_IO, "%s: cannot restore: %s", u->log_path,
                                strerror(errno));
            break;
        }
        if (off + len > cur_size) {
            if (n_cut == cut_cap) {
                size_t c2 = cut_cap ? 2 * cut_cap : 64;
                uint64_t *q = realloc(cut, 2 * c2 * sizeof *q);
                if (!q) {
                    rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", u->log_path);
                    break;
                }
                cut = q;
                cut_cap = c2;
            }
            cut[2 * n_cut] = off;
            cut[2 * n_cut + 1] = off + len;
            n_cut++;
        }
    }
    if (rc == WISP_OK && cur_size < ckpt_eof && !s_covers(cut, n_cut, cur_size, ckpt_eof))
        rc = wisp_error_set(err, WISP_ERR_STATE,
                            "%s: the file is shorter than its checkpoint and the log does not "
                            "cover the difference",
                            u->log_path);
    free(buf);
    free(cut);
    return rc;
}

int wisp_h5undo_rollback(wisp_h5undo_t *u, const char *file, uint8_t **meta, size_t *meta_len,
                         wisp_error_t *err)
{
    uint64_t eof = 0, probe = 0, now = 0;
    uint8_t *m = NULL;
    size_t n = 0;
    int rc, fd = -1;
    struct stat st;
    FILE *lf = fopen(u->log_path, "rb");
    if (!lf)
        return wisp_error_set(err, WISP_ERR_STATE, "%s: %s", u->log_path, strerror(errno));
    if ((rc = s_read_header(u, lf, &eof, &probe, &m, &n, err)) != WISP_OK)
        goto done;
    if ((fd = open(file, O_RDWR | O_CLOEXEC)) < 0 || fstat(fd, &st) != 0) {
        rc = wisp_error_set(err, WISP_ERR_STATE, "%s: %s", file, strerror(errno));
        goto done;
    }
    uint64_t size = (uint64_t)st.st_size;
    if ((rc = s_apply(u, lf, fd, eof, size < eof ? size : eof, err)) != WISP_OK)
        goto done;
    if (ftruncate(fd, (off_t)eof) != 0) {
        rc = wisp_error_set(err, WISP_ERR_IO, "%s: cannot restore: %s", file, strerror(errno));
        goto done;
    }
    if (s_probe(fd, eof, &now) < 0 || now != probe) {
        rc = wisp_error_set(err, WISP_ERR_STATE,
                            "%s: not the file its rollback log was written for (replaced or "
                            "damaged)",
                            file);
        goto done;
    }
    /* The file is the checkpoint again: a fresh log for it, so that the writes of the
     * resumed writer are saved against the same state. */
    if ((rc = s_new_log(u, fd, eof, m, n, err)) != WISP_OK)
        goto done;
    *meta = m;
    *meta_len = n;
    m = NULL;
done:
    if (fd >= 0)
        close(fd);
    fclose(lf);
    free(m);
    return rc;
}

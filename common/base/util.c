#include "base/util.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Every block starts with one WISP_ALIGN-sized header so wisp_free knows how it was
 * made. Large blocks (memory plans, not per-clip buffers) are anonymous mappings: the
 * kernel hands out zero pages lazily, so a buffer planned for the worst case (3000
 * frames) costs page faults only for the part a run touches — on virtual machines a
 * fault costs tens of microseconds, and zero-filling a 100 MB plan eagerly took a
 * second. Transparent huge pages are requested for them to cut the faults further.
 * Per-clip buffers (a 30 s clip is 1.9 MB) stay below the threshold: the heap
 * recycles them, where a fresh mapping per clip would fault every page each time. */
#define S_MAP_THRESHOLD ((size_t)16 << 20)
#define S_ALLOC_MAGIC   0x77697370u /* "wisp" */

typedef struct {
    size_t total;    /* bytes of the whole block, header included */
    uint32_t magic;  /* S_ALLOC_MAGIC: catches wisp_free of a foreign pointer */
    uint32_t mapped; /* 1: mmap'd, 0: aligned_alloc'd */
} s_alloc_header_t;

static void *s_alloc(size_t n, int zero)
{
    if (n > SIZE_MAX - 2 * WISP_ALIGN)
        return NULL;
    size_t total = WISP_ALIGN + (n + WISP_ALIGN - 1) / WISP_ALIGN * WISP_ALIGN;
    char *block;
    int mapped = total >= S_MAP_THRESHOLD;
    if (mapped) {
        block = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (block == MAP_FAILED)
            return NULL;
        madvise(block, total, MADV_HUGEPAGE); /* advisory: failure is harmless */
    } else {
        block = aligned_alloc(WISP_ALIGN, total);
        if (!block)
            return NULL;
        if (zero)
            memset(block, 0, total);
        else
            memset(block, 0, WISP_ALIGN); /* the header's padding */
    }
    s_alloc_header_t *h = (s_alloc_header_t *)block;
    h->total = total;
    h->magic = S_ALLOC_MAGIC;
    h->mapped = (uint32_t)mapped;
    return block + WISP_ALIGN;
}

void *wisp_alloc(size_t n)
{
    return s_alloc(n, 1);
}

void *wisp_alloc_raw(size_t n)
{
    return s_alloc(n, 0);
}

void wisp_free(void *p)
{
    if (!p)
        return;
    char *block = (char *)p - WISP_ALIGN;
    s_alloc_header_t *h = (s_alloc_header_t *)block;
    assert(h->magic == S_ALLOC_MAGIC && "wisp_free of memory not from wisp_alloc");
    h->magic = 0;
    if (h->mapped)
        munmap(block, h->total);
    else
        free(block);
}

double wisp_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int wisp_path_join(char *dst, size_t dst_size, const char *dir, const char *name)
{
    int n;
    if (name[0] == '/' || !dir || !dir[0])
        n = snprintf(dst, dst_size, "%s", name);
    else
        n = snprintf(dst, dst_size, "%s/%s", dir, name);
    return (n < 0 || (size_t)n >= dst_size) ? WISP_ERR_ARG : WISP_OK;
}

int wisp_path_dirname(char *dst, size_t dst_size, const char *path)
{
    const char *slash = strrchr(path, '/');
    int n;
    if (!slash)
        n = snprintf(dst, dst_size, ".");
    else if (slash == path)
        n = snprintf(dst, dst_size, "/");
    else
        n = snprintf(dst, dst_size, "%.*s", (int)(slash - path), path);
    return (n < 0 || (size_t)n >= dst_size) ? WISP_ERR_ARG : WISP_OK;
}

int wisp_read_file(const char *path, size_t max_bytes, char **out, size_t *out_len,
                   wisp_error_t *err)
{
    *out = NULL;
    if (out_len)
        *out_len = 0;
    int rc = WISP_OK;
    char *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return wisp_error_set(err, errno == ENOENT ? WISP_ERR_NOTFOUND : WISP_ERR_IO,
                              "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = wisp_error_set(err, WISP_ERR_IO, "%s: not a regular file", path);
        goto done;
    }
    if ((size_t)st.st_size > max_bytes) {
        rc = wisp_error_set(err, WISP_ERR_FORMAT, "%s: file is %lld bytes, limit is %zu", path,
                            (long long)st.st_size, max_bytes);
        goto done;
    }
    size_t len = (size_t)st.st_size;
    buf = malloc(len + 1);
    if (!buf) {
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory reading %zu bytes", path, len);
        goto done;
    }
    if (len && fread(buf, 1, len, f) != len) {
        rc = wisp_error_set(err, WISP_ERR_IO, "%s: short read", path);
        goto done;
    }
    buf[len] = '\0';
    *out = buf;
    buf = NULL;
    if (out_len)
        *out_len = len;
done:
    free(buf);
    fclose(f);
    return rc;
}

int wisp_write_file_atomic(const char *path, const void *data, size_t len, wisp_error_t *err)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return wisp_error_set(err, WISP_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            close(fd);
            unlink(tmp);
            return wisp_error_set(err, WISP_ERR_IO, "%s: write failed: %s", tmp, strerror(e));
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        unlink(tmp);
        return wisp_error_set(err, WISP_ERR_IO, "%s: flush failed: %s", tmp, strerror(errno));
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return wisp_error_set(err, WISP_ERR_IO, "%s: rename failed: %s", path, strerror(e));
    }
    return WISP_OK;
}

int wisp_mkdir_p(const char *path, wisp_error_t *err)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return wisp_error_set(err, WISP_ERR_IO, "%s: cannot create directory: %s", buf,
                                  strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return wisp_error_set(err, WISP_ERR_IO, "%s: cannot create directory: %s", buf,
                              strerror(errno));
    struct stat st;
    if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))
        return wisp_error_set(err, WISP_ERR_IO, "%s: exists and is not a directory", buf);
    return WISP_OK;
}

/* SHA-256 (FIPS 180-4). None of the project's libraries exposes a digest, and
 * the identities in result files must be the standard one users can check with
 * sha256sum. */

static const uint32_t s_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static uint32_t s_ror(uint32_t x, int n)
{
    return (x >> n) | (x << (32 - n));
}

static void s_sha256_block(wisp_sha256_t *c, const uint8_t *b)
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)b[4 * i] << 24 | (uint32_t)b[4 * i + 1] << 16 |
               (uint32_t)b[4 * i + 2] << 8 | b[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = s_ror(w[i - 15], 7) ^ s_ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = s_ror(w[i - 2], 17) ^ s_ror(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = c->h[0], bb = c->h[1], cc = c->h[2], d = c->h[3], e = c->h[4], f = c->h[5],
             g = c->h[6], h = c->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 =
            h + (s_ror(e, 6) ^ s_ror(e, 11) ^ s_ror(e, 25)) + ((e & f) ^ (~e & g)) + s_k[i] + w[i];
        uint32_t t2 =
            (s_ror(a, 2) ^ s_ror(a, 13) ^ s_ror(a, 22)) + ((a & bb) ^ (a & cc) ^ (bb & cc));
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = cc;
        cc = bb;
        bb = a;
        a = t1 + t2;
    }
    c->h[0] += a;
    c->h[1] += bb;
    c->h[2] += cc;
    c->h[3] += d;
    c->h[4] += e;
    c->h[5] += f;
    c->h[6] += g;
    c->h[7] += h;
}

void wisp_sha256_update(wisp_sha256_t *c, const void *data, size_t n)
{
    const uint8_t *p = data;
    c->bits += (uint64_t)n * 8;
    while (n > 0) {
        if (c->fill == 0 && n >= 64) { /* whole blocks straight from the input */
            s_sha256_block(c, p);
            p += 64;
            n -= 64;
            continue;
        }
        size_t take = 64 - c->fill < n ? 64 - c->fill : n;
        memcpy(c->block + c->fill, p, take);
        c->fill += take;
        p += take;
        n -= take;
        if (c->fill == 64) {
            s_sha256_block(c, c->block);
            c->fill = 0;
        }
    }
}

void wisp_sha256_init(wisp_sha256_t *c)
{
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(c->h, h0, sizeof h0);
    c->bits = 0;
    c->fill = 0;
}

void wisp_sha256_final(wisp_sha256_t *c, char hex[65])
{
    uint64_t bits = c->bits;
    uint8_t pad = 0x80;
    wisp_sha256_update(c, &pad, 1);
    pad = 0;
    while (c->fill != 56)
        wisp_sha256_update(c, &pad, 1);
    uint8_t len[8];
    for (int i = 0; i < 8; i++)
        len[i] = (uint8_t)(bits >> (56 - 8 * i));
    wisp_sha256_update(c, len, 8);
    for (int i = 0; i < 8; i++)
        snprintf(hex + 8 * i, 9, "%08x", c->h[i]);
}

void wisp_sha256_hex(const void *data, size_t len, char hex[65])
{
    wisp_sha256_t c;
    wisp_sha256_init(&c);
    wisp_sha256_update(&c, data, len);
    wisp_sha256_final(&c, hex);
}

int wisp_sha256_file(const char *path, char hex[65], wisp_error_t *err)
{
    wisp_sha256_t c;
    wisp_sha256_init(&c);
    FILE *f = fopen(path, "rb");
    if (!f)
        return wisp_error_set(err, WISP_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    uint8_t buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        wisp_sha256_update(&c, buf, n);
    int bad = ferror(f);
    fclose(f);
    if (bad)
        return wisp_error_set(err, WISP_ERR_IO, "%s: read error", path);
    wisp_sha256_final(&c, hex);
    return WISP_OK;
}

void wisp_rng_seed(wisp_rng_t *r, uint64_t seed)
{
    r->s = seed;
}

uint64_t wisp_rng_u64(wisp_rng_t *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

float wisp_rng_uniform(wisp_rng_t *r)
{
    return (float)(wisp_rng_u64(r) >> 40) * 0x1.0p-24f;
}

float wisp_rng_normal(wisp_rng_t *r)
{
    double u1 = ((double)(wisp_rng_u64(r) >> 11) + 1.0) * 0x1.0p-53;
    double u2 = (double)(wisp_rng_u64(r) >> 11) * 0x1.0p-53;
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * 3.14159265358979323846 * u2));
}

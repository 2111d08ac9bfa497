/* Small helpers shared by every module: aligned buffers, clocks, paths, files. */
#ifndef WISP_UTIL_H
#define WISP_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

#define WISP_ALIGN 64

/* For the few hot elementwise loops outside the nn kernels: compiled for AVX2 and the
 * x86-64 baseline and picked at load time (the Makefile builds for the baseline, and
 * 8-wide vectors halve these loops' time). No FMA contraction under -std=c11, so both
 * clones give the same bits. */
#if defined(__x86_64__) && defined(__GNUC__)
#define WISP_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define WISP_VECTOR_CLONES
#endif

/* 64-byte aligned, zero-filled allocation of n bytes (n may be 0). NULL on failure.
 * Release with wisp_free(). */
void *wisp_alloc(size_t n);
void wisp_free(void *p);

/* wisp_alloc without the zero fill below the mmap threshold, for buffers that are
 * written before they are read (zeroing megabytes per decoded clip is measurable). */
void *wisp_alloc_raw(size_t n);

/* Monotonic seconds, for timings. */
double wisp_now(void);

/* dst = dir + "/" + name unless name is absolute. Returns WISP_ERR_ARG if it
 * does not fit in dst_size. */
int wisp_path_join(char *dst, size_t dst_size, const char *dir, const char *name);

/* Directory part of path ("." when there is none), into dst. */
int wisp_path_dirname(char *dst, size_t dst_size, const char *path);

/* Reads a whole file into a NUL-terminated malloc'd buffer (free() it).
 * Refuses files larger than max_bytes. */
int wisp_read_file(const char *path, size_t max_bytes, char **out, size_t *out_len,
                   wisp_error_t *err);

/* Writes len bytes to path atomically: path.tmp, fsync, rename. */
int wisp_write_file_atomic(const char *path, const void *data, size_t len, wisp_error_t *err);

/* mkdir -p; 0 when the directory exists afterwards. */
int wisp_mkdir_p(const char *path, wisp_error_t *err);

/* Lowercase hex SHA-256 of a file (65 bytes incl. NUL) — used for model/adapter
 * identities in result files. */
int wisp_sha256_file(const char *path, char hex[65], wisp_error_t *err);
/* Lowercase hex SHA-256 of a memory buffer (run fingerprints). Cannot fail. */
void wisp_sha256_hex(const void *data, size_t len, char hex[65]);

/* Streaming SHA-256: init, update any number of times with any split, final; the digest
 * is that of the concatenated input (the run fingerprint hashes millions of paths without
 * first copying them into one buffer). Plain state, no allocation. */
typedef struct {
    uint32_t h[8];
    uint64_t bits;
    uint8_t block[64]; /* the partial block, fill bytes of it */
    size_t fill;
} wisp_sha256_t;
void wisp_sha256_init(wisp_sha256_t *c);
void wisp_sha256_update(wisp_sha256_t *c, const void *data, size_t n);
void wisp_sha256_final(wisp_sha256_t *c, char hex[65]);

/* splitmix64: the one seeded generator of the project (deterministic, portable). */
typedef struct {
    uint64_t s;
} wisp_rng_t;
void wisp_rng_seed(wisp_rng_t *r, uint64_t seed);
uint64_t wisp_rng_u64(wisp_rng_t *r);
/* Uniform in [0, 1) with 24 bits. */
float wisp_rng_uniform(wisp_rng_t *r);
/* Standard normal (Box-Muller, double precision internally). */
float wisp_rng_normal(wisp_rng_t *r);

#endif

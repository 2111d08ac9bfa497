/* st.h: safetensors reading (mmap) and writing.
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON
 * {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *  "__metadata__": {"k": "v"}}, then the data section (offsets relative to it).
 * A checkpoint is one .safetensors file or a directory holding model.safetensors
 * or a sharded model.safetensors.index.json ({"weight_map": {name: file}}).
 *
 * Every malformed input (header length past the end, bad JSON, unknown dtype,
 * offsets out of range, overlapping or not matching shape*dtype size) is refused
 * at open time with an error naming the file and the tensor. */
#ifndef WISP_ST_H
#define WISP_ST_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

#define WISP_ST_MAX_DIMS 8

typedef enum {
    WISP_DT_F32 = 0,
    WISP_DT_F16,
    WISP_DT_BF16,
    WISP_DT_F64,
    WISP_DT_I64,
    WISP_DT_I32,
    WISP_DT_I16,
    WISP_DT_I8,
    WISP_DT_U8,
    WISP_DT_BOOL,
} wisp_dtype_t;

/* "F32", "BF16", ...; element size in bytes. */
const char *wisp_dtype_name(wisp_dtype_t dt);
size_t wisp_dtype_size(wisp_dtype_t dt);

typedef struct {
    const char *name;   /* tensor name as stored */
    wisp_dtype_t dtype; /* stored dtype */
    int ndim;           /* 0..WISP_ST_MAX_DIMS */
    int64_t shape[WISP_ST_MAX_DIMS];
    size_t numel;     /* product of shape */
    size_t nbytes;    /* numel * dtype size */
    const void *data; /* into the mapping (may be unaligned) */
    const char *file; /* the shard file holding it */
} wisp_st_tensor_t;

typedef struct wisp_st wisp_st_t;

/* Opens a .safetensors file, or a directory (model.safetensors, else
 * model.safetensors.index.json, else the only *.safetensors in it). NULL on failure. */
wisp_st_t *wisp_st_open(const char *path, wisp_error_t *err);
void wisp_st_destroy(wisp_st_t **self);

int wisp_st_count(const wisp_st_t *self);
const wisp_st_tensor_t *wisp_st_at(const wisp_st_t *self, int i);
/* NULL when absent. */
const wisp_st_tensor_t *wisp_st_find(const wisp_st_t *self, const char *name);
/* Value of a __metadata__ key (first shard that has it), or NULL. */
const char *wisp_st_metadata(const wisp_st_t *self, const char *key);

/* An fp32 view of tensor `name`, checking its shape against (ndim, shape):
 * F32 data is returned in place when 4-byte aligned (no copy); F16/BF16 (and
 * unaligned F32) are converted once and cached inside self. Errors name the file,
 * the tensor and the expected vs stored shape. ndim < 0 skips the shape check.
 * The cache makes this call not thread-safe: fetch tensors from one thread (at
 * load time); the returned pointers stay valid until wisp_st_destroy. */
int wisp_st_get_f32(wisp_st_t *self, const char *name, int ndim, const int64_t *shape,
                    const float **out, wisp_error_t *err);

/* ---- Writing ------------------------------------------------------------ */
typedef struct wisp_st_writer wisp_st_writer_t;

wisp_st_writer_t *wisp_st_writer_new(void);
void wisp_st_writer_destroy(wisp_st_writer_t **self);
/* Adds a tensor; data is copied (converted from fp32 to dtype F32, F16 or BF16,
 * round-to-nearest-even). Names must be unique. */
int wisp_st_writer_add_f32(wisp_st_writer_t *self, const char *name, wisp_dtype_t dtype, int ndim,
                           const int64_t *shape, const float *data);
int wisp_st_writer_add_meta(wisp_st_writer_t *self, const char *key, const char *value);
/* Writes atomically (temporary name, fsync, rename); tensors sorted by name like
 * the Python safetensors library. */
int wisp_st_writer_save(wisp_st_writer_t *self, const char *path, wisp_error_t *err);

/* fp16/bf16 conversions (exact, RNE on the way down). */
float wisp_f16_to_f32(uint16_t h);
float wisp_bf16_to_f32(uint16_t h);
uint16_t wisp_f32_to_f16(float f);
uint16_t wisp_f32_to_bf16(float f);

#endif

/* st.c: safetensors reading (mmap, validated at open time) and writing.
 *
 * Reading: every shard file is mapped read-only; tensors point into the mapping.
 * All validation happens in wisp_st_open so that later accesses cannot fail on
 * malformed input: header length, JSON, dtype, shape vs byte span, offsets in
 * range and not overlapping, duplicate names, index entries present in their shard.
 *
 * Writing follows the Python/Rust safetensors library: tensors sorted by dtype
 * (wider first, which keeps every tensor aligned to its element size) then by
 * name, compact JSON header padded with spaces to a multiple of 8 bytes,
 * "__metadata__" first.
 *
 * The data is little-endian; wisp targets little-endian hosts only. */
#include "formats/st.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/util.h"

/* A header larger than this is refused as absurd (real ones are a few hundred KB). */
#define S_MAX_HEADER (100u * 1024u * 1024u)
/* Offsets are JSON numbers (doubles in cJSON); beyond 2^53 they are not exact. */
#define S_MAX_EXACT 9007199254740992.0

/* ---- dtypes ---------------------------------------------------------------- */
static const struct {
    const char *name;
    size_t size;
} s_dtypes[] = {
    [WISP_DT_F32] = {"F32", 4},   [WISP_DT_F16] = {"F16", 2}, [WISP_DT_BF16] = {"BF16", 2},
    [WISP_DT_F64] = {"F64", 8},   [WISP_DT_I64] = {"I64", 8}, [WISP_DT_I32] = {"I32", 4},
    [WISP_DT_I16] = {"I16", 2},   [WISP_DT_I8] = {"I8", 1},   [WISP_DT_U8] = {"U8", 1},
    [WISP_DT_BOOL] = {"BOOL", 1},
};
#define S_NDTYPES ((int)(sizeof s_dtypes / sizeof s_dtypes[0]))

const char *wisp_dtype_name(wisp_dtype_t dt)
{
    if ((int)dt < 0 || (int)dt >= S_NDTYPES)
        return "?";
    return s_dtypes[dt].name;
}

size_t wisp_dtype_size(wisp_dtype_t dt)
{
    if ((int)dt < 0 || (int)dt >= S_NDTYPES)
        return 0;
    return s_dtypes[dt].size;
}

static int s_dtype_parse(const char *name)
{
    for (int i = 0; i < S_NDTYPES; i++)
        if (strcmp(s_dtypes[i].name, name) == 0)
            return i;
    return -1;
}

/* ---- fp16 / bf16 ----------------------------------------------------------- */
static uint32_t s_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float s_bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float wisp_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1f) /* inf / nan: keep the payload */
        return s_bits_f32(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24 is exact in fp32 */
        float v = (float)man * 0x1p-24f;
        return sign ? -v : v;
    }
    return s_bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

float wisp_bf16_to_f32(uint16_t h)
{
    return s_bits_f32((uint32_t)h << 16);
}

/* Round-to-nearest-even fp32 -> fp16, subnormals included; NaN becomes the quiet
 * NaN 0x7e00 with its sign (as torch does), overflow becomes inf. */
uint16_t wisp_f32_to_f16(float f)
{
    uint32_t u = s_f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u)
        return sign | 0x7e00u;
    if (a >= 0x477ff000u) /* >= 65520 rounds to inf (65504 is the largest finite) */
        return sign | 0x7c00u;
    if (a < 0x38800000u) {
        /* below 2^-14: subnormal result, value = round(|f| * 2^24) units of 2^-24 */
        if (a < 0x33000000u) /* < 2^-25: rounds to zero (2^-25 itself ties to even 0) */
            return sign;
        uint32_t e = a >> 23; /* 102..112 */
        uint32_t m = (a & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e; /* 14..24: |f| * 2^24 = m >> shift */
        uint32_t q = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1u);
        uint32_t half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (q & 1u)))
            q++;
        return sign | (uint16_t)q; /* q may carry into the smallest normal: still right */
    }
    /* normal: rebias the exponent, round the 13 dropped bits to even */
    uint32_t r = a + 0x0fffu + ((a >> 13) & 1u);
    return sign | (uint16_t)((r - 0x38000000u) >> 13);
}

/* Round-to-nearest-even fp32 -> bf16 (torch's rule: NaN becomes 0x7fc0). */
uint16_t wisp_f32_to_bf16(float f)
{
    uint32_t u = s_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return 0x7fc0u;
    uint32_t r = u + 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(r >> 16);
}

/* ---- reader ---------------------------------------------------------------- */
typedef struct {
    char *path;     /* file path as opened */
    void *map;      /* whole-file mapping (NULL for an empty data section) */
    size_t map_len; /* file size */
    cJSON *meta;    /* "__metadata__" object, or NULL */
} s_shard_t;

struct wisp_st {
    char *path;        /* what the caller opened (file or directory) */
    s_shard_t *shards; /* nshards mapped files */
    int nshards;
    wisp_st_tensor_t *tensors; /* ntensors, sorted by name (bsearch in find) */
    int ntensors;
    float **cache; /* per tensor: converted fp32 copy, or NULL */
};

static int s_cmp_tensor_name(const void *a, const void *b)
{
    return strcmp(((const wisp_st_tensor_t *)a)->name, ((const wisp_st_tensor_t *)b)->name);
}

typedef struct {
    size_t begin, end;
    const char *name;
} s_span_t;

static int s_cmp_span(const void *a, const void *b)
{
    const s_span_t *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : (x->end > y->end);
}

/* A JSON number that is a non-negative integer exactly representable. */
static int s_json_uint(const cJSON *j, size_t *out)
{
    if (!cJSON_IsNumber(j))
        return -1;
    double v = j->valuedouble;
    if (!(v >= 0.0) || v > S_MAX_EXACT || floor(v) != v)
        return -1;
    if ((double)SIZE_MAX < v)
        return -1;
    *out = (size_t)v;
    return 0;
}

/* Approximate byte offset of a cJSON parse error within the header. */
static size_t s_err_offset(const char *base, size_t len, const char *at)
{
    if (!at || at < base || at > base + len)
        return 0;
    return (size_t)(at - base);
}

static int s_grow_tensors(wisp_st_t *self, int need, int *cap)
{
    if (need <= *cap)
        return 0;
    int ncap = *cap ? *cap * 2 : 64;
    while (ncap < need)
        ncap *= 2;
    wisp_st_tensor_t *t = realloc(self->tensors, (size_t)ncap * sizeof *t);
    if (!t)
        return WISP_ERR_NOMEM;
    self->tensors = t;
    *cap = ncap;
    return 0;
}

/* Maps one file, parses and validates its header, and appends its tensors.
 * names of appended tensors are strdup'd (freed in destroy). */
/* Opens, checks and maps one shard file into sh; *hlen is the header length, checked
 * against S_MAX_HEADER and the file size. */
static int s_map_shard(s_shard_t *sh, const char *path, uint64_t *hlen, wisp_error_t *err)
{
    int rc = WISP_OK;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return wisp_error_set(err, errno == ENOENT ? WISP_ERR_NOTFOUND : WISP_ERR_IO, "%s: %s",
                              path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = wisp_error_set(err, WISP_ERR_IO, "%s: %s", path, strerror(errno));
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = wisp_error_set(err, WISP_ERR_IO, "%s: not a regular file", path);
        goto done;
    }
    size_t fsize = (size_t)st.st_size;
    if (fsize < 8) {
        rc = wisp_error_set(
            err, WISP_ERR_FORMAT,
            "%s: not a safetensors file (%zu bytes, shorter than the 8-byte header length)", path,
            fsize);
        goto done;
    }
    sh->map = mmap(NULL, fsize, PROT_READ, MAP_PRIVATE, fd, 0);
    if (sh->map == MAP_FAILED) {
        sh->map = NULL;
        rc = wisp_error_set(err, WISP_ERR_IO, "%s: mmap: %s", path, strerror(errno));
        goto done;
    }
    sh->map_len = fsize;
    const unsigned char *base = sh->map;
    *hlen = 0;
    for (int i = 7; i >= 0; i--)
        *hlen = (*hlen << 8) | base[i];
    if (*hlen > S_MAX_HEADER)
        rc = wisp_error_set(
            err, WISP_ERR_FORMAT,
            "%s: header length %llu is absurd (limit %u bytes); not a safetensors file?", path,
            (unsigned long long)*hlen, S_MAX_HEADER);
    else if (*hlen > fsize - 8)
        rc = wisp_error_set(err, WISP_ERR_FORMAT,
                            "%s: header length %llu runs past the end of the file (%zu bytes)",
                            path, (unsigned long long)*hlen, fsize);
done:
    close(fd);
    return rc;
}

/* The header JSON (hlen bytes at hdr): an object, with only the library's space padding
 * after it. */
static int s_parse_header(const char *hdr, uint64_t hlen, const char *path, cJSON **root,
                          wisp_error_t *err)
{
    const char *end_ptr = NULL;
    *root = cJSON_ParseWithLengthOpts(hdr, (size_t)hlen, &end_ptr, 0);
    if (!*root)
        return wisp_error_set(
            err, WISP_ERR_FORMAT, "%s: header is not valid JSON (near byte %zu of %llu)", path,
            8 + s_err_offset(hdr, (size_t)hlen, end_ptr), (unsigned long long)hlen);
    if (!cJSON_IsObject(*root))
        return wisp_error_set(err, WISP_ERR_FORMAT, "%s: header is not a JSON object", path);
    for (const char *p = end_ptr ? end_ptr : hdr + hlen; p < hdr + hlen; p++)
        if (*p != ' ' && *p != '\n' && *p != '\t' && *p != '\r' && *p != '\0')
            return wisp_error_set(err, WISP_ERR_FORMAT,
                                  "%s: garbage after the header JSON at byte %zu", path,
                                  (size_t)(p - hdr) + 8);
    return WISP_OK;
}

/* __metadata__: an object of strings, kept (duplicated) in sh->meta. */
static int s_parse_metadata(s_shard_t *sh, const cJSON *ent, const char *path, wisp_error_t *err)
{
    if (!cJSON_IsObject(ent))
        return wisp_error_set(err, WISP_ERR_FORMAT, "%s: __metadata__ is not an object", path);
    const cJSON *kv;
    cJSON_ArrayForEach(kv, ent)
    {
        if (!cJSON_IsString(kv))
            return wisp_error_set(err, WISP_ERR_FORMAT,
                                  "%s: __metadata__ value '%s' is not a string", path,
                                  kv->string ? kv->string : "");
    }
    sh->meta = cJSON_Duplicate(ent, 1);
    if (!sh->meta)
        return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", path);
    return WISP_OK;
}

/* dtype and shape of tensor entry ent into t (numel, nbytes), every count checked. */
static int s_parse_dtype_shape(const cJSON *ent, const char *name, const char *path,
                               wisp_st_tensor_t *t, wisp_error_t *err)
{
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(ent, "dtype");
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(ent, "shape");
    int dt = s_dtype_parse(jd->valuestring);
    if (dt < 0)
        return wisp_error_set(err, WISP_ERR_UNSUPPORTED, "%s: tensor %s: unknown dtype \"%s\"",
                              path, name, jd->valuestring);
    int ndim = cJSON_GetArraySize(js);
    if (ndim > WISP_ST_MAX_DIMS)
        return wisp_error_set(err, WISP_ERR_UNSUPPORTED,
                              "%s: tensor %s: %d dimensions (at most %d)", path, name, ndim,
                              WISP_ST_MAX_DIMS);
    t->dtype = (wisp_dtype_t)dt;
    t->ndim = ndim;
    size_t numel = 1;
    int overflow = 0;
    for (int d = 0; d < ndim; d++) {
        size_t v;
        if (s_json_uint(cJSON_GetArrayItem(js, d), &v) != 0)
            return wisp_error_set(err, WISP_ERR_FORMAT,
                                  "%s: tensor %s: shape[%d] is not a non-negative integer", path,
                                  name, d);
        t->shape[d] = (int64_t)v;
        if (v != 0 && numel > SIZE_MAX / v)
            overflow = 1;
        else
            numel *= v;
    }
    size_t esz = s_dtypes[dt].size;
    if (overflow || numel > SIZE_MAX / esz)
        return wisp_error_set(err, WISP_ERR_FORMAT, "%s: tensor %s: shape is absurdly large", path,
                              name);
    t->numel = numel;
    t->nbytes = numel * esz;
    return WISP_OK;
}

/* One tensor entry into t and its byte span [*b, *e) of the data section (data_len
 * bytes): dtype, shape and offsets checked against each other and the file. */
static int s_parse_entry(const cJSON *ent, const char *name, const char *path, size_t data_len,
                         wisp_st_tensor_t *t, size_t *b, size_t *e, wisp_error_t *err)
{
    if (!cJSON_IsObject(ent))
        return wisp_error_set(err, WISP_ERR_FORMAT, "%s: tensor %s: entry is not an object", path,
                              name);
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(ent, "dtype");
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(ent, "shape");
    const cJSON *jo = cJSON_GetObjectItemCaseSensitive(ent, "data_offsets");
    if (!cJSON_IsString(jd) || !cJSON_IsArray(js) || !cJSON_IsArray(jo))
        return wisp_error_set(
            err, WISP_ERR_FORMAT,
            "%s: tensor %s: needs string \"dtype\", array \"shape\" and array \"data_offsets\"",
            path, name);
    int rc = s_parse_dtype_shape(ent, name, path, t, err);
    if (rc != WISP_OK)
        return rc;
    if (cJSON_GetArraySize(jo) != 2 || s_json_uint(cJSON_GetArrayItem(jo, 0), b) != 0 ||
        s_json_uint(cJSON_GetArrayItem(jo, 1), e) != 0 || *b > *e)
        return wisp_error_set(
            err, WISP_ERR_FORMAT,
            "%s: tensor %s: data_offsets must be [begin, end] integers with begin <= end", path,
            name);
    if (*e > data_len)
        return wisp_error_set(
            err, WISP_ERR_FORMAT,
            "%s: tensor %s: data_offsets [%zu, %zu] out of range (data section is %zu bytes)", path,
            name, *b, *e, data_len);
    if (*e - *b != t->nbytes) {
        char sh_txt[128];
        int n = 0;
        sh_txt[0] = 0;
        for (int d = 0; d < t->ndim && n < (int)sizeof sh_txt - 24; d++)
            n += snprintf(sh_txt + n, sizeof sh_txt - (size_t)n, "%s%lld", d ? "," : "",
                          (long long)t->shape[d]);
        return wisp_error_set(
            err, WISP_ERR_FORMAT,
            "%s: tensor %s: shape [%s] x %s needs %zu bytes but data_offsets span %zu", path, name,
            sh_txt, s_dtypes[t->dtype].name, t->nbytes, *e - *b);
    }
    return WISP_OK;
}

/* Tensors may not overlap in the data section (empty tensors occupy nothing). */
static int s_check_overlaps(s_span_t *spans, int nspans, const char *path, wisp_error_t *err)
{
    if (nspans > 1)
        qsort(spans, (size_t)nspans, sizeof *spans, s_cmp_span);
    size_t prev_end = 0;
    const char *prev_name = NULL;
    for (int i = 0; i < nspans; i++) {
        if (spans[i].begin == spans[i].end)
            continue;
        if (prev_name && spans[i].begin < prev_end)
            return wisp_error_set(err, WISP_ERR_FORMAT,
                                  "%s: tensors %s and %s overlap in the data section", path,
                                  prev_name, spans[i].name);
        prev_end = spans[i].end;
        prev_name = spans[i].name;
    }
    return WISP_OK;
}

static int s_load_shard(wisp_st_t *self, const char *path, int *cap, wisp_error_t *err)
{
    cJSON *root = NULL;
    s_span_t *spans = NULL;
    s_shard_t *ns = realloc(self->shards, (size_t)(self->nshards + 1) * sizeof *ns);
    if (!ns)
        return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", path);
    self->shards = ns;
    s_shard_t *sh = &self->shards[self->nshards];
    memset(sh, 0, sizeof *sh);
    sh->path = strdup(path);
    if (!sh->path)
        return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", path);
    self->nshards++; /* from here on destroy releases it */
    uint64_t hlen = 0;
    int rc = s_map_shard(sh, path, &hlen, err);
    if (rc != WISP_OK)
        return rc;
    const char *hdr = (const char *)sh->map + 8;
    const char *data = hdr + hlen;
    size_t data_len = sh->map_len - 8 - (size_t)hlen;
    if ((rc = s_parse_header(hdr, hlen, path, &root, err)) != WISP_OK)
        goto done;
    int nent = cJSON_GetArraySize(root);
    spans = calloc((size_t)(nent > 0 ? nent : 1), sizeof *spans);
    if (!spans) {
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    int nspans = 0;
    const cJSON *ent;
    cJSON_ArrayForEach(ent, root)
    {
        const char *name = ent->string ? ent->string : "";
        if (strcmp(name, "__metadata__") == 0) {
            if ((rc = s_parse_metadata(sh, ent, path, err)) != WISP_OK)
                goto done;
            continue;
        }
        wisp_st_tensor_t t = {0};
        size_t b = 0, e = 0;
        if ((rc = s_parse_entry(ent, name, path, data_len, &t, &b, &e, err)) != WISP_OK)
            goto done;
        t.data = data + b;
        t.file = sh->path;
        t.name = strdup(name);
        if (!t.name || s_grow_tensors(self, self->ntensors + 1, cap) != 0) {
            free((void *)t.name);
            rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", path);
            goto done;
        }
        self->tensors[self->ntensors++] = t;
        spans[nspans++] = (s_span_t){b, e, self->tensors[self->ntensors - 1].name};
    }
    rc = s_check_overlaps(spans, nspans, path, err);
done:
    cJSON_Delete(root);
    free(spans);
    return rc;
}

static int s_has_suffix(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

static int s_is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Opens the shards named by an index's weight_map and checks every entry. */
static int s_load_index(wisp_st_t *self, const char *dir, const char *index_path, int *cap,
                        wisp_error_t *err)
{
    int rc = WISP_OK;
    char *text = NULL;
    cJSON *root = NULL;
    char **files = NULL;
    int nfiles = 0;
    size_t len = 0;

    rc = wisp_read_file(index_path, 64u << 20, &text, &len, err);
    if (rc != 0)
        goto done;
    const char *end_ptr = NULL;
    root = cJSON_ParseWithLengthOpts(text, len, &end_ptr, 0);
    if (!root) {
        rc = wisp_error_set(err, WISP_ERR_FORMAT, "%s: not valid JSON (near byte %zu)", index_path,
                            s_err_offset(text, len, end_ptr));
        goto done;
    }
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(wm)) {
        rc = wisp_error_set(err, WISP_ERR_FORMAT, "%s: no \"weight_map\" object", index_path);
        goto done;
    }
    int n = cJSON_GetArraySize(wm);
    files = calloc((size_t)(n > 0 ? n : 1), sizeof *files);
    if (!files) {
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", index_path);
        goto done;
    }
    const cJSON *kv;
    cJSON_ArrayForEach(kv, wm)
    {
        if (!cJSON_IsString(kv) || strchr(kv->valuestring, '/') || kv->valuestring[0] == '.' ||
            kv->valuestring[0] == 0) {
            rc = wisp_error_set(err, WISP_ERR_FORMAT,
                                "%s: weight_map[\"%s\"] must be a file name in the same directory",
                                index_path, kv->string ? kv->string : "");
            goto done;
        }
        int seen = 0;
        for (int i = 0; i < nfiles && !seen; i++)
            seen = strcmp(files[i], kv->valuestring) == 0;
        if (!seen)
            files[nfiles++] = kv->valuestring;
    }
    if (nfiles == 0) {
        rc = wisp_error_set(err, WISP_ERR_FORMAT, "%s: empty weight_map", index_path);
        goto done;
    }
    for (int i = 0; i < nfiles; i++) {
        char p[4096];
        if (wisp_path_join(p, sizeof p, dir, files[i]) != 0) {
            rc = wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", index_path);
            goto done;
        }
        rc = s_load_shard(self, p, cap, err);
        if (rc != 0)
            goto done;
    }
    /* Every weight_map entry must exist in the shard it names. */
    if (self->ntensors > 1)
        qsort(self->tensors, (size_t)self->ntensors, sizeof *self->tensors, s_cmp_tensor_name);
    cJSON_ArrayForEach(kv, wm)
    {
        wisp_st_tensor_t key = {.name = kv->string};
        const wisp_st_tensor_t *t = self->ntensors == 0
                                        ? NULL
                                        : bsearch(&key, self->tensors, (size_t)self->ntensors,
                                                  sizeof key, s_cmp_tensor_name);
        if (!t || !s_has_suffix(t->file, kv->valuestring) ||
            t->file[strlen(t->file) - strlen(kv->valuestring) - 1] != '/') {
            rc = wisp_error_set(err, WISP_ERR_NOTFOUND, "%s: tensor %s is missing from shard %s",
                                index_path, kv->string, kv->valuestring);
            goto done;
        }
    }
done:
    free(files);
    cJSON_Delete(root);
    free(text);
    return rc;
}

/* The only *.safetensors file in dir, into out. */
static int s_find_single(const char *dir, char *out, size_t out_size, wisp_error_t *err)
{
    DIR *d = opendir(dir);
    if (!d)
        return wisp_error_set(err, errno == ENOENT ? WISP_ERR_NOTFOUND : WISP_ERR_IO, "%s: %s", dir,
                              strerror(errno));
    int count = 0;
    char first[1024] = "", second[1024] = "";
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!s_has_suffix(de->d_name, ".safetensors") || de->d_name[0] == '.')
            continue;
        if (count == 0)
            snprintf(first, sizeof first, "%s", de->d_name);
        else if (count == 1)
            snprintf(second, sizeof second, "%s", de->d_name);
        count++;
    }
    closedir(d);
    if (count == 0)
        return wisp_error_set(
            err, WISP_ERR_NOTFOUND,
            "%s: no model.safetensors, model.safetensors.index.json or *.safetensors file", dir);
    if (count > 1)
        return wisp_error_set(
            err, WISP_ERR_FORMAT,
            "%s: several .safetensors files (%s, %s%s) and no model.safetensors.index.json", dir,
            first, second, count > 2 ? ", ..." : "");
    if (wisp_path_join(out, out_size, dir, first) != 0)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", dir);
    return 0;
}

wisp_st_t *wisp_st_open(const char *path, wisp_error_t *err)
{
    int rc = WISP_OK;
    int cap = 0;
    wisp_st_t *self = calloc(1, sizeof *self);
    if (!self) {
        wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", path);
        return NULL;
    }
    self->path = strdup(path);
    if (!self->path) {
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    struct stat st;
    if (stat(path, &st) != 0) {
        rc = wisp_error_set(err, errno == ENOENT ? WISP_ERR_NOTFOUND : WISP_ERR_IO, "%s: %s", path,
                            strerror(errno));
        goto done;
    }
    if (S_ISDIR(st.st_mode)) {
        char p[4096];
        if (wisp_path_join(p, sizeof p, path, "model.safetensors") != 0) {
            rc = wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", path);
            goto done;
        }
        if (s_is_file(p)) {
            rc = s_load_shard(self, p, &cap, err);
        } else {
            wisp_path_join(p, sizeof p, path, "model.safetensors.index.json");
            if (s_is_file(p)) {
                rc = s_load_index(self, path, p, &cap, err);
            } else {
                rc = s_find_single(path, p, sizeof p, err);
                if (rc == 0)
                    rc = s_load_shard(self, p, &cap, err);
            }
        }
    } else {
        rc = s_load_shard(self, path, &cap, err);
    }
    if (rc != 0)
        goto done;
    if (self->ntensors > 1)
        qsort(self->tensors, (size_t)self->ntensors, sizeof *self->tensors, s_cmp_tensor_name);
    for (int i = 1; i < self->ntensors; i++)
        if (strcmp(self->tensors[i - 1].name, self->tensors[i].name) == 0) {
            rc = wisp_error_set(err, WISP_ERR_FORMAT, "%s: tensor %s appears twice (%s and %s)",
                                path, self->tensors[i].name, self->tensors[i - 1].file,
                                self->tensors[i].file);
            goto done;
        }
    self->cache = calloc((size_t)(self->ntensors > 0 ? self->ntensors : 1), sizeof *self->cache);
    if (!self->cache)
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", path);
done:
    if (rc != 0)
        wisp_st_destroy(&self);
    return self;
}

void wisp_st_destroy(wisp_st_t **pself)
{
    if (!pself || !*pself)
        return;
    wisp_st_t *self = *pself;
    for (int i = 0; i < self->ntensors; i++) {
        free((void *)self->tensors[i].name);
        if (self->cache)
            wisp_free(self->cache[i]);
    }
    free(self->cache);
    free(self->tensors);
    for (int i = 0; i < self->nshards; i++) {
        if (self->shards[i].map)
            munmap(self->shards[i].map, self->shards[i].map_len);
        cJSON_Delete(self->shards[i].meta);
        free(self->shards[i].path);
    }
    free(self->shards);
    free(self->path);
    free(self);
    *pself = NULL;
}

int wisp_st_count(const wisp_st_t *self)
{
    return self ? self->ntensors : 0;
}

const wisp_st_tensor_t *wisp_st_at(const wisp_st_t *self, int i)
{
    if (!self || i < 0 || i >= self->ntensors)
        return NULL;
    return &self->tensors[i];
}

const wisp_st_tensor_t *wisp_st_find(const wisp_st_t *self, const char *name)
{
    if (!self || !name || self->ntensors == 0)
        return NULL;
    wisp_st_tensor_t key = {.name = name};
    return bsearch(&key, self->tensors, (size_t)self->ntensors, sizeof key, s_cmp_tensor_name);
}

const char *wisp_st_metadata(const wisp_st_t *self, const char *key)
{
    if (!self || !key)
        return NULL;
    for (int i = 0; i < self->nshards; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(self->shards[i].meta, key);
        if (cJSON_IsString(v))
            return v->valuestring;
    }
    return NULL;
}

static void s_shape_str(char *buf, size_t size, int ndim, const int64_t *shape)
{
    size_t n = 0;
    buf[0] = 0;
    n += (size_t)snprintf(buf, size, "[");
    for (int d = 0; d < ndim && n < size; d++)
        n += (size_t)snprintf(buf + n, size - n, "%s%lld", d ? "," : "", (long long)shape[d]);
    if (n < size)
        snprintf(buf + n, size - n, "]");
}

int wisp_st_get_f32(wisp_st_t *self, const char *name, int ndim, const int64_t *shape,
                    const float **out, wisp_error_t *err)
{
    *out = NULL;
    const wisp_st_tensor_t *t = wisp_st_find(self, name);
    if (!t)
        return wisp_error_set(err, WISP_ERR_NOTFOUND, "%s: tensor %s not found", self->path, name);
    if (ndim >= 0) {
        int same = t->ndim == ndim;
        for (int d = 0; same && d < ndim; d++)
            same = t->shape[d] == shape[d];
        if (!same) {
            char got[160], want[160];
            s_shape_str(got, sizeof got, t->ndim, t->shape);
            s_shape_str(want, sizeof want, ndim, shape);
            return wisp_error_set(err, WISP_ERR_SHAPE, "%s: tensor %s has shape %s, expected %s",
                                  t->file, name, got, want);
        }
    }
    if (t->dtype == WISP_DT_F32 && ((uintptr_t)t->data & 3u) == 0) {
        *out = t->data;
        return 0;
    }
    if (t->dtype != WISP_DT_F32 && t->dtype != WISP_DT_F16 && t->dtype != WISP_DT_BF16 &&
        t->dtype != WISP_DT_F64)
        return wisp_error_set(err, WISP_ERR_UNSUPPORTED,
                              "%s: tensor %s has dtype %s, not a float type", t->file, name,
                              wisp_dtype_name(t->dtype));
    size_t idx = (size_t)(t - self->tensors);
    if (!self->cache[idx]) {
        float *buf = wisp_alloc(t->numel * sizeof(float));
        if (!buf)
            return wisp_error_set(err, WISP_ERR_NOMEM, "%s: tensor %s: out of memory (%zu floats)",
                                  t->file, name, t->numel);
        const unsigned char *src = t->data;
        for (size_t i = 0; i < t->numel; i++) {
            switch (t->dtype) {
            case WISP_DT_F16: {
                uint16_t h;
                memcpy(&h, src + 2 * i, 2);
                buf[i] = wisp_f16_to_f32(h);
                break;
            }
            case WISP_DT_BF16: {
                uint16_t h;
                memcpy(&h, src + 2 * i, 2);
                buf[i] = wisp_bf16_to_f32(h);
                break;
            }
            case WISP_DT_F64: {
                double v;
                memcpy(&v, src + 8 * i, 8);
                buf[i] = (float)v;
                break;
            }
            default: memcpy(&buf[i], src + 4 * i, 4); break;
            }
        }
        self->cache[idx] = buf;
    }
    *out = self->cache[idx];
    return 0;
}

/* ---- writer ---------------------------------------------------------------- */
typedef struct {
    char *name;         /* tensor name */
    wisp_dtype_t dtype; /* F32, F16 or BF16 */
    int ndim;
    int64_t shape[WISP_ST_MAX_DIMS];
    size_t nbytes;
    void *bytes; /* converted data, nbytes */
} s_wentry_t;

struct wisp_st_writer {
    s_wentry_t *ents; /* n entries in insertion order */
    int n, cap;
    cJSON *meta; /* "__metadata__" object; {"format":"pt"} unless set */
};

wisp_st_writer_t *wisp_st_writer_new(void)
{
    wisp_st_writer_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->meta = cJSON_CreateObject();
    if (!self->meta || !cJSON_AddStringToObject(self->meta, "format", "pt")) {
        cJSON_Delete(self->meta);
        free(self);
        return NULL;
    }
    return self;
}

void wisp_st_writer_destroy(wisp_st_writer_t **pself)
{
    if (!pself || !*pself)
        return;
    wisp_st_writer_t *self = *pself;
    for (int i = 0; i < self->n; i++) {
        free(self->ents[i].name);
        free(self->ents[i].bytes);
    }
    free(self->ents);
    cJSON_Delete(self->meta);
    free(self);
    *pself = NULL;
}

int wisp_st_writer_add_f32(wisp_st_writer_t *self, const char *name, wisp_dtype_t dtype, int ndim,
                           const int64_t *shape, const float *data)
{
    if (!self || !name || !name[0] || strcmp(name, "__metadata__") == 0)
        return wisp_error_set(NULL, WISP_ERR_ARG, "safetensors writer: invalid tensor name");
    if (dtype != WISP_DT_F32 && dtype != WISP_DT_F16 && dtype != WISP_DT_BF16)
        return wisp_error_set(NULL, WISP_ERR_ARG, "safetensors writer: %s: dtype %s not writable",
                              name, wisp_dtype_name(dtype));
    if (ndim < 0 || ndim > WISP_ST_MAX_DIMS)
        return wisp_error_set(NULL, WISP_ERR_ARG, "safetensors writer: %s: %d dimensions", name,
                              ndim);
    for (int i = 0; i < self->n; i++)
        if (strcmp(self->ents[i].name, name) == 0)
            return wisp_error_set(NULL, WISP_ERR_ARG, "safetensors writer: tensor %s added twice",
                                  name);
    size_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0 || (shape[d] > 0 && numel > SIZE_MAX / 8 / (size_t)shape[d]))
            return wisp_error_set(NULL, WISP_ERR_ARG, "safetensors writer: %s: bad shape", name);
        numel *= (size_t)shape[d];
    }
    if (self->n == self->cap) {
        int ncap = self->cap ? self->cap * 2 : 32;
        s_wentry_t *e = realloc(self->ents, (size_t)ncap * sizeof *e);
        if (!e)
            return WISP_ERR_NOMEM;
        self->ents = e;
        self->cap = ncap;
    }
    s_wentry_t e = {0};
    e.dtype = dtype;
    e.ndim = ndim;
    for (int d = 0; d < ndim; d++)
        e.shape[d] = shape[d];
    e.nbytes = numel * wisp_dtype_size(dtype);
    e.name = strdup(name);
    e.bytes = malloc(e.nbytes ? e.nbytes : 1);
    if (!e.name || !e.bytes) {
        free(e.name);
        free(e.bytes);
        return WISP_ERR_NOMEM;
    }
    if (dtype == WISP_DT_F32) {
        if (numel)
            memcpy(e.bytes, data, e.nbytes);
    } else {
        uint16_t *h = e.bytes;
        for (size_t i = 0; i < numel; i++)
            h[i] = dtype == WISP_DT_F16 ? wisp_f32_to_f16(data[i]) : wisp_f32_to_bf16(data[i]);
    }
    self->ents[self->n++] = e;
    return 0;
}

int wisp_st_writer_add_meta(wisp_st_writer_t *self, const char *key, const char *value)
{
    if (!self || !key || !value)
        return WISP_ERR_ARG;
    cJSON *v = cJSON_CreateString(value);
    if (!v)
        return WISP_ERR_NOMEM;
    if (cJSON_GetObjectItemCaseSensitive(self->meta, key)) {
        cJSON_ReplaceItemInObjectCaseSensitive(self->meta, key, v);
    } else if (!cJSON_AddItemToObject(self->meta, key, v)) {
        cJSON_Delete(v);
        return WISP_ERR_NOMEM;
    }
    return 0;
}

/* The Rust library's dtype order (descending alignment): F32 before BF16 before F16. */
static int s_dtype_rank(wisp_dtype_t dt)
{
    switch (dt) {
    case WISP_DT_F32: return 0;
    case WISP_DT_BF16: return 1;
    default: return 2;
    }
}

static int s_cmp_wentry(const void *a, const void *b)
{
    const s_wentry_t *x = *(const s_wentry_t *const *)a, *y = *(const s_wentry_t *const *)b;
    int rx = s_dtype_rank(x->dtype), ry = s_dtype_rank(y->dtype);
    if (rx != ry)
        return rx - ry;
    return strcmp(x->name, y->name);
}

static int s_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int wisp_st_writer_save(wisp_st_writer_t *self, const char *path, wisp_error_t *err)
{
    int rc = WISP_OK;
    s_wentry_t **order = NULL;
    cJSON *root = NULL;
    char *json = NULL;
    char *hdr = NULL;
    int fd = -1;
    char tmp[4096];

    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", path);
    order = calloc((size_t)(self->n > 0 ? self->n : 1), sizeof *order);
    root = cJSON_CreateObject();
    if (!order || !root)
        goto nomem;
    for (int i = 0; i < self->n; i++)
        order[i] = &self->ents[i];
    if (self->n > 1)
        qsort(order, (size_t)self->n, sizeof *order, s_cmp_wentry);
    if (cJSON_GetArraySize(self->meta) > 0) {
        cJSON *m = cJSON_Duplicate(self->meta, 1);
        if (!m || !cJSON_AddItemToObject(root, "__metadata__", m)) {
            cJSON_Delete(m);
            goto nomem;
        }
    }
    size_t off = 0;
    for (int i = 0; i < self->n; i++) {
        const s_wentry_t *e = order[i];
        cJSON *t = cJSON_CreateObject();
        if (!t || !cJSON_AddItemToObject(root, e->name, t)) {
            cJSON_Delete(t);
            goto nomem;
        }
        /* the library's key order: dtype, shape, data_offsets */
        if (!cJSON_AddStringToObject(t, "dtype", wisp_dtype_name(e->dtype)))
            goto nomem;
        cJSON *shp = cJSON_AddArrayToObject(t, "shape");
        cJSON *offs = NULL;
        if (!shp)
            goto nomem;
        for (int d = 0; d < e->ndim; d++)
            if (!cJSON_AddItemToArray(shp, cJSON_CreateNumber((double)e->shape[d])))
                goto nomem;
        offs = cJSON_AddArrayToObject(t, "data_offsets");
        if (!offs || !cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off)) ||
            !cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + e->nbytes))))
            goto nomem;
        off += e->nbytes;
    }
    json = cJSON_PrintUnformatted(root);
    if (!json)
        goto nomem;
    size_t jlen = strlen(json);
    size_t hlen = (jlen + 7) / 8 * 8;
    hdr = malloc(8 + hlen);
    if (!hdr)
        goto nomem;
    for (int i = 0; i < 8; i++)
        hdr[i] = (char)((uint64_t)hlen >> (8 * i));
    memcpy(hdr + 8, json, jlen);
    memset(hdr + 8 + jlen, ' ', hlen - jlen);

    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = wisp_error_set(err, WISP_ERR_IO, "%s: %s", tmp, strerror(errno));
        goto done;
    }
    if (s_write_all(fd, hdr, 8 + hlen) != 0)
        goto ioerr;
    for (int i = 0; i < self->n; i++)
        if (order[i]->nbytes && s_write_all(fd, order[i]->bytes, order[i]->nbytes) != 0)
            goto ioerr;
    if (fsync(fd) != 0)
        goto ioerr;
    if (close(fd) != 0) {
        fd = -1;
        goto ioerr;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        rc = wisp_error_set(err, WISP_ERR_IO, "%s: rename: %s", path, strerror(errno));
        unlink(tmp);
        goto done;
    }
    goto done;
ioerr:
    rc = wisp_error_set(err, WISP_ERR_IO, "%s: write: %s", tmp, strerror(errno));
    if (fd >= 0)
        close(fd);
    fd = -1;
    unlink(tmp);
    goto done;
nomem:
    rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", path);
done:
    if (fd >= 0)
        close(fd);
    free(hdr);
    free(json);
    cJSON_Delete(root);
    free(order);
    return rc;
}

/* fuzz_st: formats/st.c. A safetensors file is opened from a memfd (mmap as for a
 * real checkpoint); every tensor it accepts must lie inside the file and convert to
 * fp32. */
#include "fuzz_util.h"
#include "formats/st.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_quiet();
    wisp_error_t err = {0};
    wisp_st_t *st = wisp_st_open(fuzz_file(data, size), &err);
    if (!st) {
        fuzz_check_error(err.code, &err);
        FUZZ_CHECK(err.code != 0, "open failed without an error");
        return 0;
    }
    int n = wisp_st_count(st);
    size_t bytes = 0;
    for (int i = 0; i < n; i++) {
        const wisp_st_tensor_t *t = wisp_st_at(st, i);
        FUZZ_CHECK(t && wisp_st_find(st, t->name) == t, "tensor %d not found by name", i);
        bytes += t->nbytes;
        FUZZ_CHECK(t->nbytes <= size, "tensor %s claims %zu bytes of a %zu-byte file", t->name,
                   t->nbytes, size);
        const float *f = NULL;
        wisp_error_t e2 = {0};
        int rc = wisp_st_get_f32(st, t->name, t->ndim, t->shape, &f, &e2);
        fuzz_check_error(rc, &e2);
        volatile float sink = 0;
        for (size_t k = 0; rc == 0 && k < t->numel; k++)
            sink += f[k]; /* every element readable */
        (void)sink;
    }
    FUZZ_CHECK(bytes <= size, "tensors overlap: %zu bytes in a %zu-byte file", bytes, size);
    (void)wisp_st_metadata(st, "format");
    wisp_st_destroy(&st);
    return 0;
}

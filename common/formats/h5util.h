/* Small HDF5 helpers shared by the writers: quiet error stack, checked calls with
 * messages, UTF-8 variable-length strings, attributes.
 *
 * HDF5's automatic error printing is turned off by wisp_h5_quiet() (idempotent,
 * process-wide default stack); failures are then reported once through
 * wisp_h5_fail(), which appends the innermost HDF5 error description. */
#ifndef WISP_H5UTIL_H
#define WISP_H5UTIL_H

#include <stddef.h>
#include <stdint.h>

#include <hdf5.h>

#include "base/err.h"

/* Turns off HDF5's automatic error printing. Call before any HDF5 use. */
void wisp_h5_quiet(void);

/* Records WISP_ERR_HDF5 with "file: what: <innermost HDF5 message>" and returns it. */
int wisp_h5_fail(wisp_error_t *err, const char *file, const char *what);

/* The variable-length UTF-8 C-string datatype (H5Tclose it). Negative on failure. */
hid_t wisp_h5_str_type(void);

/* Root/object attributes. Existing attributes of the same name are replaced. */
int wisp_h5_attr_set_str(hid_t obj, const char *name, const char *value, const char *file,
                         wisp_error_t *err);
int wisp_h5_attr_set_i64(hid_t obj, const char *name, int64_t value, const char *file,
                         wisp_error_t *err);
int wisp_h5_attr_set_f64(hid_t obj, const char *name, double value, const char *file,
                         wisp_error_t *err);
/* Reads a string attribute (fixed or variable length) into a malloc'd string. */
int wisp_h5_attr_get_str(hid_t obj, const char *name, char **out, const char *file,
                         wisp_error_t *err);
int wisp_h5_attr_get_i64(hid_t obj, const char *name, int64_t *out, const char *file,
                         wisp_error_t *err);
int wisp_h5_attr_get_f64(hid_t obj, const char *name, double *out, const char *file,
                         wisp_error_t *err);

/* Creates a 1-D dataset `name` of n UTF-8 strings (contiguous, whole write). */
int wisp_h5_write_strings(hid_t loc, const char *name, const char *const *s, size_t n,
                          const char *file, wisp_error_t *err);

/* Reads a 1-D string dataset into a malloc'd array of n malloc'd strings
 * (free with wisp_h5_free_strings). */
int wisp_h5_read_strings(hid_t loc, const char *name, char ***out, size_t *n, const char *file,
                         wisp_error_t *err);
void wisp_h5_free_strings(char **s, size_t n);

/* Creates a chunked dataset of rank 1 or 2 (dims[0] rows, chunk_rows rows per
 * chunk) with a fill value (fill may be NULL for HDF5's default: zeros, which for a
 * variable-length string is a null string that readers see as ""). Do not give
 * variable-length strings a fill value: HDF5 would store one heap object per
 * element and free it again on every overwrite (slow, and it bloats the file).
 * Returns the
 * dataset id (H5Dclose it) or a negative WISP_ERR_*. */
hid_t wisp_h5_create_rows(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *dims,
                          hsize_t chunk_rows, const void *fill, const char *file,
                          wisp_error_t *err);

/* Writes rows [row0, row0 + n) of a rank-1/2 dataset from buf (memory type mtype,
 * row-major, n x dims[1]). */
int wisp_h5_write_rows(hid_t dset, hid_t mtype, size_t row0, size_t n, const void *buf,
                       const char *file, const char *name, wisp_error_t *err);

#endif

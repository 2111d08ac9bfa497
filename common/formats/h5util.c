#include "formats/h5util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void wisp_h5_quiet(void)
{
    /* No exit-time library shutdown. A file whose close failed (the output turned
     * read-only or full mid-flush) stays in HDF5's ID table half torn down, and the
     * second close that H5_term_library attempts at exit() ended the process with
     * SIGSEGV after the error had been reported (issue 11 item 3). wisp closes every
     * file it opens; what a resume trusts is the journal, not the .partial file. The
     * call only takes effect before HDF5's first call, which this is on every path
     * that writes results (a second call is refused by HDF5, harmlessly). */
    H5dont_atexit();
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

/* H5Ewalk2 visits the innermost entry first with H5E_WALK_UPWARD: that one says
 * what really failed ("unable to open file: ... errno = 2"). */
static herr_t s_first_desc(unsigned n, const H5E_error2_t *e, void *data)
{
    char *out = data;
    if (n == 0 && e->desc)
        snprintf(out, 256, "%s", e->desc);
    return 0;
}

int wisp_h5_fail(wisp_error_t *err, const char *file, const char *what)
{
    char desc[256] = "";
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, s_first_desc, desc);
    H5Eclear2(H5E_DEFAULT);
    /* HDF5's write failures read "file write failed: time = ...\n, filename = ...":
     * an error is one line (the last line a failing run prints) */
    for (char *c = desc; *c; c++)
        if (*c == '\n' || *c == '\r')
            *c = ' ';
    return wisp_error_set(err, WISP_ERR_HDF5, "%s: %s%s%s", file ? file : "(hdf5)", what,
                          desc[0] ? ": " : "", desc);
}

hid_t wisp_h5_str_type(void)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0)
        return t;
    if (H5Tset_size(t, H5T_VARIABLE) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

/* Creates (replacing) a scalar attribute of the given file/memory type. */
static int s_attr_write(hid_t obj, const char *name, hid_t ftype, hid_t mtype, const void *buf,
                        const char *file, wisp_error_t *err)
{
    int rc = WISP_OK;
    hid_t space = -1, a = -1;
    char what[160];
    snprintf(what, sizeof what, "attribute '%s'", name);
    htri_t ex = H5Aexists(obj, name);
    if (ex < 0 || (ex > 0 && H5Adelete(obj, name) < 0)) {
        rc = wisp_h5_fail(err, file, what);
        goto done;
    }
    space = H5Screate(H5S_SCALAR);
    if (space < 0 || (a = H5Acreate2(obj, name, ftype, space, H5P_DEFAULT, H5P_DEFAULT)) < 0 ||
        H5Awrite(a, mtype, buf) < 0)
        rc = wisp_h5_fail(err, file, what);
done:
    if (a >= 0)
        H5Aclose(a);
    if (space >= 0)
        H5Sclose(space);
    return rc;
}

int wisp_h5_attr_set_str(hid_t obj, const char *name, const char *value, const char *file,
                         wisp_error_t *err)
{
    hid_t t = wisp_h5_str_type();
    if (t < 0)
        return wisp_h5_fail(err, file, "string type");
    const char *v = value ? value : "";
    int rc = s_attr_write(obj, name, t, t, &v, file, err);
    H5Tclose(t);
    return rc;
}

int wisp_h5_attr_set_i64(hid_t obj, const char *name, int64_t value, const char *file,
                         wisp_error_t *err)
{
    return s_attr_write(obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value, file, err);
}

int wisp_h5_attr_set_f64(hid_t obj, const char *name, double value, const char *file,
                         wisp_error_t *err)
{
    return s_attr_write(obj, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value, file, err);
}

static int s_attr_read(hid_t obj, const char *name, hid_t mtype, void *buf, const char *file,
                       wisp_error_t *err)
{
    char what[160];
    snprintf(what, sizeof what, "reading attribute '%s'", name);
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0)
        return wisp_h5_fail(err, file, what);
    int rc = H5Aread(a, mtype, buf) < 0 ? wisp_h5_fail(err, file, what) : WISP_OK;
    H5Aclose(a);
    return rc;
}

int wisp_h5_attr_get_i64(hid_t obj, const char *name, int64_t *out, const char *file,
                         wisp_error_t *err)
{
    return s_attr_read(obj, name, H5T_NATIVE_INT64, out, file, err);
}

int wisp_h5_attr_get_f64(hid_t obj, const char *name, double *out, const char *file,
                         wisp_error_t *err)
{
    return s_attr_read(obj, name, H5T_NATIVE_DOUBLE, out, file, err);
}

int wisp_h5_attr_get_str(hid_t obj, const char *name, char **out, const char *file,
                         wisp_error_t *err)
{
    int rc = WISP_OK;
    hid_t a = -1, ft = -1, mt = -1, space = -1;
    char what[160];
    snprintf(what, sizeof what, "reading string attribute '%s'", name);
    *out = NULL;
    if ((a = H5Aopen(obj, name, H5P_DEFAULT)) < 0 || (ft = H5Aget_type(a)) < 0 ||
        H5Tget_class(ft) != H5T_STRING) {
        rc = wisp_h5_fail(err, file, what);
        goto done;
    }
    htri_t vl = H5Tis_variable_str(ft);
    if (vl > 0) {
        char *v = NULL;
        if ((mt = wisp_h5_str_type()) < 0 || H5Aread(a, mt, &v) < 0) {
            rc = wisp_h5_fail(err, file, what);
            goto done;
        }
        *out = strdup(v ? v : "");
        if (v) {
            space = H5Aget_space(a);
            H5Dvlen_reclaim(mt, space, H5P_DEFAULT, &v);
        }
    } else {
        size_t n = H5Tget_size(ft);
        char *buf = calloc(n + 1, 1);
        if (!buf) {
            rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: %s", file, what);
            goto done;
        }
        if ((mt = H5Tcopy(ft)) < 0 || H5Aread(a, mt, buf) < 0) {
            free(buf);
            rc = wisp_h5_fail(err, file, what);
            goto done;
        }
        *out = buf;
    }
    if (!*out)
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: %s", file, what);
done:
    if (space >= 0)
        H5Sclose(space);
    if (mt >= 0)
        H5Tclose(mt);
    if (ft >= 0)
        H5Tclose(ft);
    if (a >= 0)
        H5Aclose(a);
    return rc;
}

int wisp_h5_write_strings(hid_t loc, const char *name, const char *const *s, size_t n,
                          const char *file, wisp_error_t *err)
{
    int rc = WISP_OK;
    hid_t t = -1, space = -1, d = -1;
    char what[160];
    snprintf(what, sizeof what, "writing string dataset '%s'", name);
    hsize_t dims[1] = {n};
    const char **v = calloc(n ? n : 1, sizeof *v);
    if (!v)
        return wisp_error_set(err, WISP_ERR_NOMEM, "%s: %s", file, what);
    for (size_t i = 0; i < n; i++)
        v[i] = s[i] ? s[i] : "";
    if ((t = wisp_h5_str_type()) < 0 || (space = H5Screate_simple(1, dims, NULL)) < 0 ||
        (d = H5Dcreate2(loc, name, t, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)) < 0 ||
        (n > 0 && H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) < 0))
        rc = wisp_h5_fail(err, file, what);
    if (d >= 0)
        H5Dclose(d);
    if (space >= 0)
        H5Sclose(space);
    if (t >= 0)
        H5Tclose(t);
    free(v);
    return rc;
}

void wisp_h5_free_strings(char **s, size_t n)
{
    if (!s)
        return;
    for (size_t i = 0; i < n; i++)
        free(s[i]);
    free(s);
}

int wisp_h5_read_strings(hid_t loc, const char *name, char ***out, size_t *n_out, const char *file,
                         wisp_error_t *err)
{
    int rc = WISP_OK;
    hid_t d = -1, t = -1, space = -1;
    char **raw = NULL, **res = NULL;
    hsize_t n = 0;
    char what[160];
    snprintf(what, sizeof what, "reading string dataset '%s'", name);
    *out = NULL;
    *n_out = 0;
    if ((d = H5Dopen2(loc, name, H5P_DEFAULT)) < 0 || (space = H5Dget_space(d)) < 0 ||
        H5Sget_simple_extent_ndims(space) != 1 || H5Sget_simple_extent_dims(space, &n, NULL) < 0 ||
        (t = wisp_h5_str_type()) < 0) {
        rc = wisp_h5_fail(err, file, what);
        goto done;
    }
    raw = calloc(n ? n : 1, sizeof *raw);
    res = calloc(n ? n : 1, sizeof *res);
    if (!raw || !res) {
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: %s", file, what);
        goto done;
    }
    if (n > 0 && H5Dread(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw) < 0) {
        rc = wisp_h5_fail(err, file, what);
        goto done;
    }
    for (hsize_t i = 0; i < n; i++) {
        res[i] = strdup(raw[i] ? raw[i] : "");
        if (!res[i]) {
            rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: %s", file, what);
            break;
        }
    }
    if (n > 0)
        H5Dvlen_reclaim(t, space, H5P_DEFAULT, raw);
    if (rc == WISP_OK) {
        *out = res;
        *n_out = (size_t)n;
        res = NULL;
    }
done:
    wisp_h5_free_strings(res, (size_t)n);
    free(raw);
    if (t >= 0)
        H5Tclose(t);
    if (space >= 0)
        H5Sclose(space);
    if (d >= 0)
        H5Dclose(d);
    return rc;
}

hid_t wisp_h5_create_rows(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *dims,
                          hsize_t chunk_rows, const void *fill, const char *file, wisp_error_t *err)
{
    hid_t space = -1, dcpl = -1, d = -1;
    char what[160];
    snprintf(what, sizeof what, "creating dataset '%s'", name);
    if (rank < 1 || rank > 2)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: %s: rank %d", file, what, rank);
    hsize_t chunk[2] = {chunk_rows < 1 ? 1 : chunk_rows, rank == 2 ? dims[1] : 1};
    if (chunk[0] > dims[0] && dims[0] > 0)
        chunk[0] = dims[0];
    if (rank == 2 && chunk[1] == 0)
        chunk[1] = 1;
    if ((space = H5Screate_simple(rank, dims, NULL)) < 0 ||
        (dcpl = H5Pcreate(H5P_DATASET_CREATE)) < 0 || H5Pset_chunk(dcpl, rank, chunk) < 0 ||
        (fill && (H5Pset_fill_value(dcpl, type, fill) < 0 ||
                  H5Pset_fill_time(dcpl, H5D_FILL_TIME_ALLOC) < 0)) ||
        (d = H5Dcreate2(loc, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT)) < 0) {
        wisp_h5_fail(err, file, what);
        d = WISP_ERR_HDF5;
    }
    if (dcpl >= 0)
        H5Pclose(dcpl);
    if (space >= 0)
        H5Sclose(space);
    return d;
}

int wisp_h5_write_rows(hid_t dset, hid_t mtype, size_t row0, size_t n, const void *buf,
                       const char *file, const char *name, wisp_error_t *err)
{
    int rc = WISP_OK;
    hid_t fspace = -1, mspace = -1, dxpl = H5P_DEFAULT;
    hsize_t dims[2] = {0, 1};
    char what[160];
    snprintf(what, sizeof what, "writing rows %zu..%zu of '%s'", row0, row0 + n, name);
    if (n == 0)
        return WISP_OK;
    if ((fspace = H5Dget_space(dset)) < 0) {
        rc = wisp_h5_fail(err, file, what);
        goto done;
    }
    int rank = H5Sget_simple_extent_ndims(fspace);
    if (rank < 1 || rank > 2 || H5Sget_simple_extent_dims(fspace, dims, NULL) < 0) {
        rc = wisp_h5_fail(err, file, what);
        goto done;
    }
    if (row0 + n > dims[0]) {
        rc = wisp_error_set(err, WISP_ERR_ARG, "%s: %s: past the end (%llu rows)", file, what,
                            (unsigned long long)dims[0]);
        goto done;
    }
    /* Variable-length strings go through HDF5's type conversion, which callocs a
     * conversion and a background buffer of the transfer size (1 MB by default) on
     * every write: size them to this write instead (16-byte file elements). */
    if (H5Tis_variable_str(mtype) > 0) {
        size_t bytes = n * 32 < 4096 ? 4096 : n * 32;
        if ((dxpl = H5Pcreate(H5P_DATASET_XFER)) < 0 ||
            H5Pset_buffer(dxpl, bytes, NULL, NULL) < 0) {
            rc = wisp_h5_fail(err, file, what);
            goto done;
        }
    }
    hsize_t start[2] = {row0, 0}, count[2] = {n, rank == 2 ? dims[1] : 1};
    if (H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
        (mspace = H5Screate_simple(rank, count, NULL)) < 0 ||
        H5Dwrite(dset, mtype, mspace, fspace, dxpl, buf) < 0)
        rc = wisp_h5_fail(err, file, what);
done:
    if (dxpl != H5P_DEFAULT)
        H5Pclose(dxpl);
    if (mspace >= 0)
        H5Sclose(mspace);
    if (fspace >= 0)
        H5Sclose(fspace);
    return rc;
}

#include "base/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "base/log.h"

const char *wisp_strerror(int code)
{
    switch (code) {
    case WISP_OK: return "success";
    case WISP_ERR_NOMEM: return "out of memory";
    case WISP_ERR_IO: return "I/O error";
    case WISP_ERR_FORMAT: return "malformed input";
    case WISP_ERR_ARG: return "invalid argument";
    case WISP_ERR_UNSUPPORTED: return "not supported";
    case WISP_ERR_NOTFOUND: return "not found";
    case WISP_ERR_SHAPE: return "shape mismatch";
    case WISP_ERR_AUDIO: return "audio decode error";
    case WISP_ERR_NET: return "network error";
    case WISP_ERR_MPI: return "MPI error";
    case WISP_ERR_STATE: return "state mismatch";
    case WISP_ERR_INTERRUPTED: return "interrupted";
    case WISP_ERR_HDF5: return "HDF5 error";
    case WISP_ERR_NODATA: return "no usable data";
    default: return "unknown error";
    }
}

int wisp_error_set(wisp_error_t *err, int code, const char *fmt, ...)
{
    char buf[WISP_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    /* A message is one line: names and keys quoted from hostile files may hold
     * newlines or terminal controls, shown as '?' (as ls does). */
    for (char *c = buf; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            *c = '?';
    if (!err) {
        wisp_log_write(WISP_LOG_ERROR, "error", "%s", buf);
        return code;
    }
    if (err->code == WISP_OK) {
        err->code = code;
        memcpy(err->msg, buf, sizeof buf);
    }
    return code;
}

void wisp_error_clear(wisp_error_t *err)
{
    if (!err)
        return;
    err->code = WISP_OK;
    err->msg[0] = '\0';
}

/* Error codes and the error record every fallible wisp function can fill.
 *
 * Contract: a fallible function returns 0 (WISP_OK) or a negative WISP_ERR_*.
 * Details (file, key, offset) are reported exactly once, where the context is
 * known: into the caller's wisp_error_t when one is passed, otherwise to the
 * log at error level. Callers that only propagate a code add nothing. */
#ifndef WISP_ERR_H
#define WISP_ERR_H

#include <stddef.h>

typedef enum {
    WISP_OK = 0,
    WISP_ERR_NOMEM = -1,        /* allocation failed */
    WISP_ERR_IO = -2,           /* open/read/write/mmap failed */
    WISP_ERR_FORMAT = -3,       /* malformed file or message content */
    WISP_ERR_ARG = -4,          /* invalid argument or option value */
    WISP_ERR_UNSUPPORTED = -5,  /* valid input that wisp does not implement */
    WISP_ERR_NOTFOUND = -6,     /* missing file, tensor, key or label */
    WISP_ERR_SHAPE = -7,        /* tensor shape/size disagrees with the config */
    WISP_ERR_AUDIO = -8,        /* audio could not be decoded or resampled */
    WISP_ERR_NET = -9,          /* ZeroMQ failure */
    WISP_ERR_MPI = -10,         /* MPI failure */
    WISP_ERR_STATE = -11,       /* resume state or fingerprint mismatch */
    WISP_ERR_INTERRUPTED = -12, /* stopped by a signal */
    WISP_ERR_HDF5 = -13,        /* HDF5 library call failed */
    WISP_ERR_NODATA = -14,      /* no usable item (every clip of a batch or a run failed) */
} wisp_err_t;

/* Static, never NULL; "unknown error" for codes outside the enum. */
const char *wisp_strerror(int code);

#define WISP_ERROR_MSG_MAX 512

/* One error with its human-readable details. Zero-initialise before use. */
typedef struct {
    int code;                     /* WISP_OK or a WISP_ERR_* */
    char msg[WISP_ERROR_MSG_MAX]; /* "path: what went wrong", no trailing newline */
} wisp_error_t;

/* Records code and a printf-style message into err (when err is NULL the message
 * goes to the log at error level instead). Returns code, so callers can write
 * `return wisp_error_set(err, WISP_ERR_IO, "%s: %s", path, strerror(errno));`.
 * Does not overwrite an error already recorded (the first, innermost cause wins). */
int wisp_error_set(wisp_error_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Clears a record for reuse. Accepts NULL. */
void wisp_error_clear(wisp_error_t *err);

#endif

/* json.h: the one JSON reader and writer of wisp (over cJSON), with the semantics of
 * Python's json module where the two differ, so a file means the same to wisp as to
 * transformers / adapters:
 *   - a duplicate key takes the LAST value (Python's dict), at the position of the
 *     first occurrence; cJSON alone would answer lookups with the first;
 *   - one value per text: anything but whitespace after it is an error;
 *   - a raw control character inside a string is an error (json.loads(strict=True));
 *     so is the escape \u0000, which a C string cannot hold (it would cut the string).
 * Every error is one line "WHERE:LINE:COL: what" (WHERE is the file or the source).
 *
 * Numbers become integers only through wisp_json_int (or wisp_json_key_int): the
 * range is checked on the double before any cast, so 1e300, -1 or 1.9 never reach
 * an integer variable. */
#ifndef WISP_JSON_H
#define WISP_JSON_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "base/err.h"

/* Size limit of wisp_json_load (configs, heads, job files; far above any real one). */
#define WISP_JSON_MAX_BYTES (16u << 20)

/* Parses len bytes of text (NUL-termination not needed) into *out (cJSON_Delete it).
 * `where` names the source in messages ("config.json", "WELCOME", "line 7 of x.jsonl"). */
int wisp_json_parse(const char *text, size_t len, const char *where, cJSON **out,
                    wisp_error_t *err);
/* Reads and parses a file of at most WISP_JSON_MAX_BYTES. */
int wisp_json_load(const char *path, cJSON **out, wisp_error_t *err);

/* Writes pretty JSON atomically, formatted like Python's json.dump(indent=2):
 * keys in the object's order, integral numbers without a fraction. */
int wisp_json_save(const char *path, const cJSON *json, wisp_error_t *err);
/* The same text as a malloc'd string (free() it), NULL when out of memory. */
char *wisp_json_print(const cJSON *json);
/* Sorts object keys recursively in place (json.dump(sort_keys=True)). 0 or WISP_ERR_NOMEM. */
int wisp_json_sort_keys(cJSON *json);
/* The end of a writer that built root with cJSON_Add* calls (built: whether all of them
 * succeeded): sorts the keys, saves as wisp_json_save (json.dump(sort_keys=True,
 * indent=2)) and deletes root in every case. WISP_ERR_NOMEM naming path when the build
 * or the sort ran out of memory. */
int wisp_json_save_sorted(const char *path, cJSON *root, int built, wisp_error_t *err);

/* Beyond 2^53 a JSON number (a double) no longer holds every integer. */
#define WISP_JSON_INT_MAX ((int64_t)1 << 53)

/* 0 and *out when j is a number with an integral value in [min, max]; WISP_ERR_FORMAT
 * otherwise (no message: the caller names the key). |min|, |max| <= WISP_JSON_INT_MAX. */
int wisp_json_int(const cJSON *j, int64_t min, int64_t max, int64_t *out);
/* Integer key `key` of obj into *out. Absent or null: *out = *def, or an error
 * "WHERE: missing key" when def is NULL. Otherwise wisp_json_int, the error naming
 * the key, the range and the value found. */
int wisp_json_key_int(const cJSON *obj, const char *key, int64_t min, int64_t max,
                      const int64_t *def, int64_t *out, const char *where, wisp_error_t *err);
/* Boolean key: absent -> def; not true/false -> error naming the key. */
int wisp_json_key_bool(const cJSON *obj, const char *key, int def, int *out, const char *where,
                       wisp_error_t *err);

/* Short text of a value for messages ("(absent)" for NULL; "..." when cut). */
void wisp_json_value_text(const cJSON *j, char *buf, size_t size);

#endif

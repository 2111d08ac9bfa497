/* fuzz_json: formats/json.c. Any text either parses or gives one located error;
 * what parses prints (json.dump style) to text that parses again to the same tree,
 * with sorted keys too. */
#include "fuzz_util.h"
#include "formats/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_quiet();
    wisp_error_t err = {0};
    cJSON *j = NULL;
    int rc = wisp_json_parse((const char *)data, size, "fuzz.json", &j, &err);
    fuzz_check_error(rc, &err);
    if (rc != 0) {
        FUZZ_CHECK(j == NULL, "a failed parse returned a tree");
        FUZZ_CHECK(strncmp(err.msg, "fuzz.json:", 10) == 0, "error without the source: %s",
                   err.msg);
        return 0;
    }
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1 && wisp_json_sort_keys(j) != 0)
            break; /* out of memory */
        char *text = wisp_json_print(j);
        if (!text)
            break;
        cJSON *back = NULL;
        wisp_error_t err2 = {0};
        rc = wisp_json_parse(text, strlen(text), "printed", &back, &err2);
        FUZZ_CHECK(rc == 0, "printed JSON does not parse: %s", err2.msg);
        /* non-finite numbers print as null, as Python's allow_nan=False cannot */
        char *again = wisp_json_print(back);
        FUZZ_CHECK(again && strcmp(again, text) == 0, "print is not stable under parse");
        free(again);
        cJSON_Delete(back);
        free(text);
    }
    int64_t v;
    (void)wisp_json_int(j, -WISP_JSON_INT_MAX, WISP_JSON_INT_MAX, &v);
    char buf[64];
    wisp_json_value_text(j, buf, sizeof buf);
    cJSON_Delete(j);
    return 0;
}

/* fuzz_head_config: wisp's head_config.json (formats/config.c). */
#include <stdlib.h>

#include "fuzz_util.h"
#include "formats/config.h"

static int s_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_quiet();
    wisp_error_t err = {0};
    cJSON *j = NULL;
    if (wisp_json_parse((const char *)data, size, "head_config.json", &j, &err) != 0)
        return 0;
    wisp_head_config_t cfg;
    int rc = wisp_head_config_parse(&cfg, j, "head_config.json", &err);
    fuzz_check_error(rc, &err);
    cJSON_Delete(j);
    if (rc != 0)
        return 0;
    FUZZ_CHECK(cfg.num_labels >= 1 && cfg.id2label, "no labels");
    /* Unique labels, checked in O(n log n): the lookup below is linear, and a loop of
     * lookups over 62 222 labels took 110 s (a harness timeout, not a product one). */
    char **sorted = malloc((size_t)cfg.num_labels * sizeof *sorted);
    FUZZ_CHECK(sorted, "out of memory");
    memcpy(sorted, cfg.id2label, (size_t)cfg.num_labels * sizeof *sorted);
    qsort(sorted, (size_t)cfg.num_labels, sizeof *sorted, s_cmp);
    for (int i = 1; i < cfg.num_labels; i++)
        FUZZ_CHECK(strcmp(sorted[i - 1], sorted[i]) != 0, "label %s twice", sorted[i]);
    free(sorted);
    for (int i = 0; i < cfg.num_labels && i < 64; i++)
        FUZZ_CHECK(wisp_head_config_label_id(&cfg, cfg.id2label[i]) == i, "label %d not found", i);
    wisp_head_config_free(&cfg);
    return 0;
}

/* fuzz_head_config: wisp's head_config.json (formats/config.c). */
#include "fuzz_util.h"
#include "formats/config.h"

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
    for (int i = 0; i < cfg.num_labels; i++)
        FUZZ_CHECK(wisp_head_config_label_id(&cfg, cfg.id2label[i]) == i, "label %d not unique", i);
    wisp_head_config_free(&cfg);
    return 0;
}

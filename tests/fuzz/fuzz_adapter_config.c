/* fuzz_adapter_config: the adapters library's adapter_config.json
 * (nn/adapter_config.c), both as the whole file and as a bare config dict. */
#include "fuzz_util.h"
#include "nn/adapter_config.h"

static void s_check(const wisp_adapter_config_t *cfg)
{
    FUZZ_CHECK(cfg->kind != WISP_ADAPTER_NONE && cfg->full, "accepted without a kind");
    for (int l = 0; l < WISP_MAX_LAYERS; l++) {
        int m = wisp_adapter_config_bottleneck_dim(cfg, l, 1280);
        FUZZ_CHECK(cfg->kind != WISP_ADAPTER_BOTTLENECK || m == -1 || m >= 1, "bad width %d", m);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_quiet();
    wisp_error_t err = {0};
    cJSON *j = NULL;
    if (wisp_json_parse((const char *)data, size, "adapter_config.json", &j, &err) != 0)
        return 0;
    wisp_adapter_config_t cfg;
    int hs = 0;
    int rc = wisp_adapter_config_parse_file(&cfg, j, "adapter_config.json", &hs, &err);
    fuzz_check_error(rc, &err);
    if (rc == 0) {
        s_check(&cfg);
        wisp_adapter_config_free(&cfg);
    }
    wisp_error_clear(&err);
    rc = wisp_adapter_config_parse(&cfg, j, "config", &err);
    fuzz_check_error(rc, &err);
    if (rc == 0) {
        s_check(&cfg);
        /* the merged dict is what the library's to_dict() gives: it parses again */
        wisp_adapter_config_t again;
        wisp_error_t e2 = {0};
        rc = wisp_adapter_config_parse(&again, cfg.full, "full", &e2);
        FUZZ_CHECK(rc == 0, "the full dict of an accepted config is refused: %s", e2.msg);
        wisp_adapter_config_free(&again);
        wisp_adapter_config_free(&cfg);
    }
    cJSON_Delete(j);
    return 0;
}

/* fuzz_hf_config: a Hugging Face Whisper config.json (formats/config.c). What loads
 * is a usable model shape and writes back to a config that loads the same. */
#include "fuzz_util.h"
#include "formats/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_quiet();
    wisp_error_t err = {0};
    cJSON *j = NULL;
    int rc = wisp_json_parse((const char *)data, size, "config.json", &j, &err);
    if (rc != 0)
        return 0;
    wisp_whisper_config_t cfg;
    rc = wisp_whisper_config_parse(&cfg, j, "config.json", &err);
    fuzz_check_error(rc, &err);
    cJSON_Delete(j);
    if (rc != 0)
        return 0;
    FUZZ_CHECK(cfg.d_model > 0 && cfg.encoder_attention_heads > 0 &&
                   cfg.d_model % cfg.encoder_attention_heads == 0,
               "bad shape accepted");
    FUZZ_CHECK(cfg.num_labels >= 1 && cfg.id2label, "no labels");
    for (int i = 0; i < cfg.num_labels; i++)
        FUZZ_CHECK(cfg.id2label[i], "label %d missing", i);
    cJSON *out = wisp_whisper_config_to_json(&cfg);
    if (out) {
        wisp_whisper_config_t back;
        wisp_error_t e2 = {0};
        rc = wisp_whisper_config_parse(&back, out, "written", &e2);
        FUZZ_CHECK(rc == 0, "a written config does not load: %s", e2.msg);
        FUZZ_CHECK(back.d_model == cfg.d_model && back.num_labels == cfg.num_labels,
                   "a written config loads differently");
        wisp_whisper_config_free(&back);
        cJSON_Delete(out);
    }
    wisp_whisper_config_free(&cfg);
    return 0;
}

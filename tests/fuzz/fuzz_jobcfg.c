/* fuzz_jobcfg: a job config (formats/jobcfg.c). The input is the JSON text, then
 * optionally a NUL byte and one --set assignment. What loads prints to a text that
 * loads again (what the coordinator sends workers in WELCOME). */
#include "fuzz_util.h"
#include "formats/jobcfg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_quiet();
    char *text = fuzz_strndup(data, size);
    size_t tlen = strlen(text);
    char *set = tlen < size ? text + tlen + 1 : NULL;
    char *sets[1] = {set};
    wisp_jobcfg_t cfg;
    wisp_error_t err = {0};
    int rc = wisp_jobcfg_parse(&cfg, text, "/fuzz", "job.json", sets, set ? 1 : 0, &err);
    fuzz_check_error(rc, &err);
    if (rc == 0) {
        char *again = wisp_jobcfg_to_string(&cfg);
        if (again) {
            wisp_jobcfg_t back;
            wisp_error_t e2 = {0};
            rc = wisp_jobcfg_parse(&back, again, NULL, "WELCOME", NULL, 0, &e2);
            FUZZ_CHECK(rc == 0, "the effective config does not load again: %s", e2.msg);
            FUZZ_CHECK(strcmp(back.kind, cfg.kind) == 0 && back.seed == cfg.seed,
                       "the effective config loads differently");
            wisp_jobcfg_free(&back);
            free(again);
        }
        wisp_jobcfg_free(&cfg);
    }
    free(text);
    return 0;
}

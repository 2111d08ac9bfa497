/* fuzz_ckpt_state: a checkpoint's state.json (nn/ckpt.c). */
#include "fuzz_util.h"
#include "nn/ckpt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_quiet();
    wisp_ckpt_state_t st;
    long opt_steps = -1, num_params = -1;
    wisp_error_t err = {0};
    int rc = wisp_ckpt_state_parse((const char *)data, size, "state.json", &st, &opt_steps,
                                   &num_params, &err);
    fuzz_check_error(rc, &err);
    if (rc == 0)
        FUZZ_CHECK(st.step >= 0 && st.epoch >= 0 && st.pos >= 0 && opt_steps >= 0 &&
                       num_params >= 0 && memchr(st.fingerprint, 0, sizeof st.fingerprint),
                   "negative count or unterminated fingerprint accepted");
    return 0;
}

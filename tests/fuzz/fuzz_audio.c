/* fuzz_audio: audio decoding (audio/audio.c through libsndfile and libsoxr) of any
 * bytes as a file: a row with a reason or finite 16 kHz samples, never a crash.
 * Decoding stops after 30 s of source audio, as classify does. */
#include <math.h>

#include "fuzz_util.h"
#include "audio/audio.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_quiet();
    wisp_audio_t a;
    wisp_error_t err = {0};
    int rc = wisp_audio_load(fuzz_file(data, size), 30.0, &a, &err);
    fuzz_check_error(rc, &err);
    if (rc != 0) {
        FUZZ_CHECK(a.samples == NULL && a.n == 0, "a failed load returned samples");
        return 0;
    }
    FUZZ_CHECK(a.n > 0 && a.samples, "success without samples");
    for (size_t i = 0; i < a.n; i++)
        FUZZ_CHECK(isfinite(a.samples[i]), "sample %zu is not finite", i);
    wisp_audio_free(&a);
    return 0;
}

#include "dist/job.h"

#include <stdlib.h>
#include <string.h>

void wisp_job_plan_free(wisp_job_plan_t *plan)
{
    if (!plan)
        return;
    free(plan->seconds);
    free(plan->done);
    memset(plan, 0, sizeof *plan);
}

const wisp_job_ops_t *wisp_job_find(const char *kind)
{
    static const wisp_job_ops_t *const kinds[] = {&wisp_job_null, &wisp_job_classify,
                                                  &wisp_job_train, NULL};
    for (int i = 0; kinds[i]; i++)
        if (strcmp(kinds[i]->name, kind) == 0)
            return kinds[i];
    return NULL;
}

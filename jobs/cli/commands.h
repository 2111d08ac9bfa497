/* commands.h: the subcommands of the `wisp` tool. Each lives in jobs/cli/cmd_<name>.c
 * and has one row in wisp_main.c's command table. Exit codes: base/exit.h. */
#ifndef WISP_COMMANDS_H
#define WISP_COMMANDS_H

#include "base/exit.h"

int wisp_cmd_features(int argc, char **argv);
int wisp_cmd_classify(int argc, char **argv);
int wisp_cmd_train(int argc, char **argv);
int wisp_cmd_inspect(int argc, char **argv);
int wisp_cmd_init_model(int argc, char **argv);
int wisp_cmd_synth(int argc, char **argv);
int wisp_cmd_run(int argc, char **argv);
int wisp_cmd_report(int argc, char **argv);

#endif

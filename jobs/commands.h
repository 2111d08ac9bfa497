/* commands.h: the subcommands of the `wisp` tool. Each lives in jobs/cmd_<name>.c;
 * the Makefile defines WISP_HAVE_CMD_<NAME> for every such file so the dispatcher
 * lists exactly the commands that exist.
 *
 * Exit codes shared by every command: */
#ifndef WISP_COMMANDS_H
#define WISP_COMMANDS_H

#define WISP_EXIT_OK          0 /* everything succeeded */
#define WISP_EXIT_PARTIAL     1 /* finished, but some inputs failed (see the status column) */
#define WISP_EXIT_USAGE       2 /* invalid command line */
#define WISP_EXIT_FAILURE     3 /* could not run (bad model, unwritable output, ...) */
#define WISP_EXIT_INTERRUPTED 130

int wisp_cmd_features(int argc, char **argv);
int wisp_cmd_classify(int argc, char **argv);
int wisp_cmd_train(int argc, char **argv);
int wisp_cmd_inspect(int argc, char **argv);
int wisp_cmd_init_model(int argc, char **argv);
int wisp_cmd_synth(int argc, char **argv);
int wisp_cmd_run(int argc, char **argv);
int wisp_cmd_report(int argc, char **argv);

#endif

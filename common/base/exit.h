/* exit.h: the process exit codes shared by every wisp binary (wisp, wisp-coordinator,
 * wisp-worker), so scripts and the launcher read one meaning for each. */
#ifndef WISP_EXIT_H
#define WISP_EXIT_H

#define WISP_EXIT_OK          0 /* everything succeeded */
#define WISP_EXIT_PARTIAL     1 /* finished, but some inputs failed (see the status column) */
#define WISP_EXIT_USAGE       2 /* invalid command line */
#define WISP_EXIT_FAILURE     3 /* could not run (bad model, unwritable output, ...) */
#define WISP_EXIT_INTERRUPTED 130

#endif

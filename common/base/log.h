/* Logging: one line per event on stderr,
 *   2026-05-01T12:00:00.123Z W3 I job_train: step 17 loss=2.31
 * (UTC time, role letter and rank, level letter, function, message).
 * Metrics are written as key=value pairs. Results never go to the log.
 *
 * The process-wide settings (role, rank, threshold) are set once by main()
 * through wisp_log_init(); they are the only logging state. */
#ifndef WISP_LOG_H
#define WISP_LOG_H

typedef enum {
    WISP_LOG_DEBUG = 0,
    WISP_LOG_INFO = 1,
    WISP_LOG_WARN = 2,
    WISP_LOG_ERROR = 3,
    WISP_LOG_OFF = 4,
} wisp_log_level_t;

/* Environment variable: when "1" at wisp_log_init, every log line starts by erasing
 * the terminal line it lands on ("\r\033[K"). `wisp run` sets it when its stderr is a
 * terminal, so that worker lines forwarded by mpirun (whose stderr is a pipe) do not
 * land after the coordinator's progress line; the coordinator draws it again below. */
#define WISP_LOG_ERASE_ENV "WISP_LOG_ERASE_LINE"

/* role: 'C' coordinator, 'W' worker, 'L' local tool. rank: MPI rank or 0. Reads
 * WISP_LOG_ERASE_ENV. */
void wisp_log_init(char role, int rank, wisp_log_level_t threshold);
void wisp_log_set_level(wisp_log_level_t threshold);
wisp_log_level_t wisp_log_level(void);
/* Parses "debug|info|warn|error|off"; returns -1 when unknown. */
int wisp_log_parse_level(const char *name);

void wisp_log_write(wisp_log_level_t level, const char *func, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The live progress line of a terminal (stderr a tty; otherwise these do nothing):
 * wisp_log_progress draws or redraws it in place ("\r...\033[K"); a log line written
 * while it is live erases it, prints itself and draws it again underneath, so log
 * lines never overwrite it nor are overwritten; wisp_log_progress_end ends it with a
 * newline. One drawer per process (the main thread). */
void wisp_log_progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void wisp_log_progress_end(void);
/* 1 while a progress line is on the terminal. */
int wisp_log_progress_live(void);

#define WISP_LOG_AT(lvl, ...)                                                                      \
    do {                                                                                           \
        if ((lvl) >= wisp_log_level())                                                             \
            wisp_log_write((lvl), __func__, __VA_ARGS__);                                          \
    } while (0)
#define WISP_LOGD(...) WISP_LOG_AT(WISP_LOG_DEBUG, __VA_ARGS__)
#define WISP_LOGI(...) WISP_LOG_AT(WISP_LOG_INFO, __VA_ARGS__)
#define WISP_LOGW(...) WISP_LOG_AT(WISP_LOG_WARN, __VA_ARGS__)
#define WISP_LOGE(...) WISP_LOG_AT(WISP_LOG_ERROR, __VA_ARGS__)

#endif

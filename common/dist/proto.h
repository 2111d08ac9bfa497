/* proto.h: the coordinator <-> worker wire protocol (ZeroMQ ROUTER <-> DEALER).
 *
 * Every message is one ZeroMQ frame: a fixed 40-byte header, then payload_len
 * bytes of type-specific payload (on the ROUTER side the frame is preceded by
 * the peer's routing-id frame, added and removed by ZeroMQ). Every integer on
 * the wire, in the header and in every payload, is little-endian; floats are
 * IEEE-754 in the byte order of the integer of the same width.
 *
 *   off size field
 *     0   4  magic    "WSP1" (0x31505357 little-endian)
 *     4   2  version  WISP_PROTO_VERSION
 *     6   2  type     wisp_msg_type_t
 *     8   4  worker   slot given by WELCOME (WISP_PROTO_NO_WORKER before it)
 *    12   4  count    number of items of the shard
 *    16   8  shard    shard id (or training step)
 *    24   8  first    first item id of the shard
 *    32   4  aux      type-specific small integer (see the type list)
 *    36   4  payload_len
 *
 * Each message has one encoder and (where it carries more than the header) one
 * reader below; nothing else in wisp lays out header fields or the runtime's own
 * payloads (HELLO, the RESULT stage timings). Job plug-ins own the rest of the
 * SHARD, RESULT, STEP and STEP_DONE payloads (common/dist/job.h).
 *
 * Validation is strict: wisp_proto_decode() refuses a frame that is short, has
 * a wrong magic or version, an unknown type, a length that disagrees with
 * payload_len, a payload over the receiver's limit, or a header field outside
 * its type's rule (the list below); the receiver logs the reason and drops the
 * message. Nothing in a message is trusted beyond what decode and the readers
 * check: receivers check slots, shard ids and ranks against their own state. */
#ifndef WISP_PROTO_H
#define WISP_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

#define WISP_PROTO_MAGIC       0x31505357u /* bytes "WSP1" */
#define WISP_PROTO_VERSION     2           /* 2: binary HELLO, STOP reasons checked */
#define WISP_PROTO_HEADER_SIZE 40
#define WISP_PROTO_NO_WORKER   0xffffffffu

/* Caps every receiver enforces (docs/SECURITY.md lists them with the others). */
#define WISP_PROTO_MAX_SHARD_ITEMS 1000000u /* = the largest cluster.shard_size */
#define WISP_PROTO_MAX_RANKS       65536    /* MPI world size a HELLO may announce */
#define WISP_PROTO_MAX_STAGES      6        /* stage timings in a RESULT */
#define WISP_PROTO_HOST_MAX        64       /* bytes of a host name, NUL included */
#define WISP_PROTO_HELLO_MAX       (4 + 4 + 8 + 8 + 4 + WISP_PROTO_HOST_MAX) /* payload bytes */
/* The largest payload_len the header can describe in one frame. */
#define WISP_PROTO_MAX_PAYLOAD (UINT32_MAX - WISP_PROTO_HEADER_SIZE)

/* Header rules (checked by wisp_proto_decode) and payloads, per type. Fields not
 * named are 0 on send and ignored on receipt. */
typedef enum {
    /* worker -> coordinator */
    WISP_MSG_HELLO = 1,     /* worker = NO_WORKER; payload: wisp_proto_hello_t (binary, below) */
    WISP_MSG_RESULT = 2,    /* shard, first, 1 <= count <= MAX_SHARD_ITEMS; payload: stage
                               timings (wisp_proto_result) then the job's results */
    WISP_MSG_HEARTBEAT = 3, /* either way; no payload; aux = items done of the current shard
                               (worker side, informative) */
    WISP_MSG_BYE = 4,       /* no payload: the worker leaves; its shards are re-leased at once */
    WISP_MSG_STEP_DONE = 5, /* training: shard = step, aux = WISP_STEP_* flags (job.h);
                               payload: job-specific (loss sums, or the READY resume point) */
    /* 6 was CHECKPOINT, never sent: rank 0 reports a checkpoint with STEP_DONE's flags */
    /* coordinator -> worker */
    WISP_MSG_WELCOME = 16, /* worker = assigned slot; payload: the job config JSON (not empty) */
    WISP_MSG_SHARD = 17,   /* shard, first, 1 <= count <= MAX_SHARD_ITEMS; payload: job-specific */
    WISP_MSG_STOP = 18,    /* no payload; aux = wisp_stop_why_t; finish the current item, exit */
    WISP_MSG_STEP = 19,    /* training: shard = step, aux = WISP_STEP_F_* flags; payload: job's */
} wisp_msg_type_t;

/* STOP's aux: why the coordinator tells a worker to go. */
typedef enum {
    WISP_STOP_DONE = 0,        /* the job is complete: exit 0 */
    WISP_STOP_INTERRUPTED = 1, /* the coordinator stops (state left resumable) */
    WISP_STOP_REJOIN = 2,      /* declared dead earlier: send one fresh HELLO (map jobs) */
    WISP_STOP_FULL = 3,        /* refused: as many workers as the descriptor limit allows */
} wisp_stop_why_t;

/* One decoded message. payload points into the received frame (not owned). */
typedef struct {
    uint16_t version;       /* WISP_PROTO_VERSION on encode */
    uint16_t type;          /* wisp_msg_type_t */
    uint32_t worker;        /* slot or WISP_PROTO_NO_WORKER */
    uint32_t count;         /* items */
    uint64_t shard;         /* shard id or step */
    uint64_t first;         /* first item id */
    uint32_t aux;           /* type-specific */
    uint32_t payload_len;   /* bytes at payload */
    const uint8_t *payload; /* payload_len bytes, or NULL when 0 */
} wisp_msg_t;

/* "HELLO", "RESULT", ...; "?" for unknown types. Never NULL. */
const char *wisp_proto_type_name(int type);

/* 1 when type is one the coordinator accepts from workers, 0 otherwise. */
int wisp_proto_is_worker_msg(int type);
/* 1 when type is one a worker accepts from the coordinator, 0 otherwise. */
int wisp_proto_is_coord_msg(int type);

/* Writes the 40-byte header of m (payload_len taken from m) into out. Cannot fail. */
void wisp_proto_encode_header(uint8_t out[WISP_PROTO_HEADER_SIZE], const wisp_msg_t *m);

/* Validates one frame of len bytes and fills out (payload pointing into buf).
 * max_payload bounds payload_len. Returns 0, or WISP_ERR_FORMAT with the reason
 * in err (which names no file: the caller adds the peer). Never reads past len. */
int wisp_proto_decode(const void *buf, size_t len, size_t max_payload, wisp_msg_t *out,
                      wisp_error_t *err);

/* Sends m as one frame on a ZeroMQ socket, preceded by a routing-id frame when
 * ident is not NULL (ROUTER side). flags are zmq_send flags (ZMQ_DONTWAIT).
 * Returns 0, or WISP_ERR_NET with errno preserved from zmq (EAGAIN,
 * EHOSTUNREACH) so the caller can tell a full or gone peer from a failure. */
int wisp_proto_send(void *sock, const void *ident, size_t ident_len, const wisp_msg_t *m,
                    int flags);

/* ---- one encoder (and reader) per message ----
 * Encoders fill *m from their arguments; payload bytes stay where they are
 * (m->payload points at them until the send). Those taking a payload return 0 or
 * WISP_ERR_NOMEM when the buffer latched an allocation failure, WISP_ERR_ARG
 * when it exceeds WISP_PROTO_MAX_PAYLOAD. */

typedef struct {
    uint32_t rank, size;            /* 0 <= rank < size <= WISP_PROTO_MAX_RANKS */
    uint64_t pid;                   /* 1 .. INT32_MAX */
    uint64_t world;                 /* id shared by the ranks of one mpirun */
    char host[WISP_PROTO_HOST_MAX]; /* NUL-terminated, possibly empty */
} wisp_proto_hello_t;

typedef struct wisp_wbuf wisp_wbuf_t;

/* HELLO payload: u32 rank, u32 size, u64 pid, u64 world, string host. buf is
 * reset and holds the payload. */
int wisp_proto_hello(wisp_msg_t *m, wisp_wbuf_t *buf, const wisp_proto_hello_t *h);
/* Reads and range-checks a HELLO (no allocation). WISP_ERR_FORMAT names the field. */
int wisp_proto_hello_read(const wisp_msg_t *m, wisp_proto_hello_t *h, wisp_error_t *err);

/* WELCOME carrying the job config text cfg_json (cfg_len bytes, no NUL). */
int wisp_proto_welcome(wisp_msg_t *m, uint32_t slot, const char *cfg_json, size_t cfg_len);

/* SHARD shard of count items from first; payload = the plug-in's description. */
int wisp_proto_shard(wisp_msg_t *m, uint64_t shard, uint64_t first, uint32_t count,
                     const wisp_wbuf_t *payload);

/* RESULT: the worker calls wisp_proto_result_begin on an empty buffer (it writes
 * the stage-timing prefix: u32 WISP_PROTO_MAX_STAGES, that many f64, zero), lets
 * the plug-in append its results, then wisp_proto_result, which fills the prefix
 * with stage_s[WISP_PROTO_MAX_STAGES] and m from the shard's header fields. */
void wisp_proto_result_begin(wisp_wbuf_t *buf);
int wisp_proto_result(wisp_msg_t *m, wisp_wbuf_t *buf, uint64_t shard, uint64_t first,
                      uint32_t count, const double *stage_s);
/* Reads the stage timings (at most WISP_PROTO_MAX_STAGES, each finite and >= 0;
 * missing ones are 0) into stage_s and points *rest at the job's part. */
int wisp_proto_result_read(const wisp_msg_t *m, double stage_s[WISP_PROTO_MAX_STAGES],
                           const uint8_t **rest, size_t *rest_len, wisp_error_t *err);

wisp_msg_t wisp_proto_heartbeat(uint32_t items_done);
wisp_msg_t wisp_proto_bye(void);
wisp_msg_t wisp_proto_stop(wisp_stop_why_t why);

/* STEP (coordinator) and STEP_DONE (worker): step, flags, the job's payload
 * (payload may be NULL for none). */
int wisp_proto_step(wisp_msg_t *m, uint64_t step, uint32_t flags, const wisp_wbuf_t *payload);
int wisp_proto_step_done(wisp_msg_t *m, uint64_t step, uint32_t flags, const wisp_wbuf_t *payload);

/* ---- CURVE key files: one Z85 key (40 characters) per file, as zmq_curve_keypair makes ---- */

/* Reads a Z85 key from path into z85 (NUL-terminated), checking it decodes to 32 bytes. */
int wisp_proto_read_key(const char *path, char z85[41], wisp_error_t *err);
/* Writes a fresh keypair: PREFIX.public and PREFIX.secret (mode 0600). */
int wisp_proto_keygen(const char *prefix, wisp_error_t *err);

/* ---- payload builder / reader: little-endian scalars and length-prefixed strings ---- */

/* A growable byte buffer. Zero-initialise; release with wisp_wbuf_free(). An
 * allocation failure latches `failed` and later appends are no-ops, so callers
 * check once at the end. */
struct wisp_wbuf {
    uint8_t *data; /* len bytes used of cap */
    size_t len;
    size_t cap;
    int failed; /* 1 after an allocation failure */
};

void wisp_wbuf_reset(wisp_wbuf_t *b);
void wisp_wbuf_free(wisp_wbuf_t *b);
void wisp_wbuf_bytes(wisp_wbuf_t *b, const void *p, size_t n);
void wisp_wbuf_u32(wisp_wbuf_t *b, uint32_t v);
void wisp_wbuf_i32(wisp_wbuf_t *b, int32_t v);
void wisp_wbuf_u64(wisp_wbuf_t *b, uint64_t v);
void wisp_wbuf_f32(wisp_wbuf_t *b, float v);
void wisp_wbuf_f64(wisp_wbuf_t *b, double v);
void wisp_wbuf_f32s(wisp_wbuf_t *b, const float *v, size_t n);
/* u32 length then the bytes (no NUL). NULL is written as the empty string. */
void wisp_wbuf_str(wisp_wbuf_t *b, const char *s);

/* A bounds-checked reader. Any read past the end latches `failed` and returns
 * zeros, so a parser reads everything and checks `failed` once. */
typedef struct {
    const uint8_t *p; /* next byte */
    size_t left;      /* bytes remaining */
    int failed;       /* 1 after a short read */
} wisp_rbuf_t;

void wisp_rbuf_init(wisp_rbuf_t *r, const void *p, size_t n);
int wisp_rbuf_bytes(wisp_rbuf_t *r, void *dst, size_t n);
uint32_t wisp_rbuf_u32(wisp_rbuf_t *r);
int32_t wisp_rbuf_i32(wisp_rbuf_t *r);
uint64_t wisp_rbuf_u64(wisp_rbuf_t *r);
float wisp_rbuf_f32(wisp_rbuf_t *r);
double wisp_rbuf_f64(wisp_rbuf_t *r);
int wisp_rbuf_f32s(wisp_rbuf_t *r, float *dst, size_t n);
/* Copies a length-prefixed string into dst (NUL-terminated). A string longer
 * than dst_size-1 or running past the end fails the reader. */
int wisp_rbuf_str(wisp_rbuf_t *r, char *dst, size_t dst_size);

#endif

/* The process callback of liveduet/io/jackout.py, in C.
 *
 * JACK's realtime thread must never wait for Python: a callback written in Python takes the GIL
 * every period, and on a loaded 2-core machine that doubled the server's xruns and lost MIDI.
 * Python hands messages over through a single-producer ring (`lt_push`, under a Python lock); the
 * callback moves them into a heap by (time, sequence) and writes each one due before the end of
 * the cycle at its frame. What was written, with its lateness, comes back through a second ring
 * (`lt_read_late`). A retract (`lt_retract`: barge-in, panic, stop) drops the timed note-ons of one
 * group (an answer; 0: every group) handed over before it and not yet written: they are reported with
 * lateness RETRACTED, never written. It takes effect in the next cycle the callback runs.
 *
 * No JACK header and no linking: io/jackout.py passes the four libjack functions it needs as
 * pointers, so any C compiler builds this on its own (`cc -O2 -shared -fPIC`). Tests drive
 * `lt_process` with fake functions, without a server.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef void *(*get_buffer_fn)(void *port, uint32_t nframes);
typedef void (*clear_fn)(void *buf);
typedef int (*write_fn)(void *buf, uint32_t time, const uint8_t *data, size_t size);
typedef int (*cycle_times_fn)(void *client, uint32_t *frames, uint64_t *cur, uint64_t *next, float *period);

#define RING 4096 /* a power of two */
#define PENDING 8192
#define LATE 8192
#define RETRACTED (-1.0) /* the lateness reported for a retracted note-on */

typedef struct {
    double when, due;
    uint64_t seq;
    uint32_t group; /* the retract's unit (an answer); 0: none. A retract command's: 0 = every group */
    uint8_t size, measure, data[3];
} ev_t;

typedef struct {
    get_buffer_fn get_buffer;
    clear_fn clear;
    write_fn write;
    cycle_times_fn cycle_times;
    void *client, *port;
    int max_per_cycle;
    ev_t in[RING];
    uint32_t in_head, in_tail; /* head: the producer's; tail: the callback's */
    ev_t pend[PENDING];
    int npend, npend_seen; /* npend_seen: published for `lt_pending` */
    uint64_t late_seq[LATE];
    double late[LATE];
    uint32_t late_head, late_tail;
    uint32_t retracted; /* note-ons dropped by retracts, in all */
} lt_state;

static int before(const ev_t *a, const ev_t *b) {
    return a->when < b->when || (a->when == b->when && a->seq < b->seq);
}

static void heap_push(lt_state *s, const ev_t *e) {
    int i = s->npend++;
    s->pend[i] = *e;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!before(&s->pend[i], &s->pend[p])) break;
        ev_t t = s->pend[i]; s->pend[i] = s->pend[p]; s->pend[p] = t;
        i = p;
    }
}

static ev_t heap_pop(lt_state *s) {
    ev_t top = s->pend[0];
    s->pend[0] = s->pend[--s->npend];
    int i = 0;
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < s->npend && before(&s->pend[l], &s->pend[m])) m = l;
        if (r < s->npend && before(&s->pend[r], &s->pend[m])) m = r;
        if (m == i) break;
        ev_t t = s->pend[i]; s->pend[i] = s->pend[m]; s->pend[m] = t;
        i = m;
    }
    return top;
}

lt_state *lt_new(void *client, void *port, void *get_buffer, void *clear, void *write, void *cycle_times,
                 int max_per_cycle) {
    lt_state *s = calloc(1, sizeof(lt_state));
    if (!s) return NULL;
    s->client = client;
    s->port = port;
    s->get_buffer = (get_buffer_fn)get_buffer;
    s->clear = (clear_fn)clear;
    s->write = (write_fn)write;
    s->cycle_times = (cycle_times_fn)cycle_times;
    s->max_per_cycle = max_per_cycle;
    return s;
}

void lt_free(lt_state *s) { free(s); }

/* One message for time `when` (seconds on JACK's clock); 0, or -1 when the ring is full. */
int lt_push(lt_state *s, double when, double due, uint64_t seq, const uint8_t *data, int size, int measure,
            uint32_t group) {
    uint32_t head = s->in_head, tail = __atomic_load_n(&s->in_tail, __ATOMIC_ACQUIRE);
    if (head - tail >= RING || size < 1 || size > 3) return -1;
    ev_t *e = &s->in[head & (RING - 1)];
    e->when = when;
    e->due = due;
    e->seq = seq;
    e->size = (uint8_t)size;
    e->measure = (uint8_t)measure;
    e->group = group;
    memcpy(e->data, data, (size_t)size);
    __atomic_store_n(&s->in_head, head + 1, __ATOMIC_RELEASE);
    return 0;
}

/* Handed over and not yet written (the ring plus the heap as of the last cycle). */
int lt_pending(lt_state *s) {
    uint32_t head = __atomic_load_n(&s->in_head, __ATOMIC_ACQUIRE);
    uint32_t tail = __atomic_load_n(&s->in_tail, __ATOMIC_ACQUIRE);
    return (int)(head - tail) + __atomic_load_n(&s->npend_seen, __ATOMIC_ACQUIRE);
}

/* Drop the timed note-ons of `group` (0: of every group) handed over before this call and not yet
 * written (in order with lt_push: the callback meets it in the ring). 0, or -1 when the ring is full. */
int lt_retract(lt_state *s, uint32_t group) {
    uint32_t head = s->in_head, tail = __atomic_load_n(&s->in_tail, __ATOMIC_ACQUIRE);
    if (head - tail >= RING) return -1;
    s->in[head & (RING - 1)].size = 0; /* size 0: the retract command */
    s->in[head & (RING - 1)].group = group;
    __atomic_store_n(&s->in_head, head + 1, __ATOMIC_RELEASE);
    return 0;
}

uint32_t lt_retracted(lt_state *s) { return __atomic_load_n(&s->retracted, __ATOMIC_ACQUIRE); }

static void report(lt_state *s, uint64_t seq, double late) {
    uint32_t lh = s->late_head;
    if (lh - __atomic_load_n(&s->late_tail, __ATOMIC_ACQUIRE) < LATE) {
        s->late_seq[lh & (LATE - 1)] = seq;
        s->late[lh & (LATE - 1)] = late;
        __atomic_store_n(&s->late_head, lh + 1, __ATOMIC_RELEASE);
    }
}

static void retract(lt_state *s, uint32_t group) {
    int kept = 0;
    for (int i = 0; i < s->npend; i++) {
        ev_t *e = &s->pend[i];
        if (e->measure && (group == 0 || e->group == group) && (e->data[0] & 0xF0) == 0x90 && e->size == 3
            && e->data[2] > 0) {
            report(s, e->seq, RETRACTED);
            __atomic_store_n(&s->retracted, s->retracted + 1, __ATOMIC_RELEASE);
        } else {
            s->pend[kept++] = *e;
        }
    }
    s->npend = 0;
    for (int i = 0; i < kept; i++) {
        ev_t e = s->pend[i]; /* in place: heap_push writes slot i and moves only slots below it */
        heap_push(s, &e);
    }
}

/* Up to `max` written measured messages: their sequence numbers and lateness (seconds); how many. */
int lt_read_late(lt_state *s, uint64_t *seqs, double *out, int max) {
    uint32_t tail = s->late_tail, head = __atomic_load_n(&s->late_head, __ATOMIC_ACQUIRE);
    int n = 0;
    while (tail != head && n < max) {
        seqs[n] = s->late_seq[tail & (LATE - 1)];
        out[n++] = s->late[tail++ & (LATE - 1)];
    }
    __atomic_store_n(&s->late_tail, tail, __ATOMIC_RELEASE);
    return n;
}

/* JACK's process callback: `arg` is the state. Never fails (a non-zero return stops the client). */
int lt_process(uint32_t nframes, void *arg) {
    lt_state *s = arg;
    void *buf = s->get_buffer(s->port, nframes);
    s->clear(buf); /* every cycle: an uncleared buffer repeats its events */
    uint32_t head = __atomic_load_n(&s->in_head, __ATOMIC_ACQUIRE), tail = s->in_tail;
    while (tail != head && s->npend < PENDING) {
        ev_t *e = &s->in[tail++ & (RING - 1)];
        if (e->size == 0) retract(s, e->group);
        else heap_push(s, e);
    }
    __atomic_store_n(&s->in_tail, tail, __ATOMIC_RELEASE);
    uint32_t frames;
    uint64_t cur, next;
    float period;
    if (s->npend && nframes && s->cycle_times(s->client, &frames, &cur, &next, &period) == 0) {
        double start = cur * 1e-6, end = next * 1e-6, span = end > start ? end - start : 1e-9;
        uint32_t floor = 0;
        int n = 0;
        while (s->npend && s->pend[0].when < end && n < s->max_per_cycle) {
            double o = (s->pend[0].when - start) * nframes / span + 0.5; /* the nearest frame */
            uint32_t off = o <= 0 ? 0 : (uint32_t)o;
            if (off < floor) off = floor; /* offsets in a cycle must not decrease */
            if (off > nframes - 1) off = nframes - 1;
            if (s->write(buf, off, s->pend[0].data, s->pend[0].size) != 0) break; /* full: next cycle */
            ev_t e = heap_pop(s);
            floor = off;
            n++;
            if (e.measure) {
                double late = start + off * span / nframes - e.due;
                report(s, e.seq, late > 0 ? late : 0);
            }
        }
    }
    __atomic_store_n(&s->npend_seen, s->npend, __ATOMIC_RELEASE);
    return 0;
}

/*
 * udpkit.net._mmsg: recvmmsg and sendmmsg for udpkit's hot paths, as a small optional C extension.
 *
 * Why C and not only ctypes: measured on a 2-core machine (bench/listen_bench.py, bench/ntp_bench.py),
 * the ctypes batch spent as much interpreter time reading each datagram's fields as the system calls
 * it saved. Here one call fills preallocated arrays and builds each datagram's Python object (the
 * caller's NamedTuple type, e.g. udpkit.net.rx.Datagram) in C, so Python pays once per batch for the
 * call and once per datagram only for what the service does with it.
 *
 * Everything the kernel sends is bounded by the arrays given at construction; nothing read from the
 * network is trusted for a length (cmsg walking uses the kernel's CMSG_* macros over our own buffer).
 * The module is optional: udpkit.net.mmsg falls back to ctypes or to one datagram per call.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>

#ifndef SO_RXQ_OVFL
#define SO_RXQ_OVFL 40
#endif

#define CONTROL_SPACE 256
#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#define NAME_SPACE ((socklen_t)sizeof(struct sockaddr_in6))

/* A reply's source address (IP_PKTINFO / IPV6_PKTINFO), for a socket bound to a wildcard address
 * that answers from the address each request came to. */
typedef struct {
    int family; /* 0: none, the kernel picks */
    union {
        struct in_pktinfo v4;
        struct in6_pktinfo v6;
    } info;
} Source;

#define GSO_MIN_RUN 32 /* the shortest run to one peer sent as one UDP_SEGMENT message: see group_messages */

typedef struct {
    PyObject_HEAD
    unsigned int count;
    Py_ssize_t size;
    int ancillary;
    PyTypeObject *factory; /* a tuple subclass with 7 fields, or NULL for plain tuples */
    struct mmsghdr *headers;
    struct iovec *iovecs;
    char *buffer;
    struct sockaddr_in6 *names;
    socklen_t *namelens;       /* send: each message's address length */
    Source *sources;           /* send: each message's source address, if it names one */
    unsigned int *members;     /* send: how many messages each sendmmsg header carries */
    int gso;                   /* send: runs to one peer go as one UDP_SEGMENT message */
    int gso_min_run;           /* ... when they are at least this long (see group_messages) */
    char *controls;
    /* the previous datagram's sender, to hand out the same tuple while the sender repeats */
    struct sockaddr_in6 last_name;
    socklen_t last_len;
    PyObject *last_peer;
    /* the previous datagram's destination text, which repeats even more */
    char last_local_text[INET6_ADDRSTRLEN + 16];
    PyObject *last_local;
    /* reflect()'s totals since the batch was made, kept up to date datagram by datagram (also
     * while its loop waits without the GIL), so another thread reads them live */
    unsigned long long reflected_in, reflected_out;
    long long reflected_in_bytes, reflected_out_bytes;
    /* answer_ntp(): senders already handed to the caller (a direct-mapped table of SEEN_SLOTS
     * addresses, made on first use), so a recurring client costs no Python object */
    struct sockaddr_in6 *seen;
    socklen_t *seen_lens;
    /* the bounded busy poll of blocking receives (see spin_begin): the window in ns (0: never), the monotonic
     * time before which it is not tried, how many times in a row it did not pay, and its counts */
    long long busy_poll_ns, spin_resume_ns;
    unsigned int spin_misses;
    unsigned long long spin_caught, spin_idle, spin_preempted;
    /* a blocking receive's wait on an epoll set of several sockets (see wait_in_set): the set (-1: wait on
     * the socket itself), the longest wait in ms (-1: none), and the last other descriptor it found ready */
    int wait_epoll, wait_ms, wait_ready;
} Batch;

static void Batch_dealloc(Batch *self) {
    Py_XDECREF(self->last_peer);
    Py_XDECREF(self->last_local);
    Py_XDECREF(self->factory);
    PyMem_Free(self->headers);
    PyMem_Free(self->iovecs);
    PyMem_Free(self->buffer);
    PyMem_Free(self->names);
    PyMem_Free(self->namelens);
    PyMem_Free(self->sources);
    PyMem_Free(self->members);
    PyMem_Free(self->controls);
    PyMem_Free(self->seen);
    PyMem_Free(self->seen_lens);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Batch_init(Batch *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"count", "size", "ancillary", "factory", "gso", NULL};
    unsigned int count = 64;
    Py_ssize_t size = 65536;
    int ancillary = 0;
    PyObject *factory = Py_None;
    int gso = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|InpOp", kwlist, &count, &size, &ancillary, &factory, &gso))
        return -1;
    if (count < 1 || count > 1024 || size < 1 || size > (1 << 17)) {
        PyErr_SetString(PyExc_ValueError, "count must be 1..1024 and size 1..131072");
        return -1;
    }
    if (factory != Py_None && !(PyType_Check(factory) && PyType_IsSubtype((PyTypeObject *)factory, &PyTuple_Type))) {
        PyErr_SetString(PyExc_TypeError, "factory must be a tuple subclass (a NamedTuple) or None");
        return -1;
    }
    if (self->headers != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Batch is already initialised");
        return -1;
    }
    self->count = count;
    self->size = size;
    self->ancillary = ancillary;
    self->factory = factory == Py_None ? NULL : (PyTypeObject *)Py_NewRef(factory);
    self->headers = PyMem_Calloc(count, sizeof(struct mmsghdr));
    self->iovecs = PyMem_Calloc(2 * (size_t)count, sizeof(struct iovec)); /* send: payload and trailer */
    self->buffer = PyMem_Malloc((size_t)count * (size_t)size);
    self->names = PyMem_Calloc(count, sizeof(struct sockaddr_in6));
    self->controls = PyMem_Calloc(count, CONTROL_SPACE);
    self->namelens = PyMem_Calloc(count, sizeof(socklen_t));
    self->sources = PyMem_Calloc(count, sizeof(Source));
    self->members = PyMem_Calloc(count, sizeof(unsigned int));
    self->gso = gso;
    self->gso_min_run = GSO_MIN_RUN;
    self->wait_epoll = self->wait_ms = self->wait_ready = -1;
    if (!self->headers || !self->iovecs || !self->buffer || !self->names || !self->controls || !self->namelens ||
        !self->members || !self->sources) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* The receive arrays as the kernel wants them: reset before every call, since it shortens the
 * name and control lengths to what it wrote. */
static void prepare_receive(Batch *self) {
    for (unsigned int i = 0; i < self->count; i++) {
        struct msghdr *h = &self->headers[i].msg_hdr;
        self->iovecs[i].iov_base = self->buffer + (size_t)i * (size_t)self->size;
        self->iovecs[i].iov_len = (size_t)self->size;
        h->msg_name = &self->names[i];
        h->msg_namelen = NAME_SPACE;
        h->msg_iov = &self->iovecs[i];
        h->msg_iovlen = 1;
        h->msg_control = self->ancillary ? self->controls + (size_t)i * CONTROL_SPACE : NULL;
        h->msg_controllen = self->ancillary ? CONTROL_SPACE : 0;
        h->msg_flags = 0;
    }
}

/* Dotted-quad text for an IPv4 address, as inet_ntop writes it (glibc's goes through sprintf, a
 * measurable share of a flood of distinct senders). out needs 16 bytes. */
static void format_v4(const struct in_addr *address, char *out) {
    const unsigned char *b = (const unsigned char *)address;
    char *p = out;
    for (int k = 0; k < 4; k++) {
        unsigned int v = b[k];
        if (v >= 100) {
            *p++ = (char)('0' + v / 100);
            v %= 100;
            *p++ = (char)('0' + v / 10);
            *p++ = (char)('0' + v % 10);
        } else if (v >= 10) {
            *p++ = (char)('0' + v / 10);
            *p++ = (char)('0' + v % 10);
        } else {
            *p++ = (char)('0' + v);
        }
        *p++ = k < 3 ? '.' : '\0';
    }
}

/* A sender as Python's socket module gives it: (ip, port) or (ip, port, flowinfo, scope_id). */
static PyObject *decode_peer(const struct sockaddr_in6 *name, socklen_t len) {
    char text[INET6_ADDRSTRLEN];
    if (len == 0) /* no sender: a wake-up by shutdown(SHUT_RD), as recvfrom's (b"", None) */
        return Py_NewRef(Py_None);
    if (name->sin6_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)name;
        format_v4(&v4->sin_addr, text);
        return Py_BuildValue("(si)", text, (int)ntohs(v4->sin_port));
    }
    if (name->sin6_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        if (!inet_ntop(AF_INET6, &name->sin6_addr, text, sizeof text))
            return PyErr_SetFromErrno(PyExc_OSError);
        return Py_BuildValue("(siII)", text, (int)ntohs(name->sin6_port), (unsigned int)ntohl(name->sin6_flowinfo),
                             (unsigned int)name->sin6_scope_id);
    }
    return Py_BuildValue("(si)", "", 0);
}

static PyObject *peer_of(Batch *self, const struct sockaddr_in6 *name, socklen_t len) {
    if (len > NAME_SPACE) /* the kernel reports the full length even when it cut the address */
        len = NAME_SPACE;
    if (self->last_peer != NULL && len == self->last_len && memcmp(name, &self->last_name, len) == 0)
        return Py_NewRef(self->last_peer);
    PyObject *peer = decode_peer(name, len);
    if (peer == NULL)
        return NULL;
    Py_XSETREF(self->last_peer, Py_NewRef(peer));
    memcpy(&self->last_name, name, len);
    self->last_len = len;
    return peer;
}

/* The sender of a datagram appended to senders unless it is *previous, the one before (adding a
 * sender twice in a row to the caller's tally changes nothing): 0, or -1 with an exception. */
static int list_sender(Batch *self, const struct sockaddr_in6 *name, socklen_t len, PyObject *senders,
                       PyObject **previous) {
    PyObject *peer = peer_of(self, name, len);
    if (peer == NULL)
        return -1;
    int failed = peer != *previous && PyList_Append(senders, peer) < 0;
    *previous = peer;
    Py_DECREF(peer); /* the list (or last_peer) holds it */
    return failed ? -1 : 0;
}

/* Received message i's length as its place in the buffer keeps it (a longer one was cut). */
static size_t kept_length(const Batch *self, int i) {
    return self->headers[i].msg_len > (unsigned int)self->size ? (size_t)self->size : self->headers[i].msg_len;
}

/* What the control messages say: receive time, drop count, destination and whether it was ours. */
typedef struct {
    int has_time, has_drops, has_local, unicast;
    double timestamp;
    struct timespec time; /* the same, exact */
    unsigned int drops;
    char local[INET6_ADDRSTRLEN + 16];
    Source reply_from; /* the destination as a reply's source (what encode_source makes of local) */
} Control;

static void read_control(struct msghdr *h, Control *out) {
    out->has_time = out->has_drops = out->has_local = 0;
    out->unicast = 1;
    out->reply_from.family = 0;
    if (h->msg_control == NULL || h->msg_controllen == 0)
        return;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c != NULL; c = CMSG_NXTHDR(h, c)) {
        size_t room = c->cmsg_len >= CMSG_LEN(0) ? c->cmsg_len - CMSG_LEN(0) : 0;
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_TIMESTAMPNS && room >= sizeof(struct timespec)) {
            struct timespec ts;
            memcpy(&ts, CMSG_DATA(c), sizeof ts);
            out->time = ts;
            out->timestamp = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
            out->has_time = 1;
        } else if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL && room >= sizeof(uint32_t)) {
            uint32_t drops;
            memcpy(&drops, CMSG_DATA(c), sizeof drops);
            out->drops = drops;
            out->has_drops = 1;
        } else if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO && room >= sizeof(struct in_pktinfo)) {
            struct in_pktinfo info;
            memcpy(&info, CMSG_DATA(c), sizeof info);
            const unsigned char *dst = (const unsigned char *)&info.ipi_addr;
            if (info.ipi_spec_dst.s_addr != info.ipi_addr.s_addr || info.ipi_addr.s_addr == INADDR_BROADCAST ||
                (dst[0] >= 224 && dst[0] < 240))
                out->unicast = 0;
            if (!out->has_local) {
                format_v4(&info.ipi_addr, out->local);
                out->has_local = 1;
                memset(&out->reply_from, 0, sizeof out->reply_from);
                out->reply_from.family = AF_INET;
                out->reply_from.info.v4.ipi_spec_dst = info.ipi_addr;
            }
        } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO &&
                   room >= sizeof(struct in6_pktinfo)) {
            struct in6_pktinfo info;
            memcpy(&info, CMSG_DATA(c), sizeof info);
            const unsigned char *a = info.ipi6_addr.s6_addr;
            static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
            if (a[0] == 0xff || (memcmp(a, mapped, 12) == 0 && a[12] >= 224 && a[12] < 240))
                out->unicast = 0;
            if (inet_ntop(AF_INET6, &info.ipi6_addr, out->local, INET6_ADDRSTRLEN)) {
                out->has_local = 1;
                memset(&out->reply_from, 0, sizeof out->reply_from);
                out->reply_from.family = AF_INET6;
                out->reply_from.info.v6.ipi6_addr = info.ipi6_addr;
                if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80) { /* link-local: only with its scope */
                    snprintf(out->local + strlen(out->local), 16, "%%%u", info.ipi6_ifindex);
                    out->reply_from.info.v6.ipi6_ifindex = info.ipi6_ifindex;
                }
            }
        }
    }
}

static PyObject *local_text(Batch *self, const char *text) {
    if (self->last_local != NULL && strcmp(text, self->last_local_text) == 0)
        return Py_NewRef(self->last_local);
    PyObject *made = PyUnicode_FromString(text);
    if (made == NULL)
        return NULL;
    Py_XSETREF(self->last_local, Py_NewRef(made));
    snprintf(self->last_local_text, sizeof self->last_local_text, "%s", text);
    return made;
}

static PyObject *make_record(Batch *self, PyObject *fields[7]) {
    PyObject *record = self->factory ? self->factory->tp_alloc(self->factory, 7) : PyTuple_New(7);
    if (record == NULL) {
        for (int k = 0; k < 7; k++)
            Py_DECREF(fields[k]);
        return NULL;
    }
    for (int k = 0; k < 7; k++)
        PyTuple_SET_ITEM(record, k, fields[k]);
    return record;
}

/* Received message i as a record (data, peer, local_ip, timestamp, drops, truncated, unicast). The
 * data is read from the buffer, not through iovecs[i], which reflect() may have reused. */
static PyObject *record_at(Batch *self, int i, const Control *control) {
    struct msghdr *h = &self->headers[i].msg_hdr;
    Py_ssize_t length = (Py_ssize_t)kept_length(self, i);
    PyObject *fields[7];
    fields[0] = PyBytes_FromStringAndSize(self->buffer + (size_t)i * (size_t)self->size, length);
    fields[1] = peer_of(self, (struct sockaddr_in6 *)h->msg_name, h->msg_namelen);
    fields[2] = control->has_local ? local_text(self, control->local) : Py_NewRef(Py_None);
    fields[3] = control->has_time ? PyFloat_FromDouble(control->timestamp) : Py_NewRef(Py_None);
    fields[4] = control->has_drops ? PyLong_FromUnsignedLong(control->drops) : Py_NewRef(Py_None);
    fields[5] = PyBool_FromLong(h->msg_flags & MSG_TRUNC);
    fields[6] = PyBool_FromLong(control->unicast);
    for (int k = 0; k < 7; k++) {
        if (fields[k] == NULL) {
            for (int j = 0; j < 7; j++)
                Py_XDECREF(fields[j]);
            return NULL;
        }
    }
    return make_record(self, fields);
}

/* A bounded busy poll before a blocking receive, for clients that wait for each answer.
 *
 * Why: on a virtual machine a core with nothing to run halts, and a datagram for a server asleep on
 * it waits for the host to wake that core (~20 µs here, most of a loopback round trip). Polling the
 * socket for a short window after each answer keeps the core awake for the next request, as the
 * kernel's SO_BUSY_POLL does for a NIC's queue (loopback has none for it to poll).
 *
 * Its costs are bounded and it steps aside:
 * - at most busy_poll_ns of polling per wait (then the receive blocks as before);
 * - after a window that ran out (the client is slower than it), none is tried for 2^misses windows'
 *   worth of time (spin_resume_ns), up to 2^15 (1.6 s at 50 µs): a slow client costs a poll now and then;
 * - a gap in the polling loop (another task or the host took this core) means the core is wanted:
 *   it stops at once and backs off the same way. A spinning server that shares its core with its
 *   own client or with other work would take the time they need.
 * spin_begin: whether to poll now (the caller then polls with MSG_DONTWAIT while spin_again says so). */
#define SPIN_GAP_NS 8000LL          /* a gap this long between two polls: the core was taken (20 µs let a
                                     * client that shares the core preempt the poll and be caught, 1-2 %
                                     * slower than sleeping at once) */
#define SPIN_MAX_MISSES 15          /* the longest back-off: 2^15 windows (1.6 s at 50 µs) */
#define SPIN_LONGEST_NS 1000000000LL /* the longest window taken: a second (the listener asks at most 1 ms) */

typedef struct {
    long long start, last;
} Spin;

static long long monotonic_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int spin_begin(Batch *self, Spin *spin) {
    if (self->busy_poll_ns <= 0)
        return 0;
    if (self->busy_poll_ns > SPIN_LONGEST_NS)
        self->busy_poll_ns = SPIN_LONGEST_NS; /* (so the back-off's shift stays far inside a long long) */
    long long now = monotonic_ns();
    if (now < self->spin_resume_ns)
        return 0;
    spin->start = spin->last = now;
    return 1;
}

static void spin_back_off(Batch *self, long long now) {
    if (self->spin_misses < SPIN_MAX_MISSES)
        self->spin_misses++;
    self->spin_resume_ns = now + (self->busy_poll_ns << self->spin_misses);
}

/* After one poll, given what its receive returned: 1 to poll again; 0 to stop, with *caught set
 * when a datagram (or an error) is in hand, else the caller blocks next and the poll has backed off. */
static int spin_again(Batch *self, Spin *spin, ssize_t result, int *caught) {
    if (result >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
        self->spin_caught++;
        self->spin_misses = 0;
        *caught = 1;
        return 0;
    }
    long long now = monotonic_ns();
    if (now - spin->last > SPIN_GAP_NS) {
        self->spin_preempted++;
        spin_back_off(self, now);
        return 0;
    }
    if (now - spin->start > self->busy_poll_ns) {
        self->spin_idle++;
        spin_back_off(self, now);
        return 0;
    }
    spin->last = now;
    return 1;
}

/* A blocking receive's wait when the batch waits on an epoll set (wait_epoll >= 0): a listener with
 * a socket for each family, whose blocking loop cannot sleep in one socket's receive. 1 when fd is
 * readable (the caller reads it with MSG_DONTWAIT); 0 with errno EAGAIN when another descriptor of
 * the set is (its fd in wait_ready: the owner serves it next), or the wait timed out (wait_ms) or
 * was interrupted; -1 with errno when epoll failed. Polled first, with epoll_wait and no timeout (one
 * call for every socket), within the busy-poll window (spin_begin). Another ready descriptor is
 * noted even when fd is ready too, so a socket that never empties cannot keep the others waiting
 * beyond the caller's rounds. *at_once: fd was ready at the poll's first try (a backlog, see
 * receive_one). Called without the GIL. */
static int wait_in_set(Batch *self, int fd, int *at_once) {
    struct epoll_event events[8];
    Spin spin;
    int polling = spin_begin(self, &spin), caught = 0, first = polling;
    *at_once = 0;
    for (;;) {
        int n = epoll_wait(self->wait_epoll, events, 8, polling ? 0 : self->wait_ms);
        if (n < 0) {
            if (errno != EINTR)
                return -1;
            n = 0;
            polling = 0;
        } else if (n == 0 && polling) {
            errno = EAGAIN;
            polling = spin_again(self, &spin, -1, &caught);
            first = 0;
            continue;
        }
        if (n > 0 && polling)
            spin_again(self, &spin, n, &caught); /* (counts the catch, resets the back-off) */
        int mine = 0;
        self->wait_ready = -1;
        for (int i = 0; i < n; i++) {
            if (events[i].data.fd == fd)
                mine = 1;
            else if (self->wait_ready < 0)
                self->wait_ready = events[i].data.fd;
        }
        if (!mine)
            errno = EAGAIN;
        *at_once = mine && first;
        return mine;
    }
}

/* One recvmmsg into the batch's arrays. A blocking wait for the first datagram (MSG_WAITFORONE
 * without MSG_DONTWAIT) polls first, within the busy-poll window (spin_begin), or waits on the
 * batch's epoll set (wait_in_set). */
static int receive_call(Batch *self, int fd, int flags) {
    prepare_receive(self);
    int n = -1, caught = 0;
    Spin spin;
    Py_BEGIN_ALLOW_THREADS
    if ((flags & MSG_WAITFORONE) && !(flags & MSG_DONTWAIT) && self->wait_epoll >= 0) {
        int at_once;
        caught = 1;
        if (wait_in_set(self, fd, &at_once) > 0)
            n = recvmmsg(fd, self->headers, self->count, flags | MSG_DONTWAIT, NULL);
    } else if ((flags & MSG_WAITFORONE) && !(flags & MSG_DONTWAIT) && spin_begin(self, &spin)) {
        do { /* (a receive that finds nothing changes none of the headers) */
            n = recvmmsg(fd, self->headers, self->count, flags | MSG_DONTWAIT, NULL);
        } while (spin_again(self, &spin, n, &caught));
    }
    if (!caught) {
        do {
            n = recvmmsg(fd, self->headers, self->count, flags, NULL);
        } while (n < 0 && errno == EINTR && !(flags & MSG_DONTWAIT));
    }
    Py_END_ALLOW_THREADS
    return n;
}

/* receive() and tally()'s (fd, flags=MSG_DONTWAIT) and their call: how many datagrams came, 0 when
 * none was waiting (or a wait was interrupted), -1 with an exception set. */
static int initialised(Batch *self) {
    if (self->headers == NULL)
        PyErr_SetString(PyExc_RuntimeError, "Batch.__init__ was not called");
    return self->headers != NULL;
}

static int receive_waiting(Batch *self, int fd, int flags) {
    int n = receive_call(self, fd, flags);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return 0;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return n;
}

static int receive_from_args(Batch *self, PyObject *args) {
    if (!initialised(self))
        return -1;
    int fd, flags = MSG_DONTWAIT;
    if (!PyArg_ParseTuple(args, "i|i", &fd, &flags))
        return -1;
    return receive_waiting(self, fd, flags);
}

PyDoc_STRVAR(receive_doc,
"receive(fd, flags=MSG_DONTWAIT) -> list\n\n"
"The datagrams waiting on fd, up to count, as records (data, peer, local_ip, timestamp, drops,\n"
"truncated, unicast) of the factory type; [] when none. An error the kernel reports in place of a\n"
"datagram is raised as OSError.");

static PyObject *Batch_receive(Batch *self, PyObject *args) {
    int n = receive_from_args(self, args);
    if (n < 0)
        return NULL;
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (int i = 0; i < n; i++) {
        Control control;
        read_control(&self->headers[i].msg_hdr, &control);
        PyObject *record = record_at(self, i, &control);
        if (record == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, record);
    }
    return out;
}

PyDoc_STRVAR(tally_doc,
"tally(fd, flags=MSG_DONTWAIT) -> (datagrams, bytes, senders)\n\n"
"A discard service's read: how many datagrams and bytes were waiting (up to count), and their\n"
"senders with consecutive repeats left out (adding a sender twice to a set changes nothing).");

static PyObject *Batch_tally(Batch *self, PyObject *args) {
    int n = receive_from_args(self, args);
    if (n < 0)
        return NULL;
    PyObject *senders = PyList_New(0);
    if (senders == NULL)
        return NULL;
    long long total = 0;
    PyObject *previous = NULL;
    for (int i = 0; i < n; i++) {
        struct msghdr *h = &self->headers[i].msg_hdr;
        total += self->headers[i].msg_len;
        if (list_sender(self, (struct sockaddr_in6 *)h->msg_name, h->msg_namelen, senders, &previous) < 0) {
            Py_DECREF(senders);
            return NULL;
        }
    }
    return Py_BuildValue("(iLN)", n, total, senders);
}

/* record(): received datagrams written straight into a recording's buffer, in the sink's formats
 * (udpkit.listen.sinks), with no Python object per datagram. The bytes are those the Python
 * formatters write (pcap.PacketBuilder.records, Sink.write_records), which the tests compare. */

enum { RECORD_RAW, RECORD_PCAP, RECORD_JSONL };

/* An address as a pcap packet's header carries it: an IPv4-mapped IPv6 address is the IPv4 packet
 * that crossed the wire, as pcap.ip_udp_packet writes it. */
typedef struct {
    int family; /* AF_INET, AF_INET6, or 0: unknown */
    unsigned char bytes[16];
} Address;

static const unsigned char V4_MAPPED[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static void address_v6(Address *out, const struct in6_addr *a) {
    if (memcmp(a->s6_addr, V4_MAPPED, 12) == 0) {
        out->family = AF_INET;
        memcpy(out->bytes, a->s6_addr + 12, 4);
    } else {
        out->family = AF_INET6;
        memcpy(out->bytes, a->s6_addr, 16);
    }
}

/* A v4 address as the mapped v6 one, when the other end of the packet is v6 (a mix Python's
 * formatter cannot write: it does not happen on a socket udpkit binds, and is written, not fatal). */
static void address_as_v6(Address *a) {
    if (a->family == AF_INET6)
        return;
    unsigned char v4[4];
    memcpy(v4, a->bytes, 4);
    memcpy(a->bytes, V4_MAPPED, 12);
    memcpy(a->bytes + 12, v4, 4);
    a->family = AF_INET6;
}

/* The sum of data read as big-endian 16-bit words, an odd last byte padded (RFC 1071), not folded. */
static unsigned long long word_sum(const unsigned char *data, size_t length) {
    unsigned long long total = 0;
    size_t k = 0;
    for (; k + 1 < length; k += 2)
        total += (unsigned long long)data[k] << 8 | data[k + 1];
    if (k < length)
        total += (unsigned long long)data[k] << 8;
    return total;
}

static void put16(unsigned char *at, unsigned int value) {
    at[0] = (unsigned char)(value >> 8);
    at[1] = (unsigned char)value;
}

static void put32le(unsigned char *at, unsigned long value) {
    for (int k = 0; k < 4; k++)
        at[k] = (unsigned char)(value >> (8 * k));
}

/* A receive time in seconds as whole seconds and nanoseconds, as pcap.split_time makes them
 * (Python's round(): half to even, which nearbyint does in the default rounding mode); a time a
 * pcap record's 32-bit seconds cannot hold is 0. */
static void split_time(double when, unsigned long *seconds, unsigned long *nanos) {
    if (!(when >= 0.0 && when < 4294967296.0))
        when = 0.0;
    double whole = (double)(long long)when;
    double fraction = nearbyint((when - whole) * 1e9);
    *seconds = (unsigned long)(long long)whole;
    *nanos = fraction > 999999999.0 ? 999999999UL : (unsigned long)fraction;
}

static void pcap_time(double when, unsigned char out[8]) {
    unsigned long seconds, nanos;
    split_time(when, &seconds, &nanos);
    put32le(out, seconds);
    put32le(out + 4, nanos);
}

/* The pcap record of one datagram (record header, IP and UDP headers, payload) at out, which has
 * room for 16 + 48 + length; its size. */
static size_t pcap_record(unsigned char *out, double when, Address src, unsigned int sport, Address dst,
                          unsigned int dport, const unsigned char *data, size_t length) {
    if (src.family != dst.family || src.family == 0) {
        address_as_v6(&src);
        address_as_v6(&dst);
    }
    int v6 = src.family == AF_INET6;
    size_t alen = v6 ? 16 : 4, ip = v6 ? 40 : 20, udp_length = 8 + length, size = ip + udp_length;
    pcap_time(when, out);
    put32le(out + 8, (unsigned long)size);
    put32le(out + 12, (unsigned long)size);
    unsigned char *h = out + 16;
    memset(h, 0, ip);
    if (v6) {
        h[0] = 0x60;
        put16(h + 4, (unsigned int)udp_length);
        h[6] = IPPROTO_UDP;
        h[7] = 64;
        memcpy(h + 8, src.bytes, 16);
        memcpy(h + 24, dst.bytes, 16);
    } else {
        h[0] = 0x45;
        put16(h + 2, (unsigned int)(20 + udp_length));
        h[6] = 0x40; /* don't fragment */
        h[8] = 64;
        h[9] = IPPROTO_UDP;
        memcpy(h + 12, src.bytes, 4);
        memcpy(h + 16, dst.bytes, 4);
        unsigned long long s = word_sum(h, 20) % 0xFFFF;
        put16(h + 10, (unsigned int)(0xFFFF - (s ? s : 0xFFFF))); /* (a zero sum of a non-zero header is 0xFFFF) */
    }
    unsigned char *u = h + ip;
    put16(u, sport);
    put16(u + 2, dport);
    put16(u + 4, (unsigned int)udp_length);
    /* RFC 768 / RFC 8200 8.1: over the pseudo-header (addresses, protocol, length), the UDP
     * header and the data; 0xFFFF - (sum mod 0xFFFF) is never 0, as a zero checksum is sent 0xFFFF */
    unsigned long long sum = word_sum(src.bytes, alen) + word_sum(dst.bytes, alen) + IPPROTO_UDP + udp_length +
                             word_sum(u, 6) + word_sum(data, length);
    put16(u + 6, (unsigned int)(0xFFFF - sum % 0xFFFF));
    memcpy(u + 8, data, length);
    return 16 + size;
}

static const char HEX_DIGITS[] = "0123456789abcdef";

static char *put_text(char *p, const char *text, size_t length) {
    memcpy(p, text, length);
    return p + length;
}

#define PUT_LITERAL(p, literal) put_text((p), (literal), sizeof(literal) - 1)

static char *put_decimal(char *p, unsigned long long value) {
    char digits[20];
    int n = 0;
    do {
        digits[n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    while (n)
        *p++ = digits[--n];
    return p;
}

/* One JSON line as Sink.write_records writes it; its length. out has room for JSONL_ROOM(...).
 * (Written piece by piece: sprintf's format parsing was a measurable share of a line.) */
#define JSONL_ROOM(peer_len, local_len, length) (200 + (peer_len) + (local_len) + 2 * (length))
static size_t jsonl_record(char *out, double when, const char *peer, unsigned int port, const char *local,
                           unsigned int local_port, const unsigned char *data, size_t length) {
    unsigned long seconds, nanos;
    split_time(when, &seconds, &nanos);
    char *p = PUT_LITERAL(out, "{\"time\":");
    p = put_decimal(p, seconds);
    *p++ = '.';
    for (unsigned long unit = 100000000UL; unit; unit /= 10) /* sinks.decimal_time: nine decimals */
        *p++ = (char)('0' + nanos / unit % 10);
    p = PUT_LITERAL(p, ",\"peer\":{\"address\":\"");
    p = put_text(p, peer, strlen(peer));
    p = PUT_LITERAL(p, "\",\"port\":");
    p = put_decimal(p, port);
    p = PUT_LITERAL(p, "},\"local\":{\"address\":\"");
    p = put_text(p, local, strlen(local));
    p = PUT_LITERAL(p, "\",\"port\":");
    p = put_decimal(p, local_port);
    p = PUT_LITERAL(p, "},\"bytes\":");
    p = put_decimal(p, length);
    p = PUT_LITERAL(p, ",\"data_hex\":\"");
    for (size_t k = 0; k < length; k++) {
        *p++ = HEX_DIGITS[data[k] >> 4];
        *p++ = HEX_DIGITS[data[k] & 15];
    }
    p = PUT_LITERAL(p, "\"}\n");
    return (size_t)(p - out);
}

/* Room for `extra` more bytes at the end of the bytearray out: where they start, or NULL with an
 * exception set. The caller sets the final length with PyByteArray_Resize. */
static char *room_at_end(PyObject *out, size_t extra) {
    Py_ssize_t used = PyByteArray_GET_SIZE(out);
    if (extra > (size_t)(PY_SSIZE_T_MAX - used)) {
        PyErr_NoMemory();
        return NULL;
    }
    if (PyByteArray_Resize(out, used + (Py_ssize_t)extra) < 0)
        return NULL;
    return PyByteArray_AS_STRING(out) + used;
}

/* A datagram's sender as the records give it (decode_peer): the text, port and pcap address. */
static void sender_of(const struct sockaddr_in6 *name, socklen_t len, char text[INET6_ADDRSTRLEN],
                      unsigned int *port, Address *address) {
    text[0] = '\0';
    *port = 0;
    address->family = 0;
    memset(address->bytes, 0, sizeof address->bytes);
    if (name->sin6_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)name;
        format_v4(&v4->sin_addr, text);
        *port = ntohs(v4->sin_port);
        address->family = AF_INET;
        memcpy(address->bytes, &v4->sin_addr, 4);
    } else if (name->sin6_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        if (!inet_ntop(AF_INET6, &name->sin6_addr, text, INET6_ADDRSTRLEN))
            text[0] = '\0';
        *port = ntohs(name->sin6_port);
        address_v6(address, &name->sin6_addr);
    }
}

/* The bound address as a pcap header carries it, from its text (a scope after % is left out). */
static int parse_local(const char *text, Address *out) {
    char bare[INET6_ADDRSTRLEN + 16];
    snprintf(bare, sizeof bare, "%s", text);
    bare[strcspn(bare, "%")] = '\0';
    struct in6_addr v6;
    memset(out, 0, sizeof *out);
    if (inet_pton(AF_INET, bare, out->bytes) == 1) {
        out->family = AF_INET;
        return 1;
    }
    if (inet_pton(AF_INET6, bare, &v6) == 1) {
        address_v6(out, &v6);
        return 1;
    }
    return 0;
}

PyDoc_STRVAR(record_doc,
"record(fd, format, out, local_ip, local_port, most, default_time) -> (datagrams, bytes, senders)\n\n"
"A recording's read: the datagrams waiting on fd (up to count) appended to the bytearray out in\n"
"format ('raw', 'pcap' or 'jsonl'), as udpkit.listen.sinks writes them, with no Python object per\n"
"datagram. Each was sent to its destination as read (IP_PKTINFO / IPV6_PKTINFO) or else to\n"
"local_ip, at local_port; at its kernel receive time, or else default_time (a float). Only the\n"
"first `most` are recorded and counted (a listener's --count); the rest are read and left out.\n"
"datagrams, bytes, senders: those recorded, as tally counts them. An error the kernel reports in\n"
"place of a datagram is raised as OSError.");

static PyObject *Batch_record(Batch *self, PyObject *args) {
    if (!initialised(self))
        return NULL;
    int fd;
    const char *format_name, *local_ip;
    PyObject *out, *default_time;
    unsigned int local_port, most;
    if (!PyArg_ParseTuple(args, "isO!sIIO", &fd, &format_name, &PyByteArray_Type, &out, &local_ip, &local_port,
                          &most, &default_time))
        return NULL;
    int format = strcmp(format_name, "raw") == 0     ? RECORD_RAW
                 : strcmp(format_name, "pcap") == 0  ? RECORD_PCAP
                 : strcmp(format_name, "jsonl") == 0 ? RECORD_JSONL
                                                     : -1;
    if (format < 0) {
        PyErr_Format(PyExc_ValueError, "record() writes raw, pcap or jsonl, not %s", format_name);
        return NULL;
    }
    double fallback_time = PyFloat_AsDouble(default_time);
    if (fallback_time == -1.0 && PyErr_Occurred())
        return NULL;
    Address bound;
    if (!parse_local(local_ip, &bound) && format == RECORD_PCAP) {
        PyErr_Format(PyExc_ValueError, "record(): %s is not an IP address", local_ip);
        return NULL;
    }
    PyObject *senders = NULL;
    int n = receive_waiting(self, fd, MSG_DONTWAIT);
    if (n < 0)
        goto fail;
    if ((unsigned int)n > most)
        n = (int)most;
    senders = PyList_New(0);
    if (senders == NULL)
        goto fail;
    /* the room each record needs at most, then the records, then the bytearray cut to their end */
    size_t room = 0, local_room = INET6_ADDRSTRLEN + 16 + strlen(local_ip); /* (a destination read, or local_ip) */
    for (int i = 0; i < n; i++) {
        size_t length = kept_length(self, i);
        room += format == RECORD_RAW    ? length
                : format == RECORD_PCAP ? 16 + 48 + length
                                        : JSONL_ROOM(INET6_ADDRSTRLEN, local_room, length);
    }
    Py_ssize_t start = PyByteArray_GET_SIZE(out);
    char *at = room_at_end(out, room);
    if (at == NULL)
        goto fail;
    char *p = at;
    long long total = 0;
    int recorded = 0;
    PyObject *previous = NULL;
    for (int i = 0; i < n; i++) {
        struct msghdr *h = &self->headers[i].msg_hdr;
        socklen_t namelen = h->msg_namelen > NAME_SPACE ? NAME_SPACE : h->msg_namelen;
        if (namelen == 0) /* a wake-up by shutdown(SHUT_RD), not a datagram */
            continue;
        const unsigned char *data = (const unsigned char *)self->buffer + (size_t)i * (size_t)self->size;
        size_t length = kept_length(self, i);
        Control control;
        read_control(h, &control);
        char peer_text[INET6_ADDRSTRLEN];
        unsigned int port;
        Address src, dst = bound;
        sender_of(&self->names[i], namelen, peer_text, &port, &src);
        if (format == RECORD_RAW) {
            memcpy(p, data, length);
            p += length;
        } else if (format == RECORD_PCAP) {
            if (control.reply_from.family == AF_INET) {
                dst.family = AF_INET;
                memcpy(dst.bytes, &control.reply_from.info.v4.ipi_spec_dst, 4);
            } else if (control.reply_from.family == AF_INET6) {
                address_v6(&dst, &control.reply_from.info.v6.ipi6_addr);
            }
            p += pcap_record((unsigned char *)p, control.has_time ? control.timestamp : fallback_time, src, port,
                             dst, local_port, data, length);
        } else {
            p += jsonl_record(p, control.has_time ? control.timestamp : fallback_time, peer_text, port,
                              control.has_local ? control.local : local_ip, local_port, data, length);
        }
        total += (long long)length;
        recorded++;
        if (list_sender(self, &self->names[i], namelen, senders, &previous) < 0)
            goto fail_cut;
    }
    if (PyByteArray_Resize(out, start + (Py_ssize_t)(p - at)) < 0)
        goto fail;
    return Py_BuildValue("(iLN)", recorded, total, senders);
fail_cut:
    PyByteArray_Resize(out, start); /* (shrinking: cannot fail) */
fail:
    Py_XDECREF(senders);
    return NULL;
}

/* A peer tuple (ip, port[, flowinfo, scope_id]) to a sockaddr; 0 when the ip is not a literal. */
static socklen_t encode_peer(int family, PyObject *peer, struct sockaddr_in6 *out) {
    memset(out, 0, sizeof *out);
    if (!PyTuple_Check(peer) || PyTuple_GET_SIZE(peer) < 2)
        return 0;
    const char *ip = PyUnicode_Check(PyTuple_GET_ITEM(peer, 0)) ? PyUnicode_AsUTF8(PyTuple_GET_ITEM(peer, 0)) : NULL;
    long port = PyLong_Check(PyTuple_GET_ITEM(peer, 1)) ? PyLong_AsLong(PyTuple_GET_ITEM(peer, 1)) : -1;
    if (ip == NULL || port < 0 || port > 65535) {
        PyErr_Clear();
        return 0;
    }
    if (family == AF_INET) {
        struct sockaddr_in *v4 = (struct sockaddr_in *)out;
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        return inet_pton(AF_INET, ip, &v4->sin_addr) == 1 ? (socklen_t)sizeof(struct sockaddr_in) : 0;
    }
    if (family != AF_INET6 || strchr(ip, '%') != NULL) /* a scope by name: left to sendto */
        return 0;
    out->sin6_family = AF_INET6;
    out->sin6_port = htons((uint16_t)port);
    if (inet_pton(AF_INET6, ip, &out->sin6_addr) != 1)
        return 0;
    if (PyTuple_GET_SIZE(peer) >= 4) {
        unsigned long flow = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(peer, 2));
        unsigned long scope = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(peer, 3));
        if (PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        out->sin6_flowinfo = htonl((uint32_t)flow);
        out->sin6_scope_id = (uint32_t)scope;
    }
    return (socklen_t)sizeof(struct sockaddr_in6);
}

/* send()'s trailer NTP_TIME_TRAILER: the time read just before the system call, as an RFC 5905
 * timestamp (seconds since 1900 modulo 2^32, then a 32-bit fraction, big-endian) — read here, and
 * not by the caller before the call, so that nothing (an interpreter step, a preemption) comes
 * between the reading and the send: measured, a Python-side reading aged by a scheduler time slice
 * (~4 ms) for over 1% of replies when another process shared the core. */
#define TRAILER_NTP_TIME 1
/* A time as an NTP timestamp (RFC 5905 §6: seconds since 1900, era wrapped, and a 32-bit fraction). */
static void ntp_stamp(const struct timespec *t, unsigned char out[8]) {
    uint32_t seconds = (uint32_t)((uint64_t)t->tv_sec + 2208988800u);
    uint32_t fraction = (uint32_t)(((uint64_t)t->tv_nsec << 32) / 1000000000u);
    for (int k = 0; k < 4; k++) {
        out[k] = (unsigned char)(seconds >> (24 - 8 * k));
        out[4 + k] = (unsigned char)(fraction >> (24 - 8 * k));
    }
}

static void write_ntp_now(unsigned char out[8]) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    ntp_stamp(&now, out);
}

/* A source address text ("192.0.2.1", "fe80::1%3") as pktinfo; None: none. 0 when it cannot be
 * read here (an interface named, not numbered): the caller sends that message itself. */
static int encode_source(int family, PyObject *source, Source *out) {
    memset(out, 0, sizeof *out);
    if (source == Py_None)
        return 1;
    const char *text = PyUnicode_Check(source) ? PyUnicode_AsUTF8(source) : NULL;
    if (text == NULL) {
        PyErr_Clear();
        return 0;
    }
    if (family == AF_INET) {
        out->family = AF_INET;
        return inet_pton(AF_INET, text, &out->info.v4.ipi_spec_dst) == 1;
    }
    char address[INET6_ADDRSTRLEN];
    const char *scope = strchr(text, '%');
    size_t length = scope ? (size_t)(scope - text) : strlen(text);
    if (family != AF_INET6 || length >= sizeof address)
        return 0;
    memcpy(address, text, length);
    address[length] = '\0';
    if (scope != NULL) {
        char *end;
        unsigned long index = strtoul(scope + 1, &end, 10);
        if (scope[1] == '\0' || *end != '\0' || index > 0xFFFFFFFFul)
            return 0;
        out->info.v6.ipi6_ifindex = (unsigned int)index;
    }
    out->family = AF_INET6;
    return inet_pton(AF_INET6, address, &out->info.v6.ipi6_addr) == 1;
}

/* The control space of the message that names a reply's source (0 when it names none), and that
 * message (IP_PKTINFO or IPV6_PKTINFO) written at c, for a source that names one. */
static size_t source_space(const Source *src) {
    return src->family == AF_INET ? CMSG_SPACE(sizeof(struct in_pktinfo))
           : src->family == AF_INET6 ? CMSG_SPACE(sizeof(struct in6_pktinfo)) : 0;
}

/* That message's length when it is the last (or only) one: without the trailing padding. The
 * kernel copies up to 36 bytes of a sendmsg's control into a buffer on its stack (room for one
 * IPV6_PKTINFO) and allocates for more, so IPV6_PKTINFO's 40-byte CMSG_SPACE cost an allocation and
 * a free a reply where its 36-byte CMSG_LEN costs none (an echo on [::], one IPv6 client waiting for
 * each answer, the other core busy: 1.015-1.017x the round trips of the build before, where a second
 * copy of that build made 1.004-1.006x; three interleaved runs). */
static size_t source_len(const Source *src) {
    return src->family == AF_INET ? CMSG_LEN(sizeof(struct in_pktinfo))
           : src->family == AF_INET6 ? CMSG_LEN(sizeof(struct in6_pktinfo)) : 0;
}

static void write_source(struct cmsghdr *c, const Source *src) {
    const int v4 = src->family == AF_INET;
    c->cmsg_level = v4 ? IPPROTO_IP : IPPROTO_IPV6;
    c->cmsg_type = v4 ? IP_PKTINFO : IPV6_PKTINFO;
    c->cmsg_len = v4 ? CMSG_LEN(sizeof(struct in_pktinfo)) : CMSG_LEN(sizeof(struct in6_pktinfo));
    if (v4)
        memcpy(CMSG_DATA(c), &src->info.v4, sizeof src->info.v4);
    else
        memcpy(CMSG_DATA(c), &src->info.v6, sizeof src->info.v6);
}

/* The n messages laid out by Batch_send (names, namelens, two iovecs each) as sendmmsg headers:
 * a run of consecutive messages to the same peer, of one length (the last may be shorter), goes
 * as one message with UDP_SEGMENT (generic segmentation offload: the kernel or the NIC cuts it
 * into the same datagrams, for one route lookup and one skb instead of one per datagram). Runs are
 * bounded by GSO_SEGMENTS, GSO_BYTES and a segment size that fits any path's MTU (GSO_MAX_SIZE).
 * Only a run of at least gso_min_run (GSO_MIN_RUN) datagrams is segmented: a segmented run reaches
 * its peer as one train, which wakes it once for all of them, and a client that keeps a few
 * requests in flight then answers the train with a train — both sides fall into step and each
 * waits for the other's wake-up. An echo server with 8 requests in flight from one client made
 * 0.41x the round trips of `sockperf server` with every run segmented, 0.89-0.94x with runs under
 * 32 (or 64) sent datagram by datagram; from 32 in flight on, where the server has a backlog and
 * one route lookup per run pays, segmented runs made 1.09x (32), 1.33x (48), 1.49x (64), 2.8x (128),
 * and segmenting only runs of 64 gave that up at 32 and 48 (0.98x, 0.97x). */
#define GSO_SEGMENTS 64
#define GSO_BYTES 60000
#define GSO_MAX_SIZE 1232
static unsigned int group_messages(Batch *self, unsigned int first, unsigned int n) {
    unsigned int groups = 0;
    const unsigned int shortest = self->gso_min_run > 1 ? (unsigned int)self->gso_min_run : 1;
    for (unsigned int i = first; i < n;) {
        size_t size = self->iovecs[2 * i].iov_len + self->iovecs[2 * i + 1].iov_len;
        unsigned int j = i + 1;
        if (self->gso && size > 0 && size <= GSO_MAX_SIZE) {
            size_t bytes = size;
            while (j < n && j - i < GSO_SEGMENTS && self->namelens[j] == self->namelens[i] &&
                   memcmp(&self->names[j], &self->names[i], self->namelens[i]) == 0 &&
                   memcmp(&self->sources[j], &self->sources[i], sizeof(Source)) == 0) {
                size_t next = self->iovecs[2 * j].iov_len + self->iovecs[2 * j + 1].iov_len;
                if (next > size || next == 0 || bytes + next > GSO_BYTES)
                    break;
                bytes += next;
                j++;
                if (next < size) /* a shorter one can only end the run */
                    break;
            }
        }
        /* the run i..j-1: one message, or one per datagram when it is short */
        const unsigned int end = j, each = j - i >= shortest ? j - i : 1;
        for (; i < end; i += each, groups++) {
            const Source *src = &self->sources[i];
            struct msghdr *h = &self->headers[groups].msg_hdr;
            h->msg_name = self->namelens[i] ? &self->names[i] : NULL;
            h->msg_namelen = self->namelens[i];
            h->msg_iov = &self->iovecs[2 * i];
            h->msg_iovlen = 2 * (size_t)each;
            h->msg_control = NULL;
            h->msg_controllen = 0;
            h->msg_flags = 0;
            if (each > 1 || src->family) {
                h->msg_control = self->controls + (size_t)groups * CONTROL_SPACE;
                h->msg_controllen = each > 1 ? source_space(src) + CMSG_LEN(sizeof(uint16_t)) : source_len(src);
                memset(h->msg_control, 0, h->msg_controllen);
                struct cmsghdr *c = CMSG_FIRSTHDR(h);
                if (src->family) {
                    write_source(c, src);
                    c = CMSG_NXTHDR(h, c);
                }
                if (each > 1) {
                    c->cmsg_level = SOL_UDP;
                    c->cmsg_type = UDP_SEGMENT;
                    c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
                    uint16_t segment = (uint16_t)size;
                    memcpy(CMSG_DATA(c), &segment, sizeof segment);
                }
            }
            self->members[groups] = each;
        }
    }
    return groups;
}

/* Send messages first..n-1 of those laid out in names, namelens, sources and iovecs (two per message), grouped by
 * group_messages, at most `most` sendmmsg messages (0: all); `clock`: an 8-byte trailer to write the
 * NTP time into right before the call, or NULL. The sendmmsg result (-1 with *code set); *taken:
 * how many messages the sent ones carried. The GIL is released for the call. */
static int send_laid_out(Batch *self, int fd, unsigned int first, unsigned int n, unsigned int most,
                         unsigned char *clock, unsigned int *taken, int *code) {
    unsigned int groups = 0;
    int sent = 0;
    *taken = 0;
    *code = 0;
    for (int attempt = 0; attempt < 2 && n > first; attempt++) {
        groups = group_messages(self, first, n);
        if (most > 0 && groups > most)
            groups = most; /* the rest: the caller's next call, with a fresh trailer */
        Py_BEGIN_ALLOW_THREADS
        do {
            if (clock != NULL)
                write_ntp_now(clock); /* as late as it can be read: the call is next */
            sent = sendmmsg(fd, self->headers, groups, 0);
        } while (sent < 0 && errno == EINTR);
        Py_END_ALLOW_THREADS
        *code = errno;
        /* A kernel or route that cannot segment (no UDP_SEGMENT, a device without checksum
         * offload, an IPsec route): segment no more on this batch, and send again one by one. */
        if (sent < 0 && self->members[0] > 1 && (*code == EIO || *code == EINVAL || *code == ENOPROTOOPT ||
                                                  *code == EOPNOTSUPP)) {
            self->gso = 0;
            continue;
        }
        break;
    }
    for (int g = 0; g < sent; g++)
        *taken += self->members[g];
    return sent;
}

PyDoc_STRVAR(send_doc,
"send(fd, family, messages, start=0, trailer=None, most=0) -> int\n\n"
"Send messages[start:start+count], each (payload, peer) or (payload, peer, source), in one\n"
"sendmmsg; how many the kernel took. peer: None on a connected socket (to its peer). source: the\n"
"address to send from (IP_PKTINFO), or None. It stops before a message whose peer is not a\n"
"numeric address (the caller sends that one with sendto, which resolves names). An error on the\n"
"first message is raised as OSError.\n"
"Consecutive messages to one peer go as one UDP_SEGMENT message when gso is on (see group_messages).\n"
"trailer: bytes sent after every payload (a second iovec): what must be written last, such as\n"
"NTP's transmit timestamp, made once for the whole batch just before the call; or\n"
"NTP_TIME_TRAILER: the time, read by this call right before the system call, as an NTP timestamp.\n"
"most: send at most this many sendmmsg messages (a run to one peer is one), 0 for all: the\n"
"kernel sends them one after another, so a trailer written before the call ages with each.");

static PyObject *Batch_send(Batch *self, PyObject *args) {
    if (!initialised(self))
        return NULL;
    int fd, family;
    PyObject *messages, *trailer_obj = Py_None;
    Py_ssize_t start = 0;
    unsigned int most = 0;
    if (!PyArg_ParseTuple(args, "iiO|nOI", &fd, &family, &messages, &start, &trailer_obj, &most))
        return NULL;
    Py_buffer trailer = {0};
    unsigned char clock_trailer[8];
    int has_trailer = trailer_obj != Py_None, clock_kind = 0, owned = 0;
    if (has_trailer && PyLong_Check(trailer_obj)) { /* a time the kernel-side of this call reads */
        clock_kind = (int)PyLong_AsLong(trailer_obj);
        if (clock_kind != TRAILER_NTP_TIME) {
            PyErr_SetString(PyExc_ValueError, "trailer: bytes, None or NTP_TIME_TRAILER");
            return NULL;
        }
        trailer.buf = clock_trailer;
        trailer.len = sizeof clock_trailer;
    } else if (has_trailer) {
        if (PyObject_GetBuffer(trailer_obj, &trailer, PyBUF_SIMPLE) < 0)
            return NULL;
        owned = 1;
    }
    if (!PyList_Check(messages)) {
        if (owned)
            PyBuffer_Release(&trailer);
        PyErr_SetString(PyExc_TypeError, "messages must be a list of (payload, peer)");
        return NULL;
    }
    Py_ssize_t total = PyList_GET_SIZE(messages);
    unsigned int n = 0;
    Py_buffer views[1024];
    for (Py_ssize_t k = start; k < total && n < self->count; k++, n++) {
        PyObject *item = PyList_GET_ITEM(messages, k);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) < 2)
            break;
        PyObject *peer = PyTuple_GET_ITEM(item, 1);
        socklen_t len = encode_peer(family, peer, &self->names[n]); /* None: a connected socket's peer */
        if (len == 0 && peer != Py_None)
            break;
        PyObject *source = PyTuple_GET_SIZE(item) >= 3 ? PyTuple_GET_ITEM(item, 2) : Py_None;
        if (!encode_source(family, source, &self->sources[n]))
            break;
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(item, 0), &views[n], PyBUF_SIMPLE) < 0) {
            PyErr_Clear();
            break;
        }
        struct iovec *iov = &self->iovecs[2 * (size_t)n];
        iov[0].iov_base = views[n].buf;
        iov[0].iov_len = (size_t)views[n].len;
        iov[1].iov_base = has_trailer ? trailer.buf : NULL;
        iov[1].iov_len = has_trailer ? (size_t)trailer.len : 0;
        self->namelens[n] = len;
    }
    unsigned int taken = 0;
    int code = 0;
    unsigned char *clock = clock_kind == TRAILER_NTP_TIME ? clock_trailer : NULL;
    int sent = send_laid_out(self, fd, 0, n, most, clock, &taken, &code);
    for (unsigned int k = 0; k < n; k++)
        PyBuffer_Release(&views[k]);
    if (owned)
        PyBuffer_Release(&trailer);
    if (sent < 0) {
        errno = code;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLong((long)taken);
}

/* Whether message 0, just read by recvfrom (so without control messages: a unicast destination of
 * a socket that reads none), may be echoed with no Python object made: from the same sender as the
 * datagram before it, whose peer reflect() already listed, at a port of at least lowest. */
static int repeats_sender(const Batch *self, socklen_t len, int lowest) {
    const struct sockaddr_in6 *name = &self->names[0];
    int family = name->sin6_family;
    if (!((family == AF_INET && len == (socklen_t)sizeof(struct sockaddr_in)) ||
          (family == AF_INET6 && len == (socklen_t)sizeof(struct sockaddr_in6))))
        return 0;
    return ntohs(name->sin6_port) >= lowest && self->last_peer != NULL && len == self->last_len &&
           memcmp(name, &self->last_name, len) == 0;
}

/* Message 0's reply: `reply` bytes of its place in the buffer to names[0], from *from when it names
 * a source (sendmsg with IP_PKTINFO / IPV6_PKTINFO, as group_messages lays one out), else with
 * sendto. Without the GIL; EINTR is retried. */
static ssize_t send_reply0(Batch *self, int fd, size_t reply, const Source *from) {
    ssize_t out;
    if (from->family == 0) {
        do {
            out = sendto(fd, self->buffer, reply, 0, (struct sockaddr *)&self->names[0], self->namelens[0]);
        } while (out < 0 && errno == EINTR);
        return out;
    }
    union {
        char space[CMSG_SPACE(sizeof(struct in6_pktinfo))];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof control);
    struct iovec iov = {self->buffer, reply};
    struct msghdr h = {.msg_name = &self->names[0], .msg_namelen = self->namelens[0], .msg_iov = &iov,
                       .msg_iovlen = 1, .msg_control = control.space, .msg_controllen = source_len(from)};
    write_source(CMSG_FIRSTHDR(&h), from);
    do {
        out = sendmsg(fd, &h, 0);
    } while (out < 0 && errno == EINTR);
    return out;
}

/* One datagram into message 0's place, for receive_one: its length (with MSG_TRUNC: its whole
 * length), or -1 with errno. Without `control`, with recvfrom; with it (a wildcard socket, whose
 * datagrams carry their destination), with recvmsg and its control messages into message 0's
 * control space. *len: the sender's length; *controllen: the control's. Without the GIL. */
static ssize_t receive_into0(Batch *self, int fd, int flags, int control, socklen_t *len, size_t *controllen) {
    *len = NAME_SPACE;
    *controllen = 0;
    if (!control)
        return recvfrom(fd, self->buffer, (size_t)self->size, flags | MSG_TRUNC, (struct sockaddr *)&self->names[0],
                        len);
    struct iovec iov = {self->buffer, (size_t)self->size};
    struct msghdr h = {.msg_name = &self->names[0], .msg_namelen = NAME_SPACE, .msg_iov = &iov, .msg_iovlen = 1,
                       .msg_control = self->controls, .msg_controllen = CONTROL_SPACE};
    ssize_t got = recvmsg(fd, &h, flags | MSG_TRUNC);
    if (got >= 0) {
        *len = h.msg_namelen;
        *controllen = h.msg_controllen;
    }
    return got;
}

/* reflect()'s loop for a client that waits for each answer, in one release of the GIL: the pending
 * reply (message 0's data to names[0], from *from when it names a source) sent, the next datagram
 * read into message 0's place, and while it repeats the sender (repeats_sender), came to a unicast
 * address and more allows, echoed the same way — a C echo server's loop, which measured cheaper
 * than recvmmsg's msghdr handling and cheaper than a GIL release per round trip. Without `control`
 * (a socket bound to one address) it is recvfrom and sendto; with it (a wildcard socket, which reads
 * each datagram's destination) recvmsg, and sendmsg from that destination: no 64 headers to reset,
 * GIL release, Python peer or sendmmsg layout a round trip (an echo on 0.0.0.0 with the other core
 * busy: 0.92-0.99x sockperf's round trips in five runs, against 0.84-0.95x through recvmmsg). But a
 * wildcard's datagram found at the busy poll's first try means a backlog (several requests in
 * flight), which a batch round serves better — their replies in one sendmmsg, a run of 32 as one
 * segmented train; one datagram a call made 0.85-0.90x sockperf's answers at 32 in flight, against
 * 1.11-1.31x — so that ends the loop with *backlog set. The datagram that ends the loop is laid
 * out as recvmmsg would have (msg_len, the sender, its control, MSG_TRUNC) for reflect's general
 * path. *echoed, *bytes, *sent, *sent_bytes grow by what the loop did; *used: the datagrams it
 * echoed itself (rounds used); *sent_errno: the errno of a refused reply (the loop ends after the
 * receive that follows it), else 0. 1, or -1 with errno when the receive failed. */
static int receive_one(Batch *self, int fd, int flags, size_t reply, const Source *pending_from, int control,
                       unsigned int more, int lowest, unsigned long long *echoed, long long *bytes,
                       unsigned long long *sent, long long *sent_bytes, unsigned int *used, int *sent_errno,
                       int *backlog) {
    socklen_t len = NAME_SPACE;
    size_t controllen = 0;
    ssize_t got;
    int code = 0, at_once = 0;
    unsigned int extra = 0;
    Source from = *pending_from;
    Py_BEGIN_ALLOW_THREADS
    for (;;) {
        if (reply != (size_t)-1) {
            if (send_reply0(self, fd, reply, &from) < 0) {
                code = errno;
            } else {
                *sent += 1;
                *sent_bytes += (long long)reply;
            }
            reply = (size_t)-1;
        }
        Spin spin;
        int caught = 0, polls = 0;
        if (!(flags & MSG_DONTWAIT) && self->wait_epoll >= 0) { /* several sockets: wait on all (wait_in_set) */
            caught = 1;
            got = -1;
            if (wait_in_set(self, fd, &at_once) > 0)
                got = receive_into0(self, fd, flags | MSG_DONTWAIT, control, &len, &controllen);
        } else if (!(flags & MSG_DONTWAIT) && spin_begin(self, &spin)) {
            do {
                got = receive_into0(self, fd, flags | MSG_DONTWAIT, control, &len, &controllen);
                polls++;
            } while (spin_again(self, &spin, got, &caught));
            at_once = caught && got >= 0 && polls == 1;
        }
        if (!caught) /* EINTR is not retried: the caller returns, and Python runs its signal handlers */
            got = receive_into0(self, fd, flags, control, &len, &controllen);
        /* (a wildcard's datagram already queued when its poll began: a backlog, see above) */
        if (got < 0 || code || extra == more || (control && at_once) || !repeats_sender(self, len, lowest))
            break;
        from.family = 0;
        if (controllen > 0) { /* its destination: to a group or a broadcast address, reflect hands it back */
            struct msghdr h = {.msg_control = self->controls, .msg_controllen = controllen};
            Control seen;
            read_control(&h, &seen);
            if (!seen.unicast)
                break;
            from = seen.reply_from;
        }
        reply = got > self->size ? (size_t)self->size : (size_t)got;
        self->namelens[0] = len;
        *echoed += 1;
        *bytes += (long long)reply;
        extra++;
    }
    Py_END_ALLOW_THREADS
    *used = extra;
    *sent_errno = code;
    *backlog = control && at_once;
    if (got < 0)
        return -1;
    struct mmsghdr *m = &self->headers[0];
    m->msg_len = (unsigned int)got;
    m->msg_hdr.msg_name = &self->names[0];
    m->msg_hdr.msg_namelen = len;
    m->msg_hdr.msg_control = controllen > 0 ? self->controls : NULL;
    m->msg_hdr.msg_controllen = controllen;
    m->msg_hdr.msg_flags = got > self->size ? MSG_TRUNC : 0;
    return 1;
}

/* The one reply receive_one did not get to send (the loop ends, or a recvmmsg round is next). */
static int send_one(Batch *self, int fd, size_t reply, const Source *from) {
    ssize_t out;
    Py_BEGIN_ALLOW_THREADS
    out = send_reply0(self, fd, reply, from);
    Py_END_ALLOW_THREADS
    return out < 0 ? errno : 0;
}

static int append_long(PyObject *list, long value) {
    PyObject *number = PyLong_FromLong(value);
    int failed = number == NULL || PyList_Append(list, number) < 0;
    Py_XDECREF(number);
    return failed ? -1 : 0;
}

/* Send messages 0..total-1 laid out in names, namelens, sources and iovecs, in as many calls as it
 * takes: a refused sendmmsg message (a run to one peer is one) is skipped, each of its datagrams'
 * errno appended to failures; with fatal_ends, an error other than a full buffer ends the sending
 * there (a connected socket's error: the rest would go nowhere). most, clock: as send_laid_out's
 * (at most that many sendmmsg messages a call, the NTP time written into clock before each).
 * *sent and *sent_bytes grow by what the kernel took. How many failures were appended; -1 with an
 * exception set. */
static int send_all_timed(Batch *self, int fd, unsigned int total, int fatal_ends, unsigned int most,
                          unsigned char *clock, PyObject *failures, unsigned long long *sent, long long *sent_bytes) {
    unsigned int start = 0;
    int refused = 0;
    while (start < total) { /* each round sends at least one or skips one */
        unsigned int taken = 0;
        int code = 0;
        if (send_laid_out(self, fd, start, total, most, clock, &taken, &code) < 0) {
            unsigned int skipped = self->members[0] > 0 ? self->members[0] : 1;
            for (unsigned int m = 0; m < skipped && start < total; m++, start++, refused++)
                if (append_long(failures, code) < 0)
                    return -1;
            if (fatal_ends && code != EAGAIN && code != EWOULDBLOCK)
                break;
            continue;
        }
        for (unsigned int m = start; m < start + taken; m++)
            *sent_bytes += (long long)(self->iovecs[2 * (size_t)m].iov_len + self->iovecs[2 * (size_t)m + 1].iov_len);
        *sent += taken;
        start += taken;
        if (taken == 0)
            break; /* (sendmmsg took nothing without an error: not expected; the rest are not sent) */
    }
    return refused;
}

static int send_all_laid_out(Batch *self, int fd, unsigned int total, int fatal_ends, PyObject *failures,
                             unsigned long long *sent, long long *sent_bytes) {
    return send_all_timed(self, fd, total, fatal_ends, 0, NULL, failures, sent, sent_bytes);
}

/* Whether received message i's sender is an address a reply can go to (IPv4 or IPv6, whole). */
static int known_sender(const Batch *self, int i, socklen_t namelen) {
    int family = self->names[i].sin6_family;
    return (family == AF_INET && namelen >= (socklen_t)sizeof(struct sockaddr_in)) ||
           (family == AF_INET6 && namelen >= (socklen_t)sizeof(struct sockaddr_in6));
}

/* Received message i handed back to the caller as a record, appended to rest; -1 with an exception. */
static int hand_back(Batch *self, int i, const Control *control, PyObject *rest) {
    PyObject *record = record_at(self, i, control);
    int failed = record == NULL || PyList_Append(rest, record) < 0;
    Py_XDECREF(record);
    return failed ? -1 : 0;
}

/* Reply k laid out as send() lays out a message (names, namelens, sources, two iovecs), to the
 * sender of received message i >= k, from source: nothing is overwritten before it is read. */
static void lay_out_reply(Batch *self, unsigned int k, int i, socklen_t namelen, const Source *source,
                          void *data, size_t length, void *trailer, size_t trailer_length) {
    if ((unsigned int)i != k)
        memmove(&self->names[k], &self->names[i], namelen);
    self->namelens[k] = namelen;
    self->sources[k] = *source;
    self->iovecs[2 * (size_t)k].iov_base = data;
    self->iovecs[2 * (size_t)k].iov_len = length;
    self->iovecs[2 * (size_t)k + 1].iov_base = trailer;
    self->iovecs[2 * (size_t)k + 1].iov_len = trailer_length;
}

PyDoc_STRVAR(reflect_doc,
"reflect(fd, flags=MSG_DONTWAIT, lowest_port=1024, rounds=1, senders=None) -> (datagrams, bytes,\n"
"senders, sent, sent_bytes, failures, rest, error)\n\n"
"An echo service's read and answer in one call (RFC 862), without a Python object per datagram:\n"
"each waiting datagram (up to count) to a unicast address of ours from a sender port of at least\n"
"lowest_port goes back unchanged to its sender, from the address it came to when the batch reads\n"
"destinations, with one sendmmsg (runs to one peer as UDP_SEGMENT messages, as send does).\n"
"rounds: read and answer again, up to that many times, while every datagram was echoed and\n"
"nothing else happened (with flags=MSG_WAITFORONE on a blocking socket: the loop of a one-socket\n"
"echo server, in C; lone requests are then read with recvfrom and answered with sendto, and\n"
"recvmmsg is asked again every 64 of them: only those recvmmsg rounds count).\n"
"datagrams, bytes, senders: those echoed, as tally counts them (senders: appended to the list given,\n"
"as they come, so another thread sees them before the call returns; the batch's reflected_* totals\n"
"grow datagram by datagram too); sent, sent_bytes: the replies the kernel took; failures: the errno\n"
"of each reply it refused (skipped; the rest still go); rest: the other datagrams as receive's\n"
"records (a low port, a group or broadcast address), for the caller;\n"
"error: the errno the kernel reported in place of a datagram (an ICMP error), or 0. The call ends\n"
"at the first round with a failure, a rest, an error, a wake-up by shutdown(SHUT_RD), nothing\n"
"waiting (or a receive timeout), or a short batch without MSG_WAITFORONE.");

static PyObject *Batch_reflect(Batch *self, PyObject *args) {
    if (!initialised(self))
        return NULL;
    int fd, flags = MSG_DONTWAIT, lowest = 1024;
    unsigned int rounds = 1;
    PyObject *senders = NULL;
    if (!PyArg_ParseTuple(args, "i|iiIO!", &fd, &flags, &lowest, &rounds, &PyList_Type, &senders))
        return NULL;
    senders = senders != NULL ? Py_NewRef(senders) : PyList_New(0);
    PyObject *rest = PyList_New(0), *failures = PyList_New(0);
    if (senders == NULL || rest == NULL || failures == NULL)
        goto fail;
    /* the counts go to the batch's live totals as they happen; this call's are the difference */
    unsigned long long *echoed = &self->reflected_in, *sent = &self->reflected_out;
    long long *received_bytes = &self->reflected_in_bytes, *sent_bytes = &self->reflected_out_bytes;
    const unsigned long long echoed_before = *echoed, sent_before = *sent;
    const long long received_before = *received_bytes, sent_bytes_before = *sent_bytes;
    int error = 0, single = 0, with_control = 0;
    size_t pending = (size_t)-1; /* the length of a reply in message 0's place not sent yet */
    Source pending_from = {0};   /* ... and its source, when it names one */
    PyObject *previous = NULL;
    /* Only recvmmsg rounds count towards `rounds`. After a round of one datagram (a client waiting
     * for each answer), the next 63 are read one a call (receive_one: recvfrom, or recvmsg when it
     * came with control messages); each call's first round, and every 64th datagram, asks recvmmsg:
     * it learns what this socket delivers, and a flood that starts gets batches back within one
     * batch's worth of datagrams. The one-a-call datagrams repeat one sender and leave the caller
     * nothing to do, so a blocking call goes on to the next recvmmsg round before it returns: a
     * return to Python every 64 round trips measured +7 µs on that one (its p99 33-38 µs against
     * sockperf's 24-27 µs, one client waiting for each answer, the other core busy). */
    const int blocking = (flags & MSG_WAITFORONE) != 0;
    unsigned int round = 0, phase = 0; /* phase: datagrams since the last recvmmsg round */
    while (round < rounds || (blocking && single && phase < 64)) {
        int n, code = 0, backlog = 0;
        if (single && phase < 64) {
            unsigned int used = 0, more = 63 - phase; /* the loop stops short of the next recvmmsg round */
            n = receive_one(self, fd, flags & ~MSG_WAITFORONE, pending, &pending_from, with_control, more, lowest,
                            echoed, received_bytes, sent, sent_bytes, &used, &code, &backlog);
            phase += used + 1;
        } else if (pending != (size_t)-1 && (code = send_one(self, fd, pending, &pending_from)) != 0) {
            n = -2; /* the reply failed before a recvmmsg round: end here, as a failed send does */
        } else {
            if (pending != (size_t)-1) {
                *sent += 1;
                *sent_bytes += (long long)pending;
            }
            n = receive_call(self, fd, flags);
            round++;
            phase = 1;
        }
        pending = (size_t)-1;
        if (code && append_long(failures, code) < 0)
            goto fail;
        if (n == -2)
            break;
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                error = errno;
            break;
        }
        if (n == 0)
            break;
        int stop = code != 0; /* a reply refused: this round's datagrams are still answered */
        /* the next round reads one datagram (receive_one), with its control if it had any, unless a
         * wildcard's loop found a backlog */
        single = n == 1 && !backlog;
        with_control = self->headers[0].msg_hdr.msg_controllen > 0;
        /* Lay the replies out in place as send() would (names, namelens, sources, two iovecs each):
         * reply k comes from datagram i >= k, so nothing is overwritten before it is read. */
        unsigned int k = 0;
        for (int i = 0; i < n; i++) {
            struct msghdr *h = &self->headers[i].msg_hdr;
            socklen_t namelen = h->msg_namelen > NAME_SPACE ? NAME_SPACE : h->msg_namelen;
            if (namelen == 0) { /* a wake-up by shutdown(SHUT_RD), not a datagram */
                stop = 1;
                continue;
            }
            Control control;
            read_control(h, &control);
            int port = ntohs(self->names[i].sin6_port); /* sin_port and sin6_port share their place */
            if (!known_sender(self, i, namelen) || port < lowest || !control.unicast) {
                if (hand_back(self, i, &control, rest) < 0)
                    goto fail;
                stop = 1;
                continue;
            }
            if (list_sender(self, &self->names[i], namelen, senders, &previous) < 0)
                goto fail;
            size_t length = kept_length(self, i);
            *received_bytes += (long long)length;
            lay_out_reply(self, k++, i, namelen, &control.reply_from, self->buffer + (size_t)i * (size_t)self->size,
                          length, NULL, 0);
        }
        *echoed += k;
        if (k == 1 && n == 1) {
            /* one reply, from message 0's place: sent by the next round's receive_one (or after
             * the loop) with sendto, or sendmsg from its source, as a C echo server sends it */
            pending = self->iovecs[0].iov_len;
            pending_from = self->sources[0];
            k = 0;
        }
        int refused = send_all_laid_out(self, fd, k, 0, failures, sent, sent_bytes);
        if (refused < 0)
            goto fail;
        if (refused > 0)
            stop = 1;
        if (stop || (!(flags & MSG_WAITFORONE) && (unsigned int)n < self->count))
            break;
    }
    if (pending != (size_t)-1) {
        int code = send_one(self, fd, pending, &pending_from);
        if (code && append_long(failures, code) < 0)
            goto fail;
        if (!code) {
            *sent += 1;
            *sent_bytes += (long long)pending;
        }
    }
    return Py_BuildValue("(KLNKLNNi)", *echoed - echoed_before, *received_bytes - received_before, senders,
                         *sent - sent_before, *sent_bytes - sent_bytes_before, failures, rest, error);
fail:
    Py_XDECREF(senders);
    Py_XDECREF(rest);
    Py_XDECREF(failures);
    return NULL;
}

PyDoc_STRVAR(forward_doc,
"forward(from_fd, to_fd, flags=MSG_DONTWAIT) -> (datagrams, bytes, sent, sent_bytes, failures, error)\n\n"
"A relay's hop in one call, without a Python object per datagram: the datagrams waiting on from_fd\n"
"(up to count) sent on, unchanged and in order, on the connected socket to_fd with one sendmmsg\n"
"(runs of one size as UDP_SEGMENT messages). datagrams, bytes: read; sent, sent_bytes: taken by\n"
"the kernel; failures: the errno of each send it refused — a full buffer (EAGAIN) skips that\n"
"datagram and goes on, any other ends the call there (the rest are not sent); error: the errno\n"
"reported on from_fd in place of a datagram (an ICMP error), or 0.");

static PyObject *Batch_forward(Batch *self, PyObject *args) {
    if (!initialised(self))
        return NULL;
    int from_fd, to_fd, flags = MSG_DONTWAIT;
    if (!PyArg_ParseTuple(args, "ii|i", &from_fd, &to_fd, &flags))
        return NULL;
    PyObject *failures = PyList_New(0);
    if (failures == NULL)
        return NULL;
    int n = receive_call(self, from_fd, flags), error = 0;
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            error = errno;
        n = 0;
    }
    long long received_bytes = 0, sent_bytes = 0;
    static const Source no_source; /* (zeroed: the kernel picks) */
    /* laid out as send() lays out messages to a connected socket's peer (no name, no source);
     * iovecs[2i] may be message j > i's receive iovec: the data is read from the buffer itself */
    for (int i = 0; i < n; i++) {
        size_t length = kept_length(self, i);
        received_bytes += (long long)length;
        lay_out_reply(self, (unsigned int)i, i, 0, &no_source, self->buffer + (size_t)i * (size_t)self->size, length,
                      NULL, 0);
    }
    unsigned long long sent = 0;
    if (send_all_laid_out(self, to_fd, (unsigned int)n, 1, failures, &sent, &sent_bytes) < 0) {
        Py_DECREF(failures);
        return NULL;
    }
    return Py_BuildValue("(iLKLNi)", n, received_bytes, sent, sent_bytes, failures, error);
}

#define SEEN_SLOTS 4096

/* Whether name is new to answer_ntp's table of senders handed out (and now in it): a recurring
 * client is found there and costs no Python object. A slot holds the last address hashed to it,
 * so a sender is handed out again at worst, never missed. */
static int new_sender(Batch *self, const struct sockaddr_in6 *name, socklen_t len) {
    if (self->seen == NULL) {
        self->seen = PyMem_Calloc(SEEN_SLOTS, sizeof(struct sockaddr_in6));
        self->seen_lens = PyMem_Calloc(SEEN_SLOTS, sizeof(socklen_t));
        if (self->seen == NULL || self->seen_lens == NULL)
            return 1; /* (no table: every sender is new, as without one) */
    }
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    const unsigned char *bytes = (const unsigned char *)name;
    for (socklen_t k = 0; k < len; k++)
        h = (h ^ bytes[k]) * 1099511628211ull;
    size_t slot = (size_t)((h ^ (h >> 32)) & (SEEN_SLOTS - 1));
    if (self->seen_lens[slot] == len && memcmp(&self->seen[slot], name, len) == 0)
        return 0;
    memcpy(&self->seen[slot], name, len);
    self->seen_lens[slot] = len;
    return 1;
}

/* A batch read for a call that answers it (answer_ntp, answer_kept): how many datagrams came (0 when
 * none was waiting), *error set to the errno the kernel reported in place of one (an ICMP error). */
static int receive_to_answer(Batch *self, int fd, int flags, int *error) {
    int n = receive_call(self, fd, flags);
    *error = 0;
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            *error = errno;
        n = 0;
    }
    return n;
}

/* Received message i as an answering call reads it: sender length, control data, bytes (within the
 * buffer). 0 for a wake-up by shutdown(SHUT_RD), which is not a datagram. */
typedef struct {
    socklen_t namelen;
    Control control;
    unsigned char *data;
    size_t length;
} Received;

static int received_at(Batch *self, int i, Received *out) {
    struct msghdr *h = &self->headers[i].msg_hdr;
    out->namelen = h->msg_namelen > NAME_SPACE ? NAME_SPACE : h->msg_namelen;
    if (out->namelen == 0)
        return 0;
    read_control(h, &out->control);
    out->data = (unsigned char *)self->buffer + (size_t)i * (size_t)self->size;
    out->length = kept_length(self, i);
    return 1;
}

/* Received message i's sender appended to senders unless handed out before (new_sender); -1 with an
 * exception set. */
static int hand_out_sender(Batch *self, int i, socklen_t namelen, PyObject *senders) {
    if (!new_sender(self, &self->names[i], namelen))
        return 0;
    PyObject *peer = peer_of(self, &self->names[i], namelen);
    int failed = peer == NULL || PyList_Append(senders, peer) < 0;
    Py_XDECREF(peer);
    return failed ? -1 : 0;
}

PyDoc_STRVAR(answer_ntp_doc,
"answer_ntp(fd, flags, accept, start_for, most, senders) -> (answered, bytes, sent, sent_bytes,\n"
"failures, rest, error)\n\n"
"An NTP server's read and answer in one call (RFC 5905 §8, a server's mode 4 reply), without a\n"
"Python object per request: what a reply says is the caller's, how it is put together is this.\n"
"Each waiting datagram to a unicast address of ours, of at least 48 bytes, whose first byte is\n"
"allowed by accept (256 bytes, one per first byte: nonzero answers) gets back the 24 bytes\n"
"start_for(first byte, poll byte, second) returns (header and reference time, the caller's rules;\n"
"asked once per call for each first byte, poll and second), origin = the request's transmit time,\n"
"receive = its kernel receive time (SO_TIMESTAMPNS; else the time of the read), and transmit =\n"
"the time read right before each sendmmsg of at most most messages (the kernel sends them in\n"
"turn: the stamps age with each). It is sent from the address the request came to.\n"
"answered, bytes: the requests answered; sent, sent_bytes: the replies the kernel took;\n"
"failures: the errno of each reply it refused (skipped); senders: each sender not handed out\n"
"before, appended (a recurring client is looked up in a table of the batch, not made again);\n"
"rest: the other datagrams as receive's records, for the caller's general path (short, another\n"
"mode or version, a group or broadcast address); error: the errno the kernel reported in place\n"
"of a datagram (an ICMP error), or 0.");

typedef struct {
    int key;
    time_t second;
    unsigned char start[24];
} Start;

static PyObject *Batch_answer_ntp(Batch *self, PyObject *args) {
    if (!initialised(self))
        return NULL;
    int fd, flags;
    Py_buffer accept;
    PyObject *start_for, *senders;
    unsigned int most;
    if (!PyArg_ParseTuple(args, "iiy*OIO!", &fd, &flags, &accept, &start_for, &most, &PyList_Type, &senders))
        return NULL;
    PyObject *rest = NULL, *failures = NULL;
    if (accept.len != 256) {
        PyErr_SetString(PyExc_ValueError, "accept: 256 bytes, one per first byte");
        goto fail;
    }
    const unsigned char *allowed = accept.buf;
    rest = PyList_New(0);
    failures = PyList_New(0);
    if (rest == NULL || failures == NULL)
        goto fail;
    unsigned long long answered = 0, sent = 0;
    long long received_bytes = 0, sent_bytes = 0;
    int error;
    int n = receive_to_answer(self, fd, flags, &error);
    struct timespec read_at;
    clock_gettime(CLOCK_REALTIME, &read_at);
    Start starts[8]; /* this call's first byte, poll and second -> the caller's 24 bytes */
    int known_starts = 0;
    unsigned char transmit[8]; /* written right before each sendmmsg */
    unsigned int k = 0;
    for (int i = 0; i < n; i++) {
        Received got;
        if (!received_at(self, i, &got))
            continue; /* a wake-up by shutdown(SHUT_RD), not a datagram */
        unsigned char *data = got.data;
        if (!known_sender(self, i, got.namelen) || !got.control.unicast || got.length < 48 || !allowed[data[0]]) {
            if (hand_back(self, i, &got.control, rest) < 0)
                goto fail;
            continue;
        }
        const struct timespec *when = got.control.has_time ? &got.control.time : &read_at;
        int key = data[0] << 8 | data[2];
        const unsigned char *start = NULL;
        for (int s = 0; s < known_starts; s++)
            if (starts[s].key == key && starts[s].second == when->tv_sec)
                start = starts[s].start;
        if (start == NULL) {
            PyObject *made = PyObject_CallFunction(start_for, "iiL", data[0], data[2], (long long)when->tv_sec);
            if (made == NULL)
                goto fail;
            if (!PyBytes_Check(made) || PyBytes_GET_SIZE(made) != 24) {
                Py_DECREF(made);
                PyErr_SetString(PyExc_ValueError, "start_for: 24 bytes");
                goto fail;
            }
            Start *slot = &starts[known_starts < 8 ? known_starts++ : 7];
            slot->key = key;
            slot->second = when->tv_sec;
            memcpy(slot->start, PyBytes_AS_STRING(made), 24);
            Py_DECREF(made);
            start = slot->start;
        }
        if (hand_out_sender(self, i, got.namelen, senders) < 0)
            goto fail;
        received_bytes += (long long)got.length;
        /* the reply in the request's place: its first 40 bytes, then the transmit time */
        unsigned char origin[8];
        memcpy(origin, data + 40, 8);
        memcpy(data, start, 24);
        memcpy(data + 24, origin, 8);
        ntp_stamp(when, data + 32);
        lay_out_reply(self, k++, i, got.namelen, &got.control.reply_from, data, 40, transmit, sizeof transmit);
    }
    answered = k;
    if (send_all_timed(self, fd, k, 0, most, transmit, failures, &sent, &sent_bytes) < 0)
        goto fail;
    PyBuffer_Release(&accept);
    return Py_BuildValue("(KLKLNNi)", answered, received_bytes, sent, sent_bytes, failures, rest, error);
fail:
    PyBuffer_Release(&accept);
    Py_XDECREF(rest);
    Py_XDECREF(failures);
    return NULL;
}

PyDoc_STRVAR(answer_kept_doc,
"answer_kept(fd, flags, kept, hits, senders, fresh=None) -> (answered, bytes, sent, sent_bytes,\n"
"failures, rest, error)\n\n"
"A server's read and answer in one call for the requests it has answered before, without a\n"
"Python object per request but the key looked up: what is kept and why is the caller's.\n"
"kept: a dict from a request's bytes after its first two (a DNS query but its ID) to a tuple\n"
"(answer, outcome): the reply is the request's own first two bytes followed by answer, sent from\n"
"the address the request came to. outcome is appended to hits once per reply, for the caller's\n"
"counts. Each waiting datagram to a unicast address of ours of at least 12 bytes is looked up;\n"
"the others, and those not in kept, are rest: receive's records, for the caller's general path,\n"
"in order. answered, bytes: the requests answered; sent, sent_bytes: the replies the kernel took;\n"
"failures: the errno of each reply it refused (skipped); senders: each sender not handed out\n"
"before, appended (see answer_ntp); error: the errno the kernel reported in place of a datagram\n"
"(an ICMP error), or 0.\n"
"fresh: called with a looked-up request not in kept (its bytes, ID included), it returns an\n"
"(answer, outcome) to give as a kept one is given, or None to leave the request to rest: the\n"
"caller's answers that need no more than the request's bytes, without a record per request.");

static PyObject *Batch_answer_kept(Batch *self, PyObject *args) {
    if (!initialised(self))
        return NULL;
    int fd, flags;
    PyObject *kept, *hits, *senders, *fresh = Py_None;
    if (!PyArg_ParseTuple(args, "iiO!O!O!|O", &fd, &flags, &PyDict_Type, &kept, &PyList_Type, &hits, &PyList_Type,
                          &senders, &fresh))
        return NULL;
    if (fresh == Py_None)
        fresh = NULL;
    PyObject *rest = PyList_New(0), *failures = PyList_New(0);
    if (rest == NULL || failures == NULL)
        goto fail;
    unsigned long long sent = 0;
    long long received_bytes = 0, sent_bytes = 0;
    int error;
    int n = receive_to_answer(self, fd, flags, &error);
    unsigned int k = 0;
    for (int i = 0; i < n; i++) {
        Received got;
        if (!received_at(self, i, &got))
            continue; /* a wake-up by shutdown(SHUT_RD), not a datagram */
        PyObject *found = NULL; /* borrowed from kept, or (owned) fresh's */
        int owned = 0;
        if (known_sender(self, i, got.namelen) && got.control.unicast && got.length >= 12 &&
            !(self->headers[i].msg_hdr.msg_flags & MSG_TRUNC)) {
            PyObject *key = PyBytes_FromStringAndSize((char *)got.data + 2, (Py_ssize_t)got.length - 2);
            if (key == NULL)
                goto fail;
            found = PyDict_GetItemWithError(kept, key);
            Py_DECREF(key);
            if (found == NULL && PyErr_Occurred())
                goto fail;
            if (found == NULL && fresh != NULL) {
                PyObject *request = PyBytes_FromStringAndSize((char *)got.data, (Py_ssize_t)got.length);
                if (request == NULL)
                    goto fail;
                found = PyObject_CallOneArg(fresh, request);
                Py_DECREF(request);
                if (found == NULL)
                    goto fail;
                owned = 1;
            }
        }
        if (found == NULL || !PyTuple_Check(found) || PyTuple_GET_SIZE(found) != 2 ||
            !PyBytes_Check(PyTuple_GET_ITEM(found, 0)) ||
            PyBytes_GET_SIZE(PyTuple_GET_ITEM(found, 0)) + 2 > self->size) {
            if (owned)
                Py_DECREF(found); /* (None: the request is the caller's) */
            if (hand_back(self, i, &got.control, rest) < 0)
                goto fail;
            continue;
        }
        /* found, when borrowed, is used up before anything that allocates a tracked object (and so
         * may run a collection, and a finalizer that changes kept) */
        PyObject *answer = PyTuple_GET_ITEM(found, 0);
        size_t size = (size_t)PyBytes_GET_SIZE(answer);
        memcpy(got.data + 2, PyBytes_AS_STRING(answer), size); /* the reply in the request's place, its ID kept */
        lay_out_reply(self, k++, i, got.namelen, &got.control.reply_from, got.data, 2 + size, NULL, 0);
        int appended = PyList_Append(hits, PyTuple_GET_ITEM(found, 1));
        if (owned)
            Py_DECREF(found);
        if (appended < 0 || hand_out_sender(self, i, got.namelen, senders) < 0)
            goto fail;
        received_bytes += (long long)got.length;
    }
    if (send_all_laid_out(self, fd, k, 0, failures, &sent, &sent_bytes) < 0)
        goto fail;
    return Py_BuildValue("(ILKLNNi)", k, received_bytes, sent, sent_bytes, failures, rest, error);
fail:
    Py_XDECREF(rest);
    Py_XDECREF(failures);
    return NULL;
}

static PyMethodDef Batch_methods[] = {
    {"receive", (PyCFunction)Batch_receive, METH_VARARGS, receive_doc},
    {"tally", (PyCFunction)Batch_tally, METH_VARARGS, tally_doc},
    {"record", (PyCFunction)Batch_record, METH_VARARGS, record_doc},
    {"send", (PyCFunction)Batch_send, METH_VARARGS, send_doc},
    {"reflect", (PyCFunction)Batch_reflect, METH_VARARGS, reflect_doc},
    {"forward", (PyCFunction)Batch_forward, METH_VARARGS, forward_doc},
    {"answer_ntp", (PyCFunction)Batch_answer_ntp, METH_VARARGS, answer_ntp_doc},
    {"answer_kept", (PyCFunction)Batch_answer_kept, METH_VARARGS, answer_kept_doc},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Batch_members[] = {
    {"count", T_UINT, offsetof(Batch, count), READONLY, "datagrams per call"},
    {"size", T_PYSSIZET, offsetof(Batch, size), READONLY, "bytes kept per datagram"},
    {"gso", T_INT, offsetof(Batch, gso), 0, "send runs to one peer as one UDP_SEGMENT message (cleared if refused)"},
    {"gso_min_run", T_INT, offsetof(Batch, gso_min_run), 0, "the shortest run gso segments (32)"},
    {"busy_poll_ns", T_LONGLONG, offsetof(Batch, busy_poll_ns), 0,
     "the busy-poll window before a blocking receive (MSG_WAITFORONE; reflect's recvfrom), in ns (0: never)"},
    {"spin_caught", T_ULONGLONG, offsetof(Batch, spin_caught), READONLY,
     "waits the busy poll ended with a datagram (or an error) in hand"},
    {"spin_idle", T_ULONGLONG, offsetof(Batch, spin_idle), READONLY, "busy polls whose window ran out"},
    {"spin_preempted", T_ULONGLONG, offsetof(Batch, spin_preempted), READONLY,
     "busy polls stopped because the core was taken"},
    {"wait_epoll", T_INT, offsetof(Batch, wait_epoll), 0,
     "an epoll set of several sockets a blocking receive waits on in place of its own (-1: its own): it returns\n"
     "with nothing when another of the set's descriptors is ready first"},
    {"wait_ms", T_INT, offsetof(Batch, wait_ms), 0, "the longest wait on wait_epoll, in ms (-1: no limit)"},
    {"wait_ready", T_INT, offsetof(Batch, wait_ready), READONLY,
     "the descriptor other than its own the last wait on wait_epoll found ready (-1: none)"},
    {"reflected_in", T_ULONGLONG, offsetof(Batch, reflected_in), READONLY, "datagrams reflect() echoed, in all"},
    {"reflected_in_bytes", T_LONGLONG, offsetof(Batch, reflected_in_bytes), READONLY, "their bytes"},
    {"reflected_out", T_ULONGLONG, offsetof(Batch, reflected_out), READONLY, "their replies the kernel took"},
    {"reflected_out_bytes", T_LONGLONG, offsetof(Batch, reflected_out_bytes), READONLY, "those replies' bytes"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject BatchType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "udpkit.net._mmsg.Batch",
    .tp_doc = PyDoc_STR("Batch(count=64, size=65536, ancillary=False, factory=None, gso=True): preallocated "
                        "recvmmsg/sendmmsg arrays, for one thread at a time (the calls release the GIL)"),
    .tp_basicsize = sizeof(Batch),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Batch_init,
    .tp_dealloc = (destructor)Batch_dealloc,
    .tp_methods = Batch_methods,
    .tp_members = Batch_members,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "udpkit.net._mmsg",
    "recvmmsg and sendmmsg for udpkit's hot paths (optional; udpkit.net.mmsg falls back without it).", -1, NULL,
};

PyMODINIT_FUNC PyInit__mmsg(void) {
    if (PyType_Ready(&BatchType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "NTP_TIME_TRAILER", TRAILER_NTP_TIME) < 0 ||
        PyModule_AddObjectRef(m, "Batch", (PyObject *)&BatchType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

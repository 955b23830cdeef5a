/* Optional C accelerator for gws13: XOR (un)masking of WebSocket payloads.
 * gws13.frames falls back to a pure-Python version when this does not build. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* Python 3.9 compatibility (gws13 supports 3.9-3.13): Py_NewRef is new in 3.10.
 * Without this the module compiles with an implicit declaration and then fails
 * to import ("undefined symbol: Py_NewRef"). */
#if PY_VERSION_HEX < 0x030A0000 && !defined(Py_NewRef)
static inline PyObject *
gws13_Py_NewRef(PyObject *obj)
{
    Py_INCREF(obj);
    return obj;
}
#define Py_NewRef(obj) gws13_Py_NewRef((PyObject *)(obj))
#endif

static void
xor_mask(unsigned char *o, const unsigned char *in, Py_ssize_t n, const unsigned char *m)
{
    Py_ssize_t i = 0;
    uint64_t k8;
    unsigned char kb[8];
    for (int j = 0; j < 8; j++)
        kb[j] = m[j & 3];
    memcpy(&k8, kb, 8);
#if defined(__SSE2__)
    /* 64 bytes a turn: compilers do not vectorise the word loop below because
     * the buffers might overlap; unmasking is as costly as the kernel's copy
     * of the same bytes on large messages, so this matters */
    __m128i k16 = _mm_set1_epi64x((long long)k8);
    for (; i + 64 <= n; i += 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)(in + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(in + i + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(in + i + 32));
        __m128i d = _mm_loadu_si128((const __m128i *)(in + i + 48));
        _mm_storeu_si128((__m128i *)(o + i), _mm_xor_si128(a, k16));
        _mm_storeu_si128((__m128i *)(o + i + 16), _mm_xor_si128(b, k16));
        _mm_storeu_si128((__m128i *)(o + i + 32), _mm_xor_si128(c, k16));
        _mm_storeu_si128((__m128i *)(o + i + 48), _mm_xor_si128(d, k16));
    }
#endif
    /* word-at-a-time; memcpy keeps it alignment-safe and compiles to plain loads */
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, in + i, 8);
        w ^= k8;
        memcpy(o + i, &w, 8);
    }
    for (; i < n; i++)
        o[i] = in[i] ^ m[i & 3];
}

static PyObject *
apply_mask(PyObject *self, PyObject *args)
{
    Py_buffer data, mask;
    if (!PyArg_ParseTuple(args, "y*y*:apply_mask", &data, &mask))
        return NULL;
    if (mask.len != 4) {
        PyBuffer_Release(&data);
        PyBuffer_Release(&mask);
        PyErr_SetString(PyExc_ValueError, "mask must be 4 bytes");
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, data.len);
    if (out != NULL)
        xor_mask((unsigned char *)PyBytes_AS_STRING(out), data.buf, data.len, mask.buf);
    PyBuffer_Release(&data);
    PyBuffer_Release(&mask);
    return out;
}

/* The payload of a large frame is read and unmasked straight into the bytes
 * object the application will receive: no per-chunk objects, no join at the
 * end.  The object is private to the protocol until it is complete (never
 * hashed or shared), so filling it in place is safe.  A Payload exports a
 * writable buffer over it and keeps it alive while a view exists. */
typedef struct {
    PyObject_HEAD
    PyObject *target;
} Payload;

static int
payload_getbuffer(Payload *self, Py_buffer *view, int flags)
{
    return PyBuffer_FillInfo(view, (PyObject *)self, PyBytes_AS_STRING(self->target),
                             PyBytes_GET_SIZE(self->target), 0, flags);
}

static void
payload_dealloc(Payload *self)
{
    Py_XDECREF(self->target);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyBufferProcs payload_as_buffer = {(getbufferproc)payload_getbuffer, NULL};

static PyTypeObject PayloadType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gws13._speedups.Payload",
    .tp_basicsize = sizeof(Payload),
    .tp_dealloc = (destructor)payload_dealloc,
    .tp_as_buffer = &payload_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
};

#if defined(__GLIBC__)
#include <stdlib.h>
/* glibc takes a large block from the top of the heap only once a freed
 * mmap()ed block has raised its threshold above that size, and gives the top
 * back to the kernel (brk) as soon as more than twice the threshold lies free
 * there.  An echo of n-byte messages keeps two alive (one being read while
 * the one before is sent), then none: with the threshold at n, the heap grew
 * and shrank by 2n for every message and each page was faulted in and zeroed
 * again, a quarter of the server's time with 1 MiB messages.  Freeing one
 * mmap()ed block of 2n bytes, none of it ever touched, moves the thresholds
 * the way glibc moves them whenever it frees such a block.  It does so up to
 * 32 MiB only, and not at all once the program has called mallopt(). */
#define HEAP_HINT_MIN ((size_t)1 << 17)          /* glibc's initial threshold */
#define HEAP_HINT_MAX ((size_t)4 * 1024 * 1024 * sizeof(long))
static size_t heap_hint;

static void
hint_heap(size_t n)
{
    size_t block = 2 * n < HEAP_HINT_MAX ? 2 * n : HEAP_HINT_MAX;
    if (n < HEAP_HINT_MIN || block <= heap_hint)
        return;
    heap_hint = block;
    /* volatile: a compiler may drop a malloc whose block is only freed */
    void *volatile p = malloc(block);
    free(p);
}
#else
#define hint_heap(n) ((void)0)
#endif

static PyObject *
new_payload(PyObject *self, PyObject *arg)
{
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "negative size");
        return NULL;
    }
    hint_heap((size_t)n);
    Payload *exporter = PyObject_New(Payload, &PayloadType);
    if (exporter == NULL)
        return NULL;
    exporter->target = PyBytes_FromStringAndSize(NULL, n);
    if (exporter->target == NULL) {
        Py_DECREF(exporter);
        return NULL;
    }
    PyObject *view = PyMemoryView_FromObject((PyObject *)exporter);
    PyObject *result = view == NULL ? NULL : PyTuple_Pack(2, exporter->target, view);
    Py_XDECREF(view);
    Py_DECREF(exporter);
    return result;
}

static PyObject *
unmask_into(PyObject *self, PyObject *args)
{
    Py_buffer dst, data, mask = {0};
    Py_ssize_t offset;
    if (!PyArg_ParseTuple(args, "w*ny*z*:unmask_into", &dst, &offset, &data, &mask))
        return NULL;
    PyObject *result = NULL;
    if (mask.buf != NULL && mask.len != 4)
        PyErr_SetString(PyExc_ValueError, "mask must be 4 bytes");
    else if (offset < 0 || offset > dst.len || data.len > dst.len - offset)
        PyErr_SetString(PyExc_ValueError, "data does not fit at this offset");
    else {
        unsigned char *o = (unsigned char *)dst.buf + offset;
        /* data read straight into place is unmasked where it lies */
        if (mask.buf != NULL)
            xor_mask(o, data.buf, data.len, mask.buf);
        else if (o != data.buf)
            memmove(o, data.buf, data.len);
        result = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&dst);
    PyBuffer_Release(&data);
    if (mask.buf != NULL)
        PyBuffer_Release(&mask);
    return result;
}

/* A connection's traffic counters (gws13.metrics), kept where the hot paths
 * below can add to them without a Python-level increment per message:
 * protocol.Counters is this type, or a pure-Python class of the same
 * attributes without the extension. */
typedef struct {
    PyObject_HEAD
    long long bytes_in, messages_in, payload_in, queue_high, messages_out, payload_out;
} Counters;

static PyMemberDef counters_members[] = {
    {"bytes_in", T_LONGLONG, offsetof(Counters, bytes_in), 0, "wire bytes received"},
    {"messages_in", T_LONGLONG, offsetof(Counters, messages_in), 0, "messages received"},
    {"payload_in", T_LONGLONG, offsetof(Counters, payload_in), 0, "application bytes received"},
    {"queue_high", T_LONGLONG, offsetof(Counters, queue_high), 0, "the most messages the read queue held"},
    {"messages_out", T_LONGLONG, offsetof(Counters, messages_out), 0, "messages sent"},
    {"payload_out", T_LONGLONG, offsetof(Counters, payload_out), 0, "application bytes sent"},
    {NULL},
};

static PyTypeObject CountersType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gws13._speedups.Counters",
    .tp_basicsize = sizeof(Counters),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_members = counters_members,
    .tp_doc = "Counters(): a connection's byte, message and payload counts, all 0.",
};

/* The common case of a server's input, in one call: consecutive complete,
 * masked, unfragmented text or binary frames of at most 125 payload bytes and
 * within both limits (max_frame_size, max_message_size), starting at `pos`.  Their data (str for text, bytes for
 * binary) are appended to `out` and counted in `counts` (the bytes taken,
 * messages, payload bytes, the most items `out` held); returns the position of
 * the first byte not consumed.  Anything else (a control frame, a longer or partial frame, text
 * that is not UTF-8) is left for the Python parser, which checks and reports it. */
static PyObject *
scan_small(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    /* called once per read: METH_FASTCALL, no format-string parsing */
    if (nargs != 6 || !PyList_Check(args[4]) || !Py_IS_TYPE(args[5], &CountersType)) {
        PyErr_SetString(PyExc_TypeError,
                        "scan_small(data, pos, max_frame_size, max_message_size, out: list, counts: Counters)");
        return NULL;
    }
    Counters *counts = (Counters *)args[5];
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]), start = pos;
    Py_ssize_t limit = PyLong_AsSsize_t(args[2]);
    Py_ssize_t message_limit = PyLong_AsSsize_t(args[3]);
    if (PyErr_Occurred())
        return NULL;
    PyObject *out = args[4];
    Py_buffer b;
    if (PyObject_GetBuffer(args[0], &b, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *p = (const unsigned char *)b.buf;
    Py_ssize_t n = b.len;
    unsigned char payload[125];
    if (limit > message_limit)
        limit = message_limit;
    if (limit > 125)
        limit = 125;
    while (pos >= 0 && n - pos >= 6) {
        unsigned char b0 = p[pos], b1 = p[pos + 1];
        Py_ssize_t len = b1 & 0x7F;
        if ((b0 != 0x81 && b0 != 0x82) || !(b1 & 0x80) || len > limit || n - pos - 6 < len)
            break;
        xor_mask(payload, p + pos + 6, len, p + pos + 2);
        PyObject *item;
        if (b0 == 0x81) {
            item = PyUnicode_DecodeUTF8((const char *)payload, len, NULL);
            if (item == NULL) {
                if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
                    goto error;
                PyErr_Clear();
                break;
            }
        }
        else {
            item = PyBytes_FromStringAndSize((const char *)payload, len);
            if (item == NULL)
                goto error;
        }
        int failed = PyList_Append(out, item);
        Py_DECREF(item);
        if (failed)
            goto error;
        counts->messages_in++;
        counts->payload_in += len;
        pos += 6 + len;
    }
    PyBuffer_Release(&b);
    if (pos > start)
        counts->bytes_in += pos - start;
    if (PyList_GET_SIZE(out) > counts->queue_high)
        counts->queue_high = PyList_GET_SIZE(out);
    return PyLong_FromSsize_t(pos);
error:
    PyBuffer_Release(&b);
    return NULL;
}

/* A server's usual message out, in one call: an exact str or bytes of at most
 * 125 bytes becomes its whole unmasked frame, counted in `counts`; text for a
 * str and binary for bytes unless `binary` (True, False or None) says
 * otherwise.  Anything else (bytes sent as text: they must be checked) returns
 * None for the Python encoder, which also raises its errors (a str that is not
 * encodable, for one). */
static PyObject *
frame_small(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !Py_IS_TYPE(args[2], &CountersType)) {
        PyErr_SetString(PyExc_TypeError, "frame_small(data, binary, counts: Counters)");
        return NULL;
    }
    PyObject *data = args[0], *binary = args[1], *encoded = NULL, *frame;
    const char *src;
    Py_ssize_t len;
    unsigned char opcode;
    if (PyUnicode_CheckExact(data)) {
        if (binary != Py_None && binary != Py_True && binary != Py_False)
            Py_RETURN_NONE;  /* Python decides what else is true */
        opcode = binary == Py_True ? 0x82 : 0x81;
        len = PyUnicode_GET_LENGTH(data);
        if (len > 125)
            Py_RETURN_NONE;  /* at least one byte per character */
        if (PyUnicode_IS_ASCII(data))
            src = (const char *)PyUnicode_1BYTE_DATA(data);
        else {
            /* not PyUnicode_AsUTF8AndSize: that keeps a copy on the caller's str */
            encoded = PyUnicode_AsUTF8String(data);
            if (encoded == NULL) {
                PyErr_Clear();
                Py_RETURN_NONE;
            }
            src = PyBytes_AS_STRING(encoded);
            len = PyBytes_GET_SIZE(encoded);
            if (len > 125) {
                Py_DECREF(encoded);
                Py_RETURN_NONE;
            }
        }
    }
    else if (PyBytes_CheckExact(data) && binary != Py_False) {
        opcode = 0x82;
        src = PyBytes_AS_STRING(data);
        len = PyBytes_GET_SIZE(data);
        if (len > 125)
            Py_RETURN_NONE;
    }
    else
        Py_RETURN_NONE;
    frame = PyBytes_FromStringAndSize(NULL, 2 + len);
    if (frame != NULL) {
        unsigned char *o = (unsigned char *)PyBytes_AS_STRING(frame);
        o[0] = opcode;
        o[1] = (unsigned char)len;
        memcpy(o + 2, src, len);
        Counters *counts = (Counters *)args[2];
        counts->messages_out++;
        counts->payload_out += len;
    }
    Py_XDECREF(encoded);
    return frame;
}

#ifndef _WIN32
/* The hub's broadcast (gws13.hub only; nothing in the protocol core calls
 * this): one frame written to each member of a room whose connection can take
 * it straight away, which is what Hub._offer followed by WebSocket._write_now
 * does, minus ~2 us of interpreter per member (with 10,000 members that was
 * 40% of the time to the last one).  The checks mirror _offer's fast path and
 * WebSocket.closed; a member that fails any of them, whose attributes are not
 * what they should be, or whose socket fails with anything but EAGAIN is left
 * to the Python path, which does the same thing with its own error handling. */
#include <errno.h>
#include <sys/socket.h>

static PyObject *socket_type;  /* _socket.socket (gevent's raw sockets subclass it) */
static PyObject *deque_type;  /* collections.deque: its len() runs no Python code */
static PyObject *s_ws, *s_hub, *s_queue, *s_closing, *s_wbuf, *s_wsize, *s_wlimit, *s_wstream,
    *s_dropped, *s_proto, *s_close_sent, *s_close_received, *s_eof, *s_deflate, *s_counts, *s_raw,
    *s_n_bout, *s_fileno;

/* The slots the checks read, at the offsets their descriptors give.  Taken
 * from the first member's objects at each call; only objects of exactly those
 * types are read this way (a subclass may shadow a slot with a property), the
 * others are left to Python. */
enum { M_CLOSING, M_HUB, M_QUEUE, M_WS, M_N };
enum { W_WBUF, W_WSIZE, W_WLIMIT, W_WSTREAM, W_DROPPED, W_PROTO, W_RAW, W_N_BOUT, W_N };
enum { P_CLOSE_SENT, P_CLOSE_RECEIVED, P_EOF, P_DEFLATE, P_COUNTS, P_N };

typedef struct {
    PyTypeObject *type;  /* NULL: not learnt */
    Py_ssize_t off[W_N];
} Slots;

typedef struct {
    Slots member, ws, proto;
} Layout;

static int
learn(Slots *slots, PyObject *obj, PyObject **names, int n)
{
    PyTypeObject *type = Py_TYPE(obj);
    slots->type = NULL;
    if (!(type->tp_flags & Py_TPFLAGS_HEAPTYPE) || type->tp_dict == NULL)
        return 0;  /* a class statement's type, whose own slots these are */
    for (int i = 0; i < n; i++) {
        PyObject *d = PyDict_GetItemWithError(type->tp_dict, names[i]);  /* borrowed */
        if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type)
            || ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX) {
            PyErr_Clear();
            return 0;
        }
        slots->off[i] = ((PyMemberDescrObject *)d)->d_member->offset;
    }
    slots->type = type;
    return 1;
}

/* an object's slot, borrowed (its owner holds it); NULL when unset */
#define SLOT(obj, slots, i) (*(PyObject **)((char *)(obj) + (slots).off[i]))

static void
learn_layout(Layout *layout, PyObject *member)
{
    PyObject *mnames[M_N] = {s_closing, s_hub, s_queue, s_ws};
    PyObject *wnames[W_N] = {s_wbuf, s_wsize, s_wlimit, s_wstream, s_dropped, s_proto, s_raw, s_n_bout};
    PyObject *pnames[P_N] = {s_close_sent, s_close_received, s_eof, s_deflate, s_counts};
    layout->ws.type = layout->proto.type = NULL;
    if (!learn(&layout->member, member, mnames, M_N))
        return;
    PyObject *ws = SLOT(member, layout->member, M_WS);
    if (ws == NULL || !learn(&layout->ws, ws, wnames, W_N))
        return;
    PyObject *proto = SLOT(ws, layout->ws, W_PROTO);
    if (proto == NULL || !learn(&layout->proto, proto, pnames, P_N))
        layout->ws.type = NULL;
}

/* A member's socket if its frame may be written now (the checks of _offer's
 * fast path and of WebSocket.closed), with its WebSocket and the protocol's
 * counters, borrowed; -1 otherwise. */
static int
member_fd(const Layout *layout, PyObject *member, PyObject *here, PyObject **ws_out, Counters **counts_out)
{
    if (layout->ws.type == NULL || !Py_IS_TYPE(member, layout->member.type))
        return -1;
    PyObject *queue = SLOT(member, layout->member, M_QUEUE);
    if (SLOT(member, layout->member, M_CLOSING) != Py_False
        || SLOT(member, layout->member, M_HUB) != here  /* another thread's: its own hub writes */
        || queue == NULL || !Py_IS_TYPE(queue, (PyTypeObject *)deque_type) || PyObject_Size(queue) != 0)
        return -1;  /* messages wait before this one */
    PyObject *ws = SLOT(member, layout->member, M_WS);
    if (ws == NULL || !Py_IS_TYPE(ws, layout->ws.type))
        return -1;
    PyObject *buf = SLOT(ws, layout->ws, W_WBUF), *size = SLOT(ws, layout->ws, W_WSIZE),
             *limit = SLOT(ws, layout->ws, W_WLIMIT), *proto = SLOT(ws, layout->ws, W_PROTO),
             *raw = SLOT(ws, layout->ws, W_RAW);
    if (buf == NULL || !PyList_CheckExact(buf) || PyList_GET_SIZE(buf) != 0  /* frames wait in the buffer */
        || SLOT(ws, layout->ws, W_WSTREAM) != Py_None  /* a fragmented message is going out */
        || SLOT(ws, layout->ws, W_DROPPED) != Py_False
        || size == NULL || limit == NULL || !PyLong_CheckExact(size) || !PyLong_CheckExact(limit)
        || proto == NULL || !Py_IS_TYPE(proto, layout->proto.type)
        || raw == NULL || !PyObject_TypeCheck(raw, (PyTypeObject *)socket_type))  /* TLS: a transport */
        return -1;
    PyObject *counts = SLOT(proto, layout->proto, P_COUNTS);
    if (SLOT(proto, layout->proto, P_CLOSE_SENT) != Py_False
        || SLOT(proto, layout->proto, P_CLOSE_RECEIVED) != Py_False
        || SLOT(proto, layout->proto, P_EOF) != Py_False
        || SLOT(proto, layout->proto, P_DEFLATE) != Py_None  /* compressed: a frame of its own */
        || counts == NULL || !Py_IS_TYPE(counts, &CountersType))
        return -1;
    int below = PyObject_RichCompareBool(size, limit, Py_LT);
    if (below != 1) {
        PyErr_Clear();
        return -1;
    }
    PyObject *n = PyObject_CallMethodNoArgs(raw, s_fileno);  /* -1 once closed */
    int fd = n != NULL && PyLong_Check(n) ? (int)PyLong_AsLong(n) : -1;
    Py_XDECREF(n);
    if (fd < 0) {
        PyErr_Clear();
        return -1;
    }
    *ws_out = ws;
    *counts_out = (Counters *)counts;
    return fd;
}

/* Checks first, then the sends, then the counting, each in a loop of its own:
 * done per member between sends, the checks cost twice what they do in one
 * run (~1 us against ~0.45 us a member; a syscall leaves the caches and branch
 * predictors cold), and one member's checks cannot be affected by another's
 * send: `members` are distinct (a room's members) and no Python code runs
 * between the first loop and the last. */
typedef struct {
    PyObject *member, *ws;  /* borrowed: members holds them */
    Counters *counts;
    int fd;
    ssize_t sent;
} Target;

static PyObject *
fanout(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyList_Check(args[0]) || !PyBytes_Check(args[1]) || !PyLong_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "fanout(members: list, frame: bytes, payload_len: int, here)");
        return NULL;
    }
    PyObject *members = args[0], *frame = args[1], *here = args[3];
    long long payload_len = PyLong_AsLongLong(args[2]);
    if (payload_len == -1 && PyErr_Occurred())
        return NULL;
    const char *data = PyBytes_AS_STRING(frame);
    Py_ssize_t len = PyBytes_GET_SIZE(frame), count = PyList_GET_SIZE(members), n = 0, delivered = 0;
    PyObject *rest = PyList_New(0), *partial = PyList_New(0), *result = NULL;
    Target *targets = PyMem_Malloc((count > 0 ? count : 1) * sizeof(Target));
    if (rest == NULL || partial == NULL || targets == NULL) {
        if (targets == NULL)
            PyErr_NoMemory();
        goto done;
    }
    Layout layout = {{NULL}, {NULL}, {NULL}};
    if (count > 0)
        learn_layout(&layout, PyList_GET_ITEM(members, 0));
    for (Py_ssize_t i = 0; i < count; i++) {
        Target *t = &targets[n];
        t->member = PyList_GET_ITEM(members, i);
        t->fd = member_fd(&layout, t->member, here, &t->ws, &t->counts);
        if (t->fd >= 0)
            n++;
        else if (PyList_Append(rest, t->member) < 0)
            goto done;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        ssize_t sent = send(targets[k].fd, data, (size_t)len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            sent = 0;  /* the socket is full: the frame waits in the connection's buffer */
        targets[k].sent = sent;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        Target *t = &targets[k];
        if (t->sent < 0) {  /* an error, for the Python path to report */
            if (PyList_Append(rest, t->member) < 0)
                PyErr_Clear();  /* out of memory: its reader finds the error */
            continue;
        }
        /* the frame is the connection's from here on: counted as sent, as encode_for does */
        t->counts->messages_out++;
        t->counts->payload_out += payload_len;
        PyObject **bout = &SLOT(t->ws, layout.ws, W_N_BOUT), *more = NULL;
        if (*bout != NULL && PyLong_CheckExact(*bout)) {  /* a metric: nothing is lost without it */
            PyObject *sent = PyLong_FromSsize_t(t->sent);
            if (sent != NULL)
                more = PyNumber_Add(*bout, sent);
            Py_XDECREF(sent);
        }
        if (more != NULL)
            Py_SETREF(*bout, more);
        else
            PyErr_Clear();
        if (t->sent == len) {
            delivered++;
            continue;
        }
        /* flat, member then bytes sent: no tuple, whose allocation could start
         * a garbage collection, and a finalizer write to a connection whose
         * frame went out in part and is not buffered yet */
        PyObject *sent = PyLong_FromSsize_t(t->sent);
        if (sent == NULL || PyList_Append(partial, t->member) < 0 || PyList_Append(partial, sent) < 0) {
            /* out of memory: the rest of the frame cannot be kept, and a
             * connection never carries part of one, so it ends here */
            PyErr_Clear();
            shutdown(t->fd, SHUT_RDWR);
        }
        Py_XDECREF(sent);
    }
    result = Py_BuildValue("(nOO)", delivered, rest, partial);
done:
    PyMem_Free(targets);
    Py_XDECREF(rest);
    Py_XDECREF(partial);
    return result;
}

static int
fanout_init(void)
{
    PyObject *mod = PyImport_ImportModule("_socket");
    if (mod == NULL)
        return -1;
    socket_type = PyObject_GetAttrString(mod, "socket");
    Py_DECREF(mod);
    if (socket_type == NULL || !PyType_Check(socket_type))
        return -1;
    mod = PyImport_ImportModule("collections");
    if (mod == NULL)
        return -1;
    deque_type = PyObject_GetAttrString(mod, "deque");
    Py_DECREF(mod);
    if (deque_type == NULL || !PyType_Check(deque_type))
        return -1;
#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return -1
    INTERN(s_ws, "ws");
    INTERN(s_hub, "hub");
    INTERN(s_queue, "queue");
    INTERN(s_closing, "closing");
    INTERN(s_wbuf, "_wbuf");
    INTERN(s_wsize, "_wsize");
    INTERN(s_wlimit, "_wlimit");
    INTERN(s_wstream, "_wstream");
    INTERN(s_dropped, "_dropped");
    INTERN(s_proto, "_proto");
    INTERN(s_close_sent, "close_sent");
    INTERN(s_close_received, "close_received");
    INTERN(s_eof, "eof");
    INTERN(s_deflate, "deflate");
    INTERN(s_counts, "counts");
    INTERN(s_raw, "_raw");
    INTERN(s_n_bout, "_n_bout");
    INTERN(s_fileno, "fileno");
#undef INTERN
    return 0;
}
#endif /* _WIN32 */

static PyMethodDef methods[] = {
    {"scan_small", (PyCFunction)(void (*)(void))scan_small, METH_FASTCALL,
     "scan_small(data, pos, max_frame_size, max_message_size, out, counts) -> pos:\n"
     "append the data of small whole masked messages to out, and count them."},
    {"frame_small", (PyCFunction)(void (*)(void))frame_small, METH_FASTCALL,
     "frame_small(data, binary, counts) -> bytes or None: the unmasked frame of a str or bytes\n"
     "message of at most 125 bytes, counted; None for any other message."},
    {"apply_mask", apply_mask, METH_VARARGS, "apply_mask(data, mask) -> bytes: XOR data with a 4-byte key."},
    {"new_payload", new_payload, METH_O,
     "new_payload(n) -> (bytes, memoryview): n bytes to be filled, and a writable view of them."},
    {"unmask_into", unmask_into, METH_VARARGS,
     "unmask_into(dst, offset, data, mask): write data XOR mask (or data, for mask None) into dst at offset;\n"
     "data may already lie at that place (read there by recv_into)."},
#ifndef _WIN32
    {"fanout", (PyCFunction)(void (*)(void))fanout, METH_FASTCALL,
     "fanout(members, frame, payload_len, here) -> (delivered, rest, partial): write frame to each\n"
     "hub member whose connection takes it now (gws13.hub); rest are left to Python, partial is\n"
     "[member, bytes sent, ...] for the members whose connection must buffer the remainder."},
#endif
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "gws13._speedups", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (PyType_Ready(&PayloadType) < 0 || PyType_Ready(&CountersType) < 0)
        return NULL;
#ifndef _WIN32
    if (fanout_init() < 0)
        return NULL;
#endif
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&CountersType);
    if (PyModule_AddObject(m, "Counters", (PyObject *)&CountersType) < 0) {
        Py_DECREF(&CountersType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

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
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "gws13._speedups", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (PyType_Ready(&PayloadType) < 0 || PyType_Ready(&CountersType) < 0)
        return NULL;
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

/* Optional C accelerator for gws13: XOR (un)masking of WebSocket payloads.
 * gws13.frames falls back to a pure-Python version when this does not build. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

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
    if (out != NULL) {
        const unsigned char *in = (const unsigned char *)data.buf;
        const unsigned char *m = (const unsigned char *)mask.buf;
        unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
        Py_ssize_t n = data.len, i = 0;
        uint64_t k8;
        unsigned char kb[8];
        for (int j = 0; j < 8; j++)
            kb[j] = m[j & 3];
        memcpy(&k8, kb, 8);
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
    PyBuffer_Release(&data);
    PyBuffer_Release(&mask);
    return out;
}

static PyMethodDef methods[] = {
    {"apply_mask", apply_mask, METH_VARARGS, "apply_mask(data, mask) -> bytes: XOR data with a 4-byte key."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "gws13._speedups", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&module);
}

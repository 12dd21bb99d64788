/*
 * udpkit.cli._sslines: the lines of udpkit ss's table, laid out in C — an optional accelerator for
 * udpkit.cli._sstable, which has the same layout in Python and uses it where this module is missing
 * or declines a block.
 *
 * Why: at 50,000 sockets the layout was the largest Python part of `udpkit ss -uln` (one `%` per
 * line with a parse of the format each time, and a str object made for every port number first),
 * while iproute2's ss does the same work with printf. Here a block of lines is measured and written
 * in two passes over the columns, port numbers go straight from int to digits, and nothing is
 * allocated per field.
 *
 * Scope: ASCII text and small ints only (all that `ss -uln` prints); anything else (a process name
 * outside ASCII, None, a bool) makes lines() return None, and the caller formats that block itself.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

/* The decimal digits of v (|v| < 10^19) at the end of buf[24]; returns where they start. */
static char *digits(long long v, char *end) {
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    char *p = end;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) *--p = '-';
    return p;
}

/* One field's text: an ASCII str's bytes, or an exact int's digits written into scratch[24].
 * Returns 0 when the value is neither (the caller then declines the block). */
static int field_text(PyObject *value, char *scratch, const char **text, Py_ssize_t *len) {
    if (PyUnicode_CheckExact(value)) {
        if (PyUnicode_READY(value) < 0 || !PyUnicode_IS_ASCII(value)) return 0;
        *text = (const char *)PyUnicode_1BYTE_DATA(value);
        *len = PyUnicode_GET_LENGTH(value);
        return 1;
    }
    if (PyLong_CheckExact(value)) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (overflow || (v == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return 0;
        }
        char *start = digits(v, scratch + 24);
        *text = start;
        *len = scratch + 24 - start;
        return 1;
    }
    return 0;
}

/*
 * lines(segments, columns, widths, rights, start, stop) -> str | None
 *
 * Row r (start <= r < stop) is segments[0] + field(columns[0][r]) + segments[1] + ... + segments[k],
 * where field pads the value's text with spaces to widths[i] (on the left when rights[i] is true),
 * as "%*s" / "%-*s" would, never cutting it. segments: k + 1 ASCII strs; columns: k lists.
 */
static PyObject *lines(PyObject *self, PyObject *args) {
    PyObject *segments, *columns, *widths, *rights;
    Py_ssize_t start, stop;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!O!O!O!nn", &PyTuple_Type, &segments, &PyTuple_Type, &columns, &PyTuple_Type,
                          &widths, &PyTuple_Type, &rights, &start, &stop))
        return NULL;
    Py_ssize_t k = PyTuple_GET_SIZE(columns);
    if (PyTuple_GET_SIZE(segments) != k + 1 || PyTuple_GET_SIZE(widths) != k || PyTuple_GET_SIZE(rights) != k) {
        PyErr_SetString(PyExc_ValueError, "lines: segments must be one more than columns, widths and rights");
        return NULL;
    }
    if (k > 64) Py_RETURN_NONE;
    Py_ssize_t width[64];
    int right[64];
    const char *seg[65];
    Py_ssize_t seg_len[65], fixed = 0;
    for (Py_ssize_t i = 0; i <= k; i++) {
        PyObject *s = PyTuple_GET_ITEM(segments, i);
        if (!PyUnicode_CheckExact(s) || PyUnicode_READY(s) < 0 || !PyUnicode_IS_ASCII(s)) Py_RETURN_NONE;
        seg[i] = (const char *)PyUnicode_1BYTE_DATA(s);
        seg_len[i] = PyUnicode_GET_LENGTH(s);
        fixed += seg_len[i];
    }
    for (Py_ssize_t i = 0; i < k; i++) {
        PyObject *col = PyTuple_GET_ITEM(columns, i);
        if (!PyList_CheckExact(col)) Py_RETURN_NONE;
        if (start < 0 || stop > PyList_GET_SIZE(col)) {
            PyErr_SetString(PyExc_IndexError, "lines: rows out of range of a column");
            return NULL;
        }
        width[i] = PyLong_AsSsize_t(PyTuple_GET_ITEM(widths, i));
        if (width[i] == -1 && PyErr_Occurred()) return NULL;
        if (width[i] < 0) width[i] = 0;
        right[i] = PyObject_IsTrue(PyTuple_GET_ITEM(rights, i));
        if (right[i] < 0) return NULL;
    }
    if (stop <= start) return PyUnicode_New(0, 127);
    /* First pass: the block's length (a field is at least its width, or its text where longer). */
    char scratch[24];
    const char *text;
    Py_ssize_t len, total = 0;
    for (Py_ssize_t r = start; r < stop; r++) {
        total += fixed;
        for (Py_ssize_t i = 0; i < k; i++) {
            if (!field_text(PyList_GET_ITEM(PyTuple_GET_ITEM(columns, i), r), scratch, &text, &len)) Py_RETURN_NONE;
            total += len > width[i] ? len : width[i];
        }
    }
    PyObject *out = PyUnicode_New(total, 127);
    if (out == NULL) return NULL;
    char *p = (char *)PyUnicode_1BYTE_DATA(out);
    /* Second pass: write. The columns are the caller's lists, unchanged between the passes (the GIL
     * is held throughout and nothing here runs Python code). */
    for (Py_ssize_t r = start; r < stop; r++) {
        for (Py_ssize_t i = 0; i < k; i++) {
            memcpy(p, seg[i], (size_t)seg_len[i]);
            p += seg_len[i];
            field_text(PyList_GET_ITEM(PyTuple_GET_ITEM(columns, i), r), scratch, &text, &len);
            Py_ssize_t pad = width[i] > len ? width[i] - len : 0;
            if (right[i]) {
                memset(p, ' ', (size_t)pad);
                p += pad;
            }
            memcpy(p, text, (size_t)len);
            p += len;
            if (!right[i]) {
                memset(p, ' ', (size_t)pad);
                p += pad;
            }
        }
        memcpy(p, seg[k], (size_t)seg_len[k]);
        p += seg_len[k];
    }
    return out;
}

static PyMethodDef methods[] = {
    {"lines", lines, METH_VARARGS,
     "lines(segments, columns, widths, rights, start, stop) -> str | None: rows start..stop of a table, or "
     "None where a field is not ASCII text or an int"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "udpkit.cli._sslines", "ss's table lines, laid out in C (see _sstable).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__sslines(void) { return PyModule_Create(&module); }

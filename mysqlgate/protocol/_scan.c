/* The compiled part of the response scanner: stepping over the row packets of a
 * result set. A 200 MB result is 200,000 rows of 1,000 bytes; in Python each row
 * costs ~330 ns of header arithmetic, here a few. Same contract as
 * results.py's py_hop_rows, which is the fallback and the reference: the unit tests
 * run both on the same inputs and require the same answers.
 *
 * No I/O, no state: it reads a buffer and returns a tuple. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define HEADER_SIZE 4
#define MAX_PACKET_PAYLOAD 0xFFFFFF

PyDoc_STRVAR(hop_rows_doc,
"hop_rows(buf, pos, size) -> (pos, rows, last, continuation, skip)\n\n"
"Step over the row packets of buf[pos:size]; see results.py_hop_rows.");

static PyObject *
hop_rows(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Py_ssize_t pos, size;

    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "hop_rows(buf, pos, size) takes 3 arguments");
        return NULL;
    }
    pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred())
        return NULL;
    size = PyLong_AsSsize_t(args[2]);
    if (size == -1 && PyErr_Occurred())
        return NULL;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (pos < 0 || size < pos || size > view.len) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "hop_rows: need 0 <= pos <= size <= len(buf)");
        return NULL;
    }

    const unsigned char *buf = (const unsigned char *)view.buf;
    Py_ssize_t rows = 0, last = -1, skip = 0;
    int continuation = 0;
    while (size - pos > HEADER_SIZE) {
        const unsigned char *p = buf + pos;
        Py_ssize_t length = p[0] | (p[1] << 8) | (p[2] << 16);
        /* Empty, or maybe the packet that ends the result (0xFE EOF/OK, 0xFF ERR):
         * the Python scanner looks at it. A 16 MiB packet is always a row. */
        if (length == 0 || (p[HEADER_SIZE] >= 0xFE && length < MAX_PACKET_PAYLOAD))
            break;
        last = pos;
        rows++;
        pos += HEADER_SIZE + length;
        if (length == MAX_PACKET_PAYLOAD)
            continuation = 1;
        if (pos > size) {
            skip = pos - size;
            pos = size;
            break;
        }
        if (continuation)
            break;
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("(nnnOn)", pos, rows, last,
                         continuation ? Py_True : Py_False, skip);
}

static PyMethodDef scan_methods[] = {
    {"hop_rows", (PyCFunction)(void (*)(void))hop_rows, METH_FASTCALL, hop_rows_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef scan_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "mysqlgate.protocol._scan",
    .m_doc = "Compiled row stepping for mysqlgate's response scanner.",
    .m_size = 0,
    .m_methods = scan_methods,
};

PyMODINIT_FUNC
PyInit__scan(void)
{
    return PyModuleDef_Init(&scan_module);
}

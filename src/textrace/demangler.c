/* textrace.demangler: C++ (and Rust, D) symbol names as perf report prints them.
 *
 * perf 6.1 demangles a user-space symbol with libiberty's cplus_demangle() and, unless
 * run with -v, no options (DMGL_NO_OPTS): the qualified name without its parameters, its
 * cv-qualifiers or a template function's return type; special names ("non-virtual thunk
 * to ...", "guard variable for ...") as libiberty words them.  The same function from the
 * same library (libiberty-dev's libiberty.a, linked in) gives the same text, not an
 * imitation of it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>
#include <libiberty/demangle.h>

/* cplus_demangle(name, DMGL_NO_OPTS) -> str, or None when `name` does not demangle. */
static PyObject *
perf_demangle(PyObject *self, PyObject *arg)
{
    PyObject *encoded = PyUnicode_AsEncodedString(arg, "utf-8", "surrogateescape");
    if (encoded == NULL)
        return NULL;
    char *text = cplus_demangle(PyBytes_AS_STRING(encoded), DMGL_NO_OPTS);
    Py_DECREF(encoded);
    if (text == NULL)
        Py_RETURN_NONE;
    PyObject *result = PyUnicode_DecodeUTF8(text, (Py_ssize_t)strlen(text), "replace");
    free(text);
    return result;
}

static PyMethodDef methods[] = {
    {"perf_demangle", perf_demangle, METH_O,
     "perf_demangle(name) -> perf's (libiberty's, no options) demangled name, or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "textrace.demangler",
    "Symbol names demangled as perf report prints them (libiberty's cplus_demangle).", -1,
    methods,
};

PyMODINIT_FUNC
PyInit_demangler(void)
{
    return PyModule_Create(&module);
}

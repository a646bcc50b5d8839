/* attn._attn: the CPython extension under `import attn`. A thin layer over
 * the public API (include/attn/attn.h) and nothing else: it turns Python
 * objects into attn_tensor views of the caller's memory (buffer protocol,
 * e.g. numpy, or DLPack, e.g. torch), calls the library with the GIL
 * released, and turns a failing status into an exception carrying the
 * library's message. Argument defaults, output allocation and docs live in
 * the Python layer (attn/__init__.py), which calls these functions
 * positionally.
 *
 * Contexts: a context must not be used by two threads at once, so each OS
 * thread gets its own, created on first use and freed when the thread ends
 * (a pthread key with a destructor). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <attn/attn.h>

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- errors ------------------------------------------------------------- */

/* A failing status as the Python exception users expect: sizes, dtypes and
 * values are ValueError, allocation MemoryError, files OSError. */
static PyObject *raise_status(attn_status st, attn_ctx *ctx, const char *what) {
    PyObject *type = PyExc_ValueError;
    if (st == ATTN_E_NOMEM)
        type = PyExc_MemoryError;
    else if (st == ATTN_E_IO)
        type = PyExc_OSError;
    else if (st == ATTN_E_NOTFOUND)
        type = PyExc_FileNotFoundError;
    const char *msg = ctx ? attn_ctx_last_error(ctx) : "";
    if (msg && msg[0])
        PyErr_Format(type, "%s: %s", what, msg);
    else
        PyErr_Format(type, "%s: %s", what, attn_status_str(st));
    return NULL;
}

/* ---- one context per thread -------------------------------------------- */

typedef struct {
    attn_ctx *ctx;
    int threads; /* the count last asked for (0 = the library's default) */
} thread_ctx;

static pthread_key_t ctx_key;

static void thread_ctx_free(void *p) {
    thread_ctx *t = p;
    if (t) attn_ctx_free(t->ctx);
    free(t);
}

/* This thread's context running `threads` threads (< 0: keep the count).
 * Sets a Python exception and returns NULL on failure (GIL held). */
static attn_ctx *get_ctx(int threads) {
    thread_ctx *t = pthread_getspecific(ctx_key);
    if (!t) {
        t = calloc(1, sizeof *t);
        if (!t) return (attn_ctx *)PyErr_NoMemory();
        attn_status st = attn_ctx_create(&t->ctx, 0);
        if (st != ATTN_OK) {
            raise_status(st, t->ctx, "attn_ctx_create");
            attn_ctx_free(t->ctx);
            free(t);
            return NULL;
        }
        if (pthread_setspecific(ctx_key, t)) {
            thread_ctx_free(t);
            PyErr_SetString(PyExc_RuntimeError, "attn: pthread_setspecific failed");
            return NULL;
        }
    }
    if (threads >= 0 && threads != t->threads) {
        attn_status st = attn_ctx_set_threads(t->ctx, threads);
        if (st != ATTN_OK) return raise_status(st, t->ctx, "threads"), NULL;
        t->threads = threads;
    }
    return t->ctx;
}

/* ---- tensors: buffer protocol or DLPack --------------------------------- */

/* DLPack (v0.8 ABI, the unversioned "dltensor" capsule every producer
 * gives when __dlpack__ is called without max_version). */
typedef struct {
    int32_t device_type, device_id;
} DLDevice;
typedef struct {
    uint8_t code, bits;
    uint16_t lanes;
} DLDataType;
typedef struct {
    void *data;
    DLDevice device;
    int32_t ndim;
    DLDataType dtype;
    int64_t *shape;
    int64_t *strides;
    uint64_t byte_offset;
} DLTensor;
typedef struct DLManagedTensor {
    DLTensor dl_tensor;
    void *manager_ctx;
    void (*deleter)(struct DLManagedTensor *);
} DLManagedTensor;
enum { DL_INT = 0, DL_UINT = 1, DL_FLOAT = 2, DL_BOOL = 6, DL_CPU = 1 };

/* What keeps a view's memory alive until the call returns. */
typedef struct {
    Py_buffer buf;
    int has_buf;
    PyObject *capsule; /* the producer's destructor frees the DLPack tensor */
} holder;

static void holder_release(holder *h) {
    if (h->has_buf) PyBuffer_Release(&h->buf);
    h->has_buf = 0;
    Py_CLEAR(h->capsule);
}

enum { ACCEPT_F32 = 1, ACCEPT_BOOL = 2, ACCEPT_I32 = 4 };

static const char *dtype_word(attn_dtype d) {
    switch (d) {
    case ATTN_F32:
        return "float32";
    case ATTN_BOOL:
        return "bool";
    case ATTN_U8:
        return "uint8";
    case ATTN_I32:
        return "int32";
    default:
        return "?";
    }
}

/* dtype of a buffer-protocol format string ("f", "<f", "?", ...), or -1 */
static int format_dtype(const char *f, Py_ssize_t itemsize) {
    if (!f) return ATTN_U8;
    if (*f == '@' || *f == '=' || *f == '<') f++;
    if (!f[0] || f[1]) return -1;
    switch (f[0]) {
    case 'f':
        return itemsize == 4 ? ATTN_F32 : -1;
    case '?':
        return itemsize == 1 ? ATTN_BOOL : -1;
    case 'B':
        return itemsize == 1 ? ATTN_U8 : -1;
    case 'i':
    case 'l':
        return itemsize == 4 ? ATTN_I32 : -1;
    default:
        return -1;
    }
}

static int dl_dtype(DLDataType t) {
    if (t.lanes != 1) return -1;
    if (t.code == DL_FLOAT && t.bits == 32) return ATTN_F32;
    if (t.code == DL_BOOL && t.bits == 8) return ATTN_BOOL;
    if (t.code == DL_UINT && t.bits == 8) return ATTN_U8;
    if (t.code == DL_INT && t.bits == 32) return ATTN_I32;
    return -1;
}

/* PyTorch tensors, read through their own accessors: data_ptr() and the
 * other attribute calls cost ~0.7 us a tensor, where __dlpack__ costs 2.5
 * and .numpy() 1.1 (the tiny-call overhead, docs/PERFORMANCE.md). Any
 * object with these attributes qualifies; device and dtype are checked. */
static PyObject *s_data_ptr, *s_shape, *s_stride, *s_itemsize, *s_is_fp, *s_is_cpu;

static int is_torch_like(PyObject *obj) {
    return PyObject_HasAttr((PyObject *)Py_TYPE(obj), s_data_ptr);
}

static int int64_tuple(PyObject *tup, const char *name, const char *what, int64_t *dst, int *n) {
    if (!tup || !PyTuple_Check(tup)) {
        if (tup) PyErr_Format(PyExc_TypeError, "%s: %s is not a tuple", name, what);
        return -1;
    }
    Py_ssize_t len = PyTuple_GET_SIZE(tup);
    if (len > ATTN_MAX_DIMS) {
        *n = (int)len;
        return 0;
    }
    for (Py_ssize_t i = 0; i < len; i++) {
        dst[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(tup, i));
        if (dst[i] == -1 && PyErr_Occurred()) return -1;
    }
    *n = (int)len;
    return 0;
}

static int torch_view(PyObject *obj, const char *name, int *n, int *dt, int64_t *shape,
                      int64_t *stride, void **data) {
    PyObject *cpu = PyObject_GetAttr(obj, s_is_cpu);
    if (!cpu) return -1;
    int on_cpu = PyObject_IsTrue(cpu);
    Py_DECREF(cpu);
    if (on_cpu != 1) {
        if (on_cpu == 0)
            PyErr_Format(PyExc_ValueError,
                         "%s: the tensor is not on the CPU (attn runs on the CPU only)", name);
        return -1;
    }
    PyObject *isz = PyObject_GetAttr(obj, s_itemsize);
    PyObject *fp = isz ? PyObject_CallMethodNoArgs(obj, s_is_fp) : NULL;
    long itemsize = isz ? PyLong_AsLong(isz) : -1;
    int is_fp = fp ? PyObject_IsTrue(fp) : -1;
    Py_XDECREF(isz);
    Py_XDECREF(fp);
    if (itemsize < 0 || is_fp < 0) return -1;
    *dt = is_fp ? (itemsize == 4 ? ATTN_F32 : -1)
                : (itemsize == 1 ? ATTN_U8 : (itemsize == 4 ? ATTN_I32 : -1));
    PyObject *sh = PyObject_GetAttr(obj, s_shape);
    int ns = 0, nd = 0;
    int bad = int64_tuple(sh, name, "shape", shape, &ns);
    Py_XDECREF(sh);
    if (bad) return -1;
    *n = ns;
    if (ns > ATTN_MAX_DIMS) return 0;
    PyObject *st = PyObject_CallMethodNoArgs(obj, s_stride);
    bad = int64_tuple(st, name, "stride()", stride, &nd);
    Py_XDECREF(st);
    if (bad) return -1;
    if (nd != ns) {
        PyErr_Format(PyExc_ValueError, "%s: stride() has %d entries for %d dims", name, nd, ns);
        return -1;
    }
    PyObject *ptr = PyObject_CallMethodNoArgs(obj, s_data_ptr);
    if (!ptr) return -1;
    *data = PyLong_AsVoidPtr(ptr);
    Py_DECREF(ptr);
    return PyErr_Occurred() ? -1 : 0;
}

/* A view of obj for argument `name`: dims padded in front with size-1 dims
 * up to `ndim` (min_ndim..ndim accepted, any strides), dtype among
 * `accept`. None gives an absent view (data NULL) when `optional`.
 * Returns 0, or -1 with an exception set. */
static int get_view(PyObject *obj, const char *name, int min_ndim, int ndim, int accept,
                    int writable, int optional, attn_tensor *t, holder *h) {
    memset(t, 0, sizeof *t);
    int64_t shape[ATTN_MAX_DIMS], stride[ATTN_MAX_DIMS];
    int n, dt;
    if (obj == Py_None) {
        if (optional) return 0;
        PyErr_Format(PyExc_ValueError, "%s: required, got None", name);
        return -1;
    }
    if (PyObject_CheckBuffer(obj)) {
        int flags = PyBUF_STRIDES | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
        if (PyObject_GetBuffer(obj, &h->buf, flags) < 0) {
            if (writable && PyErr_ExceptionMatches(PyExc_BufferError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_ValueError, "%s: the array is read-only", name);
            }
            return -1;
        }
        h->has_buf = 1;
        n = h->buf.ndim;
        dt = format_dtype(h->buf.format, h->buf.itemsize);
        if (dt < 0) {
            PyErr_Format(PyExc_TypeError,
                         "%s: dtype with buffer format '%s' is not supported (attn takes "
                         "float32; e.g. np.asarray(x, dtype=np.float32), or copy=True)",
                         name, h->buf.format ? h->buf.format : "B");
            return -1;
        }
        if (n > ATTN_MAX_DIMS) goto bad_ndim;
        for (int i = 0; i < n; i++) {
            shape[i] = h->buf.shape[i];
            Py_ssize_t s = h->buf.strides ? h->buf.strides[i] : 0;
            if (s % h->buf.itemsize) {
                PyErr_Format(PyExc_ValueError,
                             "%s: stride %zd bytes of dim %d is not a multiple of the "
                             "element size",
                             name, s, i);
                return -1;
            }
            stride[i] = s / h->buf.itemsize;
        }
        t->data = h->buf.buf;
    } else if (is_torch_like(obj)) {
        if (torch_view(obj, name, &n, &dt, shape, stride, &t->data)) return -1;
        if (dt < 0) {
            PyErr_Format(PyExc_TypeError,
                         "%s: tensor dtype is not supported (attn takes float32, and bool "
                         "masks)",
                         name);
            return -1;
        }
        if (n > ATTN_MAX_DIMS) goto bad_ndim;
    } else {
        PyObject *cap = PyObject_CallMethod(obj, "__dlpack__", NULL);
        if (!cap) {
            if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_TypeError,
                             "%s: expected an array (buffer protocol, e.g. numpy) or a "
                             "DLPack tensor, got %s",
                             name, Py_TYPE(obj)->tp_name);
            }
            return -1;
        }
        h->capsule = cap;
        DLManagedTensor *m = PyCapsule_GetPointer(cap, "dltensor");
        if (!m) return -1;
        const DLTensor *d = &m->dl_tensor;
        if (d->device.device_type != DL_CPU) {
            PyErr_Format(PyExc_ValueError,
                         "%s: tensors on DLPack device type %d are not supported (attn runs "
                         "on the CPU)",
                         name, (int)d->device.device_type);
            return -1;
        }
        n = d->ndim;
        dt = dl_dtype(d->dtype);
        if (dt < 0) {
            PyErr_Format(PyExc_TypeError,
                         "%s: DLPack dtype (code %d, %d bits) is not supported (attn takes "
                         "float32)",
                         name, d->dtype.code, d->dtype.bits);
            return -1;
        }
        if (n > ATTN_MAX_DIMS) goto bad_ndim;
        int64_t acc = 1;
        for (int i = n - 1; i >= 0; i--) {
            shape[i] = d->shape[i];
            stride[i] = d->strides ? d->strides[i] : acc;
            acc *= d->shape[i];
        }
        t->data = (char *)d->data + d->byte_offset;
    }
    if ((dt == ATTN_F32 && !(accept & ACCEPT_F32)) ||
        ((dt == ATTN_BOOL || dt == ATTN_U8) && !(accept & ACCEPT_BOOL)) ||
        (dt == ATTN_I32 && !(accept & ACCEPT_I32))) {
        PyErr_Format(PyExc_TypeError, "%s: dtype %s is not supported here (expected %s)", name,
                     dtype_word(dt),
                     accept & ACCEPT_I32 ? "int32"
                                         : (accept & ACCEPT_BOOL ? "float32 or bool" : "float32"));
        return -1;
    }
    if (n < min_ndim || n > ndim) goto bad_ndim;
    int pad = ndim - n;
    t->dtype = (attn_dtype)dt;
    t->ndim = ndim;
    for (int i = 0; i < pad; i++)
        t->shape[i] = 1, t->stride[i] = 0;
    for (int i = 0; i < n; i++)
        t->shape[pad + i] = shape[i], t->stride[pad + i] = stride[i];
    return 0;
bad_ndim:
    if (min_ndim == ndim)
        PyErr_Format(PyExc_ValueError, "%s: expected %d dims, got %d", name, ndim, n);
    else
        PyErr_Format(PyExc_ValueError, "%s: expected %d to %d dims, got %d", name, min_ndim, ndim,
                     n);
    return -1;
}

/* ---- attention ---------------------------------------------------------- */

#define SDPA_NVIEWS 9
#define GRAD_NVIEWS 5

/* The forward's arguments, shared by forward and backward:
 * q, k, v, out, lse, mask, kv_len, alibi_slopes, causal, align, window,
 * window_left, window_right, scale, softcap, dropout_p, seed, threads, and
 * after the call's own arguments an optional global_tokens (obj[8], None
 * when not given: older positional calls stay valid). */
typedef struct {
    PyObject *obj[SDPA_NVIEWS];
    int causal, align, window, threads;
    long long wl, wr;
    float scale, softcap, dropout_p;
    unsigned long long seed;
} sdpa_py;

static int sdpa_views(sdpa_py *p, attn_sdpa_args *a, holder *h, int lse_required) {
    memset(a, 0, sizeof *a);
    attn_tensor kvl, alibi;
    if (get_view(p->obj[0], "q", 2, 4, ACCEPT_F32, 0, 0, &a->q, &h[0]) ||
        get_view(p->obj[1], "k", 2, 4, ACCEPT_F32, 0, 0, &a->k, &h[1]) ||
        get_view(p->obj[2], "v", 2, 4, ACCEPT_F32, 0, 0, &a->v, &h[2]) ||
        get_view(p->obj[3], "out", 2, 4, ACCEPT_F32, !lse_required, 0, &a->out, &h[3]) ||
        get_view(p->obj[4], "lse", 1, 3, ACCEPT_F32, !lse_required, !lse_required, &a->lse,
                 &h[4]) ||
        get_view(p->obj[5], "mask", 2, 4, ACCEPT_F32 | ACCEPT_BOOL, 0, 1, &a->mask, &h[5]) ||
        get_view(p->obj[6], "kv_len", 1, 1, ACCEPT_I32, 0, 1, &kvl, &h[6]) ||
        get_view(p->obj[7], "alibi_slopes", 1, 1, ACCEPT_F32, 0, 1, &alibi, &h[7]) ||
        get_view(p->obj[8] ? p->obj[8] : Py_None, "global_tokens", 1, 2, ACCEPT_BOOL, 0, 1,
                 &a->global_tokens, &h[8]))
        return -1;
    /* the API takes these two as bare pointers: check their lengths here */
    if (kvl.data) {
        if (kvl.shape[0] != a->q.shape[0] || (kvl.stride[0] != 1 && kvl.shape[0] > 1)) {
            PyErr_Format(PyExc_ValueError,
                         "kv_len: expected a contiguous [B] = [%lld] int32 array, got %lld "
                         "elements (stride %lld)",
                         (long long)a->q.shape[0], (long long)kvl.shape[0],
                         (long long)kvl.stride[0]);
            return -1;
        }
        a->kv_len = kvl.data;
    }
    if (alibi.data) {
        if (alibi.shape[0] != a->q.shape[1] || (alibi.stride[0] != 1 && alibi.shape[0] > 1)) {
            PyErr_Format(PyExc_ValueError,
                         "alibi_slopes: expected a contiguous [H] = [%lld] float32 array, got "
                         "%lld elements",
                         (long long)a->q.shape[1], (long long)alibi.shape[0]);
            return -1;
        }
        a->alibi_slopes = alibi.data;
    }
    a->causal = p->causal;
    a->align = p->align ? ATTN_ALIGN_BOTTOM_RIGHT : ATTN_ALIGN_TOP_LEFT;
    a->window = p->window;
    a->window_left = p->wl;
    a->window_right = p->wr;
    a->scale = p->scale;
    a->softcap = p->softcap;
    a->dropout_p = p->dropout_p;
    a->seed = p->seed;
    return 0;
}

#define SDPA_FMT "OOOOOOOOiiiLLfffKi"
#define SDPA_ARGS(p)                                                                               \
    &p.obj[0], &p.obj[1], &p.obj[2], &p.obj[3], &p.obj[4], &p.obj[5], &p.obj[6], &p.obj[7],        \
        &p.causal, &p.align, &p.window, &p.wl, &p.wr, &p.scale, &p.softcap, &p.dropout_p, &p.seed, \
        &p.threads

static PyObject *py_forward(PyObject *self, PyObject *args) {
    sdpa_py p;
    p.obj[8] = NULL;
    if (!PyArg_ParseTuple(args, SDPA_FMT "|O:forward", SDPA_ARGS(p), &p.obj[8])) return NULL;
    attn_ctx *ctx = get_ctx(p.threads);
    if (!ctx) return NULL;
    holder h[SDPA_NVIEWS] = {0};
    attn_sdpa_args a;
    PyObject *ret = NULL;
    if (sdpa_views(&p, &a, h, 0) == 0) {
        attn_status st;
        Py_BEGIN_ALLOW_THREADS st = attn_sdpa_forward(ctx, &a);
        Py_END_ALLOW_THREADS if (st != ATTN_OK) raise_status(st, ctx, "attn_sdpa_forward");
        else ret = Py_NewRef(Py_None);
    }
    for (int i = 0; i < SDPA_NVIEWS; i++)
        holder_release(&h[i]);
    return ret;
}

static PyObject *py_backward(PyObject *self, PyObject *args) {
    sdpa_py p;
    PyObject *go[GRAD_NVIEWS];
    p.obj[8] = NULL;
    if (!PyArg_ParseTuple(args, SDPA_FMT "OOOOO|O:backward", SDPA_ARGS(p), &go[0], &go[1], &go[2],
                          &go[3], &go[4], &p.obj[8]))
        return NULL;
    attn_ctx *ctx = get_ctx(p.threads);
    if (!ctx) return NULL;
    holder h[SDPA_NVIEWS + GRAD_NVIEWS] = {0};
    attn_sdpa_args a;
    attn_sdpa_grads g;
    memset(&g, 0, sizeof g);
    PyObject *ret = NULL;
    holder *hg = h + SDPA_NVIEWS;
    if (sdpa_views(&p, &a, h, 1) == 0 &&
        !get_view(go[0], "dout", 2, 4, ACCEPT_F32, 0, 0, &g.dout, &hg[0]) &&
        !get_view(go[1], "dq", 2, 4, ACCEPT_F32, 1, 0, &g.dq, &hg[1]) &&
        !get_view(go[2], "dk", 2, 4, ACCEPT_F32, 1, 0, &g.dk, &hg[2]) &&
        !get_view(go[3], "dv", 2, 4, ACCEPT_F32, 1, 0, &g.dv, &hg[3]) &&
        !get_view(go[4], "dmask", 2, 4, ACCEPT_F32, 1, 1, &g.dmask, &hg[4])) {
        attn_status st;
        Py_BEGIN_ALLOW_THREADS st = attn_sdpa_backward(ctx, &a, &g);
        Py_END_ALLOW_THREADS if (st != ATTN_OK) raise_status(st, ctx, "attn_sdpa_backward");
        else ret = Py_NewRef(Py_None);
    }
    for (int i = 0; i < SDPA_NVIEWS + GRAD_NVIEWS; i++)
        holder_release(&h[i]);
    return ret;
}

static double now_s(int cpu) {
    struct timespec ts;
    clock_gettime(cpu ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* time_forward(<forward's arguments>, calls, rounds, cpu): the median over
 * `rounds` of the mean seconds per attn_sdpa_forward call in a C loop of
 * `calls` calls, with no Python in between (the reference the binding's
 * own overhead is measured against; bench/bench_python.py); cpu != 0
 * times by the process's CPU time instead of the wall clock. */
static PyObject *py_time_forward(PyObject *self, PyObject *args) {
    sdpa_py p;
    int calls, rounds, cpu;
    p.obj[8] = NULL;
    if (!PyArg_ParseTuple(args, SDPA_FMT "iip|O:time_forward", SDPA_ARGS(p), &calls, &rounds, &cpu,
                          &p.obj[8]))
        return NULL;
    if (calls < 1 || rounds < 1 || rounds > 1000) {
        PyErr_SetString(PyExc_ValueError, "time_forward: calls >= 1, rounds in [1, 1000]");
        return NULL;
    }
    attn_ctx *ctx = get_ctx(p.threads);
    if (!ctx) return NULL;
    holder h[SDPA_NVIEWS] = {0};
    attn_sdpa_args a;
    PyObject *ret = NULL;
    double t[1000];
    if (sdpa_views(&p, &a, h, 0) == 0) {
        attn_status st = ATTN_OK;
        Py_BEGIN_ALLOW_THREADS for (int r = 0; r < rounds && st == ATTN_OK; r++) {
            double t0 = now_s(cpu);
            for (int c = 0; c < calls && st == ATTN_OK; c++)
                st = attn_sdpa_forward(ctx, &a);
            t[r] = (now_s(cpu) - t0) / calls;
        }
        Py_END_ALLOW_THREADS if (st != ATTN_OK) raise_status(st, ctx, "attn_sdpa_forward");
        else {
            qsort(t, rounds, sizeof t[0], cmp_double);
            ret = PyFloat_FromDouble(t[rounds / 2]);
        }
    }
    for (int i = 0; i < SDPA_NVIEWS; i++)
        holder_release(&h[i]);
    return ret;
}

/* ---- attn.torch's plain call, in C --------------------------------------- */

/* attn.torch.scaled_dot_product_attention's forward: the checks, the
 * output's allocation (torch.empty) and the call in one C function, so a
 * tiny problem pays ~50 ns an attribute instead of Python's
 * bytecode around each (docs/PERFORMANCE.md, "Python package"). It takes
 * only the plain case, tensors of type torch.Tensor that attn reads in
 * place, with or without autograd; anything else (dropout, scale 0, a mask
 * to copy, a wrong dtype or device, mismatched shapes, ...) returns None and
 * the Python function takes the call, with its checks and error messages
 * in one place (attn/torch.py). torch's objects come from torch_setup,
 * called when attn.torch is imported: this module never imports torch. */
static PyObject *t_tensor_type, *t_float32, *t_bool, *t_empty, *t_grad_enabled;
static PyObject *s_dtype, *s_requires_grad;
static int default_threads; /* attn.set_num_threads' count */

/* torch_setup(torch.Tensor, torch.float32, torch.bool, torch.empty,
 *             torch.is_grad_enabled) */
static PyObject *py_torch_setup(PyObject *self, PyObject *args) {
    PyObject *o[5];
    if (!PyArg_ParseTuple(args, "O!OOOO:torch_setup", &PyType_Type, &o[0], &o[1], &o[2], &o[3],
                          &o[4]))
        return NULL;
    PyObject **dst[5] = {&t_tensor_type, &t_float32, &t_bool, &t_empty, &t_grad_enabled};
    for (int i = 0; i < 5; i++)
        Py_XSETREF(*dst[i], Py_NewRef(o[i]));
    return Py_NewRef(Py_None);
}

/* set_default_threads(n): the count calls made without threads= use */
static PyObject *py_set_default_threads(PyObject *self, PyObject *arg) {
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (n < 0 || n > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "threads must be >= 0, got %ld", n);
        return NULL;
    }
    default_threads = (int)n;
    return Py_NewRef(Py_None);
}

/* A failed attribute read or call on the fast path: an ordinary exception
 * (a sparse tensor's stride(), say) hands the call to the Python path (0),
 * which reports it its way; anything else (KeyboardInterrupt) propagates. */
static int fast_fail(void) {
    if (!PyErr_ExceptionMatches(PyExc_Exception)) return -1;
    PyErr_Clear();
    return 0;
}

/* obj's attribute as a borrowed-like flag: is it `want`? -1 error */
static int attr_is(PyObject *obj, PyObject *name, PyObject *want) {
    PyObject *a = PyObject_GetAttr(obj, name);
    if (!a) return -1;
    int r = a == want;
    Py_DECREF(a);
    return r;
}

typedef struct {
    int n, is_bool, grad;
    int64_t shape[4], stride[4];
    void *data;
} fast_view;

/* Reads tensor t into v: 1 if the fast path can take it (a CPU
 * torch.Tensor of float32, or bool when bool_ok, with min_nd..4 dims and a
 * unit last stride), 0 if not (the Python path decides), -1 on an error. */
static int fast_tensor(PyObject *t, int min_nd, int bool_ok, fast_view *v) {
    if (Py_TYPE(t) != (PyTypeObject *)t_tensor_type) return 0;
    PyObject *dt = PyObject_GetAttr(t, s_dtype);
    if (!dt) return fast_fail();
    v->is_bool = dt == t_bool;
    int dt_ok = dt == t_float32 || (bool_ok && v->is_bool);
    Py_DECREF(dt);
    if (!dt_ok) return 0;
    int cpu = attr_is(t, s_is_cpu, Py_True);
    if (cpu != 1) return cpu < 0 ? fast_fail() : 0;
    int grad = attr_is(t, s_requires_grad, Py_True);
    if (grad < 0) return fast_fail();
    v->grad = grad;
    PyObject *sh = PyObject_GetAttr(t, s_shape);
    if (!sh) return fast_fail();
    int r = 0;
    if (PyTuple_Check(sh) && PyTuple_GET_SIZE(sh) >= min_nd && PyTuple_GET_SIZE(sh) <= 4) {
        v->n = (int)PyTuple_GET_SIZE(sh);
        r = 1;
        for (int i = 0; i < v->n && r == 1; i++) {
            v->shape[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(sh, i));
            if (v->shape[i] == -1 && PyErr_Occurred()) r = fast_fail();
        }
    }
    Py_DECREF(sh);
    if (r != 1) return r;
    PyObject *st = PyObject_CallMethodNoArgs(t, s_stride);
    if (!st) return fast_fail();
    if (!PyTuple_Check(st) || PyTuple_GET_SIZE(st) != v->n) r = 0;
    for (int i = 0; i < v->n && r == 1; i++) {
        v->stride[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(st, i));
        if (v->stride[i] == -1 && PyErr_Occurred()) r = fast_fail();
    }
    Py_DECREF(st);
    if (r != 1) return r;
    if (v->stride[v->n - 1] != 1 && v->shape[v->n - 1] > 1) return 0; /* Python copies it */
    PyObject *ptr = PyObject_CallMethodNoArgs(t, s_data_ptr);
    if (!ptr) return fast_fail();
    v->data = PyLong_AsVoidPtr(ptr);
    Py_DECREF(ptr);
    if (!v->data && PyErr_Occurred()) return fast_fail();
    return 1;
}

/* v as the attn_tensor of a 4-dim argument: dims padded in front with
 * size-1 dims, except a 3-dim query, key or value (qkv), whose [B, T, D]
 * is [B, 1, T, D] as in PyTorch */
static void fast_tensor4(const fast_view *v, int qkv, attn_tensor *t) {
    memset(t, 0, sizeof *t);
    t->dtype = v->is_bool ? ATTN_BOOL : ATTN_F32;
    t->ndim = 4;
    t->data = v->data;
    int pad = 4 - v->n;
    for (int i = 0; i < pad; i++)
        t->shape[i] = 1, t->stride[i] = 0;
    for (int i = 0; i < v->n; i++)
        t->shape[pad + i] = v->shape[i], t->stride[pad + i] = v->stride[i];
    if (qkv && v->n == 3) {
        t->shape[0] = v->shape[0], t->stride[0] = v->stride[0];
        t->shape[1] = 1, t->stride[1] = 0;
    }
}

/* torch.empty(shape) (n dims), read into v as a contiguous float32 CPU
 * tensor: the new tensor, or NULL with *r = 0 when torch's defaults
 * (set_default_dtype, set_default_device) made it something else (the
 * Python path asks for float32 on the CPU) or *r = -1 on an error. */
static PyObject *fast_empty(const int64_t *shape, int n, fast_view *v, int *r) {
    PyObject *dims[4] = {NULL, NULL, NULL, NULL}, *t = NULL;
    *r = -1;
    for (int i = 0; i < n; i++)
        if (!(dims[i] = PyLong_FromLongLong(shape[i]))) goto done;
    t = PyObject_Vectorcall(t_empty, dims, n, NULL);
done:
    for (int i = 0; i < n; i++)
        Py_XDECREF(dims[i]);
    if (!t) return NULL;
    int ok = attr_is(t, s_dtype, t_float32);
    if (ok == 1) ok = attr_is(t, s_is_cpu, Py_True);
    PyObject *ptr = ok == 1 ? PyObject_CallMethodNoArgs(t, s_data_ptr) : NULL;
    v->data = ptr ? PyLong_AsVoidPtr(ptr) : NULL;
    Py_XDECREF(ptr);
    if (ok != 1 || !ptr || PyErr_Occurred()) {
        Py_DECREF(t);
        if (ok == 0 && !PyErr_Occurred()) *r = 0;
        return NULL;
    }
    v->n = n;
    v->is_bool = v->grad = 0;
    int64_t acc = 1;
    for (int i = n - 1; i >= 0; i--) {
        v->shape[i] = shape[i];
        v->stride[i] = acc;
        acc *= shape[i];
    }
    return t;
}

/* A float argument that must be exactly zero (dropout_p); 1 if it is. */
static int is_zero_float(PyObject *o) {
    if (PyFloat_CheckExact(o)) return PyFloat_AS_DOUBLE(o) == 0.0;
    if (PyLong_CheckExact(o)) return PyObject_Not(o) == 1;
    return 0;
}

/* torch_sdpa(query, key, value, attn_mask, dropout_p, is_causal, scale,
 *            enable_gqa) -> the output tensor; (output, lse) when autograd
 * wants a gradient (attn.torch records the call for its backward); or
 * None: take the Python path (see above). */
static PyObject *py_torch_sdpa(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "torch_sdpa: 8 arguments");
        return NULL;
    }
    if (!t_tensor_type) {
        PyErr_SetString(PyExc_RuntimeError, "torch_sdpa: torch_setup was not called");
        return NULL;
    }
    PyObject *mask_obj = args[3], *scale_obj = args[6];
    fast_view q, k, v, m;
    int r;
    if ((r = fast_tensor(args[0], 3, 0, &q)) != 1 || (r = fast_tensor(args[1], 3, 0, &k)) != 1 ||
        (r = fast_tensor(args[2], 3, 0, &v)) != 1)
        goto other;
    m.grad = 0;
    if (mask_obj != Py_None && (r = fast_tensor(mask_obj, 1, 1, &m)) != 1) goto other;
    r = 0;
    /* the Python path's checks, in its order: anything it would refuse or
     * reshape goes there */
    if (!is_zero_float(args[4])) goto other; /* dropout: torch's generator seeds it */
    int causal = PyObject_IsTrue(args[5]), gqa = PyObject_IsTrue(args[7]);
    if (causal < 0 || gqa < 0) return NULL;
    double scale = 0.0; /* the library's default, 1/sqrt(D) */
    if (scale_obj != Py_None) {
        if (!PyFloat_CheckExact(scale_obj)) goto other;
        scale = PyFloat_AS_DOUBLE(scale_obj);
        if (scale == 0.0) goto other; /* a real zero scale: a zero query */
    }
    int nd = q.n;
    if (k.n != nd || v.n != nd || (causal && mask_obj != Py_None)) goto other;
    attn_sdpa_args a;
    memset(&a, 0, sizeof a);
    fast_tensor4(&q, 1, &a.q);
    fast_tensor4(&k, 1, &a.k);
    fast_tensor4(&v, 1, &a.v);
    int64_t B = a.q.shape[0], H = a.q.shape[1], T = a.q.shape[2], S = a.k.shape[2];
    if (a.k.shape[0] != B || a.v.shape[0] != B || a.k.shape[3] != a.q.shape[3]) goto other;
    if (a.k.shape[1] != H && !gqa) goto other;
    if (mask_obj != Py_None) {
        /* with 3-dim inputs the scores are [B, T, S] and a 3-dim mask is
         * too (a 4-dim one makes a 4-dim result: the Python path refuses) */
        if (nd == 3 && m.n == 4) goto other;
        fast_tensor4(&m, nd == 3, &a.mask);
        if ((a.mask.shape[0] != 1 && a.mask.shape[0] != B) ||
            (a.mask.shape[1] != 1 && a.mask.shape[1] != H) || a.mask.shape[3] != S)
            goto other; /* an error, or the key dim broadcast: a copy */
        if (a.mask.shape[2] != T) {
            if (a.mask.shape[2] != 1) goto other;
            a.mask.shape[2] = T, a.mask.stride[2] = 0; /* the query dim broadcast in place */
        }
    }
    int want_grad = 0;
    if (q.grad || k.grad || v.grad || m.grad) {
        PyObject *en = PyObject_CallNoArgs(t_grad_enabled);
        if (!en) return NULL;
        want_grad = en == Py_True;
        Py_DECREF(en);
    }
    if (want_grad) {
        /* autograd: _SDPAFromC (attn/torch.py) records this call and hands
         * the tensors as they are to attn's backward, which reads them as
         * 4-dim inputs and a mask of 2 to 4 dims not broadcast along the
         * queries; other cases go through the Python path's views */
        if (nd != 4 || (mask_obj != Py_None && (m.n < 2 || m.shape[m.n - 2] != T))) goto other;
    }
    /* the output, [B, H, T, Dv] (or [B, T, Dv]), and with autograd the
     * log-sum-exp [B, H, T] that the backward reads */
    int64_t oshape[4] = {B, H, T, a.v.shape[3]};
    if (nd == 3) oshape[1] = T, oshape[2] = a.v.shape[3];
    fast_view o, l;
    PyObject *out = fast_empty(oshape, nd, &o, &r), *lse = NULL;
    if (!out) goto other;
    fast_tensor4(&o, 1, &a.out);
    if (want_grad) {
        if (!(lse = fast_empty(oshape, 3, &l, &r))) {
            Py_DECREF(out);
            goto other;
        }
        a.lse.dtype = ATTN_F32;
        a.lse.ndim = 3;
        a.lse.data = l.data;
        for (int i = 0; i < 3; i++)
            a.lse.shape[i] = l.shape[i], a.lse.stride[i] = l.stride[i];
    }
    a.causal = causal;
    a.align = ATTN_ALIGN_TOP_LEFT;
    a.window_left = a.window_right = -1;
    a.scale = (float)scale;
    attn_ctx *ctx = get_ctx(default_threads);
    attn_status st = ATTN_OK;
    if (ctx) {
        Py_BEGIN_ALLOW_THREADS st = attn_sdpa_forward(ctx, &a);
        Py_END_ALLOW_THREADS
    }
    if (!ctx || st != ATTN_OK) {
        Py_DECREF(out);
        Py_XDECREF(lse);
        return ctx ? raise_status(st, ctx, "attn_sdpa_forward") : NULL;
    }
    if (!lse) return out;
    PyObject *pair = PyTuple_Pack(2, out, lse);
    Py_DECREF(out);
    Py_DECREF(lse);
    return pair;
other:
    if (r < 0) return NULL;
    return Py_NewRef(Py_None);
}

/* ---- library facts ------------------------------------------------------ */

static PyObject *py_info(PyObject *self, PyObject *noargs) {
    attn_ctx *ctx = get_ctx(-1);
    if (!ctx) return NULL;
    PyObject *archs = PyList_New(0);
    if (!archs) return NULL;
    for (int i = 0; attn_arch_available(i); i++) {
        PyObject *s = PyUnicode_FromString(attn_arch_available(i));
        if (!s || PyList_Append(archs, s)) {
            Py_XDECREF(s);
            Py_DECREF(archs);
            return NULL;
        }
        Py_DECREF(s);
    }
    return Py_BuildValue("{s:s,s:s,s:N,s:i,s:s}", "version", ATTN_VERSION_STRING, "arch",
                         attn_ctx_arch(ctx), "archs", archs, "threads", attn_ctx_threads(ctx),
                         "gemm", attn_gemm_name());
}

/* ---- models ------------------------------------------------------------- */

static const char *MODEL_CAPSULE = "attn.model";

static void model_capsule_free(PyObject *cap) {
    attn_model_free(PyCapsule_GetPointer(cap, MODEL_CAPSULE));
}

static attn_model *model_of(PyObject *cap) {
    return PyCapsule_GetPointer(cap, MODEL_CAPSULE);
}

/* model_open(dir or None, tokenizer_only[, bf16]) -> capsule */
static PyObject *py_model_open(PyObject *self, PyObject *args) {
    PyObject *dir_obj, *dir_bytes = NULL;
    int tok_only, bf16 = 0;
    if (!PyArg_ParseTuple(args, "Op|p:model_open", &dir_obj, &tok_only, &bf16)) return NULL;
    if (dir_obj != Py_None && !PyUnicode_FSConverter(dir_obj, &dir_bytes)) return NULL;
    const char *dir = dir_bytes ? PyBytes_AS_STRING(dir_bytes) : NULL;
    attn_ctx *ctx = get_ctx(-1);
    if (!ctx) {
        Py_XDECREF(dir_bytes);
        return NULL;
    }
    attn_model *m = NULL;
    attn_status st;
    Py_BEGIN_ALLOW_THREADS st = attn_model_open(
        ctx, dir, (tok_only ? ATTN_MODEL_OPEN_TOKENIZER : 0) | (bf16 ? ATTN_MODEL_OPEN_BF16 : 0),
        &m);
    Py_END_ALLOW_THREADS Py_XDECREF(dir_bytes);
    if (st != ATTN_OK) return raise_status(st, ctx, "attn_model_open");
    PyObject *cap = PyCapsule_New(m, MODEL_CAPSULE, model_capsule_free);
    if (!cap) attn_model_free(m);
    return cap;
}

static PyObject *py_model_info(PyObject *self, PyObject *cap) {
    attn_model *m = model_of(cap);
    if (!m) return NULL;
    const attn_model_info *in = attn_model_get_info(m);
    const attn_bert *b = attn_model_get_bert(m);
    int normalize = b ? attn_bert_get_config(b)->normalize : 0;
    const attn_vit *vit = attn_model_get_vit(m);
    const int64_t nl = vit ? attn_vit_get_config(vit)->num_labels : 0;
    PyObject *labels = PyList_New((Py_ssize_t)nl);
    for (int64_t i = 0; labels && i < nl; i++) {
        PyObject *l = PyUnicode_DecodeUTF8(
            attn_vit_get_config(vit)->id2label[i],
            (Py_ssize_t)strlen(attn_vit_get_config(vit)->id2label[i]), "replace");
        if (!l)
            Py_CLEAR(labels);
        else
            PyList_SET_ITEM(labels, (Py_ssize_t)i, l);
    }
    if (!labels) return NULL;
    return Py_BuildValue("{s:s,s:s,s:L,s:L,s:L,s:L,s:L,s:O,s:N,s:O}", "type", in->type_name, "dir",
                         in->dir, "vocab_size", (long long)in->vocab_size, "hidden_size",
                         (long long)in->hidden_size, "num_layers", (long long)in->num_layers,
                         "num_heads", (long long)in->num_heads, "max_seq_length",
                         (long long)in->max_seq_length, "normalize", normalize ? Py_True : Py_False,
                         "labels", labels, "bpe", attn_model_get_bpe(m) ? Py_True : Py_False);
}

/* UTF-8 bytes of every text (a tuple, so the caller cannot change it while
 * the GIL is released). Returns 0 or -1 with an exception. */
static int texts_utf8(PyObject *texts, PyObject **tuple, const char ***s, Py_ssize_t **len) {
    *tuple = PySequence_Tuple(texts);
    if (!*tuple) return -1;
    Py_ssize_t n = PyTuple_GET_SIZE(*tuple);
    *s = PyMem_Calloc(n ? n : 1, sizeof **s);
    *len = PyMem_Calloc(n ? n : 1, sizeof **len);
    if (!*s || !*len) return PyErr_NoMemory(), -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PyTuple_GET_ITEM(*tuple, i);
        if (!PyUnicode_Check(t)) {
            PyErr_Format(PyExc_TypeError, "texts[%zd]: expected str, got %s", i,
                         Py_TYPE(t)->tp_name);
            return -1;
        }
        (*s)[i] = PyUnicode_AsUTF8AndSize(t, &(*len)[i]);
        if (!(*s)[i]) return -1;
    }
    return 0;
}

/* Token ids of n texts, each truncated to max_len, into one flat buffer:
 * ids of text i at ids + i * max_len, n_ids[i] of them. GIL released. */
static attn_status tokenize_all(attn_ctx *ctx, const attn_tokenizer *tok, Py_ssize_t n,
                                const char **s, const Py_ssize_t *len, int max_len, int32_t *ids,
                                int64_t *n_ids) {
    for (Py_ssize_t i = 0; i < n; i++) {
        int got = 0;
        attn_status st = attn_tokenizer_encode(ctx, tok, s[i], (size_t)len[i], max_len,
                                               ids + (size_t)i * max_len, max_len, &got);
        if (st != ATTN_OK) return st;
        n_ids[i] = got;
    }
    return ATTN_OK;
}

/* model_tokenize(capsule, texts, max_len) -> list of lists of ids */
static PyObject *py_model_tokenize(PyObject *self, PyObject *args) {
    PyObject *cap, *texts, *tuple = NULL, *ret = NULL;
    int max_len;
    if (!PyArg_ParseTuple(args, "OOi:model_tokenize", &cap, &texts, &max_len)) return NULL;
    attn_model *m = model_of(cap);
    attn_ctx *ctx = get_ctx(-1);
    if (!m || !ctx) return NULL;
    const attn_tokenizer *tok = attn_model_get_tokenizer(m);
    const char **s = NULL;
    Py_ssize_t *len = NULL;
    int32_t *ids = NULL;
    int64_t *n_ids = NULL;
    if (texts_utf8(texts, &tuple, &s, &len)) goto done;
    Py_ssize_t n = PyTuple_GET_SIZE(tuple);
    attn_status st = ATTN_OK;
    PyObject *out = PyList_New(n);
    if (!out) goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        int cnt = 0;
        /* count first (no truncation limit known: max_len <= 0) */
        Py_BEGIN_ALLOW_THREADS st =
            attn_tokenizer_encode(ctx, tok, s[i], (size_t)len[i], max_len, NULL, 0, &cnt);
        if (st == ATTN_E_ARG && cnt > 0) st = ATTN_OK;
        if (st == ATTN_OK) {
            PyMem_RawFree(ids);
            ids = PyMem_RawMalloc(sizeof *ids * (cnt ? cnt : 1));
            if (!ids)
                st = ATTN_E_NOMEM;
            else
                st = attn_tokenizer_encode(ctx, tok, s[i], (size_t)len[i], max_len, ids, cnt, &cnt);
        }
        Py_END_ALLOW_THREADS if (st != ATTN_OK) {
            Py_DECREF(out);
            if (st == ATTN_E_NOMEM && !ids)
                PyErr_NoMemory();
            else
                raise_status(st, ctx, "attn_tokenizer_encode");
            goto done;
        }
        PyObject *row = PyList_New(cnt);
        if (!row) {
            Py_DECREF(out);
            goto done;
        }
        for (int j = 0; j < cnt; j++)
            PyList_SET_ITEM(row, j, PyLong_FromLong(ids[j]));
        PyList_SET_ITEM(out, i, row);
    }
    ret = out;
done:
    PyMem_RawFree(ids);
    PyMem_RawFree(n_ids);
    PyMem_Free(s);
    PyMem_Free(len);
    Py_XDECREF(tuple);
    return ret;
}

/* model_embed(capsule, texts, out, threads): out is a writable C-contiguous
 * float32 [n, hidden_size] array. Tokenizes (truncating to the model's
 * max_seq_length) and embeds with the GIL released. */
static PyObject *py_model_embed(PyObject *self, PyObject *args) {
    PyObject *cap, *texts, *out_obj, *tuple = NULL, *ret = NULL;
    int threads;
    if (!PyArg_ParseTuple(args, "OOOi:model_embed", &cap, &texts, &out_obj, &threads)) return NULL;
    attn_model *m = model_of(cap);
    if (!m) return NULL;
    const attn_bert *bert = attn_model_get_bert(m);
    if (!bert) {
        PyErr_SetString(PyExc_ValueError, "encode: this model has no encoder (it was opened "
                                          "for its tokenizer only)");
        return NULL;
    }
    attn_ctx *ctx = get_ctx(threads);
    if (!ctx) return NULL;
    const attn_model_info *in = attn_model_get_info(m);
    const char **s = NULL;
    Py_ssize_t *len = NULL;
    int32_t *ids = NULL;
    int64_t *n_ids = NULL;
    const int32_t **rows = NULL;
    holder h = {0};
    attn_tensor out;
    if (texts_utf8(texts, &tuple, &s, &len)) goto done;
    Py_ssize_t n = PyTuple_GET_SIZE(tuple);
    if (get_view(out_obj, "out", 2, 2, ACCEPT_F32, 1, 0, &out, &h)) goto done;
    if (out.shape[0] != n || out.shape[1] != in->hidden_size || out.stride[1] != 1 ||
        out.stride[0] != in->hidden_size) {
        PyErr_Format(PyExc_ValueError, "out: expected a C-contiguous float32 [%zd, %lld] array", n,
                     (long long)in->hidden_size);
        goto done;
    }
    if (n == 0) {
        ret = Py_NewRef(Py_None);
        goto done;
    }
    int max_len = (int)in->max_seq_length;
    ids = PyMem_RawMalloc(sizeof *ids * (size_t)n * max_len);
    n_ids = PyMem_RawMalloc(sizeof *n_ids * n);
    rows = PyMem_RawMalloc(sizeof *rows * n);
    if (!ids || !n_ids || !rows) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        rows[i] = ids + (size_t)i * max_len;
    attn_status st;
    const char *what = "attn_tokenizer_encode";
    Py_BEGIN_ALLOW_THREADS st =
        tokenize_all(ctx, attn_model_get_tokenizer(m), n, s, len, max_len, ids, n_ids);
    if (st == ATTN_OK) {
        what = "attn_bert_embed";
        st = attn_bert_embed(ctx, bert, n, rows, n_ids, out.data);
    }
    Py_END_ALLOW_THREADS if (st != ATTN_OK) raise_status(st, ctx, what);
    else ret = Py_NewRef(Py_None);
done:
    holder_release(&h);
    PyMem_RawFree(ids);
    PyMem_RawFree(n_ids);
    PyMem_RawFree(rows);
    PyMem_Free(s);
    PyMem_Free(len);
    Py_XDECREF(tuple);
    return ret;
}

/* ---- decoders: BPE tokens and generation -------------------------------- */

static const attn_bpe *model_bpe(attn_model *m, const char *what) {
    const attn_bpe *t = attn_model_get_bpe(m);
    if (!t)
        PyErr_Format(PyExc_ValueError,
                     "%s: %s has no byte-level BPE tokenizer (tokenizer.json or vocab.json + "
                     "merges.txt)",
                     what, attn_model_get_info(m)->dir);
    return t;
}

/* Token ids of a Python sequence of ints into a PyMem_RawMalloc'd array. */
static int32_t *ids_of(PyObject *seq, const char *name, Py_ssize_t *n) {
    PyObject *fast = PySequence_Fast(seq, name);
    if (!fast) return NULL;
    *n = PySequence_Fast_GET_SIZE(fast);
    int32_t *ids = PyMem_RawMalloc(sizeof *ids * (*n ? *n : 1));
    if (!ids) {
        Py_DECREF(fast);
        return (int32_t *)PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < *n; i++) {
        long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(fast, i));
        if ((v == -1 && PyErr_Occurred()) || v < 0 || v > INT32_MAX) {
            if (!PyErr_Occurred() || PyErr_ExceptionMatches(PyExc_OverflowError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_ValueError, "%s[%zd]: not a token id (an int in [0, 2^31))",
                             name, i);
            }
            PyMem_RawFree(ids);
            Py_DECREF(fast);
            return NULL;
        }
        ids[i] = (int32_t)v;
    }
    Py_DECREF(fast);
    return ids;
}

static PyObject *ids_list(const int32_t *ids, int64_t n) {
    PyObject *l = PyList_New((Py_ssize_t)n);
    for (int64_t j = 0; l && j < n; j++) {
        PyObject *v = PyLong_FromLong(ids[j]);
        if (!v) return Py_DECREF(l), NULL;
        PyList_SET_ITEM(l, (Py_ssize_t)j, v);
    }
    return l;
}

/* model_bpe_encode(capsule, text, add_special) -> list of ids */
static PyObject *py_model_bpe_encode(PyObject *self, PyObject *args) {
    PyObject *cap;
    const char *s;
    Py_ssize_t len;
    int add_special;
    if (!PyArg_ParseTuple(args, "Os#p:model_bpe_encode", &cap, &s, &len, &add_special)) return NULL;
    attn_model *m = model_of(cap);
    attn_ctx *ctx = get_ctx(-1);
    if (!m || !ctx) return NULL;
    const attn_bpe *tok = model_bpe(m, "tokenize");
    if (!tok) return NULL;
    int cnt = 0;
    int32_t *ids = NULL;
    attn_status st;
    Py_BEGIN_ALLOW_THREADS st =
        attn_bpe_encode(ctx, tok, s, (size_t)len, add_special, NULL, 0, &cnt);
    if (st == ATTN_E_ARG && cnt > 0) st = ATTN_OK;
    if (st == ATTN_OK) {
        ids = PyMem_RawMalloc(sizeof *ids * (cnt ? cnt : 1));
        st = ids ? attn_bpe_encode(ctx, tok, s, (size_t)len, add_special, ids, cnt, &cnt)
                 : ATTN_E_NOMEM;
    }
    Py_END_ALLOW_THREADS PyObject *ret = NULL;
    if (st != ATTN_OK)
        raise_status(st, ctx, "attn_bpe_encode");
    else
        ret = ids_list(ids, cnt);
    PyMem_RawFree(ids);
    return ret;
}

/* The tokens not shown as text (skip_special_tokens): the model's and the
 * tokenizer's end-of-text, the tokenizer's begin-of-text. */
static int is_quiet(const attn_model *m, int32_t id) {
    const attn_gpt *g = attn_model_get_gpt(m);
    const attn_bpe *t = attn_model_get_bpe(m);
    return (g && id == attn_gpt_get_config(g)->eos_token_id) ||
           (t && (id == attn_bpe_eos_id(t) || id == attn_bpe_bos_id(t)));
}

/* model_bpe_decode(capsule, ids, skip_special) -> str (invalid UTF-8 as
 * U+FFFD, as Hugging Face's decode) */
static PyObject *py_model_bpe_decode(PyObject *self, PyObject *args) {
    PyObject *cap, *seq;
    int skip;
    if (!PyArg_ParseTuple(args, "OOp:model_bpe_decode", &cap, &seq, &skip)) return NULL;
    attn_model *m = model_of(cap);
    attn_ctx *ctx = get_ctx(-1);
    if (!m || !ctx) return NULL;
    const attn_bpe *tok = model_bpe(m, "decode");
    if (!tok) return NULL;
    Py_ssize_t n;
    int32_t *ids = ids_of(seq, "ids", &n);
    if (!ids) return NULL;
    if (n > INT32_MAX) {
        PyMem_RawFree(ids);
        PyErr_SetString(PyExc_ValueError, "decode: more than 2^31-1 ids");
        return NULL;
    }
    Py_ssize_t keep = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (!skip || !is_quiet(m, ids[i])) ids[keep++] = ids[i];
    size_t bytes = 0;
    char *buf = NULL;
    attn_status st;
    Py_BEGIN_ALLOW_THREADS st = attn_bpe_decode(ctx, tok, ids, (int)keep, NULL, 0, &bytes);
    if (st == ATTN_E_ARG && bytes > 0) st = ATTN_OK;
    if (st == ATTN_OK) {
        buf = PyMem_RawMalloc(bytes + 1);
        st = buf ? attn_bpe_decode(ctx, tok, ids, (int)keep, buf, bytes + 1, &bytes) : ATTN_E_NOMEM;
    }
    Py_END_ALLOW_THREADS PyObject *ret = NULL;
    if (st != ATTN_OK)
        raise_status(st, ctx, "attn_bpe_decode");
    else
        ret = PyUnicode_DecodeUTF8(buf, (Py_ssize_t)bytes, "replace");
    PyMem_RawFree(buf);
    PyMem_RawFree(ids);
    return ret;
}

/* Stops generation once the new tokens' bytes contain a stop string. */
typedef struct {
    const attn_model *m;
    const attn_bpe *tok;
    const char *stop;
    size_t stop_len;
    char *text;
    size_t len, cap;
    int failed;
} gen_stop;

static int gen_on_token(void *user, int32_t id) {
    gen_stop *g = user;
    if (!g->stop_len || is_quiet(g->m, id)) return 0;
    size_t n = 0;
    const unsigned char *b = attn_bpe_token_bytes(g->tok, id, &n);
    if (!b || !n) return 0;
    if (g->len + n > g->cap) {
        size_t cap = (g->cap ? 2 * g->cap : 256) + n;
        char *t = realloc(g->text, cap);
        if (!t) return g->failed = 1;
        g->text = t, g->cap = cap;
    }
    const size_t from = g->len >= g->stop_len ? g->len - g->stop_len + 1 : 0;
    memcpy(g->text + g->len, b, n);
    g->len += n;
    for (size_t i = from; i + g->stop_len <= g->len; i++)
        if (!memcmp(g->text + i, g->stop, g->stop_len)) return 1;
    return 0;
}

/* model_generate(capsule, prompt ids, max_new_tokens, temperature, top_k,
 * top_p, seed, ignore_eos, stop (bytes or None), threads) -> new ids.
 * Generation runs with the GIL released. */
static PyObject *py_model_generate(PyObject *self, PyObject *args) {
    PyObject *cap, *prompt;
    long long max_new, top_k;
    unsigned long long seed;
    double temperature, top_p;
    int ignore_eos, threads;
    const char *stop = NULL;
    Py_ssize_t stop_len = 0;
    if (!PyArg_ParseTuple(args, "OOLdLdKpz#i:model_generate", &cap, &prompt, &max_new, &temperature,
                          &top_k, &top_p, &seed, &ignore_eos, &stop, &stop_len, &threads))
        return NULL;
    attn_model *m = model_of(cap);
    if (!m) return NULL;
    const attn_gpt *gpt = attn_model_get_gpt(m);
    if (!gpt) {
        PyErr_Format(PyExc_ValueError,
                     "generate: %s is a %s model, not a decoder (generate needs model_type "
                     "gpt2 or llama)",
                     attn_model_get_info(m)->dir, attn_model_get_info(m)->type_name);
        return NULL;
    }
    if (stop_len && !attn_model_get_bpe(m)) return (PyObject *)model_bpe(m, "stop");
    attn_ctx *ctx = get_ctx(threads);
    if (!ctx) return NULL;
    Py_ssize_t n;
    int32_t *ids = ids_of(prompt, "prompt", &n);
    if (!ids) return NULL;
    attn_gen_params p;
    attn_gen_params_default(gpt, &p);
    p.max_new_tokens = max_new, p.temperature = (float)temperature, p.top_k = top_k;
    p.top_p = (float)top_p, p.seed = seed;
    if (ignore_eos) p.eos_id = -1;
    /* the library refuses max_new_tokens beyond n_positions before it writes */
    const int64_t n_pos = attn_gpt_get_config(gpt)->n_positions;
    const int64_t room = max_new < 1 ? 1 : (max_new < n_pos ? max_new : n_pos);
    int32_t *out = PyMem_RawMalloc(sizeof *out * (size_t)room);
    if (!out) {
        PyMem_RawFree(ids);
        return PyErr_NoMemory();
    }
    int64_t made = 0;
    gen_stop g = {m, attn_model_get_bpe(m), stop, (size_t)stop_len, NULL, 0, 0, 0};
    attn_status st;
    Py_BEGIN_ALLOW_THREADS st =
        attn_gpt_generate(ctx, gpt, ids, n, &p, gen_on_token, &g, out, &made, NULL);
    Py_END_ALLOW_THREADS PyObject *ret = NULL;
    if (st != ATTN_OK)
        raise_status(st, ctx, "attn_gpt_generate");
    else if (g.failed)
        PyErr_NoMemory();
    else
        ret = ids_list(out, made);
    free(g.text);
    PyMem_RawFree(out);
    PyMem_RawFree(ids);
    return ret;
}

/* ---- image classification ----------------------------------------------- */

/* One image of model_vit_logits: a path (str, bytes or os.PathLike) or a
 * C-contiguous uint8 [height, width, 3] buffer, preprocessed into px. */
static attn_status vit_pixels(attn_ctx *ctx, PyObject *item, Py_ssize_t i,
                              const attn_image_preproc *p, float *px, int *py_err) {
    attn_image img = {0};
    attn_status st;
    *py_err = 0;
    if (PyObject_CheckBuffer(item) && !PyBytes_Check(item)) {
        Py_buffer b;
        if (PyObject_GetBuffer(item, &b, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
            return *py_err = 1, ATTN_E_ARG;
        if (b.ndim != 3 || b.shape[2] != 3 || b.itemsize != 1 ||
            (b.format && strcmp(b.format, "B"))) {
            PyErr_Format(PyExc_ValueError,
                         "images[%zd]: expected a uint8 [height, width, 3] RGB array", i);
            PyBuffer_Release(&b);
            return *py_err = 1, ATTN_E_ARG;
        }
        img.width = b.shape[1], img.height = b.shape[0], img.rgb = b.buf;
        if (img.width < 1 || img.height < 1) {
            PyErr_Format(PyExc_ValueError, "images[%zd]: an empty image (%lld x %lld)", i,
                         (long long)img.width, (long long)img.height);
            PyBuffer_Release(&b);
            return *py_err = 1, ATTN_E_ARG;
        }
        Py_BEGIN_ALLOW_THREADS st = attn_image_preprocess(ctx, &img, p, px);
        Py_END_ALLOW_THREADS PyBuffer_Release(&b);
        return st;
    }
    PyObject *path = NULL;
    if (!PyUnicode_FSConverter(item, &path)) return *py_err = 1, ATTN_E_ARG;
    const char *s = PyBytes_AS_STRING(path);
    Py_BEGIN_ALLOW_THREADS st = attn_image_load(ctx, s, 0, &img);
    if (st == ATTN_OK) st = attn_image_preprocess(ctx, &img, p, px);
    attn_image_free(&img);
    Py_END_ALLOW_THREADS Py_DECREF(path);
    return st;
}

/* model_vit_logits(capsule, images, threads) -> bytes of float32
 * [n, num_labels]: each image decoded (paths) and preprocessed as the
 * model's preprocessor_config.json says, then one forward, GIL released. */
static PyObject *py_model_vit_logits(PyObject *self, PyObject *args) {
    PyObject *cap, *images;
    int threads;
    if (!PyArg_ParseTuple(args, "OOi:model_vit_logits", &cap, &images, &threads)) return NULL;
    attn_model *m = model_of(cap);
    if (!m) return NULL;
    const attn_vit *vit = attn_model_get_vit(m);
    if (!vit) {
        PyErr_Format(PyExc_ValueError,
                     "classify: %s is a %s model, not an image classifier (classify needs "
                     "model_type vit)",
                     attn_model_get_info(m)->dir, attn_model_get_info(m)->type_name);
        return NULL;
    }
    const attn_vit_config *c = attn_vit_get_config(vit);
    if (c->num_labels < 1) {
        PyErr_Format(PyExc_ValueError, "classify: %s has no classifier (a ViTModel)",
                     attn_model_get_info(m)->dir);
        return NULL;
    }
    attn_ctx *ctx = get_ctx(threads);
    if (!ctx) return NULL;
    PyObject *seq = PySequence_Fast(images, "images: expected a list");
    if (!seq) return NULL;
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    const attn_image_preproc *p = attn_vit_get_preproc(vit);
    if (!p->do_resize) {
        PyErr_Format(PyExc_ValueError,
                     "classify: %s: preprocessor_config.json has do_resize false, which "
                     "classify does not support",
                     attn_model_get_info(m)->dir);
        Py_DECREF(seq);
        return NULL;
    }
    const int64_t H = p->height, W = p->width;
    const size_t per = (size_t)(3 * H * W);
    PyObject *ret = PyBytes_FromStringAndSize(
        NULL, (Py_ssize_t)(sizeof(float) * (size_t)n * (size_t)c->num_labels));
    float *px = PyMem_RawMalloc(sizeof *px * per * (size_t)(n ? n : 1));
    if (!ret || !px) {
        if (ret && !px) PyErr_NoMemory();
        Py_CLEAR(ret);
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        int py_err;
        attn_status st = vit_pixels(ctx, item, i, p, px + per * (size_t)i, &py_err);
        if (st != ATTN_OK) {
            if (!py_err) raise_status(st, ctx, "classify");
            Py_CLEAR(ret);
            goto done;
        }
    }
    if (n > 0) {
        attn_vit_outputs out = {(float *)PyBytes_AS_STRING(ret), NULL, NULL};
        attn_status st;
        Py_BEGIN_ALLOW_THREADS st = attn_vit_forward(ctx, vit, n, H, W, px, 0, &out);
        Py_END_ALLOW_THREADS if (st != ATTN_OK) {
            raise_status(st, ctx, "attn_vit_forward");
            Py_CLEAR(ret);
        }
    }
done:
    PyMem_RawFree(px);
    Py_DECREF(seq);
    return ret;
}

/* ---- module ------------------------------------------------------------- */

static PyMethodDef methods[] = {
    {"forward", py_forward, METH_VARARGS,
     "forward(q, k, v, out, lse, mask, kv_len, alibi_slopes, causal, align, window, "
     "window_left, window_right, scale, softcap, dropout_p, seed, threads[, global_tokens])\n"
     "attn_sdpa_forward on the caller's memory; use attn.sdpa."},
    {"backward", py_backward, METH_VARARGS,
     "backward(<forward's arguments>, dout, dq, dk, dv, dmask[, global_tokens])\n"
     "attn_sdpa_backward on the caller's memory; use attn.sdpa_backward."},
    {"time_forward", py_time_forward, METH_VARARGS,
     "time_forward(<forward's arguments>, calls, rounds, cpu[, global_tokens]) -> seconds\n"
     "Median over rounds of the mean time of one attn_sdpa_forward call in a C loop\n"
     "(by the process's CPU time when cpu is true, else the wall clock)."},
    {"torch_setup", py_torch_setup, METH_VARARGS,
     "torch_setup(torch.Tensor, torch.float32, torch.bool, torch.empty, torch.is_grad_enabled)\n"
     "What torch_sdpa needs of torch; attn.torch calls it when imported."},
    {"torch_sdpa", (PyCFunction)(void (*)(void))py_torch_sdpa, METH_FASTCALL,
     "torch_sdpa(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)\n"
     "-> tensor, (tensor, lse) when autograd wants a gradient, or None.\n"
     "attn.torch.scaled_dot_product_attention's forward in C; None: not a case it takes\n"
     "(the Python function then does)."},
    {"set_default_threads", py_set_default_threads, METH_O,
     "set_default_threads(n): the threads torch_sdpa uses; attn.set_num_threads sets it."},
    {"info", py_info, METH_NOARGS,
     "info() -> dict: version, kernel family, families, threads, GEMM."},
    {"model_open", py_model_open, METH_VARARGS,
     "model_open(dir, tokenizer_only[, bf16]) -> capsule; use attn.Model.open."},
    {"model_info", py_model_info, METH_O, "model_info(capsule) -> dict"},
    {"model_tokenize", py_model_tokenize, METH_VARARGS,
     "model_tokenize(capsule, texts, max_len) -> list of id lists"},
    {"model_embed", py_model_embed, METH_VARARGS,
     "model_embed(capsule, texts, out, threads): embeddings into out"},
    {"model_bpe_encode", py_model_bpe_encode, METH_VARARGS,
     "model_bpe_encode(capsule, text, add_special) -> ids (byte-level BPE)"},
    {"model_bpe_decode", py_model_bpe_decode, METH_VARARGS,
     "model_bpe_decode(capsule, ids, skip_special) -> str"},
    {"model_generate", py_model_generate, METH_VARARGS,
     "model_generate(capsule, prompt_ids, max_new_tokens, temperature, top_k, top_p, seed,\n"
     "ignore_eos, stop, threads) -> new ids; use attn.Model.generate."},
    {"model_vit_logits", py_model_vit_logits, METH_VARARGS,
     "model_vit_logits(capsule, images, threads) -> bytes of float32 [n, num_labels]"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "attn._attn",
    .m_doc = "The C extension under attn: the library's public API on Python objects.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__attn(void) {
    static int key_made = 0;
    if (!s_data_ptr) {
        s_data_ptr = PyUnicode_InternFromString("data_ptr");
        s_shape = PyUnicode_InternFromString("shape");
        s_stride = PyUnicode_InternFromString("stride");
        s_itemsize = PyUnicode_InternFromString("itemsize");
        s_is_fp = PyUnicode_InternFromString("is_floating_point");
        s_is_cpu = PyUnicode_InternFromString("is_cpu");
        s_dtype = PyUnicode_InternFromString("dtype");
        s_requires_grad = PyUnicode_InternFromString("requires_grad");
        if (!s_data_ptr || !s_shape || !s_stride || !s_itemsize || !s_is_fp || !s_is_cpu ||
            !s_dtype || !s_requires_grad)
            return NULL;
    }
    if (!key_made) {
        if (pthread_key_create(&ctx_key, thread_ctx_free)) {
            PyErr_SetString(PyExc_RuntimeError, "attn: pthread_key_create failed");
            return NULL;
        }
        key_made = 1;
    }
    return PyModule_Create(&module);
}

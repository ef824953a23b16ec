/* The data plane's hot path in C: joint messages of the fused layout, plain and sealed.
 *
 * Each function here does exactly what a Python function of the package does, for the one
 * datagram shape that is on every control tick (a JointCommand or JointState with float64
 * positions only; docs/protocol.md section 4), and returns None for anything else so the
 * caller takes its Python path, which handles every other case and words every error:
 *
 *   decode_joints(data)                      telepresence.wire.codec._decode_joints_fast
 *   encode_joints(msg, mtype, stream, session, seq, send_time_ns)
 *                                            telepresence.wire.codec._encode_joints_fast
 *   seal_joints(msg, mtype, stream, session, seq, last, send_time_ns, key)
 *                                            the in-place branch of Sealer.seal
 *   open_sealed(data, opener, openers)       telepresence.security._open_well_formed
 *
 * The Python objects it builds (Header, Datagram, the message classes, numpy arrays through
 * numpy.frombuffer) and the ChaCha20-Poly1305 functions (libsodium's, as PyNaCl ships it) are
 * handed over by configure_codec and configure_aead at import; nothing here links numpy or
 * libsodium. Every datagram is untrusted input: every read is bounded by the length checks
 * that precede it. All calls hold the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define HEADER_SIZE 32
#define FUSED_SIZE 48 /* header + the fused joint prefix */
#define FUSED_BODY 16 /* the fused joint prefix of a body */
#define TAG_SIZE 16
#define NONCE_SIZE 12
#define KEY_SIZE 32
#define VERSION 2
#define FLAG_AUTHENTICATED 1
#define MAX_BODY 0xFFFF

typedef int (*encrypt_fn)(unsigned char *c, unsigned long long *clen, const unsigned char *m,
                          unsigned long long mlen, const unsigned char *ad,
                          unsigned long long adlen, const unsigned char *nsec,
                          const unsigned char *npub, const unsigned char *k);
typedef int (*decrypt_fn)(unsigned char *m, unsigned long long *mlen, unsigned char *nsec,
                          const unsigned char *c, unsigned long long clen,
                          const unsigned char *ad, unsigned long long adlen,
                          const unsigned char *npub, const unsigned char *k);

typedef struct {
    PyObject *member; /* the MessageType member */
    PyObject *cls;    /* JointCommand or JointState; NULL if the type has no fused layout */
    int is_command;   /* JointCommand: built without its __init__, as the Python path does */
} Kind;

/* Set once by configure_codec and configure_aead, which refuse a second call: strong
 * references kept for the life of the process, so a borrowed one never dies mid-call. */
static int codec_ready = 0;
static PyTypeObject *header_type, *datagram_type, *ndarray_type;
static PyObject *f8, *frombuffer, *object_new;
static Kind joints[256];
static PyObject *type_of[256]; /* every MessageType member by value, for sealed headers */
/* Set by configure_aead. */
static encrypt_fn aead_encrypt = NULL;
static decrypt_fn aead_decrypt = NULL;
static int aead_ready = 0;
static PyTypeObject *opener_type;
static PyObject *forged, *decode_body, *open_python;
static PyObject *zero, *state_kwnames;
static PyObject *s_positions, *s_velocities, *s_efforts, *s_gripper, *s_ref, *s_dtype, *s_ndim,
    *s_key, *s_session, *s_get;

/* ---- little-endian fields ------------------------------------------------------------- */

static inline uint16_t get16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}
static inline uint64_t get64(const unsigned char *p)
{
    return (uint64_t)get32(p) | ((uint64_t)get32(p + 4) << 32);
}
static inline double getf64(const unsigned char *p)
{
    uint64_t bits = get64(p);
    double d;
    memcpy(&d, &bits, 8);
    return d;
}
static inline void put16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}
static inline void put32(unsigned char *p, uint32_t v)
{
    put16(p, (uint16_t)v);
    put16(p + 2, (uint16_t)(v >> 16));
}
static inline void put64(unsigned char *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

/* ---- building the results ------------------------------------------------------------- */

/* An instance of the tuple subclass `type` (a NamedTuple) holding `items`, which it steals
 * (NULL items: all are released and NULL is returned), without the class's Python __new__. */
static PyObject *new_tuple(PyTypeObject *type, PyObject **items, Py_ssize_t n)
{
    PyObject *t = NULL;
    Py_ssize_t i;
    for (i = 0; i < n && items[i] != NULL; i++)
        ;
    if (i == n) {
#if PY_VERSION_HEX < 0x030E0000
        t = type->tp_alloc(type, n); /* filled before anything else can run */
        if (t != NULL) {
            for (i = 0; i < n; i++)
                PyTuple_SET_ITEM(t, i, items[i]);
            return t;
        }
#else /* 3.14 caches a tuple's hash in the object: let tuple.__new__ set that up */
        PyObject *plain = PyTuple_New(n), *args = NULL;
        if (plain != NULL) {
            for (i = 0; i < n; i++)
                PyTuple_SET_ITEM(plain, i, items[i]);
            args = PyTuple_Pack(1, plain);
            Py_DECREF(plain);
            if (args != NULL) {
                t = PyTuple_Type.tp_new(type, args, NULL);
                Py_DECREF(args);
            }
            return t;
        }
#endif
    }
    for (i = 0; i < n; i++)
        Py_XDECREF(items[i]);
    return NULL;
}

/* Header(type, stream, session, seq, send_time_ns, flags). */
static PyObject *new_header(PyObject *member, uint16_t stream, uint32_t session, uint64_t seq,
                            int64_t sent, uint16_t flags)
{
    PyObject *items[6] = {Py_NewRef(member),
                          PyLong_FromUnsignedLong(stream),
                          PyLong_FromUnsignedLong(session),
                          PyLong_FromUnsignedLongLong(seq),
                          PyLong_FromLongLong(sent),
                          PyLong_FromUnsignedLong(flags)};
    return new_tuple(header_type, items, 6);
}

/* Datagram(header, message); steals both references. */
static PyObject *new_datagram(PyObject *header, PyObject *message)
{
    PyObject *items[2] = {header, message};
    return new_tuple(datagram_type, items, 2);
}

/* The message of kind `k`: positions = numpy.frombuffer(owner, '<f8', n, offset), no
 * velocities or efforts, `gripper` (a float, or None when present == 0). As the Python paths
 * do: a JointCommand gets every field set (ref 0) without its __init__ (tests/test_wire.py
 * fails if it gains a field), a JointState is made by its constructor. */
static PyObject *new_joints(const Kind *k, PyObject *owner, Py_ssize_t n, Py_ssize_t offset,
                            int present, double gripper)
{
    PyObject *count = PyLong_FromSsize_t(n), *at = PyLong_FromSsize_t(offset);
    PyObject *positions = NULL, *grip = NULL, *message = NULL;
    if (count == NULL || at == NULL)
        goto done;
    PyObject *args[4] = {owner, f8, count, at};
    positions = PyObject_Vectorcall(frombuffer, args, 4, NULL);
    if (positions == NULL)
        goto done;
    grip = present ? PyFloat_FromDouble(gripper) : Py_NewRef(Py_None);
    if (grip == NULL)
        goto done;
    if (!k->is_command) {
        PyObject *kw[2] = {positions, grip};
        message = PyObject_Vectorcall(k->cls, kw, 0, state_kwnames);
        goto done;
    }
    message = PyObject_CallOneArg(object_new, k->cls);
    if (message == NULL)
        goto done;
    if (PyObject_SetAttr(message, s_positions, positions) < 0 ||
        PyObject_SetAttr(message, s_velocities, Py_None) < 0 ||
        PyObject_SetAttr(message, s_efforts, Py_None) < 0 ||
        PyObject_SetAttr(message, s_gripper, grip) < 0 ||
        PyObject_SetAttr(message, s_ref, zero) < 0)
        Py_CLEAR(message);
done:
    Py_XDECREF(count);
    Py_XDECREF(at);
    Py_XDECREF(positions);
    Py_XDECREF(grip);
    return message;
}

/* Checks of the fused joint prefix at `b` of a body of `body_len` bytes; sets *n, *present and
 * *gripper and returns 1 when it is the fused layout, else 0. */
static int fused_body(const unsigned char *b, Py_ssize_t body_len, Py_ssize_t *n, int *present,
                      double *gripper)
{
    if (body_len < FUSED_BODY)
        return 0;
    unsigned p = b[0];
    if (b[1] || get16(b + 2) || b[14] != 8 || b[15])
        return 0;
    *n = get16(b + 12);
    if (FUSED_BODY + 8 * *n != body_len)
        return 0;
    if (p == 4) {
        *present = 1;
        *gripper = getf64(b + 4);
    }
    else if (p == 0 && get64(b + 4) == 0) {
        *present = 0;
        *gripper = 0.0;
    }
    else
        return 0;
    return 1;
}

/* ---- reading a message to send -------------------------------------------------------- */

typedef struct {
    PyObject *positions; /* a float64 ndarray, one dimension (a reference held) */
    int present;
    double gripper;
} Outgoing;

/* The message's fields, read in the order and with the checks of the Python paths
 * (`_encode_joints_fast`, `Sealer.seal`): 1 when it fits the fused layout so far (out holds
 * a reference to the positions), 0 when it does not (no exception set: the caller's Python path
 * takes it), -1 with the exception an attribute read raised (the Python path raises it too).
 * Whatever may run Python code (an attribute, the gripper's __float__) runs here, before the
 * positions' memory is read. */
static int read_joints(PyObject *message, Outgoing *out)
{
    PyObject *positions = PyObject_GetAttr(message, s_positions);
    if (positions == NULL)
        return -1;
    PyObject *v = PyObject_GetAttr(message, s_velocities);
    if (v == NULL)
        goto error;
    int fits = v == Py_None;
    Py_DECREF(v);
    if (fits) {
        v = PyObject_GetAttr(message, s_efforts);
        if (v == NULL)
            goto error;
        fits = v == Py_None;
        Py_DECREF(v);
    }
    fits = fits && Py_TYPE(positions) == ndarray_type; /* exactly: its attributes are numpy's */
    if (fits) {
        PyObject *dtype = PyObject_GetAttr(positions, s_dtype);
        if (dtype == NULL)
            goto error;
        int differs = PyObject_RichCompareBool(dtype, f8, Py_NE); /* identity first */
        Py_DECREF(dtype);
        if (differs < 0)
            goto error;
        fits = !differs;
    }
    if (fits) {
        PyObject *ndim = PyObject_GetAttr(positions, s_ndim);
        if (ndim == NULL)
            goto error;
        fits = PyLong_CheckExact(ndim) && PyLong_AsLong(ndim) == 1;
        Py_DECREF(ndim);
    }
    if (!fits) {
        Py_DECREF(positions);
        return 0;
    }
    PyObject *g = PyObject_GetAttr(message, s_gripper);
    if (g == NULL)
        goto error;
    out->present = g != Py_None;
    out->gripper = out->present ? PyFloat_AsDouble(g) : 0.0;
    Py_DECREF(g);
    if (out->present && out->gripper == -1.0 && PyErr_Occurred()) {
        /* struct.pack_into words any failure here as struct.error: the Python path's None */
        PyErr_Clear();
        Py_DECREF(positions);
        return 0;
    }
    out->positions = positions;
    return 1;
error:
    Py_DECREF(positions);
    return -1;
}

/* An int (an IntEnum member too) in [0, max]; 0 when it is not one (no exception set). */
static int as_u64(PyObject *o, uint64_t max, uint64_t *v)
{
    if (!PyLong_Check(o))
        return 0;
    unsigned long long x = PyLong_AsUnsignedLongLong(o);
    if (x == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    *v = x;
    return x <= max;
}

/* An int in [-2**63, 2**63 - 1]; 0 when it is not one (no exception set). */
static int as_i64(PyObject *o, int64_t *v)
{
    if (!PyLong_Check(o))
        return 0;
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow || (x == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    *v = x;
    return 1;
}

/* Header and fused prefix of a joint message at `p`: the layout `_FUSED` packs. */
static void write_fused(unsigned char *p, unsigned mtype, uint16_t flags, uint16_t stream,
                        uint32_t session, uint16_t length, uint64_t seq, int64_t sent,
                        const Outgoing *m, const void *positions, Py_ssize_t n)
{
    p[0] = 'T';
    p[1] = 'P';
    p[2] = VERSION;
    p[3] = (unsigned char)mtype;
    put16(p + 4, flags);
    put16(p + 6, stream);
    put32(p + 8, session);
    put16(p + 12, length);
    put16(p + 14, 0);
    put64(p + 16, seq);
    put64(p + 24, (uint64_t)sent);
    p[32] = m->present ? 4 : 0;
    p[33] = 0;
    put16(p + 34, 0);
    uint64_t bits;
    memcpy(&bits, &m->gripper, 8);
    put64(p + 36, bits);
    put16(p + 44, (uint16_t)n);
    p[46] = 8;
    p[47] = 0;
    /* '<f8' values (the dtype is checked by identity): their bytes are the wire's */
    memcpy(p + FUSED_SIZE, positions, (size_t)(8 * n));
}

/* ---- the module's functions ----------------------------------------------------------- */

static PyObject *not_ready(void)
{
    PyErr_SetString(PyExc_RuntimeError, "telepresence._native is not configured");
    return NULL;
}

static PyObject *decode_joints(PyObject *self, PyObject *data)
{
    if (!codec_ready)
        return not_ready();
    if (!PyBytes_CheckExact(data))
        Py_RETURN_NONE;
    Py_ssize_t size = PyBytes_GET_SIZE(data);
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(data);
    if (size < FUSED_SIZE)
        Py_RETURN_NONE;
    const Kind *k = &joints[p[3]];
    if (k->cls == NULL || p[0] != 'T' || p[1] != 'P' || p[2] != VERSION || get16(p + 4) ||
        get16(p + 14) || HEADER_SIZE + (Py_ssize_t)get16(p + 12) != size)
        Py_RETURN_NONE;
    Py_ssize_t n;
    int present;
    double gripper;
    if (!fused_body(p + HEADER_SIZE, size - HEADER_SIZE, &n, &present, &gripper))
        Py_RETURN_NONE;
    PyObject *header =
        new_header(k->member, get16(p + 6), get32(p + 8), get64(p + 16), (int64_t)get64(p + 24), 0);
    if (header == NULL)
        return NULL;
    PyObject *message = new_joints(k, data, n, FUSED_SIZE, present, gripper);
    if (message == NULL) {
        Py_DECREF(header);
        return NULL;
    }
    return new_datagram(header, message);
}

static int arity(const char *name, Py_ssize_t nargs, Py_ssize_t want)
{
    if (nargs == want)
        return 1;
    PyErr_Format(PyExc_TypeError, "%s takes %zd arguments (%zd given)", name, want, nargs);
    return 0;
}

typedef struct {
    uint64_t mtype, stream, session, seq;
    int64_t sent;
} Fields;

/* The header fields from `args` (mtype, stream, session, seq) and `sent`; 0 when one is not an
 * int or is out of its field's range (no exception set). */
static int read_fields(PyObject *const *args, PyObject *sent, Fields *f)
{
    return as_u64(args[0], 255, &f->mtype) && as_u64(args[1], 0xFFFF, &f->stream) &&
           as_u64(args[2], 0xFFFFFFFFu, &f->session) && as_u64(args[3], UINT64_MAX, &f->seq) &&
           as_i64(sent, &f->sent);
}

/* The datagram of the message read into `m` (whose reference pack releases), in the fused
 * layout and `trailer` bytes longer (left unwritten), in a new bytes object (`as_bytes`) or
 * bytearray, its body's length in *body; None when the positions are not C-contiguous or the
 * body does not fit the u16 body length, NULL on an error. From taking the positions' buffer
 * to copying them, no Python code runs. */
static PyObject *pack(Outgoing *m, const Fields *f, uint16_t flags, Py_ssize_t trailer,
                      int as_bytes, Py_ssize_t *body)
{
    Py_buffer view;
    PyObject *out = NULL;
    if (PyObject_GetBuffer(m->positions, &view, PyBUF_C_CONTIGUOUS) < 0) {
        PyErr_Clear(); /* not contiguous: the Python path copies it */
        out = Py_NewRef(Py_None);
        goto done;
    }
    Py_ssize_t n = view.len / 8;
    *body = FUSED_BODY + 8 * n;
    if (view.ndim != 1 || view.itemsize != 8 || view.len > 8 * 0xFFFF ||
        *body + trailer > MAX_BODY)
        out = Py_NewRef(Py_None);
    else {
        Py_ssize_t size = HEADER_SIZE + *body + trailer;
        out = as_bytes ? PyBytes_FromStringAndSize(NULL, size)
                       : PyByteArray_FromStringAndSize(NULL, size);
        if (out != NULL)
            write_fused(as_bytes ? (unsigned char *)PyBytes_AS_STRING(out)
                                 : (unsigned char *)PyByteArray_AS_STRING(out),
                        (unsigned)f->mtype, flags, (uint16_t)f->stream, (uint32_t)f->session,
                        (uint16_t)(*body + trailer), f->seq, f->sent, m, view.buf, n);
    }
    PyBuffer_Release(&view);
done:
    Py_CLEAR(m->positions);
    return out;
}

/* encode_joints(message, mtype, stream, session, seq, send_time_ns) -> bytearray | None */
static PyObject *encode_joints(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!codec_ready)
        return not_ready();
    if (!arity("encode_joints", nargs, 6))
        return NULL;
    Outgoing m;
    int fits = read_joints(args[0], &m); /* the message first, as the Python path reads it */
    if (fits <= 0)
        return fits < 0 ? NULL : Py_NewRef(Py_None);
    Fields f;
    Py_ssize_t body;
    if (!read_fields(args + 1, args[5], &f)) {
        Py_DECREF(m.positions);
        Py_RETURN_NONE;
    }
    return pack(&m, &f, 0, 0, 0, &body);
}

static void nonce_of(unsigned char *nonce, uint64_t stream, uint64_t seq)
{
    put32(nonce, (uint32_t)stream);
    put64(nonce + 4, seq);
}

/* seal_joints(message, mtype, stream, session, seq, last, send_time_ns, key) -> bytes | None
 * None also when seq is not above `last` (the Python path refuses it with the reason). */
static PyObject *seal_joints(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!codec_ready || !aead_ready)
        return not_ready();
    if (!arity("seal_joints", nargs, 8))
        return NULL;
    Outgoing m;
    int fits = read_joints(args[0], &m);
    if (fits <= 0)
        return fits < 0 ? NULL : Py_NewRef(Py_None);
    Fields f;
    uint64_t last;
    PyObject *key = args[7];
    if (aead_encrypt == NULL || !read_fields(args + 1, args[6], &f) ||
        !as_u64(args[5], UINT64_MAX, &last) || f.seq <= last || !PyBytes_CheckExact(key) ||
        PyBytes_GET_SIZE(key) != KEY_SIZE) {
        Py_DECREF(m.positions);
        Py_RETURN_NONE;
    }
    Py_ssize_t body;
    PyObject *out = pack(&m, &f, FLAG_AUTHENTICATED, TAG_SIZE, 1, &body);
    if (out == NULL || out == Py_None)
        return out;
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(out);
    unsigned char nonce[NONCE_SIZE];
    nonce_of(nonce, f.stream, f.seq);
    /* in place: ChaCha20 XORs block by block, and the tag follows the body */
    aead_encrypt(p + HEADER_SIZE, NULL, p + HEADER_SIZE, (unsigned long long)body, p, HEADER_SIZE,
                 NULL, nonce, (const unsigned char *)PyBytes_AS_STRING(key));
    return out;
}

/* open_sealed(data, opener, openers) -> Datagram | None: `_open_well_formed`. */
static PyObject *open_sealed(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!codec_ready || !aead_ready)
        return not_ready();
    if (!arity("open_sealed", nargs, 3))
        return NULL;
    PyObject *data = args[0], *opener = args[1], *openers = args[2];
    if (!PyBytes_CheckExact(data))
        Py_RETURN_NONE;
    Py_ssize_t size = PyBytes_GET_SIZE(data);
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(data);
    if (size < HEADER_SIZE + TAG_SIZE)
        Py_RETURN_NONE;
    PyObject *member = type_of[p[3]];
    Py_ssize_t length = get16(p + 12);
    if (member == NULL || p[0] != 'T' || p[1] != 'P' || p[2] != VERSION ||
        get16(p + 4) != FLAG_AUTHENTICATED || get16(p + 14) || length + HEADER_SIZE != size)
        Py_RETURN_NONE;
    uint32_t session = get32(p + 8);
    PyObject *held = NULL; /* a reference to the opener found in `openers` */
    if (openers != Py_None) {
        PyObject *sid = PyLong_FromUnsignedLong(session);
        if (sid == NULL)
            return NULL;
        if (PyDict_CheckExact(openers)) {
            held = PyDict_GetItemWithError(openers, sid);
            Py_XINCREF(held);
        }
        else /* any Mapping: its get(), as the Python path calls it */
            held = PyObject_CallMethodOneArg(openers, s_get, sid);
        Py_DECREF(sid);
        if (held == NULL && PyErr_Occurred())
            return NULL;
        opener = held;
    }
    PyObject *result = NULL, *key = NULL, *header = NULL, *plain = NULL, *message = NULL;
    if (opener == NULL || opener == Py_None)
        goto none;
    if (Py_TYPE(opener) != opener_type) /* a subclass may override what this reads */
        goto python;
    {
        PyObject *own = PyObject_GetAttr(opener, s_session);
        if (own == NULL)
            goto done;
        uint64_t own_session;
        int exact = PyLong_CheckExact(own);
        int same = exact && as_u64(own, 0xFFFFFFFFu, &own_session) && own_session == session;
        Py_DECREF(own);
        if (!exact) /* compared with != by the Python path, whatever it is */
            goto python;
        if (!same)
            goto none;
    }
    key = PyObject_GetAttr(opener, s_key);
    if (key == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            goto done;
        PyErr_Clear();
        goto python;
    }
    if (aead_encrypt == NULL || !PyBytes_CheckExact(key) || PyBytes_GET_SIZE(key) != KEY_SIZE)
        goto python; /* an opener without libsodium */
    uint64_t stream = get16(p + 6), seq = get64(p + 16);
    header = new_header(member, (uint16_t)stream, session, seq, (int64_t)get64(p + 24),
                        FLAG_AUTHENTICATED);
    if (header == NULL)
        goto done;
    plain = PyBytes_FromStringAndSize(NULL, length - TAG_SIZE);
    if (plain == NULL)
        goto done;
    unsigned char nonce[NONCE_SIZE];
    nonce_of(nonce, stream, seq);
    if (aead_decrypt((unsigned char *)PyBytes_AS_STRING(plain), NULL, NULL, p + HEADER_SIZE,
                     (unsigned long long)length, p, HEADER_SIZE, nonce,
                     (const unsigned char *)PyBytes_AS_STRING(key)) != 0) {
        PyObject *exc = PyObject_CallOneArg(forged, header);
        if (exc != NULL) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
        goto done;
    }
    const Kind *k = &joints[p[3]];
    Py_ssize_t n;
    int present;
    double gripper;
    if (k->cls != NULL && fused_body((const unsigned char *)PyBytes_AS_STRING(plain),
                                     length - TAG_SIZE, &n, &present, &gripper))
        message = new_joints(k, plain, n, FUSED_BODY, present, gripper);
    else {
        PyObject *call[2] = {member, plain};
        message = PyObject_Vectorcall(decode_body, call, 2, NULL);
    }
    if (message == NULL)
        goto done;
    result = new_datagram(header, message);
    header = message = NULL; /* stolen */
    goto done;
python: /* the Python one-pass open of `_open_well_formed`, for this opener */
    {
        PyObject *call[3] = {data, opener, Py_None};
        result = PyObject_Vectorcall(open_python, call, 3, NULL);
    }
    goto done;
none:
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(held);
    Py_XDECREF(key);
    Py_XDECREF(header);
    Py_XDECREF(plain);
    Py_XDECREF(message);
    return result;
}

/* ---- configuration -------------------------------------------------------------------- */

static PyObject *already(const char *name)
{
    PyErr_Format(PyExc_RuntimeError, "telepresence._native.%s was already called", name);
    return NULL;
}

/* A message type from a dict key: 0-255, else -1 with ValueError set. */
static int type_code(PyObject *key)
{
    long t = PyLong_Check(key) ? PyLong_AsLong(key) : -1;
    if (t < 0 || t > 255) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "a message type is an int from 0 to 255");
        return -1;
    }
    return (int)t;
}

/* configure_codec(Header, Datagram, ndarray, f8, frombuffer, object_new, types, joints), once.
 * types: {int: MessageType member} for every type; joints: {int: (member, cls, is_command)}.
 * Everything is checked before anything is kept. */
static PyObject *configure_codec(PyObject *self, PyObject *args)
{
    PyObject *h, *d, *nd, *dtype, *fb, *new, *types, *js;
    if (codec_ready)
        return already("configure_codec");
    if (!PyArg_ParseTuple(args, "O!O!O!OOOO!O!:configure_codec", &PyType_Type, &h, &PyType_Type,
                          &d, &PyType_Type, &nd, &dtype, &fb, &new, &PyDict_Type, &types,
                          &PyDict_Type, &js))
        return NULL;
    if (!PyType_IsSubtype((PyTypeObject *)h, &PyTuple_Type) ||
        !PyType_IsSubtype((PyTypeObject *)d, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "Header and Datagram must be tuple subclasses");
        return NULL;
    }
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(types, &pos, &key, &value))
        if (type_code(key) < 0)
            return NULL;
    pos = 0;
    while (PyDict_Next(js, &pos, &key, &value)) {
        PyObject *member, *cls;
        int is_command;
        if (type_code(key) < 0)
            return NULL;
        if (!PyTuple_Check(value) ||
            !PyArg_ParseTuple(value, "OO!p", &member, &PyType_Type, &cls, &is_command)) {
            PyErr_Clear();
            PyErr_SetString(PyExc_ValueError, "joints: {type: (member, class, is_command)}");
            return NULL;
        }
    }
    pos = 0;
    while (PyDict_Next(types, &pos, &key, &value))
        type_of[type_code(key)] = Py_NewRef(value);
    pos = 0;
    while (PyDict_Next(js, &pos, &key, &value)) {
        Kind *k = &joints[type_code(key)];
        k->member = Py_NewRef(PyTuple_GET_ITEM(value, 0));
        k->cls = Py_NewRef(PyTuple_GET_ITEM(value, 1));
        k->is_command = PyObject_IsTrue(PyTuple_GET_ITEM(value, 2));
    }
    header_type = (PyTypeObject *)Py_NewRef(h);
    datagram_type = (PyTypeObject *)Py_NewRef(d);
    ndarray_type = (PyTypeObject *)Py_NewRef(nd);
    f8 = Py_NewRef(dtype);
    frombuffer = Py_NewRef(fb);
    object_new = Py_NewRef(new);
    codec_ready = 1;
    Py_RETURN_NONE;
}

/* configure_aead(encrypt_address, decrypt_address, Opener, forged, decode_body, open_python),
 * once. The addresses are libsodium's crypto_aead_chacha20poly1305_ietf_encrypt and _decrypt,
 * or both 0 (the C seal and open then leave every datagram to the Python paths). */
static PyObject *configure_aead(PyObject *self, PyObject *args)
{
    unsigned long long enc, dec;
    PyObject *opener, *f, *db, *op;
    if (aead_ready)
        return already("configure_aead");
    if (!PyArg_ParseTuple(args, "KKO!OOO:configure_aead", &enc, &dec, &PyType_Type, &opener, &f,
                          &db, &op))
        return NULL;
    if ((enc == 0) != (dec == 0)) {
        PyErr_SetString(PyExc_ValueError, "give both libsodium functions, or neither");
        return NULL;
    }
    if (!PyCallable_Check(f) || !PyCallable_Check(db) || !PyCallable_Check(op)) {
        PyErr_SetString(PyExc_TypeError, "forged, decode_body and open_python must be callable");
        return NULL;
    }
    opener_type = (PyTypeObject *)Py_NewRef(opener);
    forged = Py_NewRef(f);
    decode_body = Py_NewRef(db);
    open_python = Py_NewRef(op);
    aead_encrypt = (encrypt_fn)(uintptr_t)enc;
    aead_decrypt = (decrypt_fn)(uintptr_t)dec;
    aead_ready = 1;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"configure_codec", configure_codec, METH_VARARGS, "Hand over the codec's Python objects."},
    {"configure_aead", configure_aead, METH_VARARGS, "Hand over libsodium's AEAD functions."},
    {"decode_joints", decode_joints, METH_O,
     "codec._decode_joints_fast: a Datagram, or None for anything but the fused layout."},
    {"encode_joints", (PyCFunction)(void (*)(void))encode_joints, METH_FASTCALL,
     "codec._encode_joints_fast: a bytearray, or None when the message does not fit."},
    {"seal_joints", (PyCFunction)(void (*)(void))seal_joints, METH_FASTCALL,
     "Sealer.seal's in-place branch: the sealed datagram (bytes), or None."},
    {"open_sealed", (PyCFunction)(void (*)(void))open_sealed, METH_FASTCALL,
     "security._open_well_formed: a Datagram, or None for the general path."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "telepresence._native",
    "The data plane's hot path in C (see telepresence/native.py).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void)
{
    zero = PyLong_FromLong(0);
    s_positions = PyUnicode_InternFromString("positions");
    s_velocities = PyUnicode_InternFromString("velocities");
    s_efforts = PyUnicode_InternFromString("efforts");
    s_gripper = PyUnicode_InternFromString("gripper");
    s_ref = PyUnicode_InternFromString("ref");
    s_dtype = PyUnicode_InternFromString("dtype");
    s_ndim = PyUnicode_InternFromString("ndim");
    s_key = PyUnicode_InternFromString("_key");
    s_session = PyUnicode_InternFromString("session");
    s_get = PyUnicode_InternFromString("get");
    state_kwnames = s_positions && s_gripper ? PyTuple_Pack(2, s_positions, s_gripper) : NULL;
    if (!zero || !state_kwnames || !s_positions || !s_velocities || !s_efforts || !s_gripper ||
        !s_ref || !s_dtype || !s_ndim || !s_key || !s_session || !s_get)
        return NULL;
    return PyModule_Create(&module);
}

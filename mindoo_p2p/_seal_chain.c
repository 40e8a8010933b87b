/* mindoo_p2p._seal_chain: seal one author's chain of entries in one call, the GIL released.

   The Python side (mindoo_p2p/native_seal.py) checks each draft's fields and encodes its
   header (format 2, see mindoo_p2p/entry.py) with zeros where the chain link (`prev`), the
   ids of parents sealed in the same call and the nonce go. This module copies the headers and
   the places of those parents, checking every offset against the buffers, while it holds the
   GIL; then, for each entry in order, with the GIL released:

     1. draws the nonce (or takes the one given) and writes it, the chain link (the id of the
        entry before; the caller's `prev` for the first) and the ids of its in-call parents
        into its header;
     2. encrypts the payload with XChaCha20-Poly1305 (IETF), the whole header as associated
        data;
     3. lays out header || varint(len(ciphertext)) || ciphertext;
     4. signs SIGNING_DOMAIN || that with Ed25519 (detached) and appends the signature;
     5. takes SHA-256 of the whole as the entry id, which is the next entry's chain link.

   Exactly what Entry.seal does, so the bytes are the same (tests/test_native_seal.py compares
   them). With the GIL again it builds the `Entry` objects (their types and slots given once
   by `configure_entries`: what `entry._header_of` and `entry._entry_of` build, without a
   Python call per field) and records each entry that carries a change in `sealed_changes`.
   The cryptography is libsodium's: the caller passes the addresses of
   crypto_aead_xchacha20poly1305_ietf_encrypt, crypto_sign_detached, crypto_hash_sha256 and
   randombytes_buf from the libsodium that PyNaCl loaded (`configure`). Payloads are read in
   place, never copied (immutable bytes held by the immutable templates); the keys come in the
   one buffer the caller joined them into (Python bytes, as the keys themselves are).

   seal_chain(headers, meta, templates, keys, signing_key, prev, domain, nonces, first_seq,
              tenant_id, author, sealed_changes)
     headers      buffer     the encoded headers, one after another (copied, not written)
     meta         buffer of uint64, 4 per entry: header length, offset of `prev` in the header,
                  index of its key in `keys`, offset of its parents (after their count)
     templates    tuple      per entry a tuple (kind, database, document_id, timestamp_ms,
                  deps, key_id, change, payload): the entry's fields as its header object
                  holds them, `deps` a tuple whose ints are indexes of earlier entries of the
                  call (their ids go there, in the bytes and in the object), `change` the key
                  under which `sealed_changes` records the entry id (None: nothing), `payload`
                  bytes
     keys         buffer     32-byte keys
     signing_key  buffer     libsodium's 64-byte Ed25519 secret key
     prev         bytes      32 bytes: the chain link of the first entry
     domain       buffer     the signing domain prefix
     nonces       buffer     empty: each nonce is drawn here with libsodium's randombytes_buf
                  (the OS's CSPRNG), the GIL released; else 24 bytes per entry (tests)
     first_seq    int        the first entry's author_seq (the others follow; all < 2**64)
     tenant_id, author       the chain's fields, as the header objects hold them
     sealed_changes dict     change key -> entry id, updated once everything is sealed
   returns the list of Entry objects; raises ValueError on inconsistent arguments and
   RuntimeError if libsodium fails.
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ID_SIZE 32
#define KEY_SIZE 32
#define NONCE_SIZE 24
#define TAG_SIZE 16
#define KEY_ID_SIZE 16
#define SIG_SIZE 64
#define SECRET_KEY_SIZE 64
#define META_FIELDS 4
#define MAX_DOMAIN 64

typedef int (*aead_encrypt_fn)(unsigned char *c, unsigned long long *clen, const unsigned char *m,
                               unsigned long long mlen, const unsigned char *ad,
                               unsigned long long adlen, const unsigned char *nsec,
                               const unsigned char *npub, const unsigned char *k);
typedef int (*sign_detached_fn)(unsigned char *sig, unsigned long long *siglen,
                                const unsigned char *m, unsigned long long mlen,
                                const unsigned char *sk);
typedef int (*sha256_fn)(unsigned char *out, const unsigned char *in, unsigned long long inlen);
typedef void (*randombytes_fn)(void *buf, size_t size);

static aead_encrypt_fn aead_encrypt = NULL;
static sign_detached_fn sign_detached = NULL;
static sha256_fn sha256 = NULL;
static randombytes_fn randombytes = NULL;

/* The i-th uint64 of a buffer that need not be aligned (an array('Q') is; bytes may not be). */
static size_t u64_at(const Py_buffer *buffer, size_t i) {
    uint64_t value;
    memcpy(&value, (const unsigned char *)buffer->buf + i * sizeof(uint64_t), sizeof value);
    return (size_t)value;
}

static size_t varint_size(uint64_t value) {
    size_t size = 1;
    while (value >= 0x80) {
        value >>= 7;
        size++;
    }
    return size;
}

static size_t write_varint(unsigned char *out, uint64_t value) {
    size_t i = 0;
    while (value >= 0x80) {
        out[i++] = (unsigned char)((value & 0x7f) | 0x80);
        value >>= 7;
    }
    out[i++] = (unsigned char)value;
    return i;
}

static PyObject *configure(PyObject *self, PyObject *args) {
    unsigned long long encrypt_address, sign_address, sha256_address, random_address;
    (void)self;
    if (!PyArg_ParseTuple(args, "KKKK", &encrypt_address, &sign_address, &sha256_address,
                          &random_address)) {
        return NULL;
    }
    if (!encrypt_address || !sign_address || !sha256_address || !random_address) {
        PyErr_SetString(PyExc_ValueError, "a libsodium function address is null");
        return NULL;
    }
    aead_encrypt = (aead_encrypt_fn)(uintptr_t)encrypt_address;
    sign_detached = (sign_detached_fn)(uintptr_t)sign_address;
    sha256 = (sha256_fn)(uintptr_t)sha256_address;
    randombytes = (randombytes_fn)(uintptr_t)random_address;
    Py_RETURN_NONE;
}

/* The types of the objects returned (mindoo_p2p.entry's EntryHeader and Entry) and their
   fields' slot descriptors in field order (`configure_entries`): each entry is built as
   `entry._header_of` and `entry._entry_of` build it, object.__new__ then each slot's setter,
   without a Python call per field. */
#define HEADER_FIELDS 11
#define ENTRY_FIELDS 7
static PyTypeObject *header_type = NULL, *entry_type = NULL;
static PyObject *header_setters[HEADER_FIELDS], *entry_setters[ENTRY_FIELDS];

static int store_setters(PyObject *descriptors, Py_ssize_t count, PyObject **into) {
    if (!PyTuple_Check(descriptors) || PyTuple_GET_SIZE(descriptors) != count) {
        PyErr_SetString(PyExc_ValueError, "configure_entries: a tuple of slot descriptors");
        return -1;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *descriptor = PyTuple_GET_ITEM(descriptors, i);
        if (Py_TYPE(descriptor)->tp_descr_set == NULL) {
            PyErr_SetString(PyExc_ValueError, "configure_entries: not a slot descriptor");
            return -1;
        }
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_XSETREF(into[i], Py_NewRef(PyTuple_GET_ITEM(descriptors, i)));
    }
    return 0;
}

static PyObject *configure_entries(PyObject *self, PyObject *args) {
    PyObject *header_class, *header_slots, *entry_class, *entry_slots;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!OO!O", &PyType_Type, &header_class, &header_slots,
                          &PyType_Type, &entry_class, &entry_slots)) {
        return NULL;
    }
    if (store_setters(header_slots, HEADER_FIELDS, header_setters)
        || store_setters(entry_slots, ENTRY_FIELDS, entry_setters)) {
        return NULL;
    }
    Py_XSETREF(header_type, (PyTypeObject *)Py_NewRef(header_class));
    Py_XSETREF(entry_type, (PyTypeObject *)Py_NewRef(entry_class));
    Py_RETURN_NONE;
}

/* A new object of `type` with its slots set to `values` (stolen, even on failure; NULL if one
   could not be made, with the error set). */
static PyObject *build(PyTypeObject *type, PyObject **setters, PyObject **values, int count) {
    PyObject *object = NULL;
    for (int i = 0; i < count; i++) {
        if (values[i] == NULL) goto failed;
    }
    object = type->tp_alloc(type, 0);
    if (object == NULL) goto failed;
    for (int i = 0; i < count; i++) {
        if (Py_TYPE(setters[i])->tp_descr_set(setters[i], object, values[i]) < 0) goto failed;
        Py_CLEAR(values[i]);
    }
    /* Its fields are bytes, str, int, an enum member, None and a tuple of ids (an entry's: its
       header and bytes): it can be part of no reference cycle, so the cyclic collector need
       not visit it (CPython untracks such tuples and dicts itself). */
    PyObject_GC_UnTrack(object);
    return object;
failed:
    Py_XDECREF(object);
    for (int i = 0; i < count; i++) Py_CLEAR(values[i]);
    return NULL;
}

/* A draft's template: what the caller has checked and encoded, and what goes into its entry. */
enum { T_KIND, T_DATABASE, T_DOCUMENT, T_TIMESTAMP, T_DEPS, T_KEY_ID, T_CHANGE, T_PAYLOAD, T_SIZE };

typedef struct {
    size_t header_start, header_len, prev_offset, deps_offset;
    size_t payload_len, key_index, patch_start, patch_count;
    size_t ciphertext_len, signed_len;
    const unsigned char *payload;
    unsigned char *raw;
} Layout;

/* Check every offset, size and template and copy what the sealing loop reads (the headers, the
   layout, the in-call parents) into memory the caller cannot reach, all before the GIL is
   released; return 0, or -1 with a ValueError set. A parent given as an int (the index of an
   earlier entry of this call) goes at its place in the header's parents. */
static int plan(const Py_buffer *headers, const Py_buffer *meta, PyObject *templates,
                const Py_buffer *keys, size_t count, Layout *layout, size_t **patches,
                size_t *max_signed) {
    size_t key_count = (size_t)keys->len / KEY_SIZE;
    size_t header_at = 0, patch_at = 0, dep_total = 0;
    *max_signed = 0;
    for (size_t i = 0; i < count; i++) {
        PyObject *template = PyTuple_GET_ITEM(templates, (Py_ssize_t)i);
        if (!PyTuple_Check(template) || PyTuple_GET_SIZE(template) != T_SIZE
            || !PyTuple_Check(PyTuple_GET_ITEM(template, T_DEPS))
            || !PyBytes_Check(PyTuple_GET_ITEM(template, T_PAYLOAD))) {
            PyErr_Format(PyExc_ValueError, "seal_chain: template %zu is malformed", i);
            return -1;
        }
        dep_total += (size_t)PyTuple_GET_SIZE(PyTuple_GET_ITEM(template, T_DEPS));
    }
    *patches = PyMem_Malloc((dep_total ? dep_total : 1) * 2 * sizeof(size_t));
    if (*patches == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < count; i++) {
        Layout *e = &layout[i];
        PyObject *template = PyTuple_GET_ITEM(templates, (Py_ssize_t)i);
        PyObject *deps = PyTuple_GET_ITEM(template, T_DEPS);
        PyObject *payload = PyTuple_GET_ITEM(template, T_PAYLOAD);
        size_t dep_count = (size_t)PyTuple_GET_SIZE(deps);
        e->payload = (const unsigned char *)PyBytes_AS_STRING(payload);
        e->payload_len = (size_t)PyBytes_GET_SIZE(payload);
        e->header_start = header_at;
        e->header_len = u64_at(meta, i * META_FIELDS);
        e->prev_offset = u64_at(meta, i * META_FIELDS + 1);
        e->key_index = u64_at(meta, i * META_FIELDS + 2);
        e->deps_offset = u64_at(meta, i * META_FIELDS + 3);
        e->patch_start = patch_at;
        /* the header: ... prev (32) ... deps (32 each) key_id (16) nonce (24) */
        if (e->header_len < NONCE_SIZE + ID_SIZE || e->header_len > (size_t)headers->len - header_at
            || e->prev_offset > e->header_len - NONCE_SIZE - ID_SIZE
            || e->deps_offset < e->prev_offset + ID_SIZE
            || e->deps_offset > e->header_len - NONCE_SIZE - KEY_ID_SIZE
            || (e->header_len - NONCE_SIZE - KEY_ID_SIZE - e->deps_offset) % ID_SIZE
            || (e->header_len - NONCE_SIZE - KEY_ID_SIZE - e->deps_offset) / ID_SIZE != dep_count
            || e->key_index >= key_count || e->payload_len > (SIZE_MAX >> 2)) {
            PyErr_Format(PyExc_ValueError, "seal_chain: entry %zu is out of its buffers", i);
            return -1;
        }
        for (size_t k = 0; k < dep_count; k++) {
            PyObject *dep = PyTuple_GET_ITEM(deps, (Py_ssize_t)k);
            if (!PyLong_Check(dep)) continue; /* an id: the caller encoded it */
            Py_ssize_t source = PyLong_AsSsize_t(dep);
            if (source < 0 || (size_t)source >= i) {
                PyErr_Clear();
                PyErr_Format(PyExc_ValueError, "seal_chain: a parent of entry %zu is invalid", i);
                return -1;
            }
            (*patches)[2 * patch_at] = e->deps_offset + k * ID_SIZE;
            (*patches)[2 * patch_at + 1] = (size_t)source;
            patch_at++;
        }
        e->patch_count = patch_at - e->patch_start;
        e->ciphertext_len = e->payload_len + TAG_SIZE;
        e->signed_len = e->header_len + varint_size(e->ciphertext_len) + e->ciphertext_len;
        if (e->signed_len > *max_signed) *max_signed = e->signed_len;
        header_at += e->header_len;
    }
    if (header_at != (size_t)headers->len) {
        PyErr_SetString(PyExc_ValueError, "seal_chain: buffers longer than their entries");
        return -1;
    }
    return 0;
}

/* The entries of a sealed call (the types' `configure_entries`), each header's parents with
   the ids of the in-call ones put in; then each entry carrying a change is recorded in
   `sealed_changes` (change key -> entry id), in order. A new list, or NULL with the error. */
static PyObject *entries_of(const Layout *layout, size_t count, PyObject *templates,
                            PyObject *raws, const unsigned char *ids, PyObject *prev,
                            unsigned long long first_seq, PyObject *tenant_id, PyObject *author,
                            PyObject *sealed_changes) {
    PyObject *result = PyList_New((Py_ssize_t)count);
    PyObject *id_objects = PyList_New((Py_ssize_t)count);
    if (result == NULL || id_objects == NULL) goto failed;
    for (size_t i = 0; i < count; i++) {
        const Layout *e = &layout[i];
        PyObject *template = PyTuple_GET_ITEM(templates, (Py_ssize_t)i);
        const char *raw = (const char *)e->raw;
        PyObject *entry_id = PyBytes_FromStringAndSize((const char *)ids + i * ID_SIZE, ID_SIZE);
        if (entry_id == NULL) goto failed;
        PyList_SET_ITEM(id_objects, (Py_ssize_t)i, entry_id);
        PyObject *deps = PyTuple_GET_ITEM(template, T_DEPS);
        if (e->patch_count) {
            deps = PyTuple_New(PyTuple_GET_SIZE(deps));
            if (deps == NULL) goto failed;
            PyObject *given = PyTuple_GET_ITEM(template, T_DEPS);
            for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(given); k++) {
                PyObject *dep = PyTuple_GET_ITEM(given, k);
                if (PyLong_Check(dep)) { /* checked by plan(): an earlier entry's index */
                    dep = PyList_GET_ITEM(id_objects, PyLong_AsSsize_t(dep));
                }
                PyTuple_SET_ITEM(deps, k, Py_NewRef(dep));
            }
        } else {
            Py_INCREF(deps);
        }
        PyObject *header_values[HEADER_FIELDS] = {
            Py_NewRef(PyTuple_GET_ITEM(template, T_KIND)),
            Py_NewRef(tenant_id),
            Py_NewRef(PyTuple_GET_ITEM(template, T_DATABASE)),
            Py_NewRef(PyTuple_GET_ITEM(template, T_DOCUMENT)),
            Py_NewRef(author),
            PyLong_FromUnsignedLongLong(first_seq + i),
            Py_NewRef(PyTuple_GET_ITEM(template, T_TIMESTAMP)),
            deps,
            Py_NewRef(PyTuple_GET_ITEM(template, T_KEY_ID)),
            PyBytes_FromStringAndSize(raw + e->header_len - NONCE_SIZE, NONCE_SIZE),
            Py_NewRef(i ? PyList_GET_ITEM(id_objects, (Py_ssize_t)i - 1) : prev),
        };
        PyObject *header = build(header_type, header_setters, header_values, HEADER_FIELDS);
        size_t body_start = e->signed_len - e->ciphertext_len;
        PyObject *entry_values[ENTRY_FIELDS] = {
            header,
            PyBytes_FromStringAndSize(raw + body_start, (Py_ssize_t)e->ciphertext_len),
            PyBytes_FromStringAndSize(raw + e->signed_len, SIG_SIZE),
            Py_NewRef(PyList_GET_ITEM(raws, (Py_ssize_t)i)),
            Py_NewRef(entry_id),
            PyBytes_FromStringAndSize(raw, (Py_ssize_t)e->header_len),
            PyLong_FromSize_t(e->signed_len),
        };
        PyObject *entry = build(entry_type, entry_setters, entry_values, ENTRY_FIELDS);
        if (entry == NULL) goto failed;
        PyList_SET_ITEM(result, (Py_ssize_t)i, entry);
    }
    for (size_t i = 0; i < count; i++) {
        PyObject *change = PyTuple_GET_ITEM(PyTuple_GET_ITEM(templates, (Py_ssize_t)i), T_CHANGE);
        if (change != Py_None
            && PyDict_SetItem(sealed_changes, change, PyList_GET_ITEM(id_objects, (Py_ssize_t)i))) {
            goto failed;
        }
    }
    Py_DECREF(id_objects);
    return result;
failed:
    Py_XDECREF(id_objects);
    Py_XDECREF(result);
    return NULL;
}

static PyObject *seal_chain(PyObject *self, PyObject *args) {
    Py_buffer headers, meta, keys, signing_key, domain, given_nonces;
    PyObject *templates = NULL, *prev = NULL, *first_seq_object = NULL, *tenant_id = NULL;
    PyObject *author = NULL, *sealed_changes = NULL, *raws = NULL, *result = NULL;
    Layout *layout = NULL;
    size_t *patches = NULL;
    unsigned char *ids = NULL, *message = NULL, *hbuf = NULL;
    int failed = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*O!y*y*O!y*y*O!OOO!", &headers, &meta, &PyTuple_Type,
                          &templates, &keys, &signing_key, &PyBytes_Type, &prev, &domain,
                          &given_nonces, &PyLong_Type, &first_seq_object, &tenant_id, &author,
                          &PyDict_Type, &sealed_changes)) {
        return NULL;
    }
    if (aead_encrypt == NULL || header_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "seal_chain: configure() was not called");
        goto done;
    }
    size_t count = (size_t)PyTuple_GET_SIZE(templates);
    unsigned long long first_seq = PyLong_AsUnsignedLongLong(first_seq_object);
    if (first_seq == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "seal_chain: malformed arguments");
        goto done;
    }
    if (meta.len % (META_FIELDS * sizeof(uint64_t)) || keys.len % KEY_SIZE
        || signing_key.len != SECRET_KEY_SIZE || PyBytes_GET_SIZE(prev) != ID_SIZE
        || domain.len > MAX_DOMAIN || (size_t)meta.len / (META_FIELDS * sizeof(uint64_t)) != count
        || (given_nonces.len && (size_t)given_nonces.len / NONCE_SIZE != count)
        || given_nonces.len % NONCE_SIZE || (count && first_seq > ULLONG_MAX - (count - 1))) {
        PyErr_SetString(PyExc_ValueError, "seal_chain: malformed arguments");
        goto done;
    }
    int draw_nonces = given_nonces.len == 0;
    size_t max_signed = 0;
    layout = PyMem_Malloc((count ? count : 1) * sizeof(Layout));
    hbuf = PyMem_Malloc(headers.len ? (size_t)headers.len : 1);
    if (layout == NULL || hbuf == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (plan(&headers, &meta, templates, &keys, count, layout, &patches, &max_signed)) {
        goto done;
    }
    memcpy(hbuf, headers.buf, (size_t)headers.len);
    for (size_t i = 0; i < count && !draw_nonces; i++) {
        memcpy(hbuf + layout[i].header_start + layout[i].header_len - NONCE_SIZE,
               (const unsigned char *)given_nonces.buf + i * NONCE_SIZE, NONCE_SIZE);
    }
    /* Each entry is sealed straight into the bytes object returned for it (not yet shared,
       so writing it without the GIL is safe); the templates' tuple is immutable and held by
       the call's arguments, so the payloads stay alive and unchanged. */
    raws = PyList_New((Py_ssize_t)count);
    ids = PyMem_Malloc(count ? count * ID_SIZE : 1);
    message = PyMem_Malloc((size_t)domain.len + max_signed + 1);
    if (raws == NULL || ids == NULL || message == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (size_t i = 0; i < count; i++) {
        PyObject *raw = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(layout[i].signed_len + SIG_SIZE));
        if (raw == NULL) goto done;
        layout[i].raw = (unsigned char *)PyBytes_AS_STRING(raw);
        PyList_SET_ITEM(raws, (Py_ssize_t)i, raw);
    }
    memcpy(message, domain.buf, (size_t)domain.len);
    const unsigned char *kbuf = (const unsigned char *)keys.buf;
    const unsigned char *link = (const unsigned char *)PyBytes_AS_STRING(prev);

    Py_BEGIN_ALLOW_THREADS
    for (size_t i = 0; i < count; i++) {
        const Layout *e = &layout[i];
        unsigned char *header = hbuf + e->header_start;
        unsigned char *raw = e->raw;
        unsigned long long ciphertext_len = 0;
        if (draw_nonces) randombytes(header + e->header_len - NONCE_SIZE, NONCE_SIZE);
        memcpy(header + e->prev_offset, link, ID_SIZE);
        for (size_t k = e->patch_start; k < e->patch_start + e->patch_count; k++) {
            memcpy(header + patches[2 * k], ids + patches[2 * k + 1] * ID_SIZE, ID_SIZE);
        }
        memcpy(raw, header, e->header_len);
        size_t at = e->header_len + write_varint(raw + e->header_len, e->ciphertext_len);
        if (aead_encrypt(raw + at, &ciphertext_len, e->payload, e->payload_len, header,
                         e->header_len, NULL, header + e->header_len - NONCE_SIZE,
                         kbuf + e->key_index * KEY_SIZE) != 0
            || ciphertext_len != e->ciphertext_len) {
            failed = 1;
            break;
        }
        memcpy(message + domain.len, raw, e->signed_len);
        if (sign_detached(raw + e->signed_len, NULL, message, domain.len + e->signed_len,
                          (const unsigned char *)signing_key.buf) != 0
            || sha256(ids + i * ID_SIZE, raw, e->signed_len + SIG_SIZE) != 0) {
            failed = 1;
            break;
        }
        link = ids + i * ID_SIZE;
    }
    Py_END_ALLOW_THREADS

    if (failed) {
        PyErr_SetString(PyExc_RuntimeError, "seal_chain: libsodium failed");
        goto done;
    }
    result = entries_of(layout, count, templates, raws, ids, prev, first_seq, tenant_id,
                        author, sealed_changes);

done:
    /* message held only clear header bytes and ciphertext; the payloads and keys were read
       in place */
    PyMem_Free(message);
    PyMem_Free(ids);
    PyMem_Free(hbuf);
    PyMem_Free(patches);
    PyMem_Free(layout);
    Py_XDECREF(raws);
    PyBuffer_Release(&headers);
    PyBuffer_Release(&meta);
    PyBuffer_Release(&keys);
    PyBuffer_Release(&signing_key);
    PyBuffer_Release(&domain);
    PyBuffer_Release(&given_nonces);
    return result;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS,
     "configure(encrypt, sign_detached, sha256, randombytes_buf): libsodium's addresses."},
    {"configure_entries", configure_entries, METH_VARARGS,
     "configure_entries(EntryHeader, its slots, Entry, its slots): the types returned."},
    {"seal_chain", seal_chain, METH_VARARGS,
     "Seal one author's chain of entries, the GIL released (see the module source)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_seal_chain",
    "Seal a chain of entries in one call with the GIL released (mindoo_p2p.native_seal).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__seal_chain(void) { return PyModule_Create(&module); }

/* mindoo_p2p._seal_chain: seal one author's chain of entries in one call, the GIL released.

   The Python side (mindoo_p2p/native_seal.py) encodes each entry's header (format 2, see
   mindoo_p2p/entry.py) with zeros where the chain link (`prev`) and the ids of parents sealed
   in the same call go, and says where those are. For each entry in order this module then:

     1. writes the chain link (the id of the entry before it; the caller's `prev` for the
        first) and the ids of its in-call parents into its header;
     2. encrypts the payload with XChaCha20-Poly1305 (IETF), the whole header as associated
        data, the nonce being the header's last 24 bytes;
     3. lays out header || varint(len(ciphertext)) || ciphertext;
     4. signs SIGNING_DOMAIN || that with Ed25519 (detached) and appends the signature;
     5. takes SHA-256 of the whole as the entry id, which is the next entry's chain link.

   Exactly what Entry.seal does, so the bytes are the same (tests/test_native_seal.py compares
   them). The cryptography is libsodium's: the caller passes the addresses of
   crypto_aead_xchacha20poly1305_ietf_encrypt, crypto_sign_detached, crypto_hash_sha256 and
   randombytes_buf from the libsodium that PyNaCl loaded (`configure`). This file only copies bytes; every offset
   it is given is checked against the buffers, and copied out of the caller's reach, before the
   GIL is released. Payloads are read in place, never copied; the keys come in the one buffer
   the caller joined them into (Python bytes, as the keys themselves are).

   seal_chain(headers, meta, payloads, keys, patches, signing_key, prev, domain)
     headers      bytearray  the encoded headers, one after another (patched in place)
     meta         buffer of uint64, 4 per entry: header length, offset of `prev` in the header,
                  index of its key in `keys`, number of its patches
     payloads     tuple      the payloads (bytes), one per entry
     keys         buffer     32-byte keys
     patches      buffer of uint64, 2 per patch, in entry order: offset in the entry's header,
                  index of the earlier entry (of this call) whose id goes there
     signing_key  buffer     libsodium's 64-byte Ed25519 secret key
     prev         buffer     32 bytes: the chain link of the first entry
     domain       buffer     the signing domain prefix
     draw_nonces  bool       True: each header's last 24 bytes (its nonce) are drawn here, with
                  libsodium's randombytes_buf (the OS's CSPRNG), the GIL released; False: the
                  headers carry their nonces (tests give fixed ones)
   returns a list of (raw, id, header, ciphertext, signature) per entry; raises ValueError on
   inconsistent arguments and RuntimeError if libsodium fails.
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ID_SIZE 32
#define KEY_SIZE 32
#define NONCE_SIZE 24
#define TAG_SIZE 16
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

typedef struct {
    size_t header_start, header_len, prev_offset;
    size_t payload_len, key_index, patch_start, patch_count;
    size_t ciphertext_len, signed_len;
    const unsigned char *payload;
    unsigned char *raw;
} Layout;

/* Check every offset and size and copy what the sealing loop reads of `meta` and `patches`
   into `layout` and `patch_copy` (memory the caller cannot reach), all before the GIL is
   released; return 0, or -1 with a ValueError set. */
static int plan(const Py_buffer *headers, const Py_buffer *meta, PyObject *payloads,
                const Py_buffer *keys, const Py_buffer *patches, size_t count, Layout *layout,
                size_t *patch_copy, size_t *max_signed) {
    size_t patch_total = (size_t)patches->len / (2 * sizeof(uint64_t));
    size_t key_count = (size_t)keys->len / KEY_SIZE;
    size_t header_at = 0, patch_at = 0;
    *max_signed = 0;
    for (size_t i = 0; i < count; i++) {
        Layout *e = &layout[i];
        PyObject *payload = PyTuple_GET_ITEM(payloads, (Py_ssize_t)i);
        if (!PyBytes_Check(payload)) {
            PyErr_Format(PyExc_ValueError, "seal_chain: payload %zu is not bytes", i);
            return -1;
        }
        e->payload = (const unsigned char *)PyBytes_AS_STRING(payload);
        e->payload_len = (size_t)PyBytes_GET_SIZE(payload);
        e->header_start = header_at;
        e->header_len = u64_at(meta, i * META_FIELDS);
        e->prev_offset = u64_at(meta, i * META_FIELDS + 1);
        e->key_index = u64_at(meta, i * META_FIELDS + 2);
        e->patch_start = patch_at;
        e->patch_count = u64_at(meta, i * META_FIELDS + 3);
        if (e->header_len < NONCE_SIZE + ID_SIZE || e->header_len > (size_t)headers->len - header_at
            || e->prev_offset > e->header_len - NONCE_SIZE - ID_SIZE || e->key_index >= key_count
            || e->patch_count > patch_total - patch_at || e->payload_len > (SIZE_MAX >> 2)) {
            PyErr_Format(PyExc_ValueError, "seal_chain: entry %zu is out of its buffers", i);
            return -1;
        }
        for (size_t k = patch_at; k < patch_at + e->patch_count; k++) {
            patch_copy[2 * k] = u64_at(patches, 2 * k);
            patch_copy[2 * k + 1] = u64_at(patches, 2 * k + 1);
            if (patch_copy[2 * k] > e->header_len - NONCE_SIZE - ID_SIZE
                || patch_copy[2 * k + 1] >= i) {
                PyErr_Format(PyExc_ValueError, "seal_chain: a patch of entry %zu is invalid", i);
                return -1;
            }
        }
        e->ciphertext_len = e->payload_len + TAG_SIZE;
        e->signed_len = e->header_len + varint_size(e->ciphertext_len) + e->ciphertext_len;
        if (e->signed_len > *max_signed) *max_signed = e->signed_len;
        header_at += e->header_len;
        patch_at += e->patch_count;
    }
    if (header_at != (size_t)headers->len || patch_at != patch_total) {
        PyErr_SetString(PyExc_ValueError, "seal_chain: buffers longer than their entries");
        return -1;
    }
    return 0;
}

static PyObject *seal_chain(PyObject *self, PyObject *args) {
    Py_buffer headers, meta, keys, patches, signing_key, prev, domain;
    PyObject *payloads = NULL, *raws = NULL, *result = NULL;
    Layout *layout = NULL;
    size_t *patch_copy = NULL;
    unsigned char *ids = NULL, *message = NULL;
    int failed = 0, draw_nonces = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "w*y*O!y*y*y*y*y*p", &headers, &meta, &PyTuple_Type, &payloads,
                          &keys, &patches, &signing_key, &prev, &domain, &draw_nonces)) {
        return NULL;
    }
    if (aead_encrypt == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "seal_chain: configure() was not called");
        goto done;
    }
    if (meta.len % (META_FIELDS * sizeof(uint64_t)) || patches.len % (2 * sizeof(uint64_t))
        || keys.len % KEY_SIZE || signing_key.len != SECRET_KEY_SIZE || prev.len != ID_SIZE
        || domain.len > MAX_DOMAIN
        || (size_t)PyTuple_GET_SIZE(payloads) != (size_t)meta.len / (META_FIELDS * sizeof(uint64_t))) {
        PyErr_SetString(PyExc_ValueError, "seal_chain: malformed arguments");
        goto done;
    }
    size_t count = (size_t)meta.len / (META_FIELDS * sizeof(uint64_t));
    size_t patch_total = (size_t)patches.len / (2 * sizeof(uint64_t));
    size_t max_signed = 0;
    layout = PyMem_Malloc((count ? count : 1) * sizeof(Layout));
    patch_copy = PyMem_Malloc((patch_total ? patch_total : 1) * 2 * sizeof(size_t));
    if (layout == NULL || patch_copy == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (plan(&headers, &meta, payloads, &keys, &patches, count, layout, patch_copy, &max_signed)) {
        goto done;
    }
    /* Each entry is sealed straight into the bytes object returned for it (not yet shared,
       so writing it without the GIL is safe); the payload tuple is immutable and held by the
       call's arguments, so its items stay alive and unchanged. */
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

    Py_BEGIN_ALLOW_THREADS
    unsigned char *hbuf = (unsigned char *)headers.buf;
    const unsigned char *kbuf = (const unsigned char *)keys.buf;
    const unsigned char *link = (const unsigned char *)prev.buf;
    for (size_t i = 0; i < count; i++) {
        const Layout *e = &layout[i];
        unsigned char *header = hbuf + e->header_start;
        unsigned char *raw = e->raw;
        unsigned long long ciphertext_len = 0;
        if (draw_nonces) randombytes(header + e->header_len - NONCE_SIZE, NONCE_SIZE);
        memcpy(header + e->prev_offset, link, ID_SIZE);
        for (size_t k = e->patch_start; k < e->patch_start + e->patch_count; k++) {
            memcpy(header + patch_copy[2 * k], ids + patch_copy[2 * k + 1] * ID_SIZE, ID_SIZE);
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
    result = PyList_New((Py_ssize_t)count);
    if (result == NULL) goto done;
    for (size_t i = 0; i < count; i++) {
        const Layout *e = &layout[i];
        const char *raw = (const char *)e->raw;
        size_t body_start = e->signed_len - e->ciphertext_len;
        PyObject *item = Py_BuildValue(
            "(Oy#y#y#y#)", PyList_GET_ITEM(raws, (Py_ssize_t)i), (const char *)ids + i * ID_SIZE,
            (Py_ssize_t)ID_SIZE, raw, (Py_ssize_t)e->header_len, raw + body_start,
            (Py_ssize_t)e->ciphertext_len, raw + e->signed_len, (Py_ssize_t)SIG_SIZE);
        if (item == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, (Py_ssize_t)i, item);
    }

done:
    /* message held only clear header bytes and ciphertext; the payloads and keys were read
       in place */
    PyMem_Free(message);
    PyMem_Free(ids);
    PyMem_Free(patch_copy);
    PyMem_Free(layout);
    Py_XDECREF(raws);
    PyBuffer_Release(&headers);
    PyBuffer_Release(&meta);
    PyBuffer_Release(&keys);
    PyBuffer_Release(&patches);
    PyBuffer_Release(&signing_key);
    PyBuffer_Release(&prev);
    PyBuffer_Release(&domain);
    return result;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS,
     "configure(encrypt, sign_detached, sha256): the libsodium functions' addresses."},
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

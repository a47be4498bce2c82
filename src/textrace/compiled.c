/* textrace.compiled: the few loops numpy cannot vectorize, compiled by the package build.
 *
 * Each is a sequential walk or a hash over millions of items, where a vectorized numpy
 * form pays in passes and temporaries (measured in bench/report.py, issue 17):
 *   walk_records   perf.data's record chain, each header's size leading to the next
 *                  (and the SAMPLE records' fields as they are met, if asked);
 *   gather_samples fixed u64 fields of many SAMPLE records, every field of a record at
 *                  once, with the records' size checks in the same pass;
 *   number_pairs   the distinct (a, b) pairs of two columns, numbered by a hash table;
 *   best_of_aliases one ELF symbol per address, perf's choice among those of one value;
 *   kallsyms_lines the lines of /proc/kallsyms' text, split into address and spans.
 * Every function reads and writes Python buffers (numpy arrays, mmaps, bytes) the caller
 * sized, checks every index against them, and holds no state.  The formats are the
 * callers' (perf/bulk.py, history/distinct.py, history/kallsyms.py): the rules here are
 * theirs, written once more only as loops.  It needs no NumPy headers, so that the
 * kallsyms child can use it before numpy is imported.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* A buffer held for the length of a call: released on every path out. */
typedef struct {
    Py_buffer view;
    int held;
} held_buffer;

static int
hold(PyObject *obj, held_buffer *b, int writable, Py_ssize_t itemsize, const char *what)
{
    if (PyObject_GetBuffer(obj, &b->view, writable ? PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS
                                                   : PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    b->held = 1;
    if (b->view.len % itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes, not a whole number of %zd-byte items",
                     what, b->view.len, itemsize);
        return -1;
    }
    return 0;
}

static void
release(held_buffer *b)
{
    if (b->held) {
        PyBuffer_Release(&b->view);
        b->held = 0;
    }
}

static inline uint64_t
load_u64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;   /* x86-64 and every other target the BPF JIT runs on here: little-endian */
}

#define MAX_FIELDS 16
#define RECORD_SAMPLE 9   /* PERF_RECORD_SAMPLE */

/* Where one sample layout's fixed u64 fields are, and where they go: out[j][i] gets the
 * word field[j] of sample i (misc[i], if misc is set, its header's misc).  Each record
 * must hold `width` words; where `chain` is not negative, the callchain's nr at word
 * `chain` must fit in the rest of the record and be at most 8192 (64 KiB records). */
typedef struct {
    Py_ssize_t nf, field[MAX_FIELDS], width, chain;
    uint64_t *out[MAX_FIELDS];
    uint16_t *misc;
} sample_layout;

/* Sample i, the record at `rec` (its size read from its header, at least one word): its
 * fields copied, 0; -1 (nothing read past its header) when it fails a check. */
static inline int
gather_one(const unsigned char *rec, const sample_layout *L, Py_ssize_t i)
{
    uint64_t header = load_u64(rec), size_words = header >> 51;
    if (L->misc)
        L->misc[i] = (uint16_t)(header >> 32);
    if ((Py_ssize_t)size_words < L->width)
        return -1;
    for (Py_ssize_t j = 0; j < L->nf; j++)
        L->out[j][i] = load_u64(rec + 8 * L->field[j]);
    if (L->chain >= 0) {
        uint64_t nr = load_u64(rec + 8 * L->chain), room = size_words - (uint64_t)L->width;
        if (nr > room || nr > 8192)
            return -1;
    }
    return 0;
}

/* The layout of a (fields, outs, width, chain, misc) from Python, each out holding at
 * least `rows` items (misc too, unless None); its buffers held in `held` (nf + 1 of them,
 * released by the caller whatever this returns).  0, or -1 with an exception set. */
static int
layout_of(PyObject *fields_obj, PyObject *outs_obj, Py_ssize_t width, Py_ssize_t chain,
          PyObject *misc_obj, Py_ssize_t rows, sample_layout *L, held_buffer *held)
{
    if (!PyTuple_Check(fields_obj) || !PyTuple_Check(outs_obj) ||
        PyTuple_GET_SIZE(fields_obj) != PyTuple_GET_SIZE(outs_obj) ||
        PyTuple_GET_SIZE(fields_obj) > MAX_FIELDS) {
        PyErr_Format(PyExc_ValueError, "sample fields: tuples of as many outs as fields, at "
                     "most %d", MAX_FIELDS);
        return -1;
    }
    L->nf = PyTuple_GET_SIZE(fields_obj), L->width = width, L->chain = chain, L->misc = NULL;
    if (width < 1 || chain >= width) {
        PyErr_SetString(PyExc_ValueError, "sample fields: chain inside the first width words");
        return -1;
    }
    if (misc_obj != Py_None) {
        if (hold(misc_obj, &held[L->nf], 1, 2, "misc") < 0)
            return -1;
        if (held[L->nf].view.len / 2 < rows) {
            PyErr_SetString(PyExc_ValueError, "sample fields: misc too short");
            return -1;
        }
        L->misc = held[L->nf].view.buf;
    }
    for (Py_ssize_t j = 0; j < L->nf; j++) {
        L->field[j] = PyLong_AsSsize_t(PyTuple_GET_ITEM(fields_obj, j));
        if (L->field[j] == -1 && PyErr_Occurred())
            return -1;
        if (hold(PyTuple_GET_ITEM(outs_obj, j), &held[j], 1, 8, "outs") < 0)
            return -1;
        if (held[j].view.len / 8 < rows || L->field[j] < 0 || L->field[j] >= width) {
            PyErr_SetString(PyExc_ValueError, "sample fields: each out long enough, fields "
                                              "inside the first width words");
            return -1;
        }
        L->out[j] = held[j].view.buf;
    }
    return 0;
}

/* walk_records(buf, start, stop, end, known, offsets, types[, samples])
 *     -> (count, next, whole, gathered)
 *
 * The perf.data records beginning in [start, stop), the first at `start`, each at the end
 * of the one before; none may run past `end`.  A header is accepted when its type is
 * known (known[type] nonzero, a 65536-byte table) and its size a nonzero multiple of 8;
 * the walk stops at the first that is not (whole is False, next is where it stopped).
 * offsets (int64) and types (uint16), if not None, receive each record's offset and type
 * and must have room for every one; None counts them only.
 *
 * samples, if given, is (fields, outs, width, chain, misc, first): the SAMPLE records met
 * are gathered as they are walked (one pass over the file, each record read while the
 * walk has it), as gather_samples gathers them, into rows first, first + 1, ... of outs
 * and misc; `gathered` is how many, or -1 once one failed its checks or the rows ran
 * out (the walk goes on; the caller reads the samples the general way).  The records
 * must then be 8-aligned (start a multiple of 8).  Without samples, gathered is 0. */
static PyObject *
walk_records(PyObject *self, PyObject *args)
{
    PyObject *buf_obj, *known_obj, *offsets_obj, *types_obj, *samples_obj = Py_None;
    Py_ssize_t start, stop, end;
    if (!PyArg_ParseTuple(args, "OnnnOOO|O", &buf_obj, &start, &stop, &end, &known_obj,
                          &offsets_obj, &types_obj, &samples_obj))
        return NULL;
    held_buffer buf = {0}, known = {0}, offsets = {0}, types = {0};
    held_buffer held[MAX_FIELDS + 1] = {{{0}}};   /* the samples' outs, then misc */
    sample_layout L;
    Py_ssize_t first = 0, rows = 0, gathered = 0;
    PyObject *result = NULL;
    if (hold(buf_obj, &buf, 0, 1, "buf") < 0 || hold(known_obj, &known, 0, 1, "known") < 0)
        goto out;
    if (known.view.len != 65536) {
        PyErr_SetString(PyExc_ValueError, "known: one byte per record type (65536)");
        goto out;
    }
    if (offsets_obj != Py_None && (hold(offsets_obj, &offsets, 1, 8, "offsets") < 0 ||
                                   hold(types_obj, &types, 1, 2, "types") < 0))
        goto out;
    if (start < 0 || end > buf.view.len || stop > end || start > stop) {
        PyErr_SetString(PyExc_ValueError, "walk_records: bounds outside the buffer");
        goto out;
    }
    int with_samples = samples_obj != Py_None;
    if (with_samples) {
        PyObject *fields_obj, *outs_obj, *misc_obj;
        Py_ssize_t width, chain;
        if (!PyArg_ParseTuple(samples_obj, "OOnnOn", &fields_obj, &outs_obj, &width, &chain,
                              &misc_obj, &first))
            goto out;
        if (start % 8 || first < 0) {
            PyErr_SetString(PyExc_ValueError, "walk_records: samples need 8-aligned "
                                              "records and a first row");
            goto out;
        }
        if (layout_of(fields_obj, outs_obj, width, chain, misc_obj, 0, &L, held) < 0)
            goto out;
        /* the rows every out (and misc) has */
        rows = PY_SSIZE_T_MAX;
        for (Py_ssize_t j = 0; j < L.nf; j++)
            if (held[j].view.len / 8 < rows)
                rows = held[j].view.len / 8;
        if (L.misc && held[L.nf].view.len / 2 < rows)
            rows = held[L.nf].view.len / 2;
    }
    const unsigned char *p = buf.view.buf, *is_known = known.view.buf;
    int64_t *off_out = offsets.held ? offsets.view.buf : NULL;
    uint16_t *type_out = types.held ? types.view.buf : NULL;
    Py_ssize_t room = offsets.held ? offsets.view.len / 8 : 0;
    if (types.held && types.view.len / 2 < room)
        room = types.view.len / 2;
    Py_ssize_t pos = start, count = 0;
    int whole = 1;
    Py_BEGIN_ALLOW_THREADS
    while (pos < stop) {
        if (end - pos < 8) {
            whole = 0;
            break;
        }
        uint32_t type;
        uint16_t size;
        memcpy(&type, p + pos, 4);
        memcpy(&size, p + pos + 6, 2);
        if (type > 0xFFFF || !is_known[type] || size < 8 || size % 8 || size > end - pos) {
            whole = 0;
            break;
        }
        if (off_out) {
            if (count == room) {
                whole = -1;
                break;
            }
            off_out[count] = pos;
            type_out[count] = (uint16_t)type;
        }
        if (with_samples && type == RECORD_SAMPLE && gathered >= 0) {
            /* the record holds `size` bytes: gather_one reads no further than that */
            if (first + gathered >= rows || gather_one(p + pos, &L, first + gathered) < 0)
                gathered = -1;
            else
                gathered++;
        }
        count++;
        pos += size;
    }
    Py_END_ALLOW_THREADS
    if (whole < 0) {
        PyErr_SetString(PyExc_ValueError, "walk_records: offsets or types too short");
        goto out;
    }
    result = Py_BuildValue("nnOn", count, pos, whole ? Py_True : Py_False, gathered);
out:
    release(&buf), release(&known), release(&offsets), release(&types);
    for (Py_ssize_t j = 0; j <= MAX_FIELDS; j++)
        release(&held[j]);
    return result;
}

/* gather_samples(words, base, fields, outs, width, chain, misc) -> first bad or -1
 *
 * outs[j][i] = words[base[i] + fields[j]] for every SAMPLE record i (of one layout) and
 * field j: words a buffer of u64, base (int64) the word index of each record's header,
 * fields a tuple of word offsets, outs a tuple of as many uint64 arrays, each as long as
 * base.  With the records' checks in the same pass (sample_layout's).  misc (uint16), if
 * not None, gets each header's misc.  Returns the index of the first record that fails a
 * check (the caller names the field), else -1; IndexError if a read falls outside
 * `words`. */
static PyObject *
gather_samples(PyObject *self, PyObject *args)
{
    PyObject *words_obj, *base_obj, *fields_obj, *outs_obj, *misc_obj;
    Py_ssize_t width, chain;
    if (!PyArg_ParseTuple(args, "OOO!O!nnO", &words_obj, &base_obj, &PyTuple_Type,
                          &fields_obj, &PyTuple_Type, &outs_obj, &width, &chain, &misc_obj))
        return NULL;
    held_buffer words = {0}, base = {0};
    held_buffer held[MAX_FIELDS + 1] = {{{0}}};   /* outs, then misc */
    sample_layout L;
    PyObject *result = NULL;
    if (hold(words_obj, &words, 0, 8, "words") < 0 || hold(base_obj, &base, 0, 8, "base") < 0)
        goto out;
    Py_ssize_t n = base.view.len / 8, nwords = words.view.len / 8;
    if (layout_of(fields_obj, outs_obj, width, chain, misc_obj, n, &L, held) < 0)
        goto out;
    const uint64_t *w = words.view.buf;
    const int64_t *b = base.view.buf;
    Py_ssize_t bad = -1, outside = -1;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t at = b[i];
        if (at < 0 || at + width > nwords) {
            outside = i;
            break;
        }
        if (gather_one((const unsigned char *)(w + at), &L, i) < 0) {
            bad = i;
            break;
        }
    }
    Py_END_ALLOW_THREADS
    if (outside >= 0) {
        PyErr_Format(PyExc_IndexError, "gather_samples: record %zd reads past the words",
                     outside);
        goto out;
    }
    result = PyLong_FromSsize_t(bad);
out:
    release(&words), release(&base);
    for (Py_ssize_t j = 0; j <= MAX_FIELDS; j++)
        release(&held[j]);
    return result;
}

/* number_pairs(a, b, ids, first) -> count
 *
 * ids[i] numbers the pair (a[i], b[i]) among the distinct pairs, in the order each is
 * first met, and first[k] is the index where pair k was first met.  a is a 64-bit column
 * and b a 32-bit one (pids, small numbers) of one length n; ids and first int64 arrays of
 * length n (first[:count] used).  An open-addressing table of 16-byte slots (four to a
 * cache line) holding each pair with its number, kept under half full: made with room
 * for n/4 pairs (a report's 1.5M samples hold 300k or fewer), grown and rehashed only
 * beyond, of zeroed memory (calloc) that the kernel maps in where pairs land, in huge
 * pages where it can (zeroed_slots). */
typedef struct {
    uint64_t a;
    int32_t b;
    uint32_t id1;   /* the pair's number + 1; 0: an empty slot */
} pair_slot;

static inline uint64_t
mix(uint64_t a, uint64_t b)
{
    uint64_t h = (a ^ (b * 0xFF51AFD7ED558CCDull)) * 0x9E3779B97F4A7C15ull;
    return h ^ (h >> 29);
}

/* n zeroed slots; a big table asks for huge pages, as numpy does for its arrays of 4 MiB
 * and more: its probes land anywhere in it, each a TLB miss in 4 KiB pages. */
static pair_slot *
zeroed_slots(size_t n)
{
    size_t bytes = n * sizeof(pair_slot);
    pair_slot *t = calloc(n, sizeof(pair_slot));
    if (t && bytes >= (4u << 20)) {
        uintptr_t at = ((uintptr_t)t + 4095) & ~(uintptr_t)4095;
        madvise((void *)at, (uintptr_t)t + bytes - at, MADV_HUGEPAGE);
    }
    return t;
}

static PyObject *
number_pairs(PyObject *self, PyObject *args)
{
    PyObject *a_obj, *b_obj, *ids_obj, *first_obj;
    if (!PyArg_ParseTuple(args, "OOOO", &a_obj, &b_obj, &ids_obj, &first_obj))
        return NULL;
    held_buffer a = {0}, b = {0}, ids = {0}, first = {0};
    PyObject *result = NULL;
    pair_slot *table = NULL;
    if (hold(a_obj, &a, 0, 8, "a") < 0 || hold(b_obj, &b, 0, 4, "b") < 0 ||
        hold(ids_obj, &ids, 1, 8, "ids") < 0 || hold(first_obj, &first, 1, 8, "first") < 0)
        goto out;
    Py_ssize_t n = a.view.len / 8;
    if (b.view.len != n * 4 || ids.view.len != a.view.len || first.view.len != a.view.len ||
        n >= UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "number_pairs: a, b, ids and first of one length "
                                          "(under 2**32)");
        goto out;
    }
    const uint64_t *av = a.view.buf;
    const int32_t *bv = b.view.buf;
    int64_t *idv = ids.view.buf, *firstv = first.view.buf;
    size_t bits = 4;
    while (((size_t)1 << bits) < (size_t)n / 2)
        bits++;
    size_t mask = ((size_t)1 << bits) - 1;
    if (!(table = zeroed_slots((size_t)1 << bits))) {
        PyErr_NoMemory();
        goto out;
    }
    int64_t count = 0;
    int nomem = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t x = av[i];
        int32_t y = bv[i];
        size_t s = mix(x, (uint64_t)(int64_t)y) >> (64 - bits);
        while (table[s].id1 && (table[s].a != x || table[s].b != y))
            s = (s + 1) & mask;
        if (table[s].id1) {
            idv[i] = table[s].id1 - 1;
            continue;
        }
        table[s] = (pair_slot){x, y, (uint32_t)(count + 1)};
        firstv[count] = i;
        idv[i] = count++;
        if ((size_t)count * 2 > mask) {   /* over half full: twice the slots, rehashed */
            size_t nbits = bits + 1, nmask = ((size_t)1 << nbits) - 1;
            pair_slot *bigger = zeroed_slots((size_t)1 << nbits);
            if (!bigger) {
                nomem = 1;
                break;
            }
            for (size_t k = 0; k <= mask; k++) {
                if (!table[k].id1)
                    continue;
                size_t t = mix(table[k].a, (uint64_t)(int64_t)table[k].b) >> (64 - nbits);
                while (bigger[t].id1)
                    t = (t + 1) & nmask;
                bigger[t] = table[k];
            }
            free(table);
            table = bigger, bits = nbits, mask = nmask;
        }
    }
    Py_END_ALLOW_THREADS
    if (nomem) {
        PyErr_NoMemory();
        goto out;
    }
    result = PyLong_FromLongLong(count);
out:
    free(table);
    release(&a), release(&b), release(&ids), release(&first);
    return result;
}

/* kallsyms_lines(text, is_text, addrs, spans) -> count
 *
 * The symbol lines of /proc/kallsyms' text, "<16 lowercase hex digits> <type> <name>"
 * optionally followed by "\t[<module>]", in the file's order: a line with exactly two
 * spaces (around the type), a text type (is_text[type] nonzero, 256 bytes), a nonzero
 * address, a nonempty name and at most one tab, which opens "[module]" with a nonempty
 * module running to the end of the line.  Other lines are skipped.  A line ends at "\n";
 * a last line without one still counts.  addrs (uint64) gets each address, spans (int64,
 * 4 a line) the byte offsets of name start and end, module start and end (-1, -1 for
 * vmlinux); both have room for one entry per line. */
static inline int
hex_digit(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static PyObject *
kallsyms_lines(PyObject *self, PyObject *args)
{
    PyObject *text_obj, *is_text_obj, *addrs_obj, *spans_obj;
    if (!PyArg_ParseTuple(args, "OOOO", &text_obj, &is_text_obj, &addrs_obj, &spans_obj))
        return NULL;
    held_buffer text = {0}, is_text = {0}, addrs = {0}, spans = {0};
    PyObject *result = NULL;
    if (hold(text_obj, &text, 0, 1, "text") < 0 || hold(is_text_obj, &is_text, 0, 1,
                                                         "is_text") < 0 ||
        hold(addrs_obj, &addrs, 1, 8, "addrs") < 0 || hold(spans_obj, &spans, 1, 32,
                                                           "spans") < 0)
        goto out;
    if (is_text.view.len != 256) {
        PyErr_SetString(PyExc_ValueError, "is_text: one byte per type character (256)");
        goto out;
    }
    const unsigned char *p = text.view.buf, *text_type = is_text.view.buf;
    Py_ssize_t len = text.view.len, room = addrs.view.len / 8;
    if (spans.view.len / 32 < room)
        room = spans.view.len / 32;
    uint64_t *addr_out = addrs.view.buf;
    int64_t *span_out = spans.view.buf;
    Py_ssize_t count = 0, at = 0;
    int full = 0;
    Py_BEGIN_ALLOW_THREADS
    while (at < len) {
        const unsigned char *nl = memchr(p + at, '\n', len - at);
        Py_ssize_t end = nl ? nl - p : len, next = end + 1;
        if (end - at < 20 || p[at + 16] != ' ' || p[at + 18] != ' ' ||
            !text_type[p[at + 17]])
            goto skip;
        /* the first 19 bytes hold no other blank: the rest (name, module) must hold no
         * space and at most one tab */
        const unsigned char *rest = p + at + 19;
        Py_ssize_t rest_len = end - at - 19;
        if (memchr(rest, ' ', rest_len))
            goto skip;
        const unsigned char *tab_at = memchr(rest, '\t', rest_len);
        Py_ssize_t tab = tab_at ? tab_at - p : -1;
        if (tab_at && memchr(tab_at + 1, '\t', end - tab - 1))
            goto skip;
        uint64_t addr = 0;
        for (int i = 0; i < 16; i++) {
            int d = hex_digit(p[at + i]);
            if (d < 0)
                goto skip;
            addr = addr << 4 | (uint64_t)d;
        }
        if (!addr)      /* kptr_restrict shows every address as zeros */
            goto skip;
        Py_ssize_t name_end = end, mod_start = -1, mod_end = -1;
        if (tab >= 0) {
            if (end - tab < 4 || p[tab + 1] != '[' || p[end - 1] != ']')
                goto skip;
            name_end = tab, mod_start = tab + 2, mod_end = end - 1;
        }
        if (name_end <= at + 19)
            goto skip;
        if (count == room) {
            full = 1;
            break;
        }
        addr_out[count] = addr;
        span_out[4 * count] = at + 19;
        span_out[4 * count + 1] = name_end;
        span_out[4 * count + 2] = mod_start;
        span_out[4 * count + 3] = mod_end;
        count++;
    skip:
        at = next;
    }
    Py_END_ALLOW_THREADS
    if (full) {
        PyErr_SetString(PyExc_ValueError, "kallsyms_lines: addrs or spans too short");
        goto out;
    }
    result = PyLong_FromSsize_t(count);
out:
    release(&text), release(&is_text), release(&addrs), release(&spans);
    return result;
}

/* best_of_aliases(order, values, sizes, binds, names, table, strtab0, strtab1, kept)
 *     -> count
 *
 * One ELF symbol per address, as perf's symbols__fixup_duplicate keeps them: `order`
 * (int64) lists the symbols by ascending value, file order among equal ones; of each run
 * of one value the one choose_best_symbol (tools/perf/util/symbol.c) prefers is written
 * to kept (int64, as long as order), in address order: a sized one, then not WEAK, then
 * GLOBAL, then fewer leading underscores, then the longer name, then the first.  Symbol
 * i: values (u64), sizes (u64), binds (u8), its name at names[i] (int64) in strtab0 or,
 * where table[i] (u8) is 1, strtab1; a name runs to a NUL or its table's end. */
#define STB_GLOBAL 1
#define STB_WEAK 2

typedef struct {
    int sized, weak, global;
    Py_ssize_t under, length;
} symbol_rank;

static symbol_rank
rank_of(Py_ssize_t i, const uint64_t *sizes, const uint8_t *binds, const int64_t *names,
        const uint8_t *table, const Py_buffer *strtabs)
{
    symbol_rank r = {sizes[i] != 0, binds[i] == STB_WEAK, binds[i] == STB_GLOBAL, 0, 0};
    const Py_buffer *t = &strtabs[table[i] ? 1 : 0];
    const char *text = t->buf;
    int64_t at = names[i];
    if (at < 0 || at > t->len)
        at = t->len;
    const char *nul = memchr(text + at, 0, (size_t)(t->len - at));
    r.length = (nul ? nul - text : t->len) - at;
    while (r.under < r.length && text[at + r.under] == '_')
        r.under++;
    return r;
}

/* 1 if perf's choose_best_symbol prefers b to a (a, met first, is kept on a tie) */
static int
prefers(symbol_rank a, symbol_rank b)
{
    if (a.sized != b.sized)
        return b.sized;
    if (a.weak != b.weak)
        return a.weak;
    if (a.global != b.global)
        return b.global;
    if (a.under != b.under)
        return b.under < a.under;
    return b.length > a.length;
}

static PyObject *
best_of_aliases(PyObject *self, PyObject *args)
{
    PyObject *objs[9];
    if (!PyArg_ParseTuple(args, "OOOOOOOOO", &objs[0], &objs[1], &objs[2], &objs[3], &objs[4],
                          &objs[5], &objs[6], &objs[7], &objs[8]))
        return NULL;
    held_buffer order = {0}, values = {0}, sizes = {0}, binds = {0}, names = {0},
                table = {0}, strtab0 = {0}, strtab1 = {0}, kept = {0};
    PyObject *result = NULL;
    if (hold(objs[0], &order, 0, 8, "order") < 0 || hold(objs[1], &values, 0, 8, "values") < 0 ||
        hold(objs[2], &sizes, 0, 8, "sizes") < 0 || hold(objs[3], &binds, 0, 1, "binds") < 0 ||
        hold(objs[4], &names, 0, 8, "names") < 0 || hold(objs[5], &table, 0, 1, "table") < 0 ||
        hold(objs[6], &strtab0, 0, 1, "strtab0") < 0 ||
        hold(objs[7], &strtab1, 0, 1, "strtab1") < 0 || hold(objs[8], &kept, 1, 8, "kept") < 0)
        goto out;
    Py_ssize_t n = values.view.len / 8;
    if (order.view.len != 8 * n || sizes.view.len != 8 * n || binds.view.len != n ||
        names.view.len != 8 * n || table.view.len != n || kept.view.len < 8 * n) {
        PyErr_SetString(PyExc_ValueError, "best_of_aliases: columns of one length");
        goto out;
    }
    const int64_t *ord = order.view.buf, *nm = names.view.buf;
    const uint64_t *val = values.view.buf, *sz = sizes.view.buf;
    const uint8_t *bd = binds.view.buf, *tb = table.view.buf;
    int64_t *out = kept.view.buf;
    Py_buffer strtabs[2] = {strtab0.view, strtab1.view};
    for (Py_ssize_t k = 0; k < n; k++)
        if (ord[k] < 0 || ord[k] >= n) {
            PyErr_SetString(PyExc_IndexError, "best_of_aliases: order names no symbol");
            goto out;
        }
    Py_ssize_t count = 0;
    for (Py_ssize_t k = 0; k < n;) {
        Py_ssize_t best = ord[k], end = k + 1;
        while (end < n && val[ord[end]] == val[best])
            end++;
        if (end - k > 1) {
            symbol_rank r = rank_of(best, sz, bd, nm, tb, strtabs);
            for (Py_ssize_t m = k + 1; m < end; m++) {
                symbol_rank c = rank_of(ord[m], sz, bd, nm, tb, strtabs);
                if (prefers(r, c))
                    best = ord[m], r = c;
            }
        }
        out[count++] = best;
        k = end;
    }
    result = PyLong_FromSsize_t(count);
out:
    release(&order), release(&values), release(&sizes), release(&binds), release(&names);
    release(&table), release(&strtab0), release(&strtab1), release(&kept);
    return result;
}

static PyMethodDef methods[] = {
    {"walk_records", walk_records, METH_VARARGS,
     "walk_records(buf, start, stop, end, known, offsets, types[, samples]) -> (count, next, "
     "whole, gathered)"},
    {"gather_samples", gather_samples, METH_VARARGS,
     "gather_samples(words, base, fields, outs, width, chain, misc) -> first bad record or -1"},
    {"number_pairs", number_pairs, METH_VARARGS,
     "number_pairs(a, b, ids, first) -> count of distinct (a, b) pairs"},
    {"best_of_aliases", best_of_aliases, METH_VARARGS,
     "best_of_aliases(order, values, sizes, binds, names, table, strtab0, strtab1, kept) -> "
     "count of symbols kept, one per address"},
    {"kallsyms_lines", kallsyms_lines, METH_VARARGS,
     "kallsyms_lines(text, is_text, addrs, spans) -> count of symbol lines"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "textrace.compiled",
    "The few loops numpy cannot vectorize: perf.data's record chain, field gathers, pair "
    "numbering, ELF symbol aliases, /proc/kallsyms lines.", -1, methods,
};

PyMODINIT_FUNC
PyInit_compiled(void)
{
    return PyModule_Create(&module);
}

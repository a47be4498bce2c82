// SPDX-License-Identifier: GPL-2.0
/*
 * textrace's in-kernel capture of BPF programs, synchronously at load.
 *
 * On every successful BPF_PROG_LOAD, before the loader's syscall returns, follow the fd it
 * is about to get (task -> files -> fdt -> fd[ret] -> file), check the file is a BPF
 * program's (its f_op equals the one learned from the recorder's own calibration load),
 * and copy out of the bpf_prog: id, tag, type, name, the JIT image of the main program and
 * of every subprogram (aux->func[]), the xlated instructions, line info, JIT line info and
 * the program's BTF.  Everything goes through one BPF ring buffer in chunks of at most
 * STEP bytes (bpf_loop), each with the program id, blob kind, function index and sequence
 * number, and each only as long as its data: a chunk is assembled in a per-CPU scratch
 * buffer and copied into the ring with its own length, so a storm of small programs takes
 * a few hundred bytes of ring each.  A chunk that finds the ring full is counted in `lost`.
 *
 * Two more services ride on the same tracepoints:
 * - kernel code on demand: when the recorder writes a request {addr, len, seq} into
 *   `code_request` (a BPF_MAP_UPDATE_ELEM of its own), the exit of that syscall copies
 *   [addr, addr + len) of kernel memory into the ring, so the read is done when the
 *   update returns.  This host has no /proc/kcore; this is how textrace reads kernel text
 *   and the images of BPF trampolines and dispatchers.  Reads are bounded by MAX_CODE.
 * - prog-array updates: a successful update or delete of a BPF_MAP_TYPE_PROG_ARRAY map by
 *   anyone is reported (map id, time).  The x86 JIT patches direct tail-call sites of the
 *   programs using that map in place, and no kernel reports it as a TEXT_POKE; the
 *   recorder re-reads those images and records the change.
 *
 * Kernel types are declared here with only the fields read, under preserve_access_index:
 * libbpf relocates every access against the running kernel's BTF (CO-RE), so the same
 * object works on Debian's 6.1, 6.12, 7.2 and on 6.18.
 *
 * Kernels before 5.17 have no bpf_loop, and a program calling it does not load there.
 * capture_bounded.bpf.c compiles this source with CAPTURE_BOUNDED_LOOPS: plain loops with
 * constant bounds (verified since 5.3), the chunk loop in a global function (5.6: verified
 * once, not at every call site; its arguments travel in a per-CPU map, as global functions
 * take only scalars before 5.12), and chunks of 16 KiB so that a blob of up to 8 MiB takes
 * few enough iterations for the verifier (Debian 11's 5.10).  The loader picks the variant
 * by probing for bpf_loop.
 */
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef int s32;
typedef short s16;
typedef unsigned long long u64;
typedef long long s64;

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#define PRESERVE __attribute__((preserve_access_index))

struct fdtable { unsigned int max_fds; struct file **fd; } PRESERVE;
struct files_struct { struct fdtable *fdt; } PRESERVE;
struct task_struct { struct files_struct *files; int tgid; } PRESERVE;
struct file { const void *f_op; void *private_data; } PRESERVE;
struct btf { void *data; u32 data_size; u32 id; } PRESERVE;
struct bpf_map { enum bpf_map_type map_type; u32 id; } PRESERVE;
struct bpf_prog;
struct bpf_prog_aux {
	u32 id;
	u32 func_cnt;
	u32 nr_linfo;
	struct bpf_prog **func;
	char name[16];
	void *linfo;
	void **jited_linfo;
	struct btf *btf;
} PRESERVE;
struct bpf_prog {
	u32 jited_len;
	u8 tag[8];
	struct bpf_prog_aux *aux;
	u32 len;
	enum bpf_prog_type type;
	void *bpf_func;
	struct bpf_insn insnsi[0];
} PRESERVE;

/* tracepoint contexts (events/syscalls/sys_{enter,exit}_bpf/format) */
struct sys_enter_bpf_ctx { u64 common; s32 nr; s32 pad; u64 cmd; u64 uattr; u64 size; };
struct sys_exit_bpf_ctx { u64 common; s32 nr; s32 pad; s64 ret; };

#define BPF_MAP_UPDATE_ELEM_CMD 2
#define BPF_MAP_DELETE_ELEM_CMD 3
#define BPF_PROG_LOAD_CMD 5
#define PROG_ARRAY_UPDATE 1      /* `loading` values other than BPF_PROG_LOAD_CMD */
#define CODE_REQUEST 2
#ifdef CAPTURE_BOUNDED_LOOPS
#define CHUNK 16384      /* a per-CPU array value may be at most 32 KiB */
#define MAX_CHUNKS 512   /* ~8 MiB of one blob: each iteration is verified, so few */
#else
#define CHUNK 2048
#define MAX_CHUNKS 4096  /* ~8 MiB of one blob */
#endif
#define STEP (CHUNK - 8) /* bytes per chunk: below CHUNK so that `n & (CHUNK - 1)` keeps it */
#define MAX_FUNCS 256
#define MAX_CODE (1 << 20) /* bytes of kernel code one request may read */

enum kind { META = 1, JIT = 2, XLATED = 3, LINFO = 4, JLINFO = 5, BTF = 6,
	    CODE = 7,         /* kernel code read on request: prog_id = the request's seq */
	    PROG_ARRAY = 8 }; /* a prog-array map changed: prog_id = the map's id */

struct chunk {
	u32 kind;
	u32 prog_id;
	u32 index;    /* function index for JIT */
	u32 seq;      /* chunk number within the blob */
	u64 addr;     /* JIT address of the function (JIT), else 0 */
	u64 time;     /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	u8 tag[8];    /* the function's own tag (JIT) */
	u32 total;    /* bytes of the whole blob */
	u32 len;      /* bytes in this chunk */
	u8 data[CHUNK];
};

struct meta {
	u8 tag[8];
	u32 type;
	u32 func_cnt;
	u32 jited_len;
	u32 insn_cnt;
	u32 nr_linfo;
	u32 btf_id;
	char name[16];
	u64 bpf_func;
};

/* a chunk's header with a META (or, header alone, PROG_ARRAY) body: reserved at its size */
struct meta_chunk {
	u32 kind, prog_id, index, seq;
	u64 addr, time;
	u8 tag[8];
	u32 total, len;
	struct meta meta;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} chunks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct chunk);
} scratch SEC(".maps");

#define HEADER_SIZE __builtin_offsetof(struct chunk, data)

/* per thread inside a bpf() call of interest: low 32 bits what it is (BPF_PROG_LOAD_CMD,
 * PROG_ARRAY_UPDATE or CODE_REQUEST), high 32 bits the prog-array map's id */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, u32);
	__type(value, u64);
} loading SEC(".maps");

struct code_request { u64 addr; u32 len; u32 seq; };

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct code_request);
} code_request SEC(".maps");

const volatile u32 self_tgid = 0;   /* the recorder: its own loads calibrate, never captured */
u64 prog_fops = 0;                   /* learned from the recorder's calibration load */
u64 lost = 0;                        /* chunks the full ring refused */
u64 captured = 0;
u64 code_reads = 0;                  /* requests served */
u64 code_failed = 0;                 /* requests refused: too long, or unreadable memory */
u64 prog_array_updates = 0;

struct copy_ctx {
	u32 kind, prog_id, index, total;
	u64 addr, time;
	const u8 *src;
	u8 tag[8];
};

static long copy_chunk(u32 seq, struct copy_ctx *c)
{
	u32 off = seq * STEP;
	if (off >= c->total)
		return 1;
	u32 zero = 0;
	struct chunk *out = bpf_map_lookup_elem(&scratch, &zero);
	if (!out)
		return 1;
	u32 n = c->total - off;
	if (n > STEP)
		n = STEP;
	barrier_var(n);  /* keep the mask below: clang would drop it as redundant */
	n &= CHUNK - 1;  /* the verifier's proof that the copy fits out->data */
	out->kind = c->kind;
	out->prog_id = c->prog_id;
	out->index = c->index;
	out->seq = seq;
	out->addr = c->addr;
	out->time = c->time;
	__builtin_memcpy(out->tag, c->tag, 8);
	out->total = c->total;
	out->len = n;
	if (bpf_probe_read_kernel(out->data, n, c->src + off)) {
		n = out->len = 0;   /* the reader sees a short blob and reports the range */
		if (c->kind == CODE)
			__sync_fetch_and_add(&code_failed, 1);
	}
	if (bpf_ringbuf_output(&chunks, out, HEADER_SIZE + n, 0)) {
		__sync_fetch_and_add(&lost, 1);
		return 1;
	}
	return 0;
}

#ifdef CAPTURE_BOUNDED_LOOPS
/* copy_blob's argument, for the global function that takes none */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct copy_ctx);
} copy_arg SEC(".maps");

/* Global, so verified once; its loop's bound is a constant. */
__attribute__((noinline)) int copy_blob_bounded(u32 unused)
{
	u32 zero = 0;
	struct copy_ctx *c = bpf_map_lookup_elem(&copy_arg, &zero);
	if (!c)
		return 0;
	for (u32 seq = 0; seq < MAX_CHUNKS; seq++)
		if (copy_chunk(seq, c))
			break;
	return 0;
}

static void copy_blob(struct copy_ctx *c)
{
	u32 zero = 0;
	struct copy_ctx *arg = bpf_map_lookup_elem(&copy_arg, &zero);
	if (!arg)
		return;
	*arg = *c;
	copy_blob_bounded(0);
}
#else
static void copy_blob(struct copy_ctx *c)
{
	bpf_loop(MAX_CHUNKS, copy_chunk, c, 0);
}
#endif

struct func_ctx {
	struct bpf_prog *prog;
	struct bpf_prog **funcs;
	u32 prog_id;
	u64 time;
};

static long copy_func(u32 i, struct func_ctx *f)
{
	struct bpf_prog *fp;
	if (bpf_probe_read_kernel(&fp, sizeof(fp), &f->funcs[i]) || !fp)
		return 1;
	struct copy_ctx c = {
		.kind = JIT, .prog_id = f->prog_id, .index = i, .time = f->time,
		.total = BPF_CORE_READ(fp, jited_len),
		.addr = (u64)BPF_CORE_READ(fp, bpf_func),
	};
	c.src = (const u8 *)c.addr;
	BPF_CORE_READ_INTO(&c.tag, fp, tag);
	copy_blob(&c);
	return 0;
}

/* The map a bpf() map command names (attr->map_fd, the first field of its attr). */
static struct bpf_map *map_of_fd(u64 uattr)
{
	u32 map_fd;
	if (bpf_probe_read_user(&map_fd, sizeof(map_fd), (void *)uattr))
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt || map_fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *file;
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[map_fd]) || !file)
		return 0;
	return BPF_CORE_READ(file, private_data);
}

SEC("tp/syscalls/sys_enter_bpf")
int on_enter(struct sys_enter_bpf_ctx *ctx)
{
	u64 what;
	if (ctx->cmd == BPF_PROG_LOAD_CMD) {
		what = BPF_PROG_LOAD_CMD;
	} else if (ctx->cmd == BPF_MAP_UPDATE_ELEM_CMD || ctx->cmd == BPF_MAP_DELETE_ELEM_CMD) {
		struct bpf_map *map = map_of_fd(ctx->uattr);
		if (!map)
			return 0;
		if ((void *)map == (void *)&code_request) {
			if ((bpf_get_current_pid_tgid() >> 32) != self_tgid)
				return 0;
			what = CODE_REQUEST;
		} else if (BPF_CORE_READ(map, map_type) == BPF_MAP_TYPE_PROG_ARRAY) {
			what = PROG_ARRAY_UPDATE | ((u64)BPF_CORE_READ(map, id) << 32);
		} else {
			return 0;
		}
	} else {
		return 0;
	}
	u32 tid = (u32)bpf_get_current_pid_tgid();
	bpf_map_update_elem(&loading, &tid, &what, BPF_ANY);
	return 0;
}

/* Copy the kernel code the recorder asked for (its request is in code_request now). */
static void serve_code_request(void)
{
	u32 zero = 0;
	struct code_request *req = bpf_map_lookup_elem(&code_request, &zero);
	if (!req)
		return;
	if (req->len > MAX_CODE || req->len == 0) {
		__sync_fetch_and_add(&code_failed, 1);
		return;
	}
	struct copy_ctx c = { .kind = CODE, .prog_id = req->seq, .addr = req->addr,
			      .time = bpf_ktime_get_ns(), .total = req->len,
			      .src = (const u8 *)req->addr };
	copy_blob(&c);
	__sync_fetch_and_add(&code_reads, 1);
}

/* A prog-array map changed: say which and when (the JIT may have patched callers). */
static void report_prog_array(u32 map_id)
{
	struct meta_chunk *m = bpf_ringbuf_reserve(&chunks, HEADER_SIZE, 0);
	if (!m) {
		__sync_fetch_and_add(&lost, 1);
		return;
	}
	m->kind = PROG_ARRAY;
	m->prog_id = map_id;
	m->index = m->seq = 0;
	m->addr = 0;
	m->time = bpf_ktime_get_ns();
	m->total = m->len = 0;
	bpf_ringbuf_submit(m, 0);
	__sync_fetch_and_add(&prog_array_updates, 1);
}

SEC("tp/syscalls/sys_exit_bpf")
int on_exit(struct sys_exit_bpf_ctx *ctx)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u32 tid = (u32)pid_tgid;
	u64 *found = bpf_map_lookup_elem(&loading, &tid);
	if (!found)
		return 0;
	u64 what = *found;
	bpf_map_delete_elem(&loading, &tid);
	s64 fd = ctx->ret;
	if (fd < 0)
		return 0;
	if ((u32)what == CODE_REQUEST) {
		serve_code_request();
		return 0;
	}
	if ((u32)what == PROG_ARRAY_UPDATE) {
		report_prog_array(what >> 32);
		return 0;
	}

	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt || (u64)fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *file;
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) || !file)
		return 0;
	u64 fop = (u64)BPF_CORE_READ(file, f_op);
	if ((pid_tgid >> 32) == self_tgid) {
		prog_fops = fop;   /* a load that succeeded: this fd is a program's */
		return 0;
	}
	if (!prog_fops || fop != prog_fops)
		return 0;
	struct bpf_prog *prog = BPF_CORE_READ(file, private_data);
	struct bpf_prog_aux *aux = BPF_CORE_READ(prog, aux);
	u64 now = bpf_ktime_get_ns();
	u32 prog_id = BPF_CORE_READ(aux, id);

	struct meta_chunk *m = bpf_ringbuf_reserve(&chunks, sizeof(*m), 0);
	if (!m) {
		__sync_fetch_and_add(&lost, 1);
		return 0;
	}
	struct meta *meta = &m->meta;
	m->kind = META;
	m->prog_id = prog_id;
	m->index = 0;
	m->seq = 0;
	m->time = now;
	m->total = m->len = sizeof(struct meta);
	m->addr = (u64)BPF_CORE_READ(prog, bpf_func);
	BPF_CORE_READ_INTO(&meta->tag, prog, tag);
	meta->type = BPF_CORE_READ(prog, type);
	meta->func_cnt = BPF_CORE_READ(aux, func_cnt);
	meta->jited_len = BPF_CORE_READ(prog, jited_len);
	meta->insn_cnt = BPF_CORE_READ(prog, len);
	meta->nr_linfo = BPF_CORE_READ(aux, nr_linfo);
	meta->btf_id = BPF_CORE_READ(aux, btf, id);
	BPF_CORE_READ_INTO(&meta->name, aux, name);
	meta->bpf_func = m->addr;
	u32 func_cnt = meta->func_cnt;
	u32 insn_cnt = meta->insn_cnt;
	u32 nr_linfo = meta->nr_linfo;
	bpf_ringbuf_submit(m, 0);

	if (func_cnt == 0) {  /* no subprograms: the program itself is the one function */
		struct copy_ctx c = { .kind = JIT, .prog_id = prog_id, .time = now,
				      .total = BPF_CORE_READ(prog, jited_len),
				      .addr = (u64)BPF_CORE_READ(prog, bpf_func) };
		c.src = (const u8 *)c.addr;
		BPF_CORE_READ_INTO(&c.tag, prog, tag);
		copy_blob(&c);
	} else {
		struct func_ctx f = { .prog = prog, .funcs = BPF_CORE_READ(aux, func),
				      .prog_id = prog_id, .time = now };
#ifdef CAPTURE_BOUNDED_LOOPS
		for (u32 i = 0; i < MAX_FUNCS && i < func_cnt; i++)
			if (copy_func(i, &f))
				break;
#else
		bpf_loop(func_cnt < MAX_FUNCS ? func_cnt : MAX_FUNCS, copy_func, &f, 0);
#endif
	}

	struct copy_ctx x = { .kind = XLATED, .prog_id = prog_id, .time = now,
			      .total = insn_cnt * 8,
			      .src = (const u8 *)__builtin_preserve_access_index(&prog->insnsi) };
	copy_blob(&x);
	if (nr_linfo) {
		struct copy_ctx l = { .kind = LINFO, .prog_id = prog_id, .time = now,
				      .total = nr_linfo * 16,
				      .src = (const u8 *)BPF_CORE_READ(aux, linfo) };
		copy_blob(&l);
		struct copy_ctx j = { .kind = JLINFO, .prog_id = prog_id, .time = now,
				      .total = nr_linfo * 8,
				      .src = (const u8 *)BPF_CORE_READ(aux, jited_linfo) };
		if (j.src)
			copy_blob(&j);
	}
	struct btf *btf = BPF_CORE_READ(aux, btf);
	if (btf) {
		struct copy_ctx b = { .kind = BTF, .prog_id = prog_id, .time = now,
				      .total = BPF_CORE_READ(btf, data_size),
				      .src = (const u8 *)BPF_CORE_READ(btf, data) };
		copy_blob(&b);
	}
	__sync_fetch_and_add(&captured, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";

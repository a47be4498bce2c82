// SPDX-License-Identifier: GPL-2.0
/* An fentry program: attaching it makes the kernel build a BPF trampoline and patch the
 * traced function's entry to call it (both are code no perf record carries whole). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("fentry/vfs_read")
int tr_fentry(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";

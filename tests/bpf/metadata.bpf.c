// SPDX-License-Identifier: GPL-2.0
/* A socket filter with bpf_metadata_* variables in .rodata (the convention bpftool and
 * perf >= 6.16 read: perf writes them as a PERF_RECORD_BPF_METADATA). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

volatile const char bpf_metadata_owner[] SEC(".rodata") = "textrace";
volatile const int bpf_metadata_answer SEC(".rodata") = 42;

SEC("socket")
int tr_metadata(void *skb)
{
	return bpf_metadata_answer + bpf_metadata_owner[0];
}

char LICENSE[] SEC("license") = "GPL";

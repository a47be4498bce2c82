// SPDX-License-Identifier: GPL-2.0
/* A socket filter that tail-calls through a program array: annotate marks the site. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} jmp SEC(".maps");

SEC("socket")
int tr_tail(struct __sk_buff *skb)
{
	bpf_tail_call(skb, &jmp, 0);
	return 1;
}

char LICENSE[] SEC("license") = "GPL";

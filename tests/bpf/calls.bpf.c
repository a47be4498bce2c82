// SPDX-License-Identifier: GPL-2.0
/* A socket filter built with clang -g (so line info and BTF exist) that calls helpers and
 * a subprogram: the test subject for annotate and callsites. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

static __attribute__((noinline)) int mix(unsigned long long v)
{
	return (int)(v ^ (v >> 7)) & 0xff;
}

SEC("socket")
int tr_calls(void *skb)
{
	unsigned long long t = bpf_ktime_get_ns();
	unsigned int r = bpf_get_prandom_u32();
	return mix(t + r) + (int)(bpf_get_smp_processor_id() & 1);
}

char LICENSE[] SEC("license") = "GPL";

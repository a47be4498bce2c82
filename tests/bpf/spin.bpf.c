// SPDX-License-Identifier: GPL-2.0
/* A socket filter built with clang -g that spends its time in its own code (a loop over
 * data the compiler cannot see), calls a helper and a subprogram: the test subject for
 * annotate's per-instruction and per-line sample counts. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

static __attribute__((noinline)) __u64 fold(__u64 v)
{
	return v ^ (v >> 13);
}

SEC("socket")
int tr_spin(struct __sk_buff *skb)
{
	__u64 acc = skb->len + bpf_get_prandom_u32();
	for (int i = 0; i < 2000; i++)
		acc = acc * 6364136223846793005ULL + (acc >> 29);
	return fold(acc) & 1;
}

char LICENSE[] SEC("license") = "GPL";

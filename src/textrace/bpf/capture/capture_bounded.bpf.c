// SPDX-License-Identifier: GPL-2.0
/*
 * The capture program for kernels without bpf_loop (before 5.17; Debian 11's 5.10): the
 * same source with bounded loops instead (see capture.bpf.c).
 */
#define CAPTURE_BOUNDED_LOOPS 1
#include "capture.bpf.c"

/* SPDX-License-Identifier: GPL-2.0 */
/* ipitrace: shims for differences between the kernel versions we build on. */
#ifndef IPITRACE_COMPAT_H
#define IPITRACE_COMPAT_H

#include <linux/cpumask.h>
/* hex_to_bin(): kernel.h has it, or includes linux/hex.h (6.2+) for it. */
#include <linux/kernel.h>

/*
 * csd:csd_queue_cpu, csd:csd_function_{entry,exit} and
 * ipi:ipi_send_{cpu,cpumask} appeared in 6.3: the probes are looked up by
 * name at load, with kprobe fallbacks where they are missing
 * (ipitrace_probes.c), so nothing here depends on their headers.
 */
/* The n-th online CPU; cpumask_nth() exists from 6.2 on. */
static inline unsigned int ipt_nth_online_cpu(unsigned int n)
{
	return cpumask_nth(n % num_online_cpus(), cpu_online_mask);
}

#endif /* IPITRACE_COMPAT_H */

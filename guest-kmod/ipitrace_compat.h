/* SPDX-License-Identifier: GPL-2.0 */
/* ipitrace: shims for differences between the kernel versions we build on. */
#ifndef IPITRACE_COMPAT_H
#define IPITRACE_COMPAT_H

#include <linux/version.h>
#include <linux/cpumask.h>

/*
 * csd:csd_queue_cpu, csd:csd_function_{entry,exit} and
 * ipi:ipi_send_{cpu,cpumask} with their current prototypes appeared in 6.3.
 */
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 3, 0)
#error "ipitrace needs Linux 6.3 or later (csd and ipi_send_* tracepoints)"
#endif

/* The n-th online CPU; cpumask_nth() exists from 6.2 on. */
static inline unsigned int ipt_nth_online_cpu(unsigned int n)
{
	return cpumask_nth(n % num_online_cpus(), cpu_online_mask);
}

#endif /* IPITRACE_COMPAT_H */

/* SPDX-License-Identifier: GPL-2.0 */
/* ipitrace: shims for differences between the kernel versions we build on. */
#ifndef IPITRACE_COMPAT_H
#define IPITRACE_COMPAT_H

/* hex_to_bin(): kernel.h has it, or includes linux/hex.h (6.2+) for it. */
#include <linux/cpumask.h>
#include <linux/kernel.h>
#include <linux/smp.h>

/*
 * Kbuild tells what the kernel lacks (IPT_NO_*): cpumask_nth() came in 6.0
 * and INIT_CSD() in 5.11; the test module uses both.
 */
#ifdef IPT_NO_CPUMASK_NTH
static inline unsigned int cpumask_nth(unsigned int n,
				       const struct cpumask *srcp)
{
	unsigned int cpu;

	for_each_cpu(cpu, srcp)
		if (n-- == 0)
			return cpu;
	return nr_cpu_ids;
}
#endif

#ifdef IPT_NO_INIT_CSD
#define INIT_CSD(_csd, _func, _info) \
	(*(_csd) = (call_single_data_t){ .func = (_func), .info = (_info) })
#endif

/*
 * csd:csd_queue_cpu, csd:csd_function_{entry,exit} and
 * ipi:ipi_send_{cpu,cpumask} appeared in 6.3: the probes are looked up by
 * name at load, with kprobe fallbacks where they are missing
 * (ipitrace_probes.c), so nothing here depends on their headers.
 */

#endif /* IPITRACE_COMPAT_H */

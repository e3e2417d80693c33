/* SPDX-License-Identifier: GPL-2.0 */
/* ipitrace: shims for differences between the kernel versions we build on. */
#ifndef IPITRACE_COMPAT_H
#define IPITRACE_COMPAT_H

/* hex_to_bin(): kernel.h has it, or includes linux/hex.h (6.2+) for it. */
#include <linux/kernel.h>

/*
 * csd:csd_queue_cpu, csd:csd_function_{entry,exit} and
 * ipi:ipi_send_{cpu,cpumask} appeared in 6.3: the probes are looked up by
 * name at load, with kprobe fallbacks where they are missing
 * (ipitrace_probes.c), so nothing here depends on their headers.
 */

#endif /* IPITRACE_COMPAT_H */

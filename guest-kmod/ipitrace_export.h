/* SPDX-License-Identifier: GPL-2.0 */
/* ipitrace: what ipitrace.ko exports, for its test module ipitrace_test.ko. */
#ifndef IPITRACE_EXPORT_H
#define IPITRACE_EXPORT_H

#include <linux/types.h>

#include "ipitrace_abi.h"

/*
 * What a writer wants recorded; the ring writer adds seq and cpu.  tsc == 0
 * means "stamp at reservation", which keeps the ring in TSC order unless an
 * IRQ lands in the few instructions between reservation and stamp.
 */
struct ipt_ev {
	u64 tsc;
	u16 type;
	u16 target;
	u8 vector;
	u8 flags;
	u32 arg0;
	u32 arg1;
	u64 a0;
	u64 a1;
	u64 a2;
};

static inline struct ipt_record *ipt_ring_records(struct ipt_ring_header *rh)
{
	return (struct ipt_record *)((u8 *)rh + IPT_RING_HEADER_SIZE);
}

/*
 * The functions below are exported (GPL) for ipitrace_test.ko, the load
 * generator and self-tests, and for nothing else.  They may be called from
 * any context, NMI included.  Without a region they write nothing.  A
 * section with preemption disabled keeps the rings it found mapped: the
 * device's removal forgets the rings, then waits for every such section to
 * end before it unmaps them.
 */

/* Append ev to this CPU's ring; call with preemption disabled. */
void ipt_write(const struct ipt_ev *ev);

/* Put a G_MARK with arg0 = mark on this CPU's ring. */
void ipt_emit_mark(u32 mark);

/*
 * This CPU's ring and its capacity in records (a power of two), or NULL
 * and 0 while no region is mapped; call with preemption disabled.
 */
struct ipt_ring_header *ipt_this_ring(u64 *capacity);

#endif /* IPITRACE_EXPORT_H */

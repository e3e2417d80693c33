/* SPDX-License-Identifier: GPL-2.0 */
/* ipitrace: lock-free per-CPU record writer for the shared-memory rings. */
#ifndef IPITRACE_RING_H
#define IPITRACE_RING_H

#include <linux/compiler.h>
#include <linux/percpu.h>
#include <linux/smp.h>
#include <asm/barrier.h>
#include <asm/local.h>
#include <asm/msr.h>

#include "ipitrace.h"

/* Ring header of this CPU's ring, NULL while no region is mapped. */
DECLARE_PER_CPU(struct ipt_ring_header *, ipt_ring);
DECLARE_PER_CPU(u64 [IPT_NR_GUEST_TYPES], ipt_rec_count);
extern u64 ipt_ring_mask;

/*
 * Append one record to the ring of the current CPU.  Called with preemption
 * disabled (tracepoint probes, or an explicit preempt_disable()).  An IRQ or
 * NMI on this CPU may nest anywhere in here: the slot is reserved with a
 * CPU-local, interrupt-safe add on the ring head (no lock prefix needed), so
 * a nested writer takes the next slot.  The readers' seqlock-style check
 * (seq must equal the expected index) rejects a slot still being written.
 */
static __always_inline void ipt_ring_write(const struct ipt_ev *ev)
{
	struct ipt_ring_header *rh = this_cpu_read(ipt_ring);
	struct ipt_record *rec;
	u64 idx;

	if (unlikely(!rh))
		return;

	idx = (u64)local_inc_return((local_t *)&rh->head) - 1;
	rec = ipt_ring_records(rh) + (idx & ipt_ring_mask);

	WRITE_ONCE(rec->seq, IPT_SEQ_INVALID);
	barrier();
	rec->tsc = ev->tsc ? ev->tsc : rdtsc_ordered();
	rec->type = ev->type;
	rec->cpu = smp_processor_id();
	rec->target = ev->target;
	rec->vector = ev->vector;
	rec->flags = ev->flags;
	rec->arg0 = ev->arg0;
	rec->arg1 = ev->arg1;
	rec->a[0] = ev->a0;
	rec->a[1] = ev->a1;
	rec->a[2] = ev->a2;
	rec->a[3] = 0;
	smp_wmb(); /* the record's fields before its seq (readers' check) */
	WRITE_ONCE(rec->seq, idx);

	if (likely(ev->type < IPT_NR_GUEST_TYPES))
		this_cpu_inc(ipt_rec_count[ev->type]);
}

#endif /* IPITRACE_RING_H */

// SPDX-License-Identifier: GPL-2.0
/* ipitrace: CSD/IPI tracepoint probes that feed the guest record stream. */
#include <linux/cpumask.h>
#include <linux/kernel.h>
#include <linux/percpu.h>
#include <linux/printk.h>
#include <linux/rcupdate.h>
#include <linux/seq_file.h>
#include <linux/smp.h>
#include <linux/smp_types.h>
#include <linux/string.h>
#include <linux/tracepoint.h>
#include <asm/irq_vectors.h>

#include "ipitrace_compat.h"
#include "ipitrace_ring.h"

/* Non-zero while this CPU runs a call-function(-single) IPI handler. */
static DEFINE_PER_CPU(int, ipt_in_cf_irq);

static __always_inline u16 ipt_cpu16(unsigned int cpu)
{
	return cpu < IPT_CPU_NONE ? cpu : IPT_CPU_NONE;
}

/* csd:csd_queue_cpu */
static void ipt_probe_queue(void *data, const unsigned int cpu,
			    unsigned long callsite, smp_call_func_t func,
			    call_single_data_t *csd)
{
	struct ipt_ev ev = {
		.type = IPT_G_QUEUE,
		.target = ipt_cpu16(cpu),
		.flags = (csd->node.u_flags & CSD_FLAG_TYPE_MASK) >> 4,
		.a0 = (unsigned long)func,
		.a1 = (unsigned long)csd,
		.a2 = callsite,
	};

	ipt_ring_write(&ev);
	/* Only sync/async csds get a csd_function_entry of their own. */
	if (ev.flags == IPT_CSD_SYNC || ev.flags == IPT_CSD_ASYNC)
		ipt_wd_track(cpu, (unsigned long)func, (unsigned long)csd,
			     callsite);
}

/* ipi:ipi_send_cpu */
static void ipt_probe_send_cpu(void *data, const unsigned int cpu,
			       unsigned long callsite, void *callback)
{
	struct ipt_ev ev = {
		.type = IPT_G_SEND,
		.target = ipt_cpu16(cpu),
		.a0 = (unsigned long)callback,
		.a1 = callsite,
	};

	ipt_ring_write(&ev);
}

/* ipi:ipi_send_cpumask: one record per target, all with one stamp. */
static void ipt_probe_send_mask(void *data, const struct cpumask *cpumask,
				unsigned long callsite, void *callback)
{
	struct ipt_ev ev = {
		.tsc = rdtsc_ordered(),
		.type = IPT_G_SEND,
		.flags = IPT_SEND_F_MASK,
		.arg0 = cpumask_weight(cpumask),
		.a0 = (unsigned long)callback,
		.a1 = callsite,
	};
	unsigned int cpu;

	for_each_cpu(cpu, cpumask) {
		ev.target = ipt_cpu16(cpu);
		ipt_ring_write(&ev);
	}
}

/* sched:sched_wake_idle_without_ipi */
static void ipt_probe_elide(void *data, int cpu)
{
	struct ipt_ev ev = {
		.type = IPT_G_ELIDE,
		.target = ipt_cpu16(cpu),
	};

	ipt_ring_write(&ev);
}

/* irq_vectors:call_function{,_single}_entry */
static void ipt_probe_irq_entry(void *data, int vector)
{
	struct ipt_ev ev = {
		.type = IPT_G_IRQ_ENTRY,
		.target = IPT_CPU_NONE,
		.vector = vector,
	};

	this_cpu_inc(ipt_in_cf_irq);
	ipt_ring_write(&ev);
}

/* irq_vectors:call_function{,_single}_exit */
static void ipt_probe_irq_exit(void *data, int vector)
{
	struct ipt_ev ev = {
		.type = IPT_G_IRQ_EXIT,
		.target = IPT_CPU_NONE,
		.vector = vector,
	};

	ipt_ring_write(&ev);
	/* Attached before the entry probes: an exit may come without entry. */
	if (this_cpu_read(ipt_in_cf_irq) > 0)
		this_cpu_dec(ipt_in_cf_irq);
}

/*
 * irq_vectors:reschedule_{entry,exit}: recorded, but a reschedule IPI does
 * not flush the call-single queue, so it does not set ipt_in_cf_irq.
 */
static void ipt_probe_resched_entry(void *data, int vector)
{
	struct ipt_ev ev = {
		.type = IPT_G_IRQ_ENTRY,
		.target = IPT_CPU_NONE,
		.vector = vector,
	};

	ipt_ring_write(&ev);
}

static void ipt_probe_resched_exit(void *data, int vector)
{
	struct ipt_ev ev = {
		.type = IPT_G_IRQ_EXIT,
		.target = IPT_CPU_NONE,
		.vector = vector,
	};

	ipt_ring_write(&ev);
}

static __always_inline void ipt_func_ev(u16 type, smp_call_func_t func,
					call_single_data_t *csd)
{
	struct ipt_ev ev = {
		.type = type,
		.target = IPT_CPU_NONE,
		.flags = this_cpu_read(ipt_in_cf_irq) ? IPT_FUNC_F_FROM_IRQ : 0,
		.a0 = (unsigned long)func,
		.a1 = (unsigned long)csd,
	};

	ipt_ring_write(&ev);
}

/* csd:csd_function_entry */
static void ipt_probe_func_entry(void *data, smp_call_func_t func,
				 call_single_data_t *csd)
{
	ipt_wd_clear((unsigned long)csd);
	ipt_func_ev(IPT_G_FUNC_ENTRY, func, csd);
}

/* csd:csd_function_exit */
static void ipt_probe_func_exit(void *data, smp_call_func_t func,
				call_single_data_t *csd)
{
	ipt_func_ev(IPT_G_FUNC_EXIT, func, csd);
}

struct ipt_tp {
	const char *name;
	void *probe;
	struct tracepoint *tp;
	bool attached;
};

/*
 * Attach order matters: exits before entries (so no entry is recorded whose
 * exit is missed), function records before IRQ records, and the request
 * side last.  Detached in reverse.
 */
static struct ipt_tp ipt_tps[] = {
	{ "reschedule_exit", ipt_probe_resched_exit },
	{ "call_function_exit", ipt_probe_irq_exit },
	{ "call_function_single_exit", ipt_probe_irq_exit },
	{ "csd_function_exit", ipt_probe_func_exit },
	{ "csd_function_entry", ipt_probe_func_entry },
	{ "call_function_entry", ipt_probe_irq_entry },
	{ "call_function_single_entry", ipt_probe_irq_entry },
	{ "reschedule_entry", ipt_probe_resched_entry },
	{ "sched_wake_idle_without_ipi", ipt_probe_elide },
	{ "ipi_send_cpu", ipt_probe_send_cpu },
	{ "ipi_send_cpumask", ipt_probe_send_mask },
	{ "csd_queue_cpu", ipt_probe_queue },
};

static void ipt_tp_match(struct tracepoint *tp, void *priv)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(ipt_tps); i++)
		if (!ipt_tps[i].tp && !strcmp(tp->name, ipt_tps[i].name))
			ipt_tps[i].tp = tp;
}

/* Find every tracepoint we need; fail naming the first one missing. */
int ipt_probes_lookup(void)
{
	unsigned int i;

	for_each_kernel_tracepoint(ipt_tp_match, NULL);
	for (i = 0; i < ARRAY_SIZE(ipt_tps); i++) {
		if (!ipt_tps[i].tp) {
			pr_err(IPT_NAME ": required tracepoint %s not found in this kernel\n",
			       ipt_tps[i].name);
			return -ENOENT;
		}
	}
	return 0;
}

static bool ipt_probes_on;

bool ipt_probes_attached(void)
{
	return ipt_probes_on;
}

/* Attach every probe (idempotent); called with ipt_lock held. */
int ipt_probes_attach(void)
{
	unsigned int i;
	int ret;

	if (ipt_probes_on)
		return 0;
	for (i = 0; i < ARRAY_SIZE(ipt_tps); i++) {
		ret = tracepoint_probe_register(ipt_tps[i].tp, ipt_tps[i].probe,
						NULL);
		if (ret) {
			pr_err(IPT_NAME ": cannot attach to tracepoint %s: %d\n",
			       ipt_tps[i].name, ret);
			goto err_detach;
		}
		ipt_tps[i].attached = true;
	}
	ipt_probes_on = true;
	ipt_wd_start();
	ipt_emit_mark(IPT_MARK_PROBES_ON);
	return 0;

err_detach:
	ipt_probes_detach();
	return ret;
}

/* Detach every attached probe and wait until none can still be running. */
void ipt_probes_detach(void)
{
	int i;

	if (ipt_probes_on)
		ipt_emit_mark(IPT_MARK_PROBES_OFF);
	ipt_wd_stop();
	for (i = ARRAY_SIZE(ipt_tps) - 1; i >= 0; i--) {
		if (!ipt_tps[i].attached)
			continue;
		WARN_ON(tracepoint_probe_unregister(ipt_tps[i].tp,
						    ipt_tps[i].probe, NULL));
		ipt_tps[i].attached = false;
	}
	tracepoint_synchronize_unregister();
	ipt_probes_on = false;
}

/*
 * For each tracepoint: how many probes are registered on it right now (ours
 * and anybody else's, e.g. ftrace), so tests can tell that nothing is left
 * behind after an unload.
 */
void ipt_probes_show(struct seq_file *m)
{
	unsigned int i, n;

	for (i = 0; i < ARRAY_SIZE(ipt_tps); i++) {
		struct tracepoint_func *f;

		n = 0;
		rcu_read_lock_sched();
		f = rcu_dereference_sched(ipt_tps[i].tp->funcs);
		while (f && f->func) {
			n++;
			f++;
		}
		rcu_read_unlock_sched();
		seq_printf(m, "%s %u %s\n", ipt_tps[i].name, n,
			   ipt_tps[i].attached ? "ours" : "-");
	}
}

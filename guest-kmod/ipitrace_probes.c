// SPDX-License-Identifier: GPL-2.0
/*
 * ipitrace: the probes that feed the guest record stream.  Each guest stage
 * (IPT_G_STAGES) is observed by its tracepoints where the kernel has them
 * (csd:* and ipi:ipi_send_* since Linux 6.3), else by a kprobe fallback, or
 * not at all; the region header says which (ipt_ghdr_ext.stage_src).
 */
#include <linux/cpumask.h>
#include <linux/kernel.h>
#include <linux/kprobes.h>
#include <linux/llist.h>
#include <linux/module.h>
#include <linux/percpu.h>
#include <linux/printk.h>
#include <linux/ptrace.h>
#include <linux/rcupdate.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/smp.h>
#include <linux/smp_types.h>
#include <linux/sort.h>
#include <linux/string.h>
#include <linux/tracepoint.h>
#include <asm/cpufeature.h>
#include <asm/irq_vectors.h>

#include "ipitrace_compat.h"
#include "ipitrace_ring.h"

static bool fallback;
module_param(fallback, bool, 0444);
MODULE_PARM_DESC(fallback,
		 "observe the queue and the send with kprobes even where the csd:* and ipi:ipi_send_* tracepoints exist, as before Linux 6.3 (default 0)");

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
	u8 stage;
	struct tracepoint *tp;
	bool attached;
};

/*
 * Attach order matters: exits before entries (so no entry is recorded whose
 * exit is missed), function records before IRQ records, and the request
 * side last.  Detached in reverse.
 */
static struct ipt_tp ipt_tps[] = {
	{ "reschedule_exit", ipt_probe_resched_exit, IPT_G_STAGE_IRQ },
	{ "call_function_exit", ipt_probe_irq_exit, IPT_G_STAGE_IRQ },
	{ "call_function_single_exit", ipt_probe_irq_exit, IPT_G_STAGE_IRQ },
	{ "csd_function_exit", ipt_probe_func_exit, IPT_G_STAGE_FUNC },
	{ "csd_function_entry", ipt_probe_func_entry, IPT_G_STAGE_FUNC },
	{ "call_function_entry", ipt_probe_irq_entry, IPT_G_STAGE_IRQ },
	{ "call_function_single_entry", ipt_probe_irq_entry, IPT_G_STAGE_IRQ },
	{ "reschedule_entry", ipt_probe_resched_entry, IPT_G_STAGE_IRQ },
	{ "sched_wake_idle_without_ipi", ipt_probe_elide, IPT_G_STAGE_ELIDE },
	{ "ipi_send_cpu", ipt_probe_send_cpu, IPT_G_STAGE_SEND },
	{ "ipi_send_cpumask", ipt_probe_send_mask, IPT_G_STAGE_SEND },
	{ "csd_queue_cpu", ipt_probe_queue, IPT_G_STAGE_QUEUE },
};

/* How each stage is observed on this kernel: IPT_G_SRC_*. */
static u8 ipt_stage_src[IPT_G_STAGE_MAX];

/* For the kernel log and debugfs: the names of IPT_G_STAGES, IPT_G_SRCS. */
static const char *const ipt_stage_names[IPT_G_STAGE_MAX] = {
	[IPT_G_STAGE_QUEUE] = "QUEUE",
	[IPT_G_STAGE_SEND] = "SEND",
	[IPT_G_STAGE_ELIDE] = "ELIDE",
	[IPT_G_STAGE_IRQ] = "IRQ",
	[IPT_G_STAGE_FUNC] = "FUNC",
};

static const char *const ipt_src_names[] = {
	[IPT_G_SRC_UNSTATED] = "UNSTATED",
	[IPT_G_SRC_TRACEPOINT] = "TRACEPOINT",
	[IPT_G_SRC_KPROBE] = "KPROBE",
	[IPT_G_SRC_NONE] = "NONE",
};

/*
 * ---- kprobe fallbacks (kernels before 6.3) ----
 *
 * Queue: every csd reaches its target's call_single_queue through
 * llist_add() -> llist_add_batch() (out of line from 3.x to at least
 * 6.12), called right where 6.3 fires csd:csd_queue_cpu: in
 * __smp_call_single_queue() and smp_call_function_many_cond().  A probe on
 * it keeps the calls whose list head is some CPU's call_single_queue.
 * Send: x86's smp_ops ends every call-function IPI in
 * native_send_call_func_single_ipi() or native_send_call_func_ipi() (KVM's
 * PV send calls the latter too), where 6.3 fires ipi:ipi_send_*.  The
 * function a request runs has no such spot before 6.3: not observed.
 */

/* A CPU's call_single_queue, for the queue probe's lookup by address. */
struct ipt_csq {
	unsigned long head;
	unsigned int cpu;
};

static struct ipt_csq *ipt_csq;
static unsigned int ipt_nr_csq;
static unsigned long ipt_ttwu_func;	/* sched_ttwu_pending, or 0 */
static unsigned long ipt_ipi_callback;	/* the call-function IPI handler, or 0 */

static int ipt_csq_cmp(const void *a, const void *b)
{
	const struct ipt_csq *x = a, *y = b;

	return x->head < y->head ? -1 : x->head > y->head;
}

/* The CPU whose call_single_queue is at head, or -1 (binary search). */
static int ipt_csq_cpu(unsigned long head)
{
	unsigned int lo = 0, hi = ipt_nr_csq;

	while (lo < hi) {
		unsigned int mid = lo + (hi - lo) / 2;

		if (ipt_csq[mid].head == head)
			return ipt_csq[mid].cpu;
		if (ipt_csq[mid].head < head)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

static int ipt_kp_queue(struct kprobe *p, struct pt_regs *regs)
{
	struct llist_node *node = (void *)regs_get_kernel_argument(regs, 0);
	unsigned long head = regs_get_kernel_argument(regs, 2);
	unsigned long callsite = regs_get_kernel_stack_nth(regs, 0);
	call_single_data_t *csd;
	smp_call_func_t func;
	int cpu;

	cpu = ipt_csq_cpu(head);
	if (cpu < 0)
		return 0;
	csd = container_of(node, call_single_data_t, node.llist);
	if ((csd->node.u_flags & CSD_FLAG_TYPE_MASK) == CSD_TYPE_TTWU)
		func = (smp_call_func_t)ipt_ttwu_func;
	else
		func = csd->func;
	ipt_probe_queue(NULL, cpu, callsite, func, csd);
	return 0;
}

/*
 * A send's callback: the call-function IPI handler, as 6.3's tracepoints
 * name it, else the probed send function.  Never 0: the agent takes a send
 * with no callback for a reschedule IPI, and would miss the request's.
 */
static void *ipt_kp_callback(struct kprobe *p)
{
	return ipt_ipi_callback ? (void *)ipt_ipi_callback : (void *)p->addr;
}

static int ipt_kp_send_single(struct kprobe *p, struct pt_regs *regs)
{
	ipt_probe_send_cpu(NULL, regs_get_kernel_argument(regs, 0),
			   regs_get_kernel_stack_nth(regs, 0), ipt_kp_callback(p));
	return 0;
}

static int ipt_kp_send_mask(struct kprobe *p, struct pt_regs *regs)
{
	ipt_probe_send_mask(NULL, (void *)regs_get_kernel_argument(regs, 0),
			    regs_get_kernel_stack_nth(regs, 0), ipt_kp_callback(p));
	return 0;
}

struct ipt_kp {
	struct kprobe kp;
	u8 stage;
	bool attached;
};

/* Attached after the tracepoints, request side last; detached first. */
static struct ipt_kp ipt_kps[] = {
	{ { .symbol_name = "native_send_call_func_single_ipi",
	    .pre_handler = ipt_kp_send_single }, IPT_G_STAGE_SEND },
	{ { .symbol_name = "native_send_call_func_ipi",
	    .pre_handler = ipt_kp_send_mask }, IPT_G_STAGE_SEND },
	{ { .symbol_name = "llist_add_batch",
	    .pre_handler = ipt_kp_queue }, IPT_G_STAGE_QUEUE },
};

/*
 * Addresses by name, once at load: the per-CPU call_single_queue and, for
 * records that name functions as 6.3's tracepoints do, the call-function
 * IPI handler and sched_ttwu_pending.  kallsyms_lookup_name() is not
 * exported (nor is /proc/kallsyms readable with kernel_read()); a kprobe
 * finds its address.  Where IBT is enforced, a function nothing calls
 * indirectly may be sealed (and the kprobe sits past its ENDBR): refuse
 * rather than fault.
 */
static const char *const ipt_ksym_names[] = {
	"call_single_queue",
	"generic_smp_call_function_single_interrupt",
	"sched_ttwu_pending",
};

static int ipt_ksyms_find(unsigned long *addr)
{
	struct kprobe kp = { .symbol_name = "kallsyms_lookup_name" };
	unsigned long (*lookup)(const char *name);
	unsigned int i;
	int ret;

#ifdef X86_FEATURE_IBT
	if (cpu_feature_enabled(X86_FEATURE_IBT)) {
		pr_err(IPT_NAME ": IBT is enforced: kallsyms_lookup_name cannot be called\n");
		return -EOPNOTSUPP;
	}
#endif
	ret = register_kprobe(&kp);
	if (ret)
		return ret;
	lookup = (void *)kp.addr;
	unregister_kprobe(&kp);
	for (i = 0; i < ARRAY_SIZE(ipt_ksym_names); i++)
		addr[i] = lookup(ipt_ksym_names[i]);
	return 0;
}

static void ipt_kps_free(void)
{
	kfree(ipt_csq);
	ipt_csq = NULL;
	ipt_nr_csq = 0;
}

/* Ready the kprobe fallbacks; on failure the stages stay unobserved. */
static int ipt_kps_prepare(void)
{
	unsigned long addr[ARRAY_SIZE(ipt_ksym_names)] = { };
	unsigned int cpu;
	int ret;

	ret = ipt_ksyms_find(addr);
	if (ret) {
		pr_err(IPT_NAME ": cannot look up kernel symbols: %d\n", ret);
		return ret;
	}
	if (!addr[0]) {
		pr_err(IPT_NAME ": no symbol call_single_queue (CONFIG_KALLSYMS_ALL=n?)\n");
		return -ENOENT;
	}
	ipt_ipi_callback = addr[1];
	ipt_ttwu_func = addr[2];
	ipt_csq = kcalloc(num_possible_cpus(), sizeof(*ipt_csq), GFP_KERNEL);
	if (!ipt_csq)
		return -ENOMEM;
	for_each_possible_cpu(cpu) {
		struct llist_head __percpu *q = (void __percpu *)addr[0];

		ipt_csq[ipt_nr_csq].head = (unsigned long)per_cpu_ptr(q, cpu);
		ipt_csq[ipt_nr_csq++].cpu = cpu;
	}
	sort(ipt_csq, ipt_nr_csq, sizeof(*ipt_csq), ipt_csq_cmp, NULL);
	return 0;
}

static void ipt_tp_match(struct tracepoint *tp, void *priv)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(ipt_tps); i++)
		if (!ipt_tps[i].tp && !strcmp(tp->name, ipt_tps[i].name))
			ipt_tps[i].tp = tp;
}

/* Whether every tracepoint of a stage exists (and may be used). */
static bool ipt_stage_has_tps(u8 stage)
{
	unsigned int i;

	if (fallback && stage != IPT_G_STAGE_ELIDE && stage != IPT_G_STAGE_IRQ)
		return false;
	for (i = 0; i < ARRAY_SIZE(ipt_tps); i++)
		if (ipt_tps[i].stage == stage && !ipt_tps[i].tp)
			return false;
	return true;
}

static bool ipt_stage_has_kps(u8 stage)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(ipt_kps); i++)
		if (ipt_kps[i].stage == stage)
			return true;
	return false;
}

bool ipt_probes_observe(unsigned int stage)
{
	return stage < IPT_G_STAGE_MAX &&
	       (ipt_stage_src[stage] == IPT_G_SRC_TRACEPOINT ||
		ipt_stage_src[stage] == IPT_G_SRC_KPROBE);
}

void ipt_probes_stage_src(u8 *src)
{
	memcpy(src, ipt_stage_src, IPT_G_STAGE_MAX);
}

/*
 * Decide how each stage is observed: its tracepoints, else its kprobe
 * fallback, else not at all.  The function stage may go unobserved (the
 * agent then judges requests up to the handler); every other stage is
 * needed, and a kernel that shows none of its forms is refused by name.
 */
int ipt_probes_lookup(void)
{
	bool kprobes = false;
	unsigned int s;
	int ret;

	for_each_kernel_tracepoint(ipt_tp_match, NULL);
	for (s = 0; s <= IPT_G_STAGE_FUNC; s++) {
		if (ipt_stage_has_tps(s)) {
			ipt_stage_src[s] = IPT_G_SRC_TRACEPOINT;
		} else if (ipt_stage_has_kps(s)) {
			ipt_stage_src[s] = IPT_G_SRC_KPROBE;
			kprobes = true;
		} else {
			ipt_stage_src[s] = IPT_G_SRC_NONE;
		}
	}
	if (kprobes) {
		ret = ipt_kps_prepare();
		if (ret)
			return ret;
	}
	for (s = 0; s <= IPT_G_STAGE_FUNC; s++) {
		pr_info(IPT_NAME ": stage %s: %s\n", ipt_stage_names[s],
			ipt_src_names[ipt_stage_src[s]]);
		if (s != IPT_G_STAGE_FUNC && ipt_stage_src[s] == IPT_G_SRC_NONE) {
			pr_err(IPT_NAME ": this kernel shows no %s (its tracepoints are missing and there is no fallback)\n",
			       ipt_stage_names[s]);
			ipt_kps_free();
			return -ENOENT;
		}
	}
	if (!ipt_probes_observe(IPT_G_STAGE_FUNC))
		ipt_wd_unobservable();
	return 0;
}

void ipt_probes_release(void)
{
	ipt_kps_free();
}

static bool ipt_probes_on;

bool ipt_probes_attached(void)
{
	return ipt_probes_on;
}

static int ipt_tps_attach(void)
{
	unsigned int i;
	int ret;

	for (i = 0; i < ARRAY_SIZE(ipt_tps); i++) {
		if (ipt_stage_src[ipt_tps[i].stage] != IPT_G_SRC_TRACEPOINT)
			continue;
		ret = tracepoint_probe_register(ipt_tps[i].tp, ipt_tps[i].probe,
						NULL);
		if (ret) {
			pr_err(IPT_NAME ": cannot attach to tracepoint %s: %d\n",
			       ipt_tps[i].name, ret);
			return ret;
		}
		ipt_tps[i].attached = true;
	}
	return 0;
}

static int ipt_kps_attach(void)
{
	unsigned int i;
	int ret;

	for (i = 0; i < ARRAY_SIZE(ipt_kps); i++) {
		struct kprobe *kp = &ipt_kps[i].kp;

		if (ipt_stage_src[ipt_kps[i].stage] != IPT_G_SRC_KPROBE)
			continue;
		/* register_kprobe() needs a clean kprobe every time. */
		*kp = (struct kprobe){ .symbol_name = kp->symbol_name,
				       .pre_handler = kp->pre_handler };
		ret = register_kprobe(kp);
		if (ret) {
			pr_err(IPT_NAME ": cannot attach a kprobe to %s: %d\n",
			       kp->symbol_name, ret);
			return ret;
		}
		ipt_kps[i].attached = true;
	}
	return 0;
}

/* Attach every probe (idempotent); called with ipt_lock held. */
int ipt_probes_attach(void)
{
	int ret;

	if (ipt_probes_on)
		return 0;
	ret = ipt_tps_attach();
	if (!ret)
		ret = ipt_kps_attach();
	if (ret) {
		ipt_probes_detach();
		return ret;
	}
	ipt_probes_on = true;
	ipt_wd_start();
	ipt_emit_mark(IPT_MARK_PROBES_ON);
	return 0;
}

/* Detach every attached probe and wait until none can still be running. */
void ipt_probes_detach(void)
{
	int i;

	if (ipt_probes_on)
		ipt_emit_mark(IPT_MARK_PROBES_OFF);
	ipt_wd_stop();
	for (i = ARRAY_SIZE(ipt_kps) - 1; i >= 0; i--) {
		if (!ipt_kps[i].attached)
			continue;
		/* Waits for running handlers (synchronize_rcu()). */
		unregister_kprobe(&ipt_kps[i].kp);
		ipt_kps[i].attached = false;
	}
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
 * behind after an unload; then each kprobe fallback in use, and how each
 * stage is observed.
 */
void ipt_probes_show(struct seq_file *m)
{
	unsigned int i, n;

	for (i = 0; i < ARRAY_SIZE(ipt_tps); i++) {
		struct tracepoint_func *f;

		if (!ipt_tps[i].tp)
			continue;
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
	for (i = 0; i < ARRAY_SIZE(ipt_kps); i++)
		if (ipt_stage_src[ipt_kps[i].stage] == IPT_G_SRC_KPROBE)
			seq_printf(m, "kprobe:%s %u %s\n",
				   ipt_kps[i].kp.symbol_name,
				   ipt_kps[i].attached ? 1 : 0,
				   ipt_kps[i].attached ? "ours" : "-");
}

/* The debugfs "stages" file: one line per stage, "STAGE SOURCE". */
void ipt_probes_show_stages(struct seq_file *m)
{
	unsigned int s;

	for (s = 0; s <= IPT_G_STAGE_FUNC; s++)
		seq_printf(m, "%s %s\n", ipt_stage_names[s],
			   ipt_src_names[ipt_stage_src[s]]);
}

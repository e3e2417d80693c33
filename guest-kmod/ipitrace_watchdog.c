// SPDX-License-Identifier: GPL-2.0
/*
 * ipitrace: CSD hang watchdog.
 *
 * The csd_queue_cpu probe records every outstanding sync/async request in a
 * small open-addressed table keyed by the csd pointer (a csd stays locked,
 * so it is queued at most once at a time); the csd_function_entry probe on
 * the target removes it.  A timer scans the table: a request outstanding
 * for csd_hang_ms gets a G_HANG record and one kernel log line naming
 * waiter, target, function and time waited; every further csd_hang_ms it
 * gets another G_HANG record (flags 1) and a line saying "continued".
 *
 * The scan runs from timers (softirq), not a workqueue: when a CPU spins
 * on a lost IPI every other CPU may soon spin behind it with preemption
 * disabled, but interrupts stay enabled there.  One pinned timer per
 * online CPU, whichever fires first scans (trylock): a CPU that spins
 * with interrupts off cannot silence the watchdog.
 */
#include <linux/atomic.h>
#include <linux/bits.h>
#include <linux/cpu.h>
#include <linux/hash.h>
#include <linux/jiffies.h>
#include <linux/kernel.h>
#include <linux/moduleparam.h>
#include <linux/printk.h>
#include <linux/seq_file.h>
#include <linux/smp.h>
#include <linux/spinlock.h>
#include <linux/timer.h>
#include <asm/tsc.h>

#include "ipitrace_ring.h"

static unsigned int csd_hang_ms = 5000;
module_param(csd_hang_ms, uint, 0444);
MODULE_PARM_DESC(csd_hang_ms,
		 "report a csd request outstanding this long (ms, 10..3600000; 0: off; default 5000 like csd_lock_timeout)");

#define IPT_WD_BITS 10
#define IPT_WD_SLOTS BIT(IPT_WD_BITS)
#define IPT_WD_PROBE 8

struct ipt_wd_slot {
	unsigned long csd;	/* 0: free; claimed with cmpxchg */
	unsigned long func;
	unsigned long callsite;
	u64 t_tsc;		/* queue TSC | 1; 0 while being (re)filled */
	u32 sender;
	u32 target;
	u32 reports;
} ____cacheline_aligned;

static struct ipt_wd_slot ipt_wd_tab[IPT_WD_SLOTS];
static DEFINE_PER_CPU(struct timer_list, ipt_wd_timer);
static DEFINE_SPINLOCK(ipt_wd_scan_lock);
static bool ipt_wd_running;
static atomic64_t ipt_wd_full;	/* requests not tracked: no free slot */
static atomic64_t ipt_wd_reports;
static atomic64_t ipt_wd_hangs;

int ipt_wd_validate(void)
{
	if (csd_hang_ms && (csd_hang_ms < 10 || csd_hang_ms > 3600000)) {
		pr_err(IPT_NAME ": csd_hang_ms=%u out of range (0 or 10..3600000)\n",
		       csd_hang_ms);
		return -EINVAL;
	}
	if (csd_hang_ms && !tsc_khz) {
		pr_err(IPT_NAME ": csd_hang_ms needs a known TSC frequency; use csd_hang_ms=0\n");
		return -EINVAL;
	}
	return 0;
}

/*
 * The watchdog clears a request when its function starts: on a kernel
 * where that is not observable (before 6.3) it would report every request.
 */
void ipt_wd_unobservable(void)
{
	if (csd_hang_ms)
		pr_info(IPT_NAME ": csd_hang_ms=%u ignored: this kernel does not show the queued function run\n",
			csd_hang_ms);
	csd_hang_ms = 0;
}

unsigned int ipt_wd_hang_ms(void)
{
	return csd_hang_ms;
}

static inline u32 ipt_wd_hash(unsigned long csd)
{
	return hash_long(csd, IPT_WD_BITS);
}

/* Probe context (preemption disabled), on the sender. */
void ipt_wd_track(unsigned int target, unsigned long func, unsigned long csd,
		  unsigned long callsite)
{
	u32 h = ipt_wd_hash(csd), i;

	if (!csd_hang_ms || !READ_ONCE(ipt_wd_running))
		return;
	for (i = 0; i < IPT_WD_PROBE; i++) {
		struct ipt_wd_slot *s = &ipt_wd_tab[(h + i) & (IPT_WD_SLOTS - 1)];
		unsigned long old = READ_ONCE(s->csd);

		if (old != csd && (old || cmpxchg(&s->csd, 0UL, csd)))
			continue;
		WRITE_ONCE(s->t_tsc, 0);
		s->func = func;
		s->callsite = callsite;
		s->sender = raw_smp_processor_id();
		s->target = target;
		s->reports = 0;
		/*
		 * Fields before t_tsc: the scan reads t_tsc, then the fields.
		 * The raw TSC (one clock on every CPU, as the records use) is
		 * far cheaper here than a clocksource read.
		 */
		smp_store_release(&s->t_tsc, rdtsc() | 1);
		return;
	}
	atomic64_inc(&ipt_wd_full);
}

/* Probe context, on the target: the request's function is about to run. */
void ipt_wd_clear(unsigned long csd)
{
	u32 h = ipt_wd_hash(csd), i;

	if (!csd_hang_ms || !READ_ONCE(ipt_wd_running))
		return;
	for (i = 0; i < IPT_WD_PROBE; i++) {
		struct ipt_wd_slot *s = &ipt_wd_tab[(h + i) & (IPT_WD_SLOTS - 1)];

		if (READ_ONCE(s->csd) != csd)
			continue;
		WRITE_ONCE(s->t_tsc, 0);
		cmpxchg(&s->csd, csd, 0UL);
		return;
	}
}

static void ipt_wd_report(struct ipt_wd_slot *s, unsigned long csd, u64 t,
			  u64 now)
{
	u64 waited = div_u64(now - t, tsc_khz);
	unsigned long func = READ_ONCE(s->func);
	u32 sender = READ_ONCE(s->sender), target = READ_ONCE(s->target);
	bool cont = s->reports > 0;
	struct ipt_ev ev = {
		.type = IPT_G_HANG,
		.target = target < IPT_CPU_NONE ? target : IPT_CPU_NONE,
		.flags = cont ? 1 : 0,
		.arg0 = waited > U32_MAX ? U32_MAX : (u32)waited,
		.arg1 = sender,
		.a0 = func,
		.a1 = csd,
		.a2 = READ_ONCE(s->callsite),
	};

	ipt_ring_write(&ev);
	s->reports++;
	atomic64_inc(&ipt_wd_reports);
	if (!cont)
		atomic64_inc(&ipt_wd_hangs);
	pr_err(IPT_NAME ": csd hang%s: CPU %u waiting %llu ms for CPU %u to run %pS\n",
	       cont ? " continued" : "", sender, waited, target, (void *)func);
}

static unsigned long ipt_wd_period(void)
{
	return msecs_to_jiffies(clamp(csd_hang_ms / 5, 10U, 1000U));
}

static void ipt_wd_scan(struct timer_list *timer)
{
	u64 now = rdtsc();
	u64 limit = (u64)csd_hang_ms * tsc_khz;	/* in TSC cycles */
	unsigned int i;

	if (!spin_trylock(&ipt_wd_scan_lock))
		goto rearm;
	for (i = 0; i < IPT_WD_SLOTS; i++) {
		struct ipt_wd_slot *s = &ipt_wd_tab[i];
		unsigned long csd = READ_ONCE(s->csd);
		u64 t;

		if (!csd)
			continue;
		t = smp_load_acquire(&s->t_tsc); /* pairs with ipt_wd_track() */
		if (!t || now < t || now - t < limit * (s->reports + 1))
			continue;
		if (READ_ONCE(s->csd) != csd || READ_ONCE(s->t_tsc) != t)
			continue;
		ipt_wd_report(s, csd, t, now);
	}
	spin_unlock(&ipt_wd_scan_lock);
rearm:
	/* Pinned: stays on this CPU (or where hotplug migrated it). */
	if (READ_ONCE(ipt_wd_running))
		mod_timer(timer, jiffies + ipt_wd_period());
}

/* Called with ipt_lock held, after the probes are attached. */
void ipt_wd_start(void)
{
	unsigned int cpu;

	if (!csd_hang_ms || ipt_wd_running)
		return;
	memset(ipt_wd_tab, 0, sizeof(ipt_wd_tab));
	WRITE_ONCE(ipt_wd_running, true);
	cpus_read_lock();
	for_each_possible_cpu(cpu) {
		struct timer_list *t = per_cpu_ptr(&ipt_wd_timer, cpu);

		timer_setup(t, ipt_wd_scan, TIMER_PINNED);
		if (!cpu_online(cpu))
			continue;
		t->expires = jiffies + ipt_wd_period();
		add_timer_on(t, cpu);
	}
	cpus_read_unlock();
}

/* Called with ipt_lock held; the table is drained (forgotten). */
void ipt_wd_stop(void)
{
	unsigned int cpu;

	if (!ipt_wd_running)
		return;
	WRITE_ONCE(ipt_wd_running, false);
	for_each_possible_cpu(cpu)
		del_timer_sync(per_cpu_ptr(&ipt_wd_timer, cpu));
}

void ipt_wd_show(struct seq_file *m)
{
	unsigned int i, n = 0;

	for (i = 0; i < IPT_WD_SLOTS; i++)
		if (READ_ONCE(ipt_wd_tab[i].csd))
			n++;
	seq_printf(m, "csd_hang_ms %u\nrunning %d\noutstanding %u\nhangs %lld\nreports %lld\nuntracked %lld\n",
		   csd_hang_ms, ipt_wd_running, n,
		   atomic64_read(&ipt_wd_hangs), atomic64_read(&ipt_wd_reports),
		   atomic64_read(&ipt_wd_full));
}

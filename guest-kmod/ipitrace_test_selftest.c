// SPDX-License-Identifier: GPL-2.0
/*
 * ipitrace_test: self-test writers and knobs (debugfs ipitrace_test/):
 *
 *   nest   write MS: for MS ms, one kthread per online CPU writes G_MARK
 *          records back to back while a pinned hrtimer on the same CPU
 *          writes nested records from hardirq context and sends an NMI to
 *          the next CPU, whose NMI handler writes records too.  The outer
 *          writer stops at 3/4 of the ring (so nothing is overwritten; the
 *          nested writers go on).  Every 16th outer write is preceded by
 *          an irq_work self-IPI, whose handler writes a record too: on
 *          TCG it is taken at the next block boundary, often mid-write.
 *          Read it for per-CPU counts.
 *   fire   write "N T": from the writing CPU, N smp_call_function_single()
 *          calls (wait=1) to CPU T, bracketed by FIRE_BEGIN/END marks:
 *          exactly N call-function-single IPIs when T is not idle (an idle
 *          polling CPU is served without one; see "busy").
 *   busy   write T: a kthread keeps CPU T out of idle; write -1: stop.
 *   hang   write "T MS": CPU T spins with interrupts off for MS ms while
 *          this CPU queues an async csd (ipt_hang_func) to it: a request
 *          outstanding for MS ms, for the watchdog.
 */
#include <linux/atomic.h>
#include <linux/cpu.h>
#include <linux/cpumask.h>
#include <linux/debugfs.h>
#include <linux/delay.h>
#include <linux/err.h>
#include <linux/hrtimer.h>
#include <linux/irq_work.h>
#include <linux/kthread.h>
#include <linux/moduleparam.h>
#include <linux/mutex.h>
#include <linux/percpu.h>
#include <linux/preempt.h>
#include <linux/sched.h>
#include <linux/timekeeping.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/smp.h>
#include <linux/uaccess.h>
#include <linux/workqueue.h>
#include <asm/apic.h>
#include <asm/irq_vectors.h>
#include <asm/nmi.h>

#include "ipitrace_compat.h"
#include "ipitrace_test.h"

static bool nest_nmi = true;
module_param(nest_nmi, bool, 0644);
MODULE_PARM_DESC(nest_nmi, "nest self-test also writes from NMIs (default 1)");

#define IPT_NEST_PERIOD_NS (50 * NSEC_PER_USEC)

struct ipt_nest_pcpu {
	struct hrtimer timer;
	struct irq_work iw;
	struct task_struct *task;
	atomic_t nmi_pending;
	bool active;
	u64 n_outer;
	u64 n_timer;
	u64 n_nmi;
	u64 n_iw;
	u64 interleaved;	/* another record landed around an outer write */
	u64 midwrite;		/* ... and was reserved after the outer one */
};

static DEFINE_PER_CPU(struct ipt_nest_pcpu, ipt_nest);
static DEFINE_MUTEX(ipt_st_lock);
static bool ipt_nest_ran;

static void ipt_nest_write(u32 id, u64 n)
{
	struct ipt_ev ev = {
		.type = IPT_G_MARK,
		.target = IPT_CPU_NONE,
		.arg0 = id,
		.arg1 = (u32)n,
		.a0 = n,
		.a1 = ~n,
		.a2 = n ^ IPT_NEST_SALT,
	};

	ipt_write(&ev);
}

static int ipt_nest_nmi(unsigned int type, struct pt_regs *regs)
{
	struct ipt_nest_pcpu *p = this_cpu_ptr(&ipt_nest);

	if (!atomic_xchg(&p->nmi_pending, 0))
		return NMI_DONE;
	ipt_nest_write(IPT_MARK_NEST_NMI, p->n_nmi++);
	return NMI_HANDLED;
}

/* Self-IPI (irq_work) raised just before an outer write: lands inside it. */
static void ipt_nest_irq_work(struct irq_work *w)
{
	struct ipt_nest_pcpu *p = this_cpu_ptr(&ipt_nest);

	ipt_nest_write(IPT_MARK_NEST_IRQWORK, p->n_iw++);
}

static enum hrtimer_restart ipt_nest_timer(struct hrtimer *t)
{
	struct ipt_nest_pcpu *p = this_cpu_ptr(&ipt_nest);
	unsigned int self = smp_processor_id(), next;

	if (!READ_ONCE(p->active))
		return HRTIMER_NORESTART;
	ipt_nest_write(IPT_MARK_NEST_TIMER, p->n_timer++);
	if (READ_ONCE(nest_nmi)) {
		next = cpumask_next(self, cpu_online_mask);
		if (next >= nr_cpu_ids)
			next = cpumask_first(cpu_online_mask);
		if (next != self && READ_ONCE(per_cpu(ipt_nest, next).active)) {
			atomic_inc(&per_cpu(ipt_nest, next).nmi_pending);
			apic->send_IPI(next, NMI_VECTOR);
		}
	}
	hrtimer_forward_now(t, ns_to_ktime(IPT_NEST_PERIOD_NS));
	return HRTIMER_RESTART;
}

static void ipt_wait_stop(void)
{
	for (;;) {
		set_current_state(TASK_INTERRUPTIBLE);
		if (kthread_should_stop())
			break;
		schedule();
	}
	__set_current_state(TASK_RUNNING);
}

static int ipt_nest_thread(void *arg)
{
	unsigned long deadline = jiffies + msecs_to_jiffies((uintptr_t)arg);
	struct ipt_nest_pcpu *p = this_cpu_ptr(&ipt_nest);
	unsigned int k;

	init_irq_work(&p->iw, ipt_nest_irq_work);
	hrtimer_init(&p->timer, CLOCK_MONOTONIC, HRTIMER_MODE_REL_PINNED_HARD);
	p->timer.function = ipt_nest_timer;
	WRITE_ONCE(p->active, true);
	hrtimer_start(&p->timer, ns_to_ktime(IPT_NEST_PERIOD_NS),
		      HRTIMER_MODE_REL_PINNED_HARD);
	while (!kthread_should_stop() && time_before(jiffies, deadline)) {
		struct ipt_ring_header *rh;
		u64 cap;

		preempt_disable();
		rh = ipt_this_ring(&cap);
		/* Up to 3/4 of the ring; then only the nested writers go on. */
		if (!rh || READ_ONCE(rh->head) >= cap * 3 / 4) {
			preempt_enable();
			usleep_range(100, 200);
			continue;
		}
		for (k = 0; k < 64; k++) {
			u64 h0 = READ_ONCE(rh->head);
			u64 n = p->n_outer++, h1;
			struct ipt_record *last;

			if (!(k & 15))
				irq_work_queue(&p->iw);
			ipt_nest_write(IPT_MARK_NEST_OUTER, n);
			h1 = READ_ONCE(rh->head);
			if (h1 - h0 <= 1)
				continue;
			p->interleaved++;
			/* not the newest slot: a nested writer came after our
			 * reservation, i.e. while this record was being written
			 */
			last = ipt_ring_records(rh) + ((h1 - 1) & (cap - 1));
			if (READ_ONCE(last->arg0) != IPT_MARK_NEST_OUTER ||
			    READ_ONCE(last->a[0]) != n)
				p->midwrite++;
		}
		preempt_enable();
		cond_resched();
	}
	WRITE_ONCE(p->active, false);
	hrtimer_cancel(&p->timer);
	irq_work_sync(&p->iw);
	ipt_wait_stop();
	return 0;
}

static int ipt_nest_run(unsigned int ms)
{
	unsigned int cpu;
	bool nmi = READ_ONCE(nest_nmi);
	bool armed;
	u64 cap;
	int ret = 0;

	preempt_disable();
	armed = ipt_this_ring(&cap);
	preempt_enable();
	if (!armed)
		return -ENODEV;
	if (nmi) {
		ret = register_nmi_handler(NMI_LOCAL, ipt_nest_nmi, 0, "ipt_nest");
		if (ret)
			return ret;
	}
	cpus_read_lock();
	for_each_online_cpu(cpu) {
		struct ipt_nest_pcpu *p = per_cpu_ptr(&ipt_nest, cpu);

		p->task = kthread_create(ipt_nest_thread, (void *)(uintptr_t)ms,
					 "ipt_nest/%u", cpu);
		if (IS_ERR(p->task)) {
			ret = PTR_ERR(p->task);
			p->task = NULL;
			break;
		}
		kthread_bind(p->task, cpu);
		get_task_struct(p->task);
		wake_up_process(p->task);
	}
	msleep(ms);
	for_each_online_cpu(cpu) {
		struct ipt_nest_pcpu *p = per_cpu_ptr(&ipt_nest, cpu);

		if (!p->task)
			continue;
		kthread_stop(p->task);
		put_task_struct(p->task);
		p->task = NULL;
	}
	cpus_read_unlock();
	if (nmi)
		unregister_nmi_handler(NMI_LOCAL, "ipt_nest");
	ipt_nest_ran = true;
	return ret;
}

static int ipt_nest_show(struct seq_file *m, void *v)
{
	unsigned int cpu;

	if (!ipt_nest_ran)
		return 0;
	for_each_possible_cpu(cpu) {
		struct ipt_nest_pcpu *p = per_cpu_ptr(&ipt_nest, cpu);

		seq_printf(m, "cpu %u outer %llu timer %llu nmi %llu interleaved %llu irqwork %llu midwrite %llu\n",
			   cpu, p->n_outer, p->n_timer, p->n_nmi,
			   p->interleaved, p->n_iw, p->midwrite);
	}
	return 0;
}

static int ipt_nest_open(struct inode *inode, struct file *file)
{
	return single_open(file, ipt_nest_show, NULL);
}

static ssize_t ipt_nest_write_op(struct file *file, const char __user *buf,
				 size_t count, loff_t *ppos)
{
	unsigned int ms;
	int ret;

	ret = kstrtouint_from_user(buf, count, 0, &ms);
	if (ret)
		return ret;
	if (ms < 1 || ms > 60000) {
		pr_err(IPT_TEST_NAME ": nest: duration %u ms out of range 1..60000\n",
		       ms);
		return -EINVAL;
	}
	mutex_lock(&ipt_st_lock);
	ret = ipt_nest_run(ms);
	mutex_unlock(&ipt_st_lock);
	return ret ? ret : count;
}

static const struct file_operations ipt_nest_fops = {
	.owner = THIS_MODULE,
	.open = ipt_nest_open,
	.read = seq_read,
	.llseek = seq_lseek,
	.release = single_release,
	.write = ipt_nest_write_op,
};

/* ---- fire ---- */

static DEFINE_PER_CPU(u64, ipt_fire_calls);
static u64 ipt_fire_last_n, ipt_fire_last_target, ipt_fire_last_from;

static void ipt_fire_func(void *info)
{
	this_cpu_inc(ipt_fire_calls);
}

static struct task_struct *ipt_busy_task;
static int ipt_busy_cpu = -1;

/* Keeps a CPU out of idle (where a call can be served without an IPI). */
static int ipt_busy_thread(void *arg)
{
	while (!kthread_should_stop()) {
		cpu_relax();
		cond_resched();
	}
	return 0;
}

static void ipt_busy_stop(void)
{
	if (!ipt_busy_task)
		return;
	kthread_stop(ipt_busy_task);
	put_task_struct(ipt_busy_task);
	ipt_busy_task = NULL;
	ipt_busy_cpu = -1;
}

/* "busy": write T to keep CPU T busy, -1 to stop; read the CPU or -1. */
static int ipt_busy_get(void *data, u64 *val)
{
	*val = (u64)(s64)ipt_busy_cpu;
	return 0;
}

static int ipt_busy_set(void *data, u64 val)
{
	s64 cpu = (s64)val;
	int ret = 0;

	mutex_lock(&ipt_st_lock);
	ipt_busy_stop();
	if (cpu < 0)
		goto out;
	if (cpu >= nr_cpu_ids || !cpu_online(cpu)) {
		pr_err(IPT_TEST_NAME ": busy: CPU %lld is not online\n", cpu);
		ret = -EINVAL;
		goto out;
	}
	ipt_busy_task = kthread_create(ipt_busy_thread, NULL, "ipt_busy/%lld",
				       cpu);
	if (IS_ERR(ipt_busy_task)) {
		ret = PTR_ERR(ipt_busy_task);
		ipt_busy_task = NULL;
		goto out;
	}
	kthread_bind(ipt_busy_task, cpu);
	get_task_struct(ipt_busy_task);
	wake_up_process(ipt_busy_task);
	ipt_busy_cpu = cpu;
out:
	mutex_unlock(&ipt_st_lock);
	return ret;
}
DEFINE_DEBUGFS_ATTRIBUTE_SIGNED(ipt_busy_fops, ipt_busy_get, ipt_busy_set, "%lld\n");

static void ipt_mark(u32 id, unsigned int target, u32 n)
{
	struct ipt_ev ev = {
		.type = IPT_G_MARK,
		.target = target,
		.arg0 = id,
		.arg1 = n,
	};

	ipt_write(&ev);
}

/* Body of "fire", on a CPU other than the target (a work item). */
static long ipt_fire_run(void *arg)
{
	unsigned int target = (u32)(uintptr_t)arg, n = (u64)(uintptr_t)arg >> 32;
	unsigned int self, i;
	int ret = 0;

	self = get_cpu();
	ipt_mark(IPT_MARK_FIRE_BEGIN, target, n);
	for (i = 0; i < n; i++) {
		ret = smp_call_function_single(target, ipt_fire_func, NULL, 1);
		if (ret)
			break;
	}
	ipt_mark(IPT_MARK_FIRE_END, target, i);
	put_cpu();
	ipt_fire_last_n = i;
	ipt_fire_last_target = target;
	ipt_fire_last_from = self;
	return ret;
}

/*
 * Run fn(arg) in a work item on an online CPU other than @avoid, so that
 * whatever the writer's CPU is, the target is a remote CPU.
 */
static int ipt_on_other_cpu(unsigned int avoid, long (*fn)(void *),
			    void *arg)
{
	unsigned int cpu;
	long ret;

	cpus_read_lock();
	cpu = cpumask_any_but(cpu_online_mask, avoid);
	if (cpu >= nr_cpu_ids || !cpu_online(avoid)) {
		cpus_read_unlock();
		pr_err(IPT_TEST_NAME ": CPU %u must be online, with another online CPU\n",
		       avoid);
		return -EINVAL;
	}
	ret = work_on_cpu(cpu, fn, arg);
	cpus_read_unlock();
	return ret;
}

static int ipt_parse2(const char __user *ubuf, size_t count, unsigned int *a,
		      unsigned int *b)
{
	char buf[32];

	if (count >= sizeof(buf))
		return -EINVAL;
	if (copy_from_user(buf, ubuf, count))
		return -EFAULT;
	buf[count] = 0;
	if (sscanf(buf, "%u %u", a, b) != 2)
		return -EINVAL;
	return 0;
}

static ssize_t ipt_fire_write(struct file *file, const char __user *ubuf,
			      size_t count, loff_t *ppos)
{
	unsigned int n, target;
	int ret;

	ret = ipt_parse2(ubuf, count, &n, &target);
	if (ret) {
		pr_err(IPT_TEST_NAME ": fire: write \"N T\" (N calls to CPU T)\n");
		return ret;
	}
	if (n < 1 || n > 1000000 || target >= nr_cpu_ids ||
	    !cpu_online(target)) {
		pr_err(IPT_TEST_NAME ": fire: N must be 1..1000000 and T an online CPU\n");
		return -EINVAL;
	}
	mutex_lock(&ipt_st_lock);
	ret = ipt_on_other_cpu(target, ipt_fire_run,
			       (void *)(uintptr_t)((u64)n << 32 | target));
	mutex_unlock(&ipt_st_lock);
	return ret ? ret : count;
}

static int ipt_fire_show(struct seq_file *m, void *v)
{
	unsigned int cpu;

	seq_printf(m, "last n %llu from %llu target %llu\n", ipt_fire_last_n,
		   ipt_fire_last_from, ipt_fire_last_target);
	for_each_possible_cpu(cpu)
		seq_printf(m, "cpu %u calls %llu\n", cpu,
			   per_cpu(ipt_fire_calls, cpu));
	return 0;
}

static int ipt_fire_open(struct inode *inode, struct file *file)
{
	return single_open(file, ipt_fire_show, NULL);
}

static const struct file_operations ipt_fire_fops = {
	.owner = THIS_MODULE,
	.open = ipt_fire_open,
	.read = seq_read,
	.llseek = seq_lseek,
	.release = single_release,
	.write = ipt_fire_write,
};

/* ---- hang ---- */

static call_single_data_t ipt_hang_csd;
static struct task_struct *ipt_hang_task;
static int ipt_hang_spinning;
static int ipt_hang_queued;
static atomic_t ipt_hang_runs = ATOMIC_INIT(0);

static void ipt_hang_func(void *info)
{
	atomic_inc(&ipt_hang_runs);
}

static int ipt_hang_thread(void *arg)
{
	unsigned int ms = (uintptr_t)arg;
	unsigned long flags;

	u64 end;

	local_irq_save(flags);
	WRITE_ONCE(ipt_hang_spinning, 1);
	/*
	 * Spin MS ms from the moment the csd is queued (however late the
	 * writer gets to it on a loaded host), 10 s at most in all.
	 */
	end = ktime_get_mono_fast_ns() + 10 * NSEC_PER_SEC;
	while (!READ_ONCE(ipt_hang_queued) && ktime_get_mono_fast_ns() < end)
		cpu_relax();
	end = ktime_get_mono_fast_ns() + (u64)ms * NSEC_PER_MSEC;
	while (ktime_get_mono_fast_ns() < end)
		cpu_relax();
	WRITE_ONCE(ipt_hang_spinning, 2);
	local_irq_restore(flags);
	ipt_wait_stop();
	return 0;
}

/*
 * Work item on a CPU other than T: start the spinner, wait until T spins,
 * then queue to it.  The spinner is woken here, not by the writer: the
 * writer may itself run on T, and a spinner woken from there can preempt
 * it and spin with interrupts off before the writer ever hands the queueing
 * to another CPU.
 */
static long ipt_hang_queue(void *arg)
{
	unsigned int target = (uintptr_t)arg, i;
	int ret;

	wake_up_process(ipt_hang_task);
	for (i = 0; i < 400 && !READ_ONCE(ipt_hang_spinning); i++)
		msleep(20);
	if (READ_ONCE(ipt_hang_spinning) != 1) {
		pr_err(IPT_TEST_NAME ": hang: CPU %u did not start spinning\n",
		       target);
		WRITE_ONCE(ipt_hang_queued, 1);
		return -EIO;
	}
	INIT_CSD(&ipt_hang_csd, ipt_hang_func, NULL);
	ret = smp_call_function_single_async(target, &ipt_hang_csd);
	WRITE_ONCE(ipt_hang_queued, 1);
	return ret;
}

static ssize_t ipt_hang_write(struct file *file, const char __user *ubuf,
			      size_t count, loff_t *ppos)
{
	unsigned int target, ms;
	int ret;

	ret = ipt_parse2(ubuf, count, &target, &ms);
	if (ret) {
		pr_err(IPT_TEST_NAME ": hang: write \"T MS\"\n");
		return ret;
	}
	if (target >= nr_cpu_ids || !cpu_online(target) || ms < 1 ||
	    ms > 15000 || num_online_cpus() < 2) {
		pr_err(IPT_TEST_NAME ": hang: T must be an online CPU (of >= 2), MS 1..15000\n");
		return -EINVAL;
	}
	mutex_lock(&ipt_st_lock);
	if (ipt_hang_task) {
		kthread_stop(ipt_hang_task);
		put_task_struct(ipt_hang_task);
		ipt_hang_task = NULL;
	}
	WRITE_ONCE(ipt_hang_spinning, 0);
	WRITE_ONCE(ipt_hang_queued, 0);
	ipt_hang_task = kthread_create(ipt_hang_thread, (void *)(uintptr_t)ms,
				       "ipt_hang/%u", target);
	if (IS_ERR(ipt_hang_task)) {
		ret = PTR_ERR(ipt_hang_task);
		ipt_hang_task = NULL;
		goto out;
	}
	kthread_bind(ipt_hang_task, target);
	get_task_struct(ipt_hang_task);
	/* This CPU may be T itself: start, wait and queue from another one. */
	ret = ipt_on_other_cpu(target, ipt_hang_queue,
			       (void *)(uintptr_t)target);
	pr_info(IPT_TEST_NAME ": hang: queued ipt_hang_func to CPU %u spinning %u ms: %d\n",
		target, ms, ret);
out:
	mutex_unlock(&ipt_st_lock);
	return ret ? ret : count;
}

static int ipt_hang_show(struct seq_file *m, void *v)
{
	seq_printf(m, "spinning %d runs %d\nfunc %lu csd %lu\n",
		   READ_ONCE(ipt_hang_spinning), atomic_read(&ipt_hang_runs),
		   (unsigned long)ipt_hang_func, (unsigned long)&ipt_hang_csd);
	return 0;
}

static int ipt_hang_open(struct inode *inode, struct file *file)
{
	return single_open(file, ipt_hang_show, NULL);
}

static const struct file_operations ipt_hang_fops = {
	.owner = THIS_MODULE,
	.open = ipt_hang_open,
	.read = seq_read,
	.llseek = seq_lseek,
	.release = single_release,
	.write = ipt_hang_write,
};

void ipt_selftest_debugfs(struct dentry *dir)
{
	debugfs_create_file("nest", 0600, dir, NULL, &ipt_nest_fops);
	debugfs_create_file("fire", 0600, dir, NULL, &ipt_fire_fops);
	debugfs_create_file("hang", 0600, dir, NULL, &ipt_hang_fops);
	debugfs_create_file_unsafe("busy", 0600, dir, NULL, &ipt_busy_fops);
}

/* Join the busy and hang threads (module exit). */
void ipt_selftest_stop(void)
{
	mutex_lock(&ipt_st_lock);
	ipt_busy_stop();
	if (ipt_hang_task) {
		kthread_stop(ipt_hang_task);
		put_task_struct(ipt_hang_task);
		ipt_hang_task = NULL;
	}
	mutex_unlock(&ipt_st_lock);
}

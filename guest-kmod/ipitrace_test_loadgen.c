// SPDX-License-Identifier: GPL-2.0
/* ipitrace_test: scftorture-like smp_call_function load generator. */
#include <linux/cpu.h>
#include <linux/cpumask.h>
#include <linux/debugfs.h>
#include <linux/delay.h>
#include <linux/err.h>
#include <linux/hrtimer.h>
#include <linux/kthread.h>
#include <linux/ktime.h>
#include <linux/moduleparam.h>
#include <linux/mutex.h>
#include <linux/preempt.h>
#include <linux/sched.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/smp.h>
#include <linux/string.h>

#include "ipitrace_compat.h"
#include "ipitrace_test.h"

static int load_threads;
module_param(load_threads, int, 0444);
MODULE_PARM_DESC(load_threads, "load kthreads (default: online CPUs)");

static char *load_mode = "single";
module_param(load_mode, charp, 0444);
MODULE_PARM_DESC(load_mode,
		 "single: round-robin smp_call_function_single (load_wait); single-wait: same, always waiting; many: smp_call_function_many to the other CPUs of load_cpus; all: smp_call_function (every other online CPU); local: smp_call_function_single to the calling CPU (no IPI: csd_function_entry/exit only, for probe cost)");

static bool load_wait = true;
module_param(load_wait, bool, 0444);
MODULE_PARM_DESC(load_wait, "wait for the called function to finish");

static unsigned int load_rate;
module_param(load_rate, uint, 0644);
MODULE_PARM_DESC(load_rate, "calls per second per thread (0: unlimited)");

/*
 * A fixed sleep after every call, however slow the calls are: each CPU then
 * goes idle regularly, and its idle flush serves requests whose IPI was
 * lost, so one boot survives many injected losses (validation runs).
 */
static unsigned int load_gap_us;
module_param(load_gap_us, uint, 0644);
MODULE_PARM_DESC(load_gap_us, "sleep after every call, microseconds (0: none)");

static char *load_cpus;
module_param(load_cpus, charp, 0444);
MODULE_PARM_DESC(load_cpus,
		 "cpulist the threads run on and call (default: all online)");

static bool load_run;

/* Serialises load start/stop; ipt_load_live: between init and exit. */
static DEFINE_MUTEX(ipt_load_lock);
static bool ipt_load_live;

enum ipt_load_kind { IPT_LOAD_SINGLE, IPT_LOAD_MANY, IPT_LOAD_ALL,
		     IPT_LOAD_LOCAL };
static enum ipt_load_kind ipt_load_kind;
static bool ipt_load_do_wait;
static struct cpumask ipt_load_set;

/* The last (or current) run, for the ops/s report. */
static u64 ipt_load_t0, ipt_load_t1, ipt_load_ops0, ipt_load_ops1;

/* Calls issued by the load kthreads, and load functions run, per CPU. */
static DEFINE_PER_CPU(u64, ipt_load_ops);
static DEFINE_PER_CPU(u64, ipt_load_calls);

static struct task_struct **ipt_load_tasks;
static unsigned int ipt_load_ntasks;

static void ipt_load_func(void *info)
{
	this_cpu_inc(ipt_load_calls);
}

static u64 ipt_load_sum(void)
{
	unsigned int cpu;
	u64 sum = 0;

	for_each_possible_cpu(cpu)
		sum += per_cpu(ipt_load_ops, cpu);
	return sum;
}

/* Sleep until this thread's next call is due (load_rate > 0). */
static void ipt_load_pace(ktime_t t0, u64 n)
{
	unsigned int rate = READ_ONCE(load_rate);
	unsigned int gap = READ_ONCE(load_gap_us);
	ktime_t due;

	if (gap)
		usleep_range(gap, gap + gap / 8);
	if (!rate)
		return;
	due = ktime_add_ns(t0, div_u64(n * NSEC_PER_SEC, rate));
	if (ktime_after(due, ktime_get())) {
		set_current_state(TASK_INTERRUPTIBLE);
		schedule_hrtimeout_range(&due, 20 * NSEC_PER_USEC,
					 HRTIMER_MODE_ABS);
	}
}

static int ipt_load_thread(void *arg)
{
	unsigned int self = raw_smp_processor_id();
	unsigned int t = self;
	ktime_t t0 = ktime_get();
	struct cpumask *mask;
	u64 n = 0;

	mask = kmalloc(cpumask_size(), GFP_KERNEL);
	if (!mask)
		return -ENOMEM;
	while (!kthread_should_stop()) {
		cpumask_and(mask, &ipt_load_set, cpu_online_mask);
		cpumask_clear_cpu(self, mask);
		if (ipt_load_kind == IPT_LOAD_LOCAL) {
			smp_call_function_single(self, ipt_load_func, NULL, 1);
			goto done;
		}
		if (cpumask_empty(mask)) {
			schedule_timeout_interruptible(HZ / 10);
			continue;
		}
		switch (ipt_load_kind) {
		case IPT_LOAD_MANY:
			preempt_disable();
			smp_call_function_many(mask, ipt_load_func, NULL,
					       ipt_load_do_wait);
			preempt_enable();
			break;
		case IPT_LOAD_ALL:
			smp_call_function(ipt_load_func, NULL,
					  ipt_load_do_wait);
			break;
		default:
			t = cpumask_next(t, mask);
			if (t >= nr_cpu_ids)
				t = cpumask_first(mask);
			smp_call_function_single(t, ipt_load_func, NULL,
						 ipt_load_do_wait);
			break;
		}
done:
		this_cpu_inc(ipt_load_ops);
		ipt_load_pace(t0, ++n);
		cond_resched();
	}
	kfree(mask);
	return 0;
}

int ipt_load_validate(void)
{
	if (!load_threads)
		load_threads = num_online_cpus();
	if (load_threads < 1 || load_threads > 4 * (int)nr_cpu_ids) {
		pr_err(IPT_TEST_NAME ": load_threads=%d out of range 1..%u\n",
		       load_threads, 4 * nr_cpu_ids);
		return -EINVAL;
	}
	ipt_load_do_wait = load_wait;
	if (load_mode && !strcmp(load_mode, "single")) {
		ipt_load_kind = IPT_LOAD_SINGLE;
	} else if (load_mode && !strcmp(load_mode, "single-wait")) {
		ipt_load_kind = IPT_LOAD_SINGLE;
		ipt_load_do_wait = true;
	} else if (load_mode && !strcmp(load_mode, "many")) {
		ipt_load_kind = IPT_LOAD_MANY;
	} else if (load_mode && !strcmp(load_mode, "all")) {
		ipt_load_kind = IPT_LOAD_ALL;
	} else if (load_mode && !strcmp(load_mode, "local")) {
		ipt_load_kind = IPT_LOAD_LOCAL;
	} else {
		pr_err(IPT_TEST_NAME ": load_mode must be single, single-wait, many, all or local\n");
		return -EINVAL;
	}
	if (load_gap_us > 1000000) {
		pr_err(IPT_TEST_NAME ": load_gap_us=%u out of range 0..1000000\n",
		       load_gap_us);
		return -EINVAL;
	}
	if (load_rate > 10000000) {
		pr_err(IPT_TEST_NAME ": load_rate=%u out of range 0..10000000\n",
		       load_rate);
		return -EINVAL;
	}
	if (load_cpus && *load_cpus) {
		int ret = cpulist_parse(load_cpus, &ipt_load_set);

		if (ret || cpumask_empty(&ipt_load_set)) {
			pr_err(IPT_TEST_NAME ": load_cpus=\"%s\" is not a non-empty cpulist of possible CPUs\n",
			       load_cpus);
			return -EINVAL;
		}
		if (!cpumask_subset(&ipt_load_set, cpu_possible_mask)) {
			pr_err(IPT_TEST_NAME ": load_cpus=\"%s\" names CPUs that do not exist\n",
			       load_cpus);
			return -EINVAL;
		}
	} else {
		cpumask_copy(&ipt_load_set, cpu_possible_mask);
	}
	return 0;
}

static void ipt_load_stop(void);

/* Start the load kthreads; called with ipt_load_lock held. */
static int ipt_load_start(void)
{
	static struct cpumask on;
	struct task_struct *t;
	unsigned int i;
	int ret;

	if (ipt_load_tasks)
		return 0;
	ipt_load_tasks = kcalloc(load_threads, sizeof(*ipt_load_tasks),
				 GFP_KERNEL);
	if (!ipt_load_tasks)
		return -ENOMEM;

	ipt_emit_mark(IPT_MARK_LOAD_START);
	cpus_read_lock();
	cpumask_and(&on, &ipt_load_set, cpu_online_mask);
	if (cpumask_empty(&on)) {
		cpus_read_unlock();
		pr_err(IPT_TEST_NAME ": no CPU of load_cpus is online\n");
		ret = -EINVAL;
		goto err_stop;
	}
	for (i = 0; i < load_threads; i++) {
		unsigned int cpu = cpumask_nth(i % cpumask_weight(&on), &on);

		t = kthread_create(ipt_load_thread, NULL, "ipt_load/%u", i);
		if (IS_ERR(t)) {
			ret = PTR_ERR(t);
			pr_err(IPT_TEST_NAME ": cannot create load thread %u: %d\n",
			       i, ret);
			cpus_read_unlock();
			goto err_stop;
		}
		kthread_bind(t, cpu);
		ipt_load_tasks[i] = t;
		ipt_load_ntasks = i + 1;
	}
	cpus_read_unlock();
	ipt_load_t0 = ktime_get_ns();
	ipt_load_ops0 = ipt_load_sum();
	ipt_load_t1 = 0;
	for (i = 0; i < ipt_load_ntasks; i++)
		wake_up_process(ipt_load_tasks[i]);
	load_run = true;
	pr_info(IPT_TEST_NAME ": load started: %u threads, mode %s, wait %d\n",
		ipt_load_ntasks, load_mode, load_wait);
	return 0;

err_stop:
	ipt_load_stop();
	return ret;
}

/* Stop and join the load kthreads; called with ipt_load_lock held. */
static void ipt_load_stop(void)
{
	unsigned int i;

	if (!ipt_load_tasks)
		return;
	ipt_load_t1 = ktime_get_ns();
	ipt_load_ops1 = ipt_load_sum();
	for (i = 0; i < ipt_load_ntasks; i++)
		kthread_stop(ipt_load_tasks[i]);
	kfree(ipt_load_tasks);
	ipt_load_tasks = NULL;
	ipt_load_ntasks = 0;
	load_run = false;
	ipt_emit_mark(IPT_MARK_LOAD_STOP);
	pr_info(IPT_TEST_NAME ": load stopped\n");
}

/* ops/s of the current run (if running) or of the last one. */
static int ipt_load_ops_show(struct seq_file *m, void *v)
{
	u64 t1, ops1, ns;

	mutex_lock(&ipt_load_lock);
	t1 = ipt_load_t1;
	ops1 = ipt_load_ops1;
	if (!ipt_load_t0) {
		seq_puts(m, "running 0 ops 0 ns 0 ops_per_s 0\n");
		goto out;
	}
	if (!t1) {
		t1 = ktime_get_ns();
		ops1 = ipt_load_sum();
	}
	ns = t1 - ipt_load_t0;
	seq_printf(m, "running %d ops %llu ns %llu ops_per_s %llu\n",
		   !!ipt_load_tasks, ops1 - ipt_load_ops0, ns,
		   ns ? div64_u64((ops1 - ipt_load_ops0) * NSEC_PER_SEC, ns) : 0);
out:
	mutex_unlock(&ipt_load_lock);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(ipt_load_ops);

static void ipt_load_show_row(struct seq_file *m, const char *name,
			      u64 __percpu *count)
{
	unsigned int cpu;
	u64 sum = 0;

	for_each_possible_cpu(cpu)
		sum += *per_cpu_ptr(count, cpu);
	seq_printf(m, "%s %llu", name, sum);
	for_each_possible_cpu(cpu)
		seq_printf(m, " %llu", *per_cpu_ptr(count, cpu));
	seq_putc(m, '\n');
}

/* Calls issued and load functions run: total, then per CPU. */
static int ipt_load_counters_show(struct seq_file *m, void *v)
{
	unsigned int cpu;

	seq_puts(m, "type total");
	for_each_possible_cpu(cpu)
		seq_printf(m, " cpu%u", cpu);
	seq_putc(m, '\n');
	ipt_load_show_row(m, "load_ops", &ipt_load_ops);
	ipt_load_show_row(m, "load_calls", &ipt_load_calls);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(ipt_load_counters);

/*
 * Start (on) or stop (off) the load.  Before module init is done (insmod
 * parameters) and after exit began, only record the wish in load_run:
 * init starts the load if it is set.
 */
static int ipt_load_switch(bool on)
{
	int ret = 0;

	mutex_lock(&ipt_load_lock);
	if (!ipt_load_live)
		load_run = on;
	else if (on)
		ret = ipt_load_start();
	else
		ipt_load_stop();
	mutex_unlock(&ipt_load_lock);
	return ret;
}

static int ipt_load_run_set(const char *val, const struct kernel_param *kp)
{
	bool on;
	int ret;

	ret = kstrtobool(val, &on);
	return ret ? ret : ipt_load_switch(on);
}

static const struct kernel_param_ops ipt_load_run_ops = {
	.set = ipt_load_run_set,
	.get = param_get_bool,
};

module_param_cb(load_run, &ipt_load_run_ops, &load_run, 0644);
MODULE_PARM_DESC(load_run, "1: start the load generator, 0: stop and join it (default 0)");

/* "start" / "stop": run or stop the load generator (any write). */
static ssize_t ipt_load_start_write(struct file *file, const char __user *buf,
				    size_t count, loff_t *ppos)
{
	int ret = ipt_load_switch(true);

	return ret ? ret : count;
}

static ssize_t ipt_load_stop_write(struct file *file, const char __user *buf,
				   size_t count, loff_t *ppos)
{
	ipt_load_switch(false);
	return count;
}

static const struct file_operations ipt_load_start_fops = {
	.owner = THIS_MODULE,
	.write = ipt_load_start_write,
};

static const struct file_operations ipt_load_stop_fops = {
	.owner = THIS_MODULE,
	.write = ipt_load_stop_write,
};

void ipt_load_debugfs(struct dentry *dir)
{
	debugfs_create_file("start", 0200, dir, NULL, &ipt_load_start_fops);
	debugfs_create_file("stop", 0200, dir, NULL, &ipt_load_stop_fops);
	debugfs_create_file("ops", 0444, dir, NULL, &ipt_load_ops_fops);
	debugfs_create_file("counters", 0444, dir, NULL,
			    &ipt_load_counters_fops);
}

/* Module init: from now on load_run starts and stops; start it if set. */
int ipt_load_arm(void)
{
	int ret = 0;

	mutex_lock(&ipt_load_lock);
	ipt_load_live = true;
	if (load_run)
		ret = ipt_load_start();
	if (ret)
		ipt_load_live = false;
	mutex_unlock(&ipt_load_lock);
	return ret;
}

/* Module exit (or failed init): stop the load; nothing starts it again. */
void ipt_load_disarm(void)
{
	mutex_lock(&ipt_load_lock);
	ipt_load_live = false;
	ipt_load_stop();
	mutex_unlock(&ipt_load_lock);
}

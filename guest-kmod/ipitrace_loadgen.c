// SPDX-License-Identifier: GPL-2.0
/* ipitrace: scftorture-like smp_call_function load generator. */
#include <linux/cpu.h>
#include <linux/cpumask.h>
#include <linux/err.h>
#include <linux/kthread.h>
#include <linux/moduleparam.h>
#include <linux/preempt.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/smp.h>
#include <linux/string.h>

#include "ipitrace_compat.h"
#include "ipitrace_ring.h"

static int load_threads;
module_param(load_threads, int, 0444);
MODULE_PARM_DESC(load_threads, "load kthreads (default: online CPUs)");

static char *load_mode = "single";
module_param(load_mode, charp, 0444);
MODULE_PARM_DESC(load_mode,
		 "single: round-robin smp_call_function_single; many: to all others");

static bool load_wait = true;
module_param(load_wait, bool, 0444);
MODULE_PARM_DESC(load_wait, "wait for the called function to finish");

static bool load_run;
static bool ipt_load_many;

/* Calls issued by the load kthreads, and load functions run, per CPU. */
DEFINE_PER_CPU(u64, ipt_load_ops);
DEFINE_PER_CPU(u64, ipt_load_calls);

static struct task_struct **ipt_load_tasks;
static unsigned int ipt_load_ntasks;

static void ipt_load_func(void *info)
{
	this_cpu_inc(ipt_load_calls);
}

void ipt_load_emit_mark(u32 mark)
{
	struct ipt_ev ev = {
		.type = IPT_G_MARK,
		.target = IPT_CPU_NONE,
		.arg0 = mark,
	};

	preempt_disable();
	ipt_ring_write(&ev);
	preempt_enable();
}

static int ipt_load_thread(void *arg)
{
	unsigned int self = raw_smp_processor_id();
	unsigned int t = self;

	while (!kthread_should_stop()) {
		if (num_online_cpus() < 2) {
			schedule_timeout_interruptible(HZ / 10);
			continue;
		}
		if (ipt_load_many) {
			preempt_disable();
			smp_call_function_many(cpu_online_mask, ipt_load_func,
					       NULL, load_wait);
			preempt_enable();
		} else {
			do {
				t = cpumask_next(t, cpu_online_mask);
				if (t >= nr_cpu_ids)
					t = cpumask_first(cpu_online_mask);
			} while (t == self);
			smp_call_function_single(t, ipt_load_func, NULL,
						 load_wait);
		}
		this_cpu_inc(ipt_load_ops);
		cond_resched();
	}
	return 0;
}

int ipt_load_validate(void)
{
	if (!load_threads)
		load_threads = num_online_cpus();
	if (load_threads < 1 || load_threads > 4 * (int)nr_cpu_ids) {
		pr_err(IPT_NAME ": load_threads=%d out of range 1..%u\n",
		       load_threads, 4 * nr_cpu_ids);
		return -EINVAL;
	}
	if (!load_mode || (strcmp(load_mode, "single") &&
			   strcmp(load_mode, "many"))) {
		pr_err(IPT_NAME ": load_mode must be \"single\" or \"many\"\n");
		return -EINVAL;
	}
	ipt_load_many = !strcmp(load_mode, "many");
	return 0;
}

bool ipt_load_wanted(void)
{
	return load_run;
}

/* Start the load kthreads; called with ipt_lock held, tracing armed. */
int ipt_load_start(void)
{
	struct task_struct *t;
	unsigned int i;
	int ret;

	if (ipt_load_tasks)
		return 0;
	ipt_load_tasks = kcalloc(load_threads, sizeof(*ipt_load_tasks),
				 GFP_KERNEL);
	if (!ipt_load_tasks)
		return -ENOMEM;

	ipt_load_emit_mark(IPT_MARK_LOAD_START);
	cpus_read_lock();
	for (i = 0; i < load_threads; i++) {
		unsigned int cpu = ipt_nth_online_cpu(i);

		t = kthread_create(ipt_load_thread, NULL, "ipt_load/%u", i);
		if (IS_ERR(t)) {
			ret = PTR_ERR(t);
			pr_err(IPT_NAME ": cannot create load thread %u: %d\n",
			       i, ret);
			cpus_read_unlock();
			goto err_stop;
		}
		kthread_bind(t, cpu);
		ipt_load_tasks[i] = t;
		ipt_load_ntasks = i + 1;
	}
	cpus_read_unlock();
	for (i = 0; i < ipt_load_ntasks; i++)
		wake_up_process(ipt_load_tasks[i]);
	load_run = true;
	pr_info(IPT_NAME ": load started: %u threads, mode %s, wait %d\n",
		ipt_load_ntasks, load_mode, load_wait);
	return 0;

err_stop:
	ipt_load_stop();
	return ret;
}

/* Stop and join the load kthreads; called with ipt_lock held. */
void ipt_load_stop(void)
{
	unsigned int i;

	if (!ipt_load_tasks)
		return;
	for (i = 0; i < ipt_load_ntasks; i++)
		kthread_stop(ipt_load_tasks[i]);
	kfree(ipt_load_tasks);
	ipt_load_tasks = NULL;
	ipt_load_ntasks = 0;
	load_run = false;
	ipt_load_emit_mark(IPT_MARK_LOAD_STOP);
	pr_info(IPT_NAME ": load stopped\n");
}

static int ipt_load_run_set(const char *val, const struct kernel_param *kp)
{
	bool on;
	int ret;

	ret = kstrtobool(val, &on);
	if (ret)
		return ret;

	mutex_lock(&ipt_lock);
	if (!ipt_armed) {
		/* At insmod time: module init starts the load once armed. */
		load_run = on;
		ret = 0;
	} else if (on) {
		ret = ipt_load_start();
	} else {
		ipt_load_stop();
		ret = 0;
	}
	mutex_unlock(&ipt_lock);
	return ret;
}

static const struct kernel_param_ops ipt_load_run_ops = {
	.set = ipt_load_run_set,
	.get = param_get_bool,
};

module_param_cb(load_run, &ipt_load_run_ops, &load_run, 0644);
MODULE_PARM_DESC(load_run, "1: start the load generator, 0: stop and join it");

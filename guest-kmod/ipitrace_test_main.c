// SPDX-License-Identifier: GPL-2.0
/*
 * ipitrace_test: the test module of ipitrace.ko, for the test harness only
 * (never packaged for users): an smp_call_function load generator and the
 * self-tests (debugfs ipitrace_test/).  It writes into ipitrace.ko's rings
 * through what that module exports (ipitrace_export.h), so it loads only
 * on top of it.  Loaded without parameters it arms nothing: the load
 * starts with load_run=1 (or debugfs start), each self-test when its file
 * is written.
 */
#include <linux/debugfs.h>
#include <linux/module.h>

#include "ipitrace_test.h"

static struct dentry *ipt_test_debugfs;

static int __init ipt_test_init(void)
{
	int ret;

	ret = ipt_load_validate();
	if (ret)
		return ret;
	ret = ipt_load_arm();
	if (ret)
		return ret;

	ipt_test_debugfs = debugfs_create_dir(IPT_TEST_NAME, NULL);
	ipt_load_debugfs(ipt_test_debugfs);
	ipt_selftest_debugfs(ipt_test_debugfs);
	return 0;
}

static void __exit ipt_test_exit(void)
{
	debugfs_remove_recursive(ipt_test_debugfs);
	ipt_load_disarm();
	ipt_selftest_stop();
}

module_init(ipt_test_init);
module_exit(ipt_test_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("ipitrace test module: IPI load generator and self-tests (test harness only)");
MODULE_AUTHOR("ipitrace project");

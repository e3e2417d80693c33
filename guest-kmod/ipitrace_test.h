/* SPDX-License-Identifier: GPL-2.0 */
/* ipitrace_test: declarations shared by the files of the test module. */
#ifndef IPITRACE_TEST_H
#define IPITRACE_TEST_H

#include "ipitrace_export.h"

struct dentry;

#define IPT_TEST_NAME "ipitrace_test"

/* a2 of the nesting self-test's G_MARKs is n ^ this (IPT_MARK_NEST_*). */
#define IPT_NEST_SALT 0x5a5aa5a5c3c33c3cULL

/* ipitrace_test_loadgen.c */
int ipt_load_validate(void);
void ipt_load_debugfs(struct dentry *dir);
int ipt_load_arm(void);
void ipt_load_disarm(void);

/* ipitrace_test_selftest.c */
void ipt_selftest_debugfs(struct dentry *dir);
void ipt_selftest_stop(void);

#endif /* IPITRACE_TEST_H */

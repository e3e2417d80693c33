/* SPDX-License-Identifier: GPL-2.0 */
/* ipitrace: declarations shared by the files of the guest module. */
#ifndef IPITRACE_H
#define IPITRACE_H

#include <linux/mutex.h>
#include <linux/percpu.h>
#include <linux/types.h>

#include "ipitrace_abi.h"

struct dentry;
struct seq_file;

#define IPT_NAME "ipitrace"

/* Guest record types are below this; indexes ipt_rec_count[]. */
#define IPT_NR_GUEST_TYPES 16

/*
 * Guest-only header extension, proposed for abi/ipitrace_abi.h (kept here
 * for now: editing the ABI header changes QEMU's build key).  It lives in
 * ipt_region_header.reserved[], at byte offset IPT_GHDR_EXT_OFFSET of the
 * region, and is valid when its magic reads IPT_GHDR_EXT_MAGIC:
 *
 *   +0  u32 magic          IPT_GHDR_EXT_MAGIC ("GEXT")
 *   +4  u32 online_count   CPUs currently online
 *   +8  u64 online[4]      bit c of online[c / 64]: CPU c is online.  The
 *                          apic_id[] map keeps offline CPUs' APIC IDs (so
 *                          records written before an offline still join);
 *                          IPT_APIC_ID_NONE only for never-present CPUs.
 *   +40 u64 hotplug_events online/offline transitions seen while tracing
 *   +48 u32 csd_hang_ms    watchdog threshold (0: off)
 *   +52 u32 boot_id_valid  1 when boot_id[] holds the kernel's boot_id
 *
 * boot_id[] is /proc/sys/kernel/random/boot_id as 16 bytes in the order
 * of its text form (xxxxxxxx-xxxx-... read left to right).
 *
 * G_HANG: cpu = CPU the watchdog ran on, target = T, arg0 = ms waited,
 * arg1 = waiter (sender) CPU, a0 = func, a1 = csd, a2 = callsite,
 * flags = 1 when "continued" (the first report of a request has 0).
 */
#define IPT_GHDR_EXT_OFFSET 1200
#define IPT_GHDR_EXT_MAGIC 0x54584547U /* "GEXT" */

struct ipt_ghdr_ext {
	u32 magic;
	u32 online_count;
	u64 online[IPT_MAX_CPUS / 64];
	u64 hotplug_events;
	u32 csd_hang_ms;
	u32 boot_id_valid;
};

/* G_MARK ids beyond IPT_MARK_LOAD_{START,STOP} (self-test writers). */
#define IPT_MARK_NEST_OUTER 0x100 /* a0=n a1=~n a2=n^IPT_NEST_SALT */
#define IPT_MARK_NEST_TIMER 0x101 /* written from an hrtimer (hardirq) */
#define IPT_MARK_NEST_NMI 0x102   /* written from an NMI handler */
#define IPT_MARK_NEST_IRQWORK 0x103 /* written from an irq_work self-IPI */
#define IPT_MARK_FIRE_BEGIN 0x110 /* target=T arg1=N */
#define IPT_MARK_FIRE_END 0x111   /* target=T arg1=N */
#define IPT_MARK_PROBES_ON 0x120  /* every probe attached (after) */
#define IPT_MARK_PROBES_OFF 0x121 /* about to detach (before) */
#define IPT_NEST_SALT 0x5a5aa5a5c3c33c3cULL

DECLARE_PER_CPU(u64, ipt_load_ops);
DECLARE_PER_CPU(u64, ipt_load_calls);

/* Serialises load start/stop against device bind/unbind. */
extern struct mutex ipt_lock;
/* True while a region is mapped (the probes may be detached at run time). */
extern bool ipt_armed;

/* ipitrace_main.c */
struct ipt_region_header *ipt_region(void);

/* ipitrace_probes.c */
int ipt_probes_lookup(void);
int ipt_probes_attach(void);
void ipt_probes_detach(void);
bool ipt_probes_attached(void);
void ipt_probes_show(struct seq_file *m);

/* ipitrace_watchdog.c */
int ipt_wd_validate(void);
void ipt_wd_track(unsigned int target, unsigned long func, unsigned long csd,
		  unsigned long callsite);
void ipt_wd_clear(unsigned long csd);
void ipt_wd_start(void);
void ipt_wd_stop(void);
unsigned int ipt_wd_hang_ms(void);
void ipt_wd_show(struct seq_file *m);

/* ipitrace_loadgen.c */
int ipt_load_validate(void);
bool ipt_load_wanted(void);
int ipt_load_start(void);
void ipt_load_stop(void);
void ipt_load_emit_mark(u32 mark);
void ipt_load_show_ops(struct seq_file *m);

/* ipitrace_selftest.c */
void ipt_selftest_debugfs(struct dentry *dir);
void ipt_selftest_stop(void);

#endif /* IPITRACE_H */

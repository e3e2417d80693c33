/* SPDX-License-Identifier: GPL-2.0 */
/* ipitrace: declarations shared by the files of the guest module. */
#ifndef IPITRACE_H
#define IPITRACE_H

#include <linux/percpu.h>
#include <linux/types.h>

#include "ipitrace_export.h"

struct seq_file;

#define IPT_NAME "ipitrace"

/* Guest record types are below this; indexes ipt_rec_count[]. */
#define IPT_NR_GUEST_TYPES 16

/* Guest header extension, G_HANG fields and G_MARK ids: abi/ipitrace_abi.h. */

/* ipitrace_main.c */
struct ipt_region_header *ipt_region(void);

/* ipitrace_probes.c */
int ipt_probes_lookup(void);
void ipt_probes_release(void);
bool ipt_probes_observe(unsigned int stage);
void ipt_probes_stage_src(u8 *src);
void ipt_probes_show_stages(struct seq_file *m);
int ipt_probes_attach(void);
void ipt_probes_detach(void);
bool ipt_probes_attached(void);
void ipt_probes_show(struct seq_file *m);

/* ipitrace_syms.c: the region's symbol table, filled off the hot path */
int ipt_syms_start(struct ipt_sym *table, u32 cap);
void ipt_syms_stop(void);
void ipt_syms_show(struct seq_file *m);

/* ipitrace_watchdog.c */
int ipt_wd_validate(void);
void ipt_wd_track(unsigned int target, unsigned long func, unsigned long csd,
		  unsigned long callsite);
void ipt_wd_clear(unsigned long csd);
void ipt_wd_unobservable(void);
void ipt_wd_start(void);
void ipt_wd_stop(void);
unsigned int ipt_wd_hang_ms(void);
void ipt_wd_show(struct seq_file *m);

#endif /* IPITRACE_H */

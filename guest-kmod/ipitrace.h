/* SPDX-License-Identifier: GPL-2.0 */
/* ipitrace: declarations shared by the files of the guest module. */
#ifndef IPITRACE_H
#define IPITRACE_H

#include <linux/mutex.h>
#include <linux/percpu.h>
#include <linux/types.h>

#include "ipitrace_abi.h"

#define IPT_NAME "ipitrace"

/* Guest record types are below this; indexes ipt_rec_count[]. */
#define IPT_NR_GUEST_TYPES 16

DECLARE_PER_CPU(u64, ipt_load_ops);
DECLARE_PER_CPU(u64, ipt_load_calls);

/* Serialises load start/stop against device bind/unbind. */
extern struct mutex ipt_lock;
/* True while a region is mapped and the probes are attached. */
extern bool ipt_armed;

/* ipitrace_probes.c */
int ipt_probes_lookup(void);
int ipt_probes_attach(void);
void ipt_probes_detach(void);

/* ipitrace_loadgen.c */
int ipt_load_validate(void);
bool ipt_load_wanted(void);
int ipt_load_start(void);
void ipt_load_stop(void);
void ipt_load_emit_mark(u32 mark);

#endif /* IPITRACE_H */

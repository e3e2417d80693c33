// SPDX-License-Identifier: GPL-2.0
/*
 * The region's symbol table: every function pointer and callsite the rings
 * carry (G_QUEUE's function and callsite, G_SEND's callback, G_FUNC_ENTRY's
 * function), resolved here in the guest as the kernel's %pS prints them,
 * so that the host's reports read "do_flush_tlb_all+0x0/0x30" (and the
 * module, for a module's function) instead of a hex address.
 *
 * Off the hot path: the probes write nothing more.  A delayed work scans
 * what the rings gained since its last pass, every IPT_SYM_PERIOD_MS, and
 * resolves each new address once (sprint_symbol(), the %pS formatter).
 * An entry is published by its addr, written last (after a write
 * barrier); the host treats every byte of the table as untrusted anyway.
 */
#include <linux/hash.h>
#include <linux/kallsyms.h>
#include <linux/kernel.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/workqueue.h>

#include "ipitrace_ring.h"

#define IPT_SYM_PERIOD_MS 200

static struct ipt_sym *ipt_syms;  /* the table, in the region */
static u32 ipt_sym_cap;
static u32 ipt_sym_used;
static u64 *ipt_sym_seen;         /* open addressing, ipt_seen_slots, 0 = free */
static u32 ipt_seen_slots;        /* a power of two >= 2 * ipt_sym_cap */
static u64 *ipt_sym_cursor;       /* per ring: the next index to scan */
static bool ipt_sym_running;
static void ipt_sym_scan(struct work_struct *work);
static DECLARE_DELAYED_WORK(ipt_sym_work, ipt_sym_scan);

/* True if addr was new (and is now remembered). */
static bool ipt_sym_first_sight(u64 addr)
{
	u32 i = (u32)hash_64(addr, 32) & (ipt_seen_slots - 1);

	for (;;) {
		if (ipt_sym_seen[i] == addr)
			return false;
		if (!ipt_sym_seen[i]) {
			ipt_sym_seen[i] = addr;
			return true;
		}
		i = (i + 1) & (ipt_seen_slots - 1);
	}
}

/*
 * "name+0xoff/0xsize [module]" (sprint_symbol's format) into e; false if
 * the address has no symbol (sprint_symbol printed the bare address).
 */
static bool ipt_sym_parse(const char *s, struct ipt_sym *e)
{
	const char *plus = strchr(s, '+');
	const char *slash = plus ? strchr(plus, '/') : NULL;
	const char *mod = slash ? strstr(slash, " [") : NULL;
	char num[24];
	unsigned long off, size;
	size_t n, m;

	if (!plus || !slash || plus == s)
		return false;
	n = min_t(size_t, slash - plus - 1, sizeof(num) - 1);
	memcpy(num, plus + 1, n);
	num[n] = 0;
	if (kstrtoul(num, 0, &off))
		return false;
	n = mod ? (size_t)(mod - slash - 1) : strlen(slash + 1);
	n = min_t(size_t, n, sizeof(num) - 1);
	memcpy(num, slash + 1, n);
	num[n] = 0;
	if (kstrtoul(num, 0, &size))
		return false;
	e->offset = (u32)min_t(unsigned long, off, U32_MAX);
	e->size = (u32)min_t(unsigned long, size, U32_MAX);
	/* name, NUL, then the module's name and NUL if both fit */
	n = min_t(size_t, plus - s, sizeof(e->name) - 1);
	memcpy(e->name, s, n);
	e->name[n] = 0;
	if (mod) {
		const char *end = strchr(mod + 2, ']');

		m = end ? (size_t)(end - mod - 2) : 0;
		if (m && n + 1 + m + 1 <= sizeof(e->name)) {
			memcpy(e->name + n + 1, mod + 2, m);
			e->name[n + 1 + m] = 0;
		}
	}
	return true;
}

static void ipt_sym_add(u64 addr)
{
	char buf[KSYM_SYMBOL_LEN];
	struct ipt_sym e;

	if (!addr || ipt_sym_used >= ipt_sym_cap || !ipt_sym_first_sight(addr))
		return;
	memset(&e, 0, sizeof(e));
	sprint_symbol(buf, (unsigned long)addr);
	if (!ipt_sym_parse(buf, &e))
		return;
	memcpy(ipt_syms[ipt_sym_used].name, e.name, sizeof(e.name));
	ipt_syms[ipt_sym_used].offset = e.offset;
	ipt_syms[ipt_sym_used].size = e.size;
	smp_wmb(); /* the entry before its addr publishes it */
	WRITE_ONCE(ipt_syms[ipt_sym_used].addr, addr);
	ipt_sym_used++;
}

/*
 * A ring repeats a few addresses (a load's function and callsite, the IPI
 * handler): the last few, checked before the table, spare the scan most
 * lookups.  Every address still reaches ipt_sym_add() once.
 */
#define IPT_SYM_RECENT 4

static void ipt_sym_add_recent(u64 addr, u64 *recent)
{
	unsigned int i;

	for (i = 0; i < IPT_SYM_RECENT; i++)
		if (recent[i] == addr)
			return;
	memmove(recent + 1, recent, (IPT_SYM_RECENT - 1) * sizeof(*recent));
	recent[0] = addr;
	ipt_sym_add(addr);
}

static void ipt_sym_scan_ring(unsigned int k, struct ipt_ring_header *rh)
{
	struct ipt_record *recs = ipt_ring_records(rh);
	u64 head = READ_ONCE(rh->head);
	u64 idx = ipt_sym_cursor[k];
	u64 recent[IPT_SYM_RECENT] = { };

	if (head - idx > ipt_ring_mask + 1)
		idx = head - (ipt_ring_mask + 1);
	for (; idx < head; idx++) {
		struct ipt_record *r = &recs[idx & ipt_ring_mask];
		u64 seq = READ_ONCE(r->seq);
		u16 type;
		u64 a0, a2;

		if (seq == IPT_SEQ_INVALID)
			break; /* being written: the next pass resumes here */
		smp_rmb(); /* seq before the fields */
		type = READ_ONCE(r->type);
		a0 = READ_ONCE(r->a[0]);
		a2 = READ_ONCE(r->a[2]);
		smp_rmb(); /* the fields before seq again */
		if (READ_ONCE(r->seq) != idx || seq != idx)
			continue; /* overwritten by a later lap */
		switch (type) {
		case IPT_G_QUEUE:
			ipt_sym_add_recent(a0, recent);
			ipt_sym_add_recent(a2, recent);
			break;
		case IPT_G_SEND:
		case IPT_G_FUNC_ENTRY:
			ipt_sym_add_recent(a0, recent);
			break;
		}
	}
	ipt_sym_cursor[k] = idx;
}

static void ipt_sym_scan(struct work_struct *work)
{
	unsigned int k;

	for (k = 0; k < nr_cpu_ids; k++) {
		struct ipt_ring_header *rh = per_cpu(ipt_ring, k);

		if (rh)
			ipt_sym_scan_ring(k, rh);
		cond_resched();
	}
	if (READ_ONCE(ipt_sym_running))
		schedule_delayed_work(&ipt_sym_work, msecs_to_jiffies(IPT_SYM_PERIOD_MS));
}

int ipt_syms_start(struct ipt_sym *table, u32 cap)
{
	if (!cap)
		return 0;
	ipt_seen_slots = roundup_pow_of_two(2 * cap);
	ipt_sym_seen = kvcalloc(ipt_seen_slots, sizeof(u64), GFP_KERNEL);
	ipt_sym_cursor = kcalloc(nr_cpu_ids, sizeof(u64), GFP_KERNEL);
	if (!ipt_sym_seen || !ipt_sym_cursor) {
		kvfree(ipt_sym_seen);
		kfree(ipt_sym_cursor);
		ipt_sym_seen = NULL;
		ipt_sym_cursor = NULL;
		return -ENOMEM;
	}
	ipt_syms = table;
	ipt_sym_cap = cap;
	ipt_sym_used = 0;
	WRITE_ONCE(ipt_sym_running, true);
	schedule_delayed_work(&ipt_sym_work, msecs_to_jiffies(IPT_SYM_PERIOD_MS));
	return 0;
}

/* Before the rings are forgotten: one last pass, then no more. */
void ipt_syms_stop(void)
{
	if (!ipt_syms)
		return;
	WRITE_ONCE(ipt_sym_running, false);
	cancel_delayed_work_sync(&ipt_sym_work);
	ipt_sym_scan(NULL); /* not running: it queues no further pass */
	kvfree(ipt_sym_seen);
	kfree(ipt_sym_cursor);
	ipt_sym_seen = NULL;
	ipt_sym_cursor = NULL;
	ipt_syms = NULL;
	ipt_sym_cap = 0;
}

void ipt_syms_show(struct seq_file *m)
{
	seq_printf(m, "symbols %u of %u\n", ipt_sym_used, ipt_sym_cap);
}

// SPDX-License-Identifier: GPL-2.0
/*
 * kvm_fault: TEST-ONLY fault injection into KVM's local APIC emulation.
 *
 * NEVER LOAD THIS MODULE OUTSIDE TESTS.  It makes KVM drop guest IPIs on
 * purpose, so that the guest hangs in smp_call_function*(); it exists only
 * for ipitrace's nested test bed (harness/nested/), where it is loaded into
 * the L1 kernel that runs the traced guest (L2) under KVM.
 *
 * faults="STAGE:nth=K[:vector=V][:source=S][:target=T][:count=C][;...]"
 * takes the syntax of QEMU's ipitrace fault injector (docs/streams.md,
 * "Fault injection"): numbers are decimal or 0x hexadecimal, vector defaults
 * to 251 (0xfb), source and target are vCPU indexes (vcpu->vcpu_idx), the
 * fault fires on the K-th to the (K+C-1)-th matching IPI (C = 1 by default).
 * prob= and the kick and entry stages of the QEMU injector are not offered.
 * Stages, all by kprobes on kvm.ko (no change to KVM itself):
 *
 * icr     the ICR write is absorbed before KVM delivers it: one ICR write is
 *         one call of kvm_apic_send_ipi() (xAPIC MMIO and x2APIC MSR writes,
 *         including the fastpath) or of kvm_pv_send_ipi() (KVM_HC_SEND_IPI,
 *         the guest's PV mask sends); the call is skipped.  Fixed and
 *         lowest-priority delivery count.  target=T matches an ICR whose
 *         resolved targets include T.  KVM traces a PV send (kvm_hypercall,
 *         which ipitrace's KVM source records as H_ICR) before
 *         kvm_pv_send_ipi() runs: an icr fault on a PV send looks like a
 *         loss in routing.  Linux sends single IPIs (vector 251) through
 *         the ICR, mask IPIs (252) through the hypercall when it can.
 * route   __apic_accept_irq() is skipped for one fixed-mode (IPI, target):
 *         the target's IRR bit is never set (no kvm_apic_accept_irq event).
 * inject  the IRR bit is set (kvm_apic_accept_irq, target kicked) and then
 *         withdrawn by the target's own thread before it can acknowledge
 *         it: kvm_cpu_has_injectable_intr() of that vCPU clears the bit
 *         with kvm_apic_clear_irr() once it is the highest one pending.  A
 *         coalesced set (the bit already the highest pending) does not
 *         match.  Should the vector reach kvm_cpu_get_interrupt() first (the
 *         bit set between the two calls), the fault lets it through (a
 *         "miss", in stats) and fires on the next matching IPI instead.
 *
 * An IPI is counted only when a vCPU thread sends it (kvm_get_running_vcpu()
 * is the source).  route and inject count (IPI, target) pairs; icr counts
 * ICR writes; when several faults match, the earliest stage wins.
 *
 * Ground truth, one JSON line per affected (IPI, target), in debugfs
 * ipitrace_kvm_fault/truth (per-fault counters in .../stats):
 *   {"stage":"route","vector":251,"source":S,"target":T,"tsc":N,
 *    "icr_seq":null,"nth":K,"fire":F,"fault":I}
 * tsc is the source vCPU's guest TSC (kvm_read_l1_tsc()) when KVM saw the
 * ICR write (icr) or the IRR set (route, inject); target is -1 when an icr
 * fault's destination cannot be resolved (xAPIC logical mode).
 */
#include <linux/bitmap.h>
#include <linux/debugfs.h>
#include <linux/kprobes.h>
#include <linux/kvm_host.h>
#include <linux/module.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/string.h>
#include <asm/apicdef.h>
#include <asm/msr.h>

#include "kvm_private.h"

#define KF_NAME "ipitrace_kvm_fault"
#define KF_MAX_FAULTS 16
#define KF_MAX_VCPUS 256	/* vCPU indexes the module follows */
#define KF_DEFAULT_VECTOR 0xfb
#define KF_TRUTH_SIZE (256 * 1024)

static char *faults = "";
module_param(faults, charp, 0444);
MODULE_PARM_DESC(faults,
		 "STAGE:nth=K[:vector=V][:source=S][:target=T][:count=C], several separated by ';' (stages icr, route, inject)");

enum kf_stage { KF_ICR, KF_ROUTE, KF_INJECT, KF_NSTAGES };

static const char * const kf_stage_names[KF_NSTAGES] = {
	[KF_ICR] = "icr", [KF_ROUTE] = "route", [KF_INJECT] = "inject",
};

struct kf_fault {
	enum kf_stage stage;
	u8 vector;
	int source;		/* vCPU index, -1: any */
	int target;		/* vCPU index, -1: any */
	u64 nth;		/* first matching IPI (1-based) that fires */
	u64 count;		/* how many times it fires */
	u64 seen;		/* matching IPIs so far */
	u64 fired;		/* times fired so far */
	u64 missed;		/* inject: bit acknowledged before withdrawn */
};

/* An inject fault that fired: withdraw @vector from the target's IRR. */
struct kf_pending {
	bool armed;
	struct kvm *kvm;
	struct kf_fault *f;
	u8 vector;
	int source;
	u64 tsc, nth, fire;
};

struct kf_probe {
	struct kprobe kp;
	unsigned int stages;	/* registered when one of these has a fault */
	bool registered;
	atomic64_t hits;	/* calls seen, for stats */
};

static struct kf_fault kf_faults[KF_MAX_FAULTS];
static unsigned int kf_nfaults;
static unsigned int kf_stages;		/* bit per stage with a fault */
static struct kf_pending kf_pend[KF_MAX_VCPUS];
static DEFINE_RAW_SPINLOCK(kf_lock);	/* faults, pending, truth writer */

static char *kf_truth;			/* append-only, KF_TRUTH_SIZE */
static size_t kf_truth_len;		/* published with release */
static u64 kf_truth_dropped;		/* lines that did not fit */
static struct dentry *kf_dir;

/*
 * A skipped function "returns" from here: a kprobe pre-handler points
 * regs->ip at it, so the caller sees the probed function return 0.
 */
static noinline notrace unsigned long kf_skipped(void)
{
	return 0;
}

static void kf_hit(struct kprobe *p)
{
	atomic64_inc(&container_of(p, struct kf_probe, kp)->hits);
}

static void kf_skip(struct pt_regs *regs)
{
	regs->ax = 0;
	instruction_pointer_set(regs, (unsigned long)kf_skipped);
}

/* Caller holds kf_lock. */
static void kf_emit(const struct kf_fault *f, int source, int target,
		    u64 tsc, u64 nth, u64 fire)
{
	char line[224];
	size_t len = kf_truth_len;
	int n;

	n = scnprintf(line, sizeof(line),
		      "{\"stage\":\"%s\",\"vector\":%u,\"source\":%d,\"target\":%d,\"tsc\":%llu,\"icr_seq\":null,\"nth\":%llu,\"fire\":%llu,\"fault\":%u}\n",
		      kf_stage_names[f->stage], f->vector, source, target, tsc,
		      nth, fire, (unsigned int)(f - kf_faults));
	if (len + n > KF_TRUTH_SIZE) {
		kf_truth_dropped++;
		return;
	}
	memcpy(kf_truth + len, line, n);
	/* readers (kf_truth_read) see the line before the new length */
	smp_store_release(&kf_truth_len, len + n);
}

/* A matching IPI reached the fault's stage: does it fire?  Under kf_lock. */
static bool kf_fires(struct kf_fault *f)
{
	f->seen++;
	if (f->seen < f->nth || f->fired >= f->count)
		return false;
	f->fired++;
	return true;
}

static bool kf_filter(const struct kf_fault *f, enum kf_stage stage, u8 vec,
		      int source)
{
	return f->stage == stage && f->vector == vec &&
	       (f->source < 0 || f->source == source);
}

static u64 kf_tsc(struct kvm_vcpu *vcpu)
{
	return kvm_read_l1_tsc(vcpu, rdtsc());
}

static struct kvm_vcpu *kf_vcpu_of_apic(struct kvm *kvm, void *apic)
{
	struct kvm_vcpu *v;
	unsigned long i;

	kvm_for_each_vcpu(i, v, kvm)
		if (v->arch.apic == apic)
			return v;
	return NULL;
}

/* ---- route and inject: __apic_accept_irq(apic, mode, vector, ...) ---- */

static int kf_accept_pre(struct kprobe *p, struct pt_regs *regs)
{
	struct kvm_vcpu *src = kvm_get_running_vcpu(), *dst;
	int mode = (int)regs->si;
	u8 vec = regs->dx & APIC_VECTOR_MASK;
	struct kf_pending *pd;
	unsigned long flags;
	unsigned int i;
	int s, t;

	kf_hit(p);
	if (mode != APIC_DM_FIXED || !src)
		return 0;
	dst = kf_vcpu_of_apic(src->kvm, (void *)regs->di);
	if (!dst)
		return 0;
	s = src->vcpu_idx;
	t = dst->vcpu_idx;

	raw_spin_lock_irqsave(&kf_lock, flags);
	for (i = 0; (kf_stages & BIT(KF_ROUTE)) && i < kf_nfaults; i++) {
		struct kf_fault *f = &kf_faults[i];

		if (!kf_filter(f, KF_ROUTE, vec, s) ||
		    (f->target >= 0 && f->target != t) || !kf_fires(f))
			continue;
		kf_emit(f, s, t, kf_tsc(src), f->seen, f->fired);
		raw_spin_unlock_irqrestore(&kf_lock, flags);
		kf_skip(regs);
		return 1;
	}
	pd = t < KF_MAX_VCPUS ? &kf_pend[t] : NULL;
	for (i = 0; (kf_stages & BIT(KF_INJECT)) && pd && i < kf_nfaults; i++) {
		struct kf_fault *f = &kf_faults[i];

		if (!kf_filter(f, KF_INJECT, vec, s) ||
		    (f->target >= 0 && f->target != t))
			continue;
		/* coalesced: the bit is already pending, none of its own */
		if (kvm_lapic_find_highest_irr(dst) == vec)
			break;
		/* one withdrawal per target at a time */
		if (pd->armed || !kf_fires(f))
			continue;
		*pd = (struct kf_pending){
			.kvm = src->kvm, .f = f, .vector = vec, .source = s,
			.tsc = kf_tsc(src), .nth = f->seen, .fire = f->fired,
		};
		WRITE_ONCE(pd->armed, true);
		break;
	}
	raw_spin_unlock_irqrestore(&kf_lock, flags);
	return 0;
}

/*
 * inject: on the target's own thread, before it looks for an interrupt to
 * inject (@acking false) or acknowledges one (@acking true).
 */
static void kf_withdraw(struct kvm_vcpu *v, bool acking)
{
	struct kf_pending *pd;
	unsigned long flags;

	if (v->vcpu_idx >= KF_MAX_VCPUS)
		return;
	pd = &kf_pend[v->vcpu_idx];
	if (!READ_ONCE(pd->armed))
		return;
	raw_spin_lock_irqsave(&kf_lock, flags);
	/* not set yet, or waiting behind a higher vector: look again later */
	if (!pd->armed || pd->kvm != v->kvm ||
	    kvm_lapic_find_highest_irr(v) != pd->vector)
		goto out;
	if (acking) {
		/*
		 * Set after kvm_cpu_has_injectable_intr() looked: withdrawing
		 * it now would leave KVM nothing to inject.  Let it through
		 * and fire on the next matching IPI.
		 */
		pd->f->fired--;
		pd->f->missed++;
	} else {
		kvm_apic_clear_irr(v, pd->vector);
		kf_emit(pd->f, pd->source, v->vcpu_idx, pd->tsc, pd->nth,
			pd->fire);
	}
	WRITE_ONCE(pd->armed, false);
out:
	raw_spin_unlock_irqrestore(&kf_lock, flags);
}

static int kf_has_injectable_pre(struct kprobe *p, struct pt_regs *regs)
{
	kf_hit(p);
	kf_withdraw((struct kvm_vcpu *)regs->di, false);
	return 0;
}

static int kf_get_interrupt_pre(struct kprobe *p, struct pt_regs *regs)
{
	kf_hit(p);
	kf_withdraw((struct kvm_vcpu *)regs->di, true);
	return 0;
}

/* ---- icr: kvm_apic_send_ipi() and kvm_pv_send_ipi() ---- */

/*
 * The vCPUs an ICR write from @src addresses; false when they cannot be
 * told (xAPIC logical destinations depend on the LDRs the guest wrote).
 * The APIC ID of a KVM vCPU is its vcpu_id (QEMU sets it so).
 */
static bool kf_icr_targets(struct kvm_vcpu *src, u32 low, u32 high,
			   unsigned long *set)
{
	bool x2apic = src->arch.apic_base & X2APIC_ENABLE;
	u32 dest = x2apic ? high : high >> 24;
	u32 bcast = x2apic ? 0xffffffff : 0xff;
	struct kvm_vcpu *v;
	unsigned long i;

	bitmap_zero(set, KF_MAX_VCPUS);
	if (!(low & KF_SHORT_MASK) && (low & APIC_DEST_LOGICAL) && !x2apic &&
	    dest != bcast)
		return false;
	kvm_for_each_vcpu(i, v, src->kvm) {
		u32 id = v->vcpu_id;
		bool hit;

		if (v->vcpu_idx >= KF_MAX_VCPUS)
			continue;
		switch (low & KF_SHORT_MASK) {
		case APIC_DEST_SELF:
			hit = v == src;
			break;
		case APIC_DEST_ALLINC:
			hit = true;
			break;
		case APIC_DEST_ALLBUT:
			hit = v != src;
			break;
		default:
			if (dest == bcast)
				hit = true;
			else if (low & APIC_DEST_LOGICAL)	/* x2APIC */
				hit = (id >> 4) == (dest >> 16) &&
				      (dest & BIT(id & 0xf));
			else
				hit = id == dest;
		}
		if (hit)
			__set_bit(v->vcpu_idx, set);
	}
	return true;
}

/* Caller holds kf_lock.  Returns the fault that fired, or NULL. */
static struct kf_fault *kf_icr_fires(u8 vec, int source, bool known,
				     const unsigned long *set)
{
	unsigned int i;

	for (i = 0; (kf_stages & BIT(KF_ICR)) && i < kf_nfaults; i++) {
		struct kf_fault *f = &kf_faults[i];

		if (!kf_filter(f, KF_ICR, vec, source) ||
		    (f->target >= 0 && (!known || !test_bit(f->target, set))))
			continue;
		if (kf_fires(f))
			return f;
	}
	return NULL;
}

static int kf_icr(struct pt_regs *regs, struct kvm_vcpu *src, u32 mode,
		  u8 vec, bool known, const unsigned long *set)
{
	struct kf_fault *f;
	unsigned long flags;
	unsigned int t;
	u64 tsc;

	if (mode != APIC_DM_FIXED && mode != APIC_DM_LOWEST)
		return 0;
	raw_spin_lock_irqsave(&kf_lock, flags);
	f = kf_icr_fires(vec, src->vcpu_idx, known, set);
	if (!f) {
		raw_spin_unlock_irqrestore(&kf_lock, flags);
		return 0;
	}
	tsc = kf_tsc(src);
	if (!known || bitmap_empty(set, KF_MAX_VCPUS))
		kf_emit(f, src->vcpu_idx, -1, tsc, f->seen, f->fired);
	else
		for_each_set_bit(t, set, KF_MAX_VCPUS)
			kf_emit(f, src->vcpu_idx, t, tsc, f->seen, f->fired);
	raw_spin_unlock_irqrestore(&kf_lock, flags);
	kf_skip(regs);
	return 1;
}

/* kvm_apic_send_ipi(apic, icr_low, icr_high) */
static int kf_send_ipi_pre(struct kprobe *p, struct pt_regs *regs)
{
	struct kvm_vcpu *src = kvm_get_running_vcpu();
	u32 low = regs->si, high = regs->dx;
	DECLARE_BITMAP(set, KF_MAX_VCPUS);
	bool known;

	kf_hit(p);
	if (!src || src->arch.apic != (void *)regs->di)
		return 0;
	known = kf_icr_targets(src, low, high, set);
	return kf_icr(regs, src, low & APIC_DM_FIXED_MASK,
		      low & APIC_VECTOR_MASK, known, set);
}

/* kvm_pv_send_ipi(kvm, bitmap_low, bitmap_high, min, icr, op_64_bit) */
static int kf_pv_send_ipi_pre(struct kprobe *p, struct pt_regs *regs)
{
	struct kvm_vcpu *src = kvm_get_running_vcpu();
	unsigned long low = regs->si, high = regs->dx, icr = regs->r8;
	u32 min = regs->cx, cluster = regs->r9 ? 64 : 32;
	DECLARE_BITMAP(set, KF_MAX_VCPUS);
	struct kvm_vcpu *v;
	unsigned long i;

	kf_hit(p);
	if (!src || src->kvm != (struct kvm *)regs->di ||
	    (icr & (KF_DEST_MASK | KF_SHORT_MASK)))
		return 0;	/* KVM refuses these itself */
	bitmap_zero(set, KF_MAX_VCPUS);
	kvm_for_each_vcpu(i, v, src->kvm) {
		u64 id = v->vcpu_id;

		if (v->vcpu_idx >= KF_MAX_VCPUS || id < min)
			continue;
		if ((id - min < BITS_PER_LONG && (low & BIT(id - min))) ||
		    (id - min >= cluster && id - min - cluster < BITS_PER_LONG &&
		     (high & BIT(id - min - cluster))))
			__set_bit(v->vcpu_idx, set);
	}
	return kf_icr(regs, src, icr & APIC_MODE_MASK, icr & APIC_VECTOR_MASK,
		      true, set);
}

/* ---- probes ---- */

static struct kf_probe kf_probes[] = {
	{ .kp = { .symbol_name = "__apic_accept_irq",
		  .pre_handler = kf_accept_pre },
	  .stages = BIT(KF_ROUTE) | BIT(KF_INJECT) },
	{ .kp = { .symbol_name = "kvm_cpu_has_injectable_intr",
		  .pre_handler = kf_has_injectable_pre },
	  .stages = BIT(KF_INJECT) },
	{ .kp = { .symbol_name = "kvm_cpu_get_interrupt",
		  .pre_handler = kf_get_interrupt_pre },
	  .stages = BIT(KF_INJECT) },
	{ .kp = { .symbol_name = "kvm_apic_send_ipi",
		  .pre_handler = kf_send_ipi_pre },
	  .stages = BIT(KF_ICR) },
	{ .kp = { .symbol_name = "kvm_pv_send_ipi",
		  .pre_handler = kf_pv_send_ipi_pre },
	  .stages = BIT(KF_ICR) },
};

static void kf_unregister(void)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(kf_probes); i++) {
		if (kf_probes[i].registered)
			unregister_kprobe(&kf_probes[i].kp);
		kf_probes[i].registered = false;
	}
}

static int kf_register(void)
{
	unsigned int i;
	int ret;

	for (i = 0; i < ARRAY_SIZE(kf_probes); i++) {
		struct kf_probe *p = &kf_probes[i];

		if (!(p->stages & kf_stages))
			continue;
		ret = register_kprobe(&p->kp);
		if (ret) {
			pr_err(KF_NAME ": cannot probe %s: %d\n",
			       p->kp.symbol_name, ret);
			kf_unregister();
			return ret;
		}
		p->registered = true;
	}
	return 0;
}

/* ---- faults= ---- */

/* decimal, or hexadecimal after 0x */
static int kf_parse_u64(const char *s, u64 *v)
{
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
		return kstrtou64(s + 2, 16, v);
	return kstrtou64(s, 10, v);
}

static int kf_parse_one(char *item, struct kf_fault *f)
{
	char *opt, *spec = item;
	const char *name;
	bool have_nth = false;
	unsigned int s;

	*f = (struct kf_fault){
		.vector = KF_DEFAULT_VECTOR, .source = -1, .target = -1,
		.count = 1,
	};
	name = strsep(&item, ":");
	for (s = 0; s < KF_NSTAGES; s++)
		if (!strcmp(name, kf_stage_names[s]))
			break;
	if (s == KF_NSTAGES) {
		pr_err(KF_NAME ": unknown fault stage '%s' (icr, route or inject)\n",
		       name);
		return -EINVAL;
	}
	f->stage = s;
	while ((opt = strsep(&item, ":"))) {
		char *val = strchr(opt, '=');
		u64 v;

		if (!val || !val[1] || kf_parse_u64(val + 1, &v)) {
			pr_err(KF_NAME ": malformed fault option '%s' in '%s'\n",
			       opt, name);
			return -EINVAL;
		}
		*val = '\0';
		if (!strcmp(opt, "nth") && v >= 1) {
			f->nth = v;
			have_nth = true;
		} else if (!strcmp(opt, "vector") && v <= 0xff) {
			f->vector = v;
		} else if (!strcmp(opt, "source") && v < KF_MAX_VCPUS) {
			f->source = v;
		} else if (!strcmp(opt, "target") && v < KF_MAX_VCPUS) {
			f->target = v;
		} else if (!strcmp(opt, "count") && v >= 1) {
			f->count = v;
		} else {
			pr_err(KF_NAME ": unknown or invalid fault option '%s=%s' in a %s fault (nth, count >= 1; vector <= 255; source, target < %d)\n",
			       opt, val + 1, name, KF_MAX_VCPUS);
			return -EINVAL;
		}
	}
	if (!have_nth) {
		pr_err(KF_NAME ": fault '%s' needs nth=K\n", spec);
		return -EINVAL;
	}
	return 0;
}

static int kf_parse(const char *spec)
{
	char *copy, *cur, *item;
	int ret = 0;

	copy = kstrdup(spec, GFP_KERNEL);
	if (!copy)
		return -ENOMEM;
	cur = copy;
	while ((item = strsep(&cur, ";"))) {
		item = strim(item);
		if (!*item)
			continue;
		if (kf_nfaults == KF_MAX_FAULTS) {
			pr_err(KF_NAME ": more than %d faults\n", KF_MAX_FAULTS);
			ret = -EINVAL;
			break;
		}
		ret = kf_parse_one(item, &kf_faults[kf_nfaults]);
		if (ret)
			break;
		kf_stages |= BIT(kf_faults[kf_nfaults].stage);
		kf_nfaults++;
	}
	kfree(copy);
	return ret;
}

/* ---- debugfs ---- */

static ssize_t kf_truth_read(struct file *file, char __user *buf,
			     size_t count, loff_t *ppos)
{
	/* pairs with kf_emit(): every byte below the length is written */
	size_t len = smp_load_acquire(&kf_truth_len);

	return simple_read_from_buffer(buf, count, ppos, kf_truth, len);
}

static const struct file_operations kf_truth_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.read = kf_truth_read,
	.llseek = default_llseek,
};

static int kf_stats_show(struct seq_file *m, void *v)
{
	unsigned long flags;
	unsigned int i;

	raw_spin_lock_irqsave(&kf_lock, flags);
	for (i = 0; i < kf_nfaults; i++) {
		const struct kf_fault *f = &kf_faults[i];

		seq_printf(m, "fault %u stage %s vector %u source %d target %d nth %llu count %llu seen %llu fired %llu missed %llu\n",
			   i, kf_stage_names[f->stage], f->vector, f->source,
			   f->target, f->nth, f->count, f->seen, f->fired,
			   f->missed);
	}
	seq_printf(m, "truth_bytes %zu truth_dropped %llu\n", kf_truth_len,
		   kf_truth_dropped);
	raw_spin_unlock_irqrestore(&kf_lock, flags);
	for (i = 0; i < ARRAY_SIZE(kf_probes); i++)
		if (kf_probes[i].registered)
			seq_printf(m, "probe %s hits %lld nmissed %lu\n",
				   kf_probes[i].kp.symbol_name,
				   atomic64_read(&kf_probes[i].hits),
				   kf_probes[i].kp.nmissed);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(kf_stats);

static int __init kf_init(void)
{
	int ret;

	ret = kf_parse(faults);
	if (ret)
		return ret;
	kf_truth = kvzalloc(KF_TRUTH_SIZE, GFP_KERNEL);
	if (!kf_truth)
		return -ENOMEM;
	kf_dir = debugfs_create_dir(KF_NAME, NULL);
	debugfs_create_file("truth", 0444, kf_dir, NULL, &kf_truth_fops);
	debugfs_create_file("stats", 0444, kf_dir, NULL, &kf_stats_fops);
	ret = kf_register();
	if (ret) {
		debugfs_remove_recursive(kf_dir);
		kvfree(kf_truth);
		return ret;
	}
	pr_warn(KF_NAME ": TEST-ONLY KVM fault injection armed: %u fault(s) '%s'\n",
		kf_nfaults, faults);
	return 0;
}

static void __exit kf_exit(void)
{
	/* unregister_kprobe() waits for running handlers */
	kf_unregister();
	debugfs_remove_recursive(kf_dir);
	kvfree(kf_truth);
}

module_init(kf_init);
module_exit(kf_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("TEST-ONLY: drop guest IPIs in KVM's local APIC (ipitrace nested test bed)");

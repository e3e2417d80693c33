// SPDX-License-Identifier: GPL-2.0
/* ipitrace: ivshmem-plain PCI driver, shared region layout, module init/exit. */
#include <linux/build_bug.h>
#include <linux/cpuhotplug.h>
#include <linux/ctype.h>
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/io.h>
#include <linux/log2.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pci.h>
#include <linux/preempt.h>
#include <linux/rcupdate.h>
#include <linux/seq_file.h>
#include <linux/string.h>
#include <linux/utsname.h>
#include <asm/irq_vectors.h>
#include <asm/smp.h>
#include <asm/tsc.h>

#include "ipitrace_compat.h"
#include "ipitrace_ring.h"

#define IPT_PCI_VENDOR 0x1af4
#define IPT_PCI_DEVICE 0x1110
#define IPT_BAR 2
#define IPT_MIN_RECORDS 1024
/* Symbol table entries (64 bytes each) carved from the end of the BAR. */
#define IPT_SYM_CAPACITY 4096

/* Serialises region setup/teardown and probe attach/detach. */
static DEFINE_MUTEX(ipt_lock);
/* True while a region is mapped (the probes may be detached at run time). */
static bool ipt_armed;

DEFINE_PER_CPU(struct ipt_ring_header *, ipt_ring);
DEFINE_PER_CPU(u64 [IPT_NR_GUEST_TYPES], ipt_rec_count);
u64 ipt_ring_mask;

/* The writers ipitrace_test.ko uses: ipitrace_export.h. */
void ipt_write(const struct ipt_ev *ev)
{
	ipt_ring_write(ev);
}
EXPORT_SYMBOL_GPL(ipt_write);

void ipt_emit_mark(u32 mark)
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
EXPORT_SYMBOL_GPL(ipt_emit_mark);

struct ipt_ring_header *ipt_this_ring(u64 *capacity)
{
	struct ipt_ring_header *rh = this_cpu_read(ipt_ring);

	*capacity = rh ? ipt_ring_mask + 1 : 0;
	return rh;
}
EXPORT_SYMBOL_GPL(ipt_this_ring);

static bool probes = true;
module_param(probes, bool, 0444);
MODULE_PARM_DESC(probes,
		 "attach the tracepoint probes at load (default 1); debugfs ipitrace/probes toggles them at run time");

static char *device;
module_param(device, charp, 0444);
MODULE_PARM_DESC(device,
		 "PCI address (e.g. 0000:00:05.0) of the ivshmem device to trace into; default: the one whose region the host claimed (ipitrace claim), never another");

static struct pci_dev *ipt_pdev;
static struct ipt_region_header *ipt_hdr;
static int ipt_probe_err;
static struct dentry *ipt_debugfs;
static u8 ipt_boot_id[16];
static bool ipt_boot_id_valid;
static int ipt_cpuhp_state = -1;

struct ipt_region_header *ipt_region(void)
{
	return READ_ONCE(ipt_hdr);
}

static struct ipt_ghdr_ext *ipt_ext(struct ipt_region_header *h)
{
	return (struct ipt_ghdr_ext *)((u8 *)h + IPT_GHDR_EXT_OFFSET);
}

/*
 * The kernel's boot_id (the value /proc/sys/kernel/random/boot_id shows),
 * read once at module init, in process context: no helper exports it.
 */
static void ipt_read_boot_id(void)
{
	char buf[40] = { };
	struct file *f;
	loff_t pos = 0;
	ssize_t n;
	int i, k = 0;

	f = filp_open("/proc/sys/kernel/random/boot_id", O_RDONLY, 0);
	if (IS_ERR(f)) {
		pr_warn(IPT_NAME ": cannot open boot_id: %ld; header boot_id left zero\n",
			PTR_ERR(f));
		return;
	}
	n = kernel_read(f, buf, sizeof(buf) - 1, &pos);
	filp_close(f, NULL);
	for (i = 0; i < n && k < 32; i++) {
		int v = hex_to_bin(buf[i]);

		if (v < 0)
			continue;
		ipt_boot_id[k / 2] |= (k & 1) ? v : v << 4;
		k++;
	}
	ipt_boot_id_valid = k == 32;
	if (!ipt_boot_id_valid)
		pr_warn(IPT_NAME ": cannot parse boot_id \"%s\"\n", buf);
}

static u32 ipt_apic_id(unsigned int cpu)
{
	u32 id = cpu_physical_id(cpu);

	return id == BAD_APICID ? IPT_APIC_ID_NONE : id;
}

/* CPU hotplug callbacks (CPUHP_AP_ONLINE_DYN, run on the CPU itself). */
static int ipt_cpu_online(unsigned int cpu)
{
	struct ipt_region_header *h = ipt_region();

	if (h && cpu < IPT_MAX_CPUS) {
		struct ipt_ghdr_ext *x = ipt_ext(h);

		WRITE_ONCE(h->apic_id[cpu], ipt_apic_id(cpu));
		if (!test_and_set_bit(cpu, (unsigned long *)x->online)) {
			WRITE_ONCE(x->online_count, x->online_count + 1);
			if (ipt_cpuhp_state >= 0)
				x->hotplug_events++;
		}
	}
	return 0;
}

static int ipt_cpu_offline(unsigned int cpu)
{
	struct ipt_region_header *h = ipt_region();

	if (h && cpu < IPT_MAX_CPUS) {
		struct ipt_ghdr_ext *x = ipt_ext(h);

		if (test_and_clear_bit(cpu, (unsigned long *)x->online)) {
			WRITE_ONCE(x->online_count, x->online_count - 1);
			if (ipt_cpuhp_state >= 0)
				x->hotplug_events++;
		}
	}
	return 0;
}

/* Record type -> name and description, from the ABI's list */
struct ipt_type_desc {
	unsigned int type;
	const char *name;
	const char *desc;
};

#define IPT_NAME_ENTRY(name, value, desc) { value, #name, desc },
static const struct ipt_type_desc ipt_type_names[] = {
	IPT_RECORD_TYPES(IPT_NAME_ENTRY)
};

#undef IPT_NAME_ENTRY

static const char *ipt_type_name(unsigned int type)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(ipt_type_names); i++)
		if (ipt_type_names[i].type == type)
			return ipt_type_names[i].name;
	return NULL;
}

/* Lay out and initialise the region; publish READY|TRACING last. */
static int ipt_region_init(void *base, u64 size)
{
	struct ipt_region_header *h = base;
	u64 per_ring, cap, stride, sym_bytes;
	u32 sym_cap = IPT_SYM_CAPACITY;
	unsigned int cpu, k;

	if (nr_cpu_ids > IPT_MAX_CPUS) {
		pr_err(IPT_NAME ": %u possible CPUs, the format holds %u\n",
		       nr_cpu_ids, IPT_MAX_CPUS);
		return -E2BIG;
	}
	/* The symbol table only where it leaves the rings 15/16 of the BAR. */
	sym_bytes = (u64)sym_cap * IPT_SYM_SIZE;
	if (size < 16 * sym_bytes) {
		sym_cap = 0;
		sym_bytes = 0;
	}
	if (size < IPT_HEADER_SIZE + sym_bytes)
		goto too_small;
	per_ring = div_u64(size - IPT_HEADER_SIZE - sym_bytes, nr_cpu_ids);
	if (per_ring < IPT_RING_HEADER_SIZE + IPT_MIN_RECORDS * IPT_RECORD_SIZE)
		goto too_small;
	cap = rounddown_pow_of_two((per_ring - IPT_RING_HEADER_SIZE) /
				   IPT_RECORD_SIZE);
	if (cap > U32_MAX)
		cap = 1ULL << 31;
	stride = IPT_RING_HEADER_SIZE + cap * IPT_RECORD_SIZE;

	/* Tell readers the header is being rewritten before touching it. */
	WRITE_ONCE(h->flags, 0);
	smp_wmb(); /* readers see flags == 0 before any field changes */

	h->magic = IPT_MAGIC;
	h->abi_major = IPT_ABI_MAJOR;
	h->abi_minor = IPT_ABI_MINOR;
	h->producer = IPT_PRODUCER_GUEST;
	h->record_size = IPT_RECORD_SIZE;
	h->header_size = IPT_HEADER_SIZE;
	h->ring_count = nr_cpu_ids;
	h->ring_capacity = cap;
	h->ring_stride = stride;
	h->region_size = IPT_HEADER_SIZE + (u64)nr_cpu_ids * stride + sym_bytes;
	h->tsc_khz = tsc_khz;
	h->cpu_count = nr_cpu_ids;
	h->vec_call_function = CALL_FUNCTION_VECTOR;
	h->vec_call_function_single = CALL_FUNCTION_SINGLE_VECTOR;
	h->vec_reschedule = RESCHEDULE_VECTOR;
	h->pad0 = 0;
	h->sym_capacity = sym_cap;
	h->sym_offset = sym_cap ? IPT_HEADER_SIZE + (u64)nr_cpu_ids * stride : 0;
	if (sym_cap)
		memset(base + h->sym_offset, 0, sym_bytes);
	h->stop_tsc = 0;
	memset(h->kernel_release, 0, sizeof(h->kernel_release));
	strscpy(h->kernel_release, utsname()->release,
		sizeof(h->kernel_release));
	memcpy(h->boot_id, ipt_boot_id, sizeof(h->boot_id));
	for (k = 0; k < IPT_MAX_CPUS; k++)
		h->apic_id[k] = IPT_APIC_ID_NONE;
	for_each_possible_cpu(cpu)
		h->apic_id[cpu] = ipt_apic_id(cpu);
	memset(h->reserved, 0, sizeof(h->reserved));
	{
		struct ipt_ghdr_ext *x = ipt_ext(h);

		/* Online bits are set by the hotplug callbacks. */
		x->csd_hang_ms = ipt_wd_hang_ms();
		x->boot_id_valid = ipt_boot_id_valid;
		ipt_probes_stage_src(x->stage_src);
		smp_wmb(); /* the extension's fields before its magic */
		x->magic = IPT_GHDR_EXT_MAGIC;
	}
	h->generation++;

	ipt_ring_mask = cap - 1;
	for (k = 0; k < nr_cpu_ids; k++) {
		struct ipt_ring_header *rh = base + IPT_HEADER_SIZE + k * stride;
		struct ipt_record *rec = ipt_ring_records(rh);
		u64 i;

		memset(rh, 0, IPT_RING_HEADER_SIZE);
		rh->cpu = k;
		memset(rec, 0, cap * IPT_RECORD_SIZE);
		for (i = 0; i < cap; i++)
			rec[i].seq = IPT_SEQ_INVALID;
		per_cpu(ipt_ring, k) = rh;
	}

	h->start_tsc = rdtsc_ordered();
	smp_wmb(); /* header and rings complete before READY */
	WRITE_ONCE(h->flags, IPT_REGION_F_READY | IPT_REGION_F_TRACING);
	pr_info(IPT_NAME ": region %llu bytes, %u rings of %llu records\n",
		size, nr_cpu_ids, cap);
	return 0;

too_small:
	pr_err(IPT_NAME ": ivshmem BAR %d is %llu bytes; need %llu for %u CPUs with %u records each\n",
	       IPT_BAR, size,
	       IPT_HEADER_SIZE + (u64)nr_cpu_ids *
	       (IPT_RING_HEADER_SIZE + IPT_MIN_RECORDS * IPT_RECORD_SIZE),
	       nr_cpu_ids, IPT_MIN_RECORDS);
	return -ENOSPC;
}

/*
 * No writer finds a ring any more once this returns: each writes with
 * preemption disabled (probes, IRQ and NMI handlers included), and
 * synchronize_rcu() waits for every such section that began before.
 */
static void ipt_rings_forget(void)
{
	unsigned int cpu;

	for_each_possible_cpu(cpu)
		WRITE_ONCE(per_cpu(ipt_ring, cpu), NULL);
	synchronize_rcu();
}

/*
 * Whether this ivshmem device is meant for ipitrace: the one device=
 * names, or (without device=) one whose region starts with IPT_MAGIC,
 * which the host wrote before boot (ipitrace claim) or an earlier load
 * left.  Nothing is written to a device that is not: another program's
 * ivshmem region keeps every byte.
 */
static bool ipt_device_is_ours(struct pci_dev *pdev, const void *base,
			       resource_size_t len)
{
	u64 magic = len >= sizeof(u64) ? READ_ONCE(*(const u64 *)base) : 0;

	if (device && *device) {
		if (!strcmp(device, pci_name(pdev)))
			return true;
		dev_info(&pdev->dev, "not the device ipitrace was told to use (device=%s); left untouched\n",
			 device);
		return false;
	}
	if (magic == IPT_MAGIC)
		return true;
	dev_info(&pdev->dev,
		 "its region holds no ipitrace claim (first bytes %016llx); left untouched: claim it on the host (ipitrace claim FILE) or load with device=%s\n",
		 magic, pci_name(pdev));
	return false;
}

static int ipt_pci_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	resource_size_t start, len;
	void *base;
	int ret;

	if (ipt_pdev) {
		dev_info(&pdev->dev, "already tracing to %s, ignoring\n",
			 pci_name(ipt_pdev));
		return -EBUSY;
	}

	ret = pci_enable_device_mem(pdev);
	if (ret)
		goto err_out;
	ret = pci_request_region(pdev, IPT_BAR, IPT_NAME);
	if (ret)
		goto err_disable;

	start = pci_resource_start(pdev, IPT_BAR);
	len = pci_resource_len(pdev, IPT_BAR);
	base = len ? memremap(start, len, MEMREMAP_WB) : NULL;
	if (!base) {
		dev_err(&pdev->dev, "cannot map BAR %d (%pa, %pa bytes)\n",
			IPT_BAR, &start, &len);
		ret = -ENOMEM;
		goto err_release;
	}
	if (!ipt_device_is_ours(pdev, base, len)) {
		ret = -ENODEV;
		memunmap(base);
		goto err_release;
	}

	mutex_lock(&ipt_lock);
	ret = ipt_region_init(base, len);
	if (ret)
		goto err_unlock;
	ipt_hdr = base;
	ret = ipt_syms_start(ipt_hdr->sym_capacity ?
			     (struct ipt_sym *)(base + ipt_hdr->sym_offset) : NULL,
			     ipt_hdr->sym_capacity);
	if (ret)
		goto err_stopped;
	ret = probes ? ipt_probes_attach() : 0;
	if (ret)
		goto err_syms;
	/*
	 * Arming the probes patches kernel text, which itself sends
	 * call-function IPIs; the window where every probe is live (and so
	 * where guest and hypervisor counts must agree) starts only now.
	 */
	ipt_hdr->start_tsc = rdtsc_ordered();
	ipt_pdev = pdev;
	ipt_armed = true;
	mutex_unlock(&ipt_lock);

	dev_info(&pdev->dev, "tracing CSD/IPI events to BAR %d\n", IPT_BAR);
	return 0;

err_syms:
	ipt_syms_stop();
err_stopped:
	WRITE_ONCE(ipt_hdr->flags, IPT_REGION_F_READY | IPT_REGION_F_STOPPED);
	ipt_hdr = NULL;
	ipt_rings_forget();
err_unlock:
	mutex_unlock(&ipt_lock);
	memunmap(base);
err_release:
	pci_release_region(pdev, IPT_BAR);
err_disable:
	pci_disable_device(pdev);
err_out:
	ipt_probe_err = ret;
	return ret;
}

static void ipt_pci_remove(struct pci_dev *pdev)
{
	if (pdev != ipt_pdev)
		return;

	mutex_lock(&ipt_lock);
	ipt_probes_detach();
	ipt_armed = false;
	ipt_syms_stop();
	ipt_rings_forget();

	ipt_hdr->stop_tsc = rdtsc_ordered();
	smp_wmb(); /* stop_tsc before STOPPED */
	WRITE_ONCE(ipt_hdr->flags, IPT_REGION_F_READY | IPT_REGION_F_STOPPED);
	memunmap(ipt_hdr);
	ipt_hdr = NULL;
	ipt_pdev = NULL;
	mutex_unlock(&ipt_lock);

	pci_release_region(pdev, IPT_BAR);
	pci_disable_device(pdev);
	dev_info(&pdev->dev, "tracing stopped\n");
}

static const struct pci_device_id ipt_pci_ids[] = {
	{ PCI_DEVICE(IPT_PCI_VENDOR, IPT_PCI_DEVICE) },
	{ }
};
MODULE_DEVICE_TABLE(pci, ipt_pci_ids);

static struct pci_driver ipt_pci_driver = {
	.name = IPT_NAME,
	.id_table = ipt_pci_ids,
	.probe = ipt_pci_probe,
	.remove = ipt_pci_remove,
};

static int ipt_counters_show(struct seq_file *m, void *v)
{
	unsigned int cpu, t;
	u64 sum;

	seq_puts(m, "type total");
	for_each_possible_cpu(cpu)
		seq_printf(m, " cpu%u", cpu);
	seq_putc(m, '\n');
	for (t = 0; t < IPT_NR_GUEST_TYPES; t++) {
		if (!ipt_type_name(t))
			continue;
		sum = 0;
		for_each_possible_cpu(cpu)
			sum += per_cpu(ipt_rec_count, cpu)[t];
		seq_printf(m, "%s %llu", ipt_type_name(t), sum);
		for_each_possible_cpu(cpu)
			seq_printf(m, " %llu", per_cpu(ipt_rec_count, cpu)[t]);
		seq_putc(m, '\n');
	}
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(ipt_counters);

static int ipt_tracepoints_show(struct seq_file *m, void *v)
{
	ipt_probes_show(m);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(ipt_tracepoints);

static int ipt_stages_show(struct seq_file *m, void *v)
{
	ipt_probes_show_stages(m);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(ipt_stages);

static int ipt_symbols_show(struct seq_file *m, void *v)
{
	ipt_syms_show(m);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(ipt_symbols);

static int ipt_watchdog_show(struct seq_file *m, void *v)
{
	ipt_wd_show(m);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(ipt_watchdog);

static int ipt_header_show(struct seq_file *m, void *v)
{
	struct ipt_region_header *h;
	struct ipt_ghdr_ext *x;
	unsigned int cpu;

	mutex_lock(&ipt_lock);
	h = ipt_hdr;
	if (h) {
		x = ipt_ext(h);
		seq_printf(m, "ring_capacity %u\ntsc_khz %u\ncpu_count %u\nrelease %s\nboot_id %pU\nonline_count %u\nhotplug_events %llu\n",
			   h->ring_capacity, h->tsc_khz, h->cpu_count,
			   h->kernel_release, h->boot_id, x->online_count,
			   x->hotplug_events);
		for (cpu = 0; cpu < h->cpu_count; cpu++)
			seq_printf(m, "cpu %u apic_id %u online %d\n", cpu,
				   h->apic_id[cpu],
				   test_bit(cpu, (unsigned long *)x->online));
	}
	mutex_unlock(&ipt_lock);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(ipt_header);

/* "probes": read 0/1; write 1 to attach, 0 to detach (at run time). */
static int ipt_probes_get(void *data, u64 *val)
{
	*val = ipt_probes_attached();
	return 0;
}

static int ipt_probes_set(void *data, u64 val)
{
	int ret = 0;

	if (val > 1)
		return -EINVAL;
	mutex_lock(&ipt_lock);
	if (!ipt_armed)
		ret = -ENODEV;
	else if (val)
		ret = ipt_probes_attach();
	else
		ipt_probes_detach();
	mutex_unlock(&ipt_lock);
	return ret;
}
DEFINE_DEBUGFS_ATTRIBUTE(ipt_probes_fops, ipt_probes_get, ipt_probes_set,
			 "%llu\n");

/* "mark": write a u32 to put a G_MARK with arg0 = it on this CPU's ring. */
static int ipt_mark_set(void *data, u64 val)
{
	if (val > U32_MAX)
		return -EINVAL;
	ipt_emit_mark(val);
	return 0;
}
DEFINE_DEBUGFS_ATTRIBUTE(ipt_mark_fops, NULL, ipt_mark_set, "%llu\n");

static int __init ipt_init(void)
{
	int ret;

	BUILD_BUG_ON(sizeof(struct ipt_region_header) != IPT_HEADER_SIZE);
	BUILD_BUG_ON(sizeof(struct ipt_ring_header) != IPT_RING_HEADER_SIZE);
	BUILD_BUG_ON(sizeof(struct ipt_record) != IPT_RECORD_SIZE);
	BUILD_BUG_ON(sizeof(struct ipt_sym) != IPT_SYM_SIZE);
	BUILD_BUG_ON(sizeof(local_t) != sizeof(u64));
	BUILD_BUG_ON(offsetof(struct ipt_ring_header, head) != 0);

	ret = ipt_wd_validate();
	if (ret)
		goto err_out;
	ret = ipt_probes_lookup();
	if (ret)
		goto err_out;

	ipt_read_boot_id();
	ret = pci_register_driver(&ipt_pci_driver);
	if (ret)
		goto err_out;
	if (!ipt_pdev) {
		if (ipt_probe_err == -ENODEV) {
			ret = -ENODEV;
			pr_err(IPT_NAME ": no ivshmem-plain device meant for ipitrace: claim its region on the host (ipitrace claim FILE) or name it with device=\n");
		} else if (ipt_probe_err) {
			ret = ipt_probe_err;
			pr_err(IPT_NAME ": ivshmem-plain device found but setup failed: %d\n",
			       ret);
		} else {
			ret = -ENODEV;
			pr_err("ipitrace: no ivshmem-plain device (PCI 1af4:1110) found; give the VM a <shmem> device\n");
		}
		goto err_unregister;
	}

	ret = cpuhp_setup_state(CPUHP_AP_ONLINE_DYN, "ipitrace:online",
				ipt_cpu_online, ipt_cpu_offline);
	if (ret < 0) {
		pr_err(IPT_NAME ": cannot register CPU hotplug callbacks: %d\n",
		       ret);
		goto err_unregister;
	}
	ipt_cpuhp_state = ret;

	ipt_debugfs = debugfs_create_dir(IPT_NAME, NULL);
	debugfs_create_file("counters", 0444, ipt_debugfs, NULL,
			    &ipt_counters_fops);
	debugfs_create_file("tracepoints", 0444, ipt_debugfs, NULL,
			    &ipt_tracepoints_fops);
	debugfs_create_file("stages", 0444, ipt_debugfs, NULL, &ipt_stages_fops);
	debugfs_create_file("symbols", 0444, ipt_debugfs, NULL, &ipt_symbols_fops);
	debugfs_create_file("watchdog", 0444, ipt_debugfs, NULL,
			    &ipt_watchdog_fops);
	debugfs_create_file("header", 0444, ipt_debugfs, NULL,
			    &ipt_header_fops);
	debugfs_create_file_unsafe("probes", 0644, ipt_debugfs, NULL,
				   &ipt_probes_fops);
	debugfs_create_file_unsafe("mark", 0200, ipt_debugfs, NULL,
				   &ipt_mark_fops);
	return 0;

err_unregister:
	pci_unregister_driver(&ipt_pci_driver);
	ipt_probes_release();
err_out:
	return ret;
}

static void __exit ipt_exit(void)
{
	debugfs_remove_recursive(ipt_debugfs);
	cpuhp_remove_state_nocalls(ipt_cpuhp_state);
	pci_unregister_driver(&ipt_pci_driver);
	ipt_probes_release();
}

module_init(ipt_init);
module_exit(ipt_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("ipitrace: record CSD/IPI events into ivshmem shared memory");
MODULE_AUTHOR("ipitrace project");

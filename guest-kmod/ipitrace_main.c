// SPDX-License-Identifier: GPL-2.0
/* ipitrace: ivshmem-plain PCI driver, shared region layout, module init/exit. */
#include <linux/build_bug.h>
#include <linux/debugfs.h>
#include <linux/io.h>
#include <linux/log2.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pci.h>
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

DEFINE_MUTEX(ipt_lock);
bool ipt_armed;

DEFINE_PER_CPU(struct ipt_ring_header *, ipt_ring);
DEFINE_PER_CPU(u64 [IPT_NR_GUEST_TYPES], ipt_rec_count);
u64 ipt_ring_mask;

static struct pci_dev *ipt_pdev;
static struct ipt_region_header *ipt_hdr;
static int ipt_probe_err;
static struct dentry *ipt_debugfs;

static const char *ipt_type_name(unsigned int type)
{
	switch (type) {
#define IPT_NAME_CASE(name, value, desc) case value: return #name;
	IPT_RECORD_TYPES(IPT_NAME_CASE)
#undef IPT_NAME_CASE
	}
	return NULL;
}

/* Lay out and initialise the region; publish READY|TRACING last. */
static int ipt_region_init(void *base, u64 size)
{
	struct ipt_region_header *h = base;
	u64 per_ring, cap, stride;
	unsigned int cpu, k;

	if (nr_cpu_ids > IPT_MAX_CPUS) {
		pr_err(IPT_NAME ": %u possible CPUs, the format holds %u\n",
		       nr_cpu_ids, IPT_MAX_CPUS);
		return -E2BIG;
	}
	if (size < IPT_HEADER_SIZE)
		goto too_small;
	per_ring = div_u64(size - IPT_HEADER_SIZE, nr_cpu_ids);
	if (per_ring < IPT_RING_HEADER_SIZE + IPT_MIN_RECORDS * IPT_RECORD_SIZE)
		goto too_small;
	cap = rounddown_pow_of_two((per_ring - IPT_RING_HEADER_SIZE) /
				   IPT_RECORD_SIZE);
	if (cap > U32_MAX)
		cap = 1ULL << 31;
	stride = IPT_RING_HEADER_SIZE + cap * IPT_RECORD_SIZE;

	/* Tell readers the header is being rewritten before touching it. */
	WRITE_ONCE(h->flags, 0);
	smp_wmb();

	h->magic = IPT_MAGIC;
	h->abi_major = IPT_ABI_MAJOR;
	h->abi_minor = IPT_ABI_MINOR;
	h->producer = IPT_PRODUCER_GUEST;
	h->record_size = IPT_RECORD_SIZE;
	h->header_size = IPT_HEADER_SIZE;
	h->ring_count = nr_cpu_ids;
	h->ring_capacity = cap;
	h->ring_stride = stride;
	h->region_size = IPT_HEADER_SIZE + (u64)nr_cpu_ids * stride;
	h->tsc_khz = tsc_khz;
	h->cpu_count = nr_cpu_ids;
	h->vec_call_function = CALL_FUNCTION_VECTOR;
	h->vec_call_function_single = CALL_FUNCTION_SINGLE_VECTOR;
	h->vec_reschedule = RESCHEDULE_VECTOR;
	h->pad0 = 0;
	h->sym_capacity = 0;
	h->sym_offset = 0;
	h->stop_tsc = 0;
	memset(h->kernel_release, 0, sizeof(h->kernel_release));
	strscpy(h->kernel_release, utsname()->release,
		sizeof(h->kernel_release));
	memset(h->boot_id, 0, sizeof(h->boot_id));
	for (k = 0; k < IPT_MAX_CPUS; k++)
		h->apic_id[k] = IPT_APIC_ID_NONE;
	for_each_possible_cpu(cpu)
		h->apic_id[cpu] = cpu_physical_id(cpu);
	memset(h->reserved, 0, sizeof(h->reserved));
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
	smp_wmb();
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

static void ipt_rings_forget(void)
{
	unsigned int cpu;

	for_each_possible_cpu(cpu)
		per_cpu(ipt_ring, cpu) = NULL;
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

	mutex_lock(&ipt_lock);
	ret = ipt_region_init(base, len);
	if (ret)
		goto err_unlock;
	ipt_hdr = base;
	ret = ipt_probes_attach();
	if (ret)
		goto err_stopped;
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
	ipt_load_stop();
	ipt_probes_detach();
	ipt_armed = false;
	ipt_rings_forget();

	ipt_hdr->stop_tsc = rdtsc_ordered();
	smp_wmb();
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

	sum = 0;
	for_each_possible_cpu(cpu)
		sum += per_cpu(ipt_load_ops, cpu);
	seq_printf(m, "load_ops %llu", sum);
	for_each_possible_cpu(cpu)
		seq_printf(m, " %llu", per_cpu(ipt_load_ops, cpu));
	seq_putc(m, '\n');

	sum = 0;
	for_each_possible_cpu(cpu)
		sum += per_cpu(ipt_load_calls, cpu);
	seq_printf(m, "load_calls %llu", sum);
	for_each_possible_cpu(cpu)
		seq_printf(m, " %llu", per_cpu(ipt_load_calls, cpu));
	seq_putc(m, '\n');
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(ipt_counters);

static int __init ipt_init(void)
{
	int ret;

	BUILD_BUG_ON(sizeof(struct ipt_region_header) != IPT_HEADER_SIZE);
	BUILD_BUG_ON(sizeof(struct ipt_ring_header) != IPT_RING_HEADER_SIZE);
	BUILD_BUG_ON(sizeof(struct ipt_record) != IPT_RECORD_SIZE);
	BUILD_BUG_ON(sizeof(struct ipt_sym) != IPT_SYM_SIZE);
	BUILD_BUG_ON(sizeof(local_t) != sizeof(u64));
	BUILD_BUG_ON(offsetof(struct ipt_ring_header, head) != 0);

	ret = ipt_load_validate();
	if (ret)
		goto err_out;
	ret = ipt_probes_lookup();
	if (ret)
		goto err_out;

	ret = pci_register_driver(&ipt_pci_driver);
	if (ret)
		goto err_out;
	if (!ipt_pdev) {
		if (ipt_probe_err) {
			ret = ipt_probe_err;
			pr_err(IPT_NAME ": ivshmem-plain device found but setup failed: %d\n",
			       ret);
		} else {
			ret = -ENODEV;
			pr_err("ipitrace: no ivshmem-plain device (PCI 1af4:1110) found; give the VM a <shmem> device\n");
		}
		goto err_unregister;
	}

	ipt_debugfs = debugfs_create_dir(IPT_NAME, NULL);
	debugfs_create_file("counters", 0444, ipt_debugfs, NULL,
			    &ipt_counters_fops);

	mutex_lock(&ipt_lock);
	ret = (ipt_armed && ipt_load_wanted()) ? ipt_load_start() : 0;
	mutex_unlock(&ipt_lock);
	if (ret)
		goto err_debugfs;
	return 0;

err_debugfs:
	debugfs_remove_recursive(ipt_debugfs);
err_unregister:
	pci_unregister_driver(&ipt_pci_driver);
err_out:
	return ret;
}

static void __exit ipt_exit(void)
{
	debugfs_remove_recursive(ipt_debugfs);
	pci_unregister_driver(&ipt_pci_driver);
}

module_init(ipt_init);
module_exit(ipt_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("ipitrace: record CSD/IPI events into ivshmem shared memory");
MODULE_AUTHOR("ipitrace project");

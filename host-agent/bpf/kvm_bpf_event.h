/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * What the KVM source's BPF programs (kvm_source.bpf.c) hand the collector
 * (kvm_bpf.cc) through their ring buffer: one KVM tracepoint hit of the
 * traced VM, with the tracepoint's arguments as numbers.  Shared by the BPF
 * C and the agent's C++; plain C, fixed layout.
 */
#ifndef IPITRACE_KVM_BPF_EVENT_H_
#define IPITRACE_KVM_BPF_EVENT_H_

#include <linux/types.h>

/* KVM's PV send-IPI hypercall: the only kvm_hypercall the source reads. */
#define IPT_KVM_HC_SEND_IPI 10

/* kind: the order of ipitrace::KvmEvent::Kind (static_assert in kvm_bpf.cc). */
enum ipt_kvm_bpf_kind {
	IPT_KVM_BPF_APIC_IPI = 0,
	IPT_KVM_BPF_HYPERCALL,
	IPT_KVM_BPF_ACCEPT_IRQ,
	IPT_KVM_BPF_APICV_ACCEPT_IRQ,
	IPT_KVM_BPF_WAKEUP,
	IPT_KVM_BPF_INJ_VIRQ,
	IPT_KVM_BPF_EOI,
	IPT_KVM_BPF_WRITE_TSC_OFFSET,
	IPT_KVM_BPF_ENTRY,
	/* f[0] events this CPU could not reserve room for, f[1] the ns of the
	 * last event it did write before them (0: none) */
	IPT_KVM_BPF_LOST,
};

struct ipt_kvm_bpf_event {
	__u64 ns;   /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u64 f[5]; /* fields as KvmEvent::f documents them */
	__u32 tid;
	__u32 kind;
};

/* Per CPU: the drops not yet reported and the last event written. */
struct ipt_kvm_bpf_cpu {
	__u64 dropped;
	__u64 last_ns;
};

#endif

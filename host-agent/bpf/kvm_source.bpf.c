// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
/*
 * The KVM source's in-kernel half: one raw-tracepoint program per KVM
 * tracepoint the source reads (kvm_events.cc names them; each program is
 * named after its tracepoint), which keeps only the traced VM's threads and
 * copies the tracepoint's arguments into one ring buffer shared by all
 * CPUs.  No formatting, no ftrace buffer: the event costs the program and a
 * 56-byte reservation.  The collector reads the ring without a system call
 * per event and orders the CPUs' events by their time (kvm_bpf.cc).
 *
 * Where the ring is full, the event is counted on its CPU, and the next
 * event that CPU writes is preceded by an IPT_KVM_BPF_LOST record with the
 * count and the time of the last event before the loss: a window the
 * analysis calls a gap.  The argument lists are Linux 6.12's
 * (arch/x86/kvm/trace.h); a kernel whose tracepoints take fewer arguments
 * fails verification and the collector falls back to tracefs.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <stdbool.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#include "kvm_bpf_event.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* The VM's QEMU process: set before load. */
const volatile __u32 target_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 23); /* resized before load */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ipt_kvm_bpf_cpu);
} cpu_state SEC(".maps");

/* Only the fields read, relocated against the running kernel's BTF. */
struct kvm_vcpu {
	int vcpu_id;
} __attribute__((preserve_access_index));
struct kvm_lapic {
	struct kvm_vcpu *vcpu;
} __attribute__((preserve_access_index));

/* Reserves and sends one record; false if the ring is full. */
static __always_inline bool put(__u64 now, __u32 tid, __u32 kind, __u64 f0, __u64 f1, __u64 f2,
				__u64 f3, __u64 f4)
{
	struct ipt_kvm_bpf_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return false;
	e->ns = now;
	e->kind = kind;
	e->tid = tid;
	e->f[0] = f0;
	e->f[1] = f1;
	e->f[2] = f2;
	e->f[3] = f3;
	e->f[4] = f4;
	/* No wakeup: the collector polls on its own period. */
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	return true;
}

static __always_inline int emit(__u32 kind, __u64 f0, __u64 f1, __u64 f2, __u64 f3,
				__u64 f4)
{
	const __u64 id = bpf_get_current_pid_tgid();
	if ((__u32)(id >> 32) != target_tgid)
		return 0;
	const __u64 now = bpf_ktime_get_ns();
	__u32 zero = 0;
	struct ipt_kvm_bpf_cpu *st = bpf_map_lookup_elem(&cpu_state, &zero);
	if (!st)
		return 0;
	/* Drops first, then the event: the loss window ends where it starts. */
	if (st->dropped) {
		if (!put(now, (__u32)id, IPT_KVM_BPF_LOST, st->dropped, st->last_ns, 0, 0, 0)) {
			st->dropped++;
			return 0;
		}
		st->dropped = 0;
	}
	if (!put(now, (__u32)id, kind, f0, f1, f2, f3, f4)) {
		st->dropped++;
		return 0;
	}
	st->last_ns = now;
	return 0;
}

#define ARG(i) (ctx->args[i])

SEC("raw_tp/kvm_apic_ipi")
int kvm_apic_ipi(struct bpf_raw_tracepoint_args *ctx)
{
	return emit(IPT_KVM_BPF_APIC_IPI, (__u32)ARG(0), (__u32)ARG(1), 0, 0, 0);
}

SEC("raw_tp/kvm_hypercall")
int kvm_hypercall(struct bpf_raw_tracepoint_args *ctx)
{
	if (ARG(0) != IPT_KVM_HC_SEND_IPI)
		return 0;
	return emit(IPT_KVM_BPF_HYPERCALL, ARG(0), ARG(1), ARG(2), ARG(3), ARG(4));
}

SEC("raw_tp/kvm_apic_accept_irq")
int kvm_apic_accept_irq(struct bpf_raw_tracepoint_args *ctx)
{
	return emit(IPT_KVM_BPF_ACCEPT_IRQ, (__u32)ARG(0), (__u16)ARG(1), (__u16)ARG(2),
		    (__u8)ARG(3), 0);
}

SEC("raw_tp/kvm_apicv_accept_irq")
int kvm_apicv_accept_irq(struct bpf_raw_tracepoint_args *ctx)
{
	return emit(IPT_KVM_BPF_APICV_ACCEPT_IRQ, (__u32)ARG(0), (__u16)ARG(1), (__u16)ARG(2),
		    (__u8)ARG(3), 0);
}

SEC("raw_tp/kvm_vcpu_wakeup")
int kvm_vcpu_wakeup(struct bpf_raw_tracepoint_args *ctx)
{
	return emit(IPT_KVM_BPF_WAKEUP, ARG(0), (__u8)ARG(1), (__u8)ARG(2), 0, 0);
}

SEC("raw_tp/kvm_inj_virq")
int kvm_inj_virq(struct bpf_raw_tracepoint_args *ctx)
{
	return emit(IPT_KVM_BPF_INJ_VIRQ, (__u32)ARG(0), (__u8)ARG(1), (__u8)ARG(2), 0, 0);
}

SEC("raw_tp/kvm_eoi")
int kvm_eoi(struct bpf_raw_tracepoint_args *ctx)
{
	struct kvm_lapic *apic = (struct kvm_lapic *)ARG(0);
	return emit(IPT_KVM_BPF_EOI, (__u32)BPF_CORE_READ(apic, vcpu, vcpu_id), (__u32)ARG(1), 0,
		    0, 0);
}

SEC("raw_tp/kvm_write_tsc_offset")
int kvm_write_tsc_offset(struct bpf_raw_tracepoint_args *ctx)
{
	return emit(IPT_KVM_BPF_WRITE_TSC_OFFSET, (__u32)ARG(0), ARG(1), ARG(2), 0, 0);
}

SEC("raw_tp/kvm_entry")
int kvm_entry(struct bpf_raw_tracepoint_args *ctx)
{
	struct kvm_vcpu *vcpu = (struct kvm_vcpu *)ARG(0);
	return emit(IPT_KVM_BPF_ENTRY, (__u32)BPF_CORE_READ(vcpu, vcpu_id), 0, 0, 0, 0);
}

/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What kvm_fault.c (TEST-ONLY) needs from KVM's private arch/x86/kvm/lapic.h
 * of Linux 6.12: two functions kvm.ko exports (EXPORT_SYMBOL_GPL) and two
 * ICR masks.  Checked against Debian's 6.12 kvm.ko; a kernel whose
 * prototypes differ fails at modpost or load, not silently.
 */
#ifndef KVM_FAULT_KVM_PRIVATE_H
#define KVM_FAULT_KVM_PRIVATE_H

#include <linux/kvm_host.h>

#define KF_SHORT_MASK 0xc0000	/* APIC_SHORT_MASK: destination shorthand */
#define KF_DEST_MASK 0x800	/* APIC_DEST_MASK: logical destination mode */

int kvm_lapic_find_highest_irr(struct kvm_vcpu *vcpu);
void kvm_apic_clear_irr(struct kvm_vcpu *vcpu, int vec);

#endif /* KVM_FAULT_KVM_PRIVATE_H */

/* SPDX-License-Identifier: MIT */
/*
 * ipitrace shared record format: the one definition of the shared-memory
 * regions written by the patched QEMU (hypervisor stream) and by the guest
 * module (guest stream), read by the host agent and the Python harness.
 *
 * QEMU carries a verbatim copy (include/standard-headers/ipitrace/, by its
 * update-ipitrace-headers.sh); the module, agent and harness read this.
 *
 * All fields are fixed-width little-endian.  Layout of a region:
 *
 *   offset 0                     struct ipt_region_header (IPT_HEADER_SIZE)
 *   header_size + k*ring_stride  struct ipt_ring_header   (IPT_RING_HEADER_SIZE)
 *                                struct ipt_record[ring_capacity]
 *   sym_offset (if sym_capacity) struct ipt_sym[sym_capacity]
 *
 * Ring protocol (single writer per ring, any number of readers):
 *   slot = head % ring_capacity; the writer reserves slot 'head', sets
 *   rec.seq = IPT_SEQ_INVALID, writes the fields, then rec.seq = index,
 *   and publishes head = index + 1.  A reader copies a record and accepts it
 *   only if seq equals the index it expects (seqlock-style torn-read check).
 *   head never decreases; head > ring_capacity means head - ring_capacity
 *   records were overwritten (a flight recorder keeps the newest).
 */
#ifndef IPITRACE_ABI_H
#define IPITRACE_ABI_H

#if defined(__KERNEL__)
#include <linux/types.h>
typedef __u8 ipt_u8;
typedef __u16 ipt_u16;
typedef __u32 ipt_u32;
typedef __u64 ipt_u64;
#else
#include <stdint.h>
typedef uint8_t ipt_u8;
typedef uint16_t ipt_u16;
typedef uint32_t ipt_u32;
typedef uint64_t ipt_u64;
#endif

#define IPT_MAGIC 0x4543415254495049ULL /* "IPITRACE" as LE bytes */
#define IPT_ABI_MAJOR 1
#define IPT_ABI_MINOR 2

#define IPT_HEADER_SIZE 4096
#define IPT_RING_HEADER_SIZE 64
#define IPT_RECORD_SIZE 64
#define IPT_SYM_SIZE 64
#define IPT_MAX_CPUS 256
#define IPT_CPU_NONE 0xffff
#define IPT_SEQ_INVALID 0xffffffffffffffffULL
#define IPT_APIC_ID_NONE 0xffffffffU

/* Producers: IPT_PRODUCER(name, value) */
#define IPT_PRODUCERS(X) \
	X(QEMU, 1)       \
	X(GUEST, 2)      \
	X(KVM, 3)        /* the agent's KVM source (host tracepoints) */

/* Region header flags: IPT_REGION_FLAG(name, bit) */
#define IPT_REGION_FLAGS(X) \
	X(READY, 0)    /* header complete; rings valid */         \
	X(TRACING, 1)  /* producer is currently recording */      \
	X(STOPPED, 2)  /* producer stopped cleanly (unload/exit) */

/*
 * Record types: IPT_RECORD(name, value, description).
 * G_* are written by the guest module on guest CPU 'cpu'; H_* by QEMU on
 * the ring of the vCPU thread that did the work ('cpu' = vCPU index, or
 * IPT_CPU_NONE on the extra ring for non-vCPU context).
 * Field use per type (unused fields are zero):
 *   G_QUEUE      target=T flags=csd type(IPT_CSD_*) a0=func a1=csd a2=callsite
 *   G_SEND       target=T flags=IPT_SEND_F_* arg0=mask weight a0=callback
 *                a1=callsite (one record per target of a cpumask send)
 *   G_ELIDE      target=T (sched_wake_idle_without_ipi: target was polling)
 *   G_IRQ_ENTRY  vector                    G_IRQ_EXIT vector
 *   G_FUNC_ENTRY a0=func a1=csd flags=IPT_FUNC_F_*   G_FUNC_EXIT same
 *   G_HANG       target=T a0=func a1=csd arg0=ms waited flags=1 continued
 *   G_MARK       arg0=mark id (load start/stop, user marks)
 *   H_ICR        cpu=source vCPU vector flags=IPT_ICR_F_* arg0=ICR low 32
 *                bits arg1=destination field (x2APIC: 32 bits, xAPIC: 8)
 *                a0..a3=bitmap of resolved target vCPUs (bit i of a[i/64])
 *   H_IRR        target=vCPU vector flags=IPT_IRR_F_* arg0=target PPR
 *                a0=seq of the H_ICR record on this ring (IPT_SEQ_INVALID
 *                when not caused by an ICR write: MSI, IOAPIC, LVT)
 *   H_KICK       target=vCPU flags=IPT_KICK_F_* (on the ring of the
 *                thread that kicked the target, e.g. the ICR sender)
 *   H_ACK        vector (interrupt acknowledged by this vCPU)
 *                target=IPT_CPU_NONE
 *   H_EOI        vector (EOI by this vCPU; 0xff when ISR empty)
 *                target=IPT_CPU_NONE
 *   H_HELD       target=vCPU whose APIC holds it, vector, arg0=PPR
 *                (pending vector held back by priority; written on
 *                transitions to a new held vector only)
 *   H_NMI/H_INIT/H_SIPI: like H_IRR, non-fixed delivery to target
 *                (vector: SIPI start page; flags 0, arg0 0)
 *   H_GAP        the source lost records (e.g. a tracefs buffer overran)
 *                between a0 (tsc of the last record before the loss) and
 *                tsc; arg0 = records lost (0xffffffff: unknown), arg1 =
 *                IPT_HV_LOST_* cause.  Written on every vCPU ring, since a
 *                lost record could have belonged to any of them.
 * A KVM source writes H_IRR on the ring of the thread that set the bit (the
 * sender for an IPI), H_KICK on the ring of the woken vCPU itself (target =
 * that vCPU), and cannot see PPR (arg0 0, no IPT_IRR_F_DELIVERABLE).
 */
#define IPT_RECORD_TYPES(X)                                                  \
	X(G_QUEUE, 1, "csd queued for a target CPU")                         \
	X(G_SEND, 2, "guest asked for a call-function IPI")                  \
	X(G_ELIDE, 3, "IPI elided: target idle and polling")                 \
	X(G_IRQ_ENTRY, 4, "guest IRQ handler entry")                         \
	X(G_IRQ_EXIT, 5, "guest IRQ handler exit")                           \
	X(G_FUNC_ENTRY, 6, "csd function entry")                             \
	X(G_FUNC_EXIT, 7, "csd function exit")                               \
	X(G_HANG, 8, "guest watchdog: csd outstanding too long")             \
	X(G_MARK, 9, "guest marker")                                         \
	X(H_ICR, 32, "ICR write (IPI request) by a vCPU")                    \
	X(H_IRR, 33, "IRR bit set or coalesced on a target LAPIC")           \
	X(H_KICK, 34, "target vCPU kicked")                                  \
	X(H_ACK, 35, "interrupt acknowledged by the vCPU")                   \
	X(H_EOI, 36, "EOI written by the vCPU")                              \
	X(H_HELD, 37, "pending vector held back by priority")                \
	X(H_NMI, 38, "NMI delivered to target")                              \
	X(H_INIT, 39, "INIT delivered to target")                            \
	X(H_SIPI, 40, "SIPI delivered to target")                           \
	X(H_GAP, 41, "hypervisor source lost records here")

enum ipt_record_type {
#define IPT_ENUM_RECORD(name, value, desc) IPT_##name = value,
	IPT_RECORD_TYPES(IPT_ENUM_RECORD)
#undef IPT_ENUM_RECORD
};

/* csd types, as CSD_TYPE() in kernel/smp.c, shifted down: flags of G_QUEUE */
#define IPT_CSD_ASYNC 0
#define IPT_CSD_SYNC 1
#define IPT_CSD_IRQ_WORK 2
#define IPT_CSD_TTWU 3

#define IPT_SEND_F_MASK 0x01 /* from ipi_send_cpumask */
#define IPT_FUNC_F_FROM_IRQ 0x01 /* ran from the call-function IPI handler */
#define IPT_ICR_F_X2APIC 0x01 /* written through the x2APIC MSR */
#define IPT_ICR_F_MORE 0x02 /* targets beyond IPT_MAX_CPUS were resolved */
#define IPT_ICR_F_PV 0x04 /* KVM_HC_SEND_IPI hypercall: one H_ICR per target */
/* The source could not resolve the destination (e.g. xAPIC logical mode,
 * whose LDRs it cannot see): the bitmap holds only the targets it saw an IRR
 * set for, and a missing target is not a routing loss. */
#define IPT_ICR_F_UNRESOLVED 0x08
#define IPT_IRR_F_COALESCED 0x01 /* IRR bit was already set */
#define IPT_IRR_F_DELIVERABLE 0x02 /* vector above PPR: deliverable now */
#define IPT_KICK_F_HALTED 0x01 /* target was halted when kicked */

#define IPT_MARK_LOAD_START 1
#define IPT_MARK_LOAD_STOP 2

struct ipt_region_header {
	ipt_u64 magic;            /*   0 IPT_MAGIC */
	ipt_u16 abi_major;        /*   8 */
	ipt_u16 abi_minor;        /*  10 */
	ipt_u16 producer;         /*  12 IPT_PRODUCER_* */
	ipt_u16 record_size;      /*  14 IPT_RECORD_SIZE */
	ipt_u32 header_size;      /*  16 bytes before ring 0 */
	ipt_u32 ring_count;       /*  20 */
	ipt_u32 ring_capacity;    /*  24 records per ring, power of two */
	ipt_u32 flags;            /*  28 IPT_REGION_F_* */
	ipt_u64 ring_stride;      /*  32 bytes per ring incl. its header */
	ipt_u64 region_size;      /*  40 bytes the producer laid out */
	ipt_u32 tsc_khz;          /*  48 */
	ipt_u32 cpu_count;        /*  52 entries valid in apic_id[] */
	ipt_u8 vec_call_function; /*  56 CALL_FUNCTION_VECTOR */
	ipt_u8 vec_call_function_single; /* 57 */
	ipt_u8 vec_reschedule;    /*  58 */
	ipt_u8 pad0;              /*  59 */
	ipt_u32 sym_capacity;     /*  60 entries of the symbol table */
	ipt_u64 sym_offset;       /*  64 byte offset of the symbol table */
	ipt_u64 generation;       /*  72 bumped at every (re)initialisation */
	ipt_u64 start_tsc;        /*  80 TSC when recording started */
	ipt_u64 stop_tsc;         /*  88 TSC when recording stopped, or 0 */
	char kernel_release[64];  /*  96 guest: utsname release; QEMU: version */
	ipt_u8 boot_id[16];       /* 160 */
	ipt_u32 apic_id[IPT_MAX_CPUS]; /* 176 cpu/vCPU index -> APIC ID */
	ipt_u8 reserved[IPT_HEADER_SIZE - 176 - 4 * IPT_MAX_CPUS];
};

#define IPT_FLAG_BIT(name, bit) IPT_REGION_F_##name = 1u << (bit),
enum ipt_region_flag { IPT_REGION_FLAGS(IPT_FLAG_BIT) };
#undef IPT_FLAG_BIT
#define IPT_PRODUCER_ENUM(name, value) IPT_PRODUCER_##name = value,
enum ipt_producer { IPT_PRODUCERS(IPT_PRODUCER_ENUM) };
#undef IPT_PRODUCER_ENUM

struct ipt_ring_header {
	ipt_u64 head;     /*  0 records ever written to this ring */
	ipt_u32 cpu;      /*  8 writer CPU / vCPU index, IPT_CPU_NONE: misc */
	ipt_u32 flags;    /* 12 */
	ipt_u64 dropped;  /* 16 records the producer chose not to write */
	ipt_u8 reserved[IPT_RING_HEADER_SIZE - 24];
};

struct ipt_record {
	ipt_u64 seq;      /*  0 index in the ring's stream; written last */
	ipt_u64 tsc;      /*  8 guest-visible TSC of the writing CPU */
	ipt_u16 type;     /* 16 enum ipt_record_type */
	ipt_u16 cpu;      /* 18 writing CPU / vCPU index */
	ipt_u16 target;   /* 20 target CPU / vCPU, IPT_CPU_NONE if none */
	ipt_u8 vector;    /* 22 */
	ipt_u8 flags;     /* 23 type-specific */
	ipt_u32 arg0;     /* 24 */
	ipt_u32 arg1;     /* 28 */
	ipt_u64 a[4];     /* 32 */
};

/* Symbol table entry: a function pointer seen in the stream, resolved in
 * the guest off the hot path, printed by the agent as %pS does:
 * name+off/size [module].  name[] holds the symbol's name, NUL, and for a
 * module's symbol the module's name and NUL where both fit.  An entry is
 * valid once addr (written last) is non-zero. */
struct ipt_sym {
	ipt_u64 addr;     /*  0 */
	ipt_u32 offset;   /*  8 */
	ipt_u32 size;     /* 12 */
	char name[48];    /* 16 name NUL [module NUL] (truncated) */
};

/*
 * Guest-only header extension, written by the guest module only.  It lives in
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
 *   +56 u8 stage_src[IPT_G_STAGE_MAX]
 *                          how the module observes each guest stage on
 *                          this kernel (IPT_G_SRC_*, indexed by
 *                          IPT_G_STAGE_*); 0 (unstated, modules before
 *                          ABI 1.2) means tracepoints for every stage
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

/*
 * IPT_G_STAGE(name, index, records, description): the guest's stages.
 * Linux 6.3 added the csd:* and ipi:ipi_send_* tracepoints; before it the
 * module observes the queue and the send with kprobes and cannot observe
 * the function a request runs.
 */
#define IPT_G_STAGES(X)                                                  \
	X(QUEUE, 0, "G_QUEUE", "a csd queued for a CPU")                 \
	X(SEND, 1, "G_SEND", "a call-function IPI sent")                 \
	X(ELIDE, 2, "G_ELIDE", "an IPI elided: the target was polling")  \
	X(IRQ, 3, "G_IRQ_ENTRY/EXIT", "the IPI handler entered and left") \
	X(FUNC, 4, "G_FUNC_ENTRY/EXIT", "the queued function run")

#define IPT_G_STAGE_MAX 8

/* IPT_G_SRC(name, value, description) */
#define IPT_G_SRCS(X)                                                    \
	X(UNSTATED, 0, "unstated (a module before ABI 1.2: tracepoint)")  \
	X(TRACEPOINT, 1, "tracepoint")                                   \
	X(KPROBE, 2, "kprobe")                                           \
	X(NONE, 3, "not observable on this kernel")

#define IPT_G_STAGE_ENUM(name, index, recs, desc) IPT_G_STAGE_##name = index,
enum ipt_g_stage { IPT_G_STAGES(IPT_G_STAGE_ENUM) };
#undef IPT_G_STAGE_ENUM
#define IPT_G_SRC_ENUM(name, value, desc) IPT_G_SRC_##name = value,
enum ipt_g_src { IPT_G_SRCS(IPT_G_SRC_ENUM) };
#undef IPT_G_SRC_ENUM

struct ipt_ghdr_ext {
	ipt_u32 magic;
	ipt_u32 online_count;
	ipt_u64 online[IPT_MAX_CPUS / 64];
	ipt_u64 hotplug_events;
	ipt_u32 csd_hang_ms;
	ipt_u32 boot_id_valid;
	ipt_u8 stage_src[IPT_G_STAGE_MAX];
};

/*
 * Hypervisor header extension, written by hypervisor sources that cannot
 * observe every stage (the KVM source).  It lives in reserved[] at byte
 * offset IPT_HHDR_EXT_OFFSET of the region and is valid when its magic reads
 * IPT_HHDR_EXT_MAGIC.  A hypervisor region without it observes every stage
 * (the patched QEMU).
 *
 *   stages          IPT_HV_STAGE_* bits: stages this source observes
 *   stages_partial  ... observed for some IPIs only (AVIC: IPIs to vCPUs
 *                   that are not running); a partial stage is not blamed
 *   accel           IPT_HV_ACCEL_* bits: the host settings that hide stages
 *   lost[c]         records lost by cause IPT_HV_LOST_* (also H_GAP records)
 *   source          NUL-terminated name of the source, e.g. "kvm-tracefs"
 */
#define IPT_HHDR_EXT_OFFSET 1280
#define IPT_HHDR_EXT_MAGIC 0x54584548U /* "HEXT" */

/* IPT_HV_STAGE(name, bit, description) */
#define IPT_HV_STAGES(X)                                         \
	X(ICR, 0, "ICR writes (H_ICR)")                          \
	X(IRR, 1, "IRR sets (H_IRR)")                            \
	X(COALESCE, 2, "whether an IRR set found the bit already set") \
	X(KICK, 3, "kicks and halts (H_KICK)")                   \
	X(ACK, 4, "interrupt acknowledge / injection (H_ACK)")   \
	X(EOI, 5, "EOI (H_EOI)")

/* IPT_HV_ACCEL(name, bit, hidden stages, setting that shows them) */
#define IPT_HV_ACCEL(X)                                                  \
	X(APICV, 0, (1u << 2) | (1u << 4) | (1u << 5),                   \
	  "kvm_intel enable_apicv=0")                                    \
	X(IPIV, 1, 0x3fU, "kvm_intel enable_ipiv=0 (or enable_apicv=0)") \
	X(AVIC, 2, 0x3fU, "kvm_amd avic=0")

/* IPT_HV_LOST(name, index, description) */
#define IPT_HV_LOST(X)                                                   \
	X(OVERRUN, 0, "the host's trace buffer overran before it was read") \
	X(UNMAPPED, 1, "an event on a thread not mapped to a vCPU")      \
	X(UNKNOWN_VCPU, 2, "an event naming a vCPU id the VM does not have")

#define IPT_HV_LOST_MAX 8

#define IPT_HV_STAGE_BIT(name, bit, desc) IPT_HV_STAGE_##name = 1u << (bit),
enum ipt_hv_stage { IPT_HV_STAGES(IPT_HV_STAGE_BIT) };
#undef IPT_HV_STAGE_BIT
#define IPT_HV_STAGE_ALL 0x3fU
#define IPT_HV_ACCEL_BIT(name, bit, hides, setting) IPT_HV_ACCEL_##name = 1u << (bit),
enum ipt_hv_accel { IPT_HV_ACCEL(IPT_HV_ACCEL_BIT) };
#undef IPT_HV_ACCEL_BIT
#define IPT_HV_LOST_ENUM(name, index, desc) IPT_HV_LOST_##name = index,
enum ipt_hv_lost { IPT_HV_LOST(IPT_HV_LOST_ENUM) };
#undef IPT_HV_LOST_ENUM

struct ipt_hhdr_ext {
	ipt_u32 magic;          /*  0 IPT_HHDR_EXT_MAGIC */
	ipt_u32 stages;         /*  4 IPT_HV_STAGE_* observed */
	ipt_u32 stages_partial; /*  8 IPT_HV_STAGE_* observed for some IPIs */
	ipt_u32 accel;          /* 12 IPT_HV_ACCEL_* */
	ipt_u64 lost[IPT_HV_LOST_MAX]; /* 16 */
	char source[32];        /* 80 */
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

#if defined(__cplusplus)
static_assert(sizeof(struct ipt_region_header) == IPT_HEADER_SIZE, "hdr");
static_assert(sizeof(struct ipt_ring_header) == IPT_RING_HEADER_SIZE, "ring");
static_assert(sizeof(struct ipt_record) == IPT_RECORD_SIZE, "record");
static_assert(sizeof(struct ipt_sym) == IPT_SYM_SIZE, "sym");
static_assert(sizeof(struct ipt_hhdr_ext) == 112, "hhdr_ext");
static_assert(sizeof(struct ipt_ghdr_ext) == 64, "ghdr_ext");
static_assert(IPT_GHDR_EXT_OFFSET + sizeof(struct ipt_ghdr_ext) <= IPT_HHDR_EXT_OFFSET,
              "ghdr_ext overlaps hhdr_ext");
#elif defined(__KERNEL__)
/* checked with BUILD_BUG_ON() in the module */
#else
_Static_assert(sizeof(struct ipt_region_header) == IPT_HEADER_SIZE, "hdr");
_Static_assert(sizeof(struct ipt_ring_header) == IPT_RING_HEADER_SIZE, "ring");
_Static_assert(sizeof(struct ipt_record) == IPT_RECORD_SIZE, "record");
_Static_assert(sizeof(struct ipt_sym) == IPT_SYM_SIZE, "sym");
#endif

#endif /* IPITRACE_ABI_H */

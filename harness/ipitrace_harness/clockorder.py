"""Check that a snapshot's two streams share one clock, from the records
alone (independent of the agent's matching rules).

On the sending CPU the guest's ipi_send tracepoint fires before the APIC
write that the hypervisor records, and on the target the hypervisor's
injection (H_ACK) comes before the guest's IRQ entry.  So, per (sender,
target, vector), in every prefix of the merged time-ordered sequence:

  #H_ICR naming the target  <=  #G_SEND to it      (no send after its ICR)

and per (target, vector):

  #G_IRQ_ENTRY  <=  #H_ACK                          (no entry before its
                                                      injection)

counted from the guest's "every probe attached" and "load start" marks
(and the first record of the guest ring concerned): earlier hypervisor
records belong to boot or to the module's start, before every probe
traced (a TCG golden shows call-function ICRs with no G_SEND there).  A prefix
that breaks either is a clock-order violation.  Unresolved ICRs (logical
destinations the source could not resolve) name no target and are left
out.
"""
import collections

from . import abi

C = abi.CONSTS


def _by_cpu(region):
    out = {}
    for k in range(region.h["ring_count"]):
        _, cpu = region.ring_head(k)
        out[cpu] = list(region.records(k))
    return out


def _early(seq):
    """(tsc, kind) events, kind 0 the cause (send, injection) and 1 its
    effect (ICR, entry): how many effects come before a cause of their own
    (at a tie the cause comes first)."""
    early = open_ = 0
    for _, kind in sorted(seq):
        open_ += 1 if kind == 0 else -1
        if open_ < 0:
            early += 1
            open_ = 0
    return early


def check(snapdir):
    """Returns {"sends": n, "icrs": n, "entries": n, "acks": n,
    "send_after_icr": violations, "entry_before_ack": violations}."""
    guest = abi.Region(f"{snapdir}/guest.region")
    hv = abi.Region(f"{snapdir}/hv.region")
    g = _by_cpu(guest)
    h = _by_cpu(hv)
    vcpu_of_apic = {a: i for i, a in enumerate(hv.apic_id[: hv.h["cpu_count"]])}
    vcpu = {c: vcpu_of_apic.get(guest.apic_id[c]) for c in g if c < C["IPT_MAX_CPUS"]}
    cpu_of_vcpu = {v: c for c, v in vcpu.items() if v is not None}
    vec_single = guest.h["vec_call_function_single"]
    vec_mask = guest.h["vec_call_function"]
    res = collections.Counter()
    marks = {m: [r["tsc"] for recs in g.values() for r in recs
                 if r["type"] == "G_MARK" and r["arg0"] == C[m]]
             for m in ("IPT_MARK_PROBES_ON", "IPT_MARK_LOAD_START")}
    probes_on = max([min(v) for v in marks.values() if v], default=0)
    res["from_tsc"] = probes_on

    for s, grecs in g.items():
        vs = vcpu.get(s)
        if vs is None or not grecs or vs not in h:
            continue
        start = max(grecs[0]["tsc"], probes_on)
        events = collections.defaultdict(list)  # (target cpu, vector) -> [(tsc, kind)]
        for r in grecs:
            if r["type"] == "G_SEND" and r["a"][0] and r["tsc"] >= start:
                vec = vec_mask if r["flags"] & C["IPT_SEND_F_MASK"] else vec_single
                events[(r["target"], vec)].append((r["tsc"], 0))
                res["sends"] += 1
        for r in h[vs]:
            if r["type"] != "H_ICR" or r["tsc"] < start:
                continue
            if r["flags"] & C["IPT_ICR_F_UNRESOLVED"]:
                continue
            for vt, t in cpu_of_vcpu.items():
                if (r["a"][vt // 64] >> (vt % 64)) & 1 and (t, r["vector"]) in events:
                    events[(t, r["vector"])].append((r["tsc"], 1))
                    res["icrs"] += 1
        res["send_after_icr"] += sum(_early(seq) for seq in events.values())

    for t, grecs in g.items():
        vt = vcpu.get(t)
        if vt is None or not grecs or vt not in h:
            continue
        start = max(grecs[0]["tsc"], probes_on)
        events = collections.defaultdict(list)
        for r in grecs:
            if (r["type"] == "G_IRQ_ENTRY" and r["vector"] in (vec_single, vec_mask)
                    and r["tsc"] >= start):
                events[r["vector"]].append((r["tsc"], 1))
                res["entries"] += 1
        for r in h[vt]:
            if r["type"] == "H_ACK" and r["vector"] in events and r["tsc"] >= start:
                events[r["vector"]].append((r["tsc"], 0))
                res["acks"] += 1
        res["entry_before_ack"] += sum(_early(seq) for seq in events.values())
    for k in ("sends", "icrs", "entries", "acks", "send_after_icr", "entry_before_ack"):
        res.setdefault(k, 0)
    return dict(res)

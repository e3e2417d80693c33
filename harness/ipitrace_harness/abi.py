"""Python view of abi/ipitrace_abi.h.

The record types, producers and flags are parsed from the header's X-macros
at import time, so C, C++ and Python never disagree.  The struct layouts are
checked against the sizes the header declares.
"""
import os
import re
import struct

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEADER = os.path.join(REPO, "abi", "ipitrace_abi.h")


def _parse_header(path):
    text = open(path, encoding="utf-8").read()
    # join backslash continuations
    text = text.replace("\\\n", " ")
    consts = {}
    for m in re.finditer(r"#define\s+(IPT_\w+)\s+(0x[0-9A-Fa-f]+|\d+)(?:ULL|U)?\b", text):
        consts[m.group(1)] = int(m.group(2), 0)
    # Enumerations written as X-macros: producers, hv stages and settings.
    for macro, prefix, shift in (("IPT_PRODUCERS", "IPT_PRODUCER_", False),
                                 ("IPT_HV_STAGES", "IPT_HV_STAGE_", True),
                                 ("IPT_HV_ACCEL", "IPT_HV_ACCEL_", True),
                                 ("IPT_HV_LOST", "IPT_HV_LOST_", False)):
        m = re.search(r"#define\s+%s\(X\)(.*)" % macro, text)
        for name, value in re.findall(r"X\((\w+),\s*(\d+)", m.group(1)):
            consts[prefix + name] = (1 << int(value)) if shift else int(value)
    types = {}
    m = re.search(r"#define\s+IPT_RECORD_TYPES\(X\)(.*)", text)
    for name, value in re.findall(r"X\((\w+),\s*(\d+),", m.group(1)):
        types[int(value)] = name
    return consts, types


CONSTS, RECORD_TYPES = _parse_header(HEADER)
TYPE_BY_NAME = {v: k for k, v in RECORD_TYPES.items()}

HEADER_FMT = "<QHHHHIIIIQQIIBBBBIQQQQ64s16s%dI" % CONSTS["IPT_MAX_CPUS"]
HEADER_FIELDS = (
    "magic abi_major abi_minor producer record_size header_size ring_count "
    "ring_capacity flags ring_stride region_size tsc_khz cpu_count "
    "vec_call_function vec_call_function_single vec_reschedule pad0 "
    "sym_capacity sym_offset generation start_tsc stop_tsc kernel_release "
    "boot_id"
).split()
RING_FMT = "<QIIQ"
RECORD_FMT = "<QQHHHBBII4Q"
assert struct.calcsize(RECORD_FMT) == CONSTS["IPT_RECORD_SIZE"]


class RegionError(Exception):
    pass


class Region:
    """A decoded region file (a snapshot copy; never trusted blindly)."""

    def __init__(self, path):
        with open(path, "rb") as f:
            self.data = f.read()
        need = struct.calcsize(HEADER_FMT)
        if len(self.data) < need:
            raise RegionError(f"{path}: truncated ({len(self.data)} bytes)")
        vals = struct.unpack_from(HEADER_FMT, self.data, 0)
        self.h = dict(zip(HEADER_FIELDS, vals[: len(HEADER_FIELDS)]))
        self.apic_id = list(vals[len(HEADER_FIELDS):])
        if self.h["magic"] != CONSTS["IPT_MAGIC"]:
            raise RegionError(f"{path}: bad magic {self.h['magic']:#x}")
        if self.h["abi_major"] != CONSTS["IPT_ABI_MAJOR"]:
            raise RegionError(f"{path}: ABI major {self.h['abi_major']}")
        cap = self.h["ring_capacity"]
        end = self.h["header_size"] + self.h["ring_count"] * self.h["ring_stride"]
        if cap == 0 or cap & (cap - 1) or end > len(self.data):
            raise RegionError(f"{path}: ring geometry does not fit the file")

    def ring_offset(self, k):
        return self.h["header_size"] + k * self.h["ring_stride"]

    def ring_head(self, k):
        head, cpu, flags, dropped = struct.unpack_from(RING_FMT, self.data, self.ring_offset(k))
        return head, cpu

    def records(self, k):
        """Yield valid records of ring k as dicts, oldest first."""
        head, _ = self.ring_head(k)
        cap = self.h["ring_capacity"]
        base = self.ring_offset(k) + CONSTS["IPT_RING_HEADER_SIZE"]
        rsz = CONSTS["IPT_RECORD_SIZE"]
        for idx in range(max(0, head - cap), head):
            seq, tsc, typ, cpu, target, vector, flags, arg0, arg1, a0, a1, a2, a3 = \
                struct.unpack_from(RECORD_FMT, self.data, base + (idx % cap) * rsz)
            if seq != idx:
                continue
            yield {"seq": seq, "tsc": tsc, "type": RECORD_TYPES.get(typ, str(typ)),
                   "cpu": cpu, "target": target, "vector": vector, "flags": flags,
                   "arg0": arg0, "arg1": arg1, "a": (a0, a1, a2, a3)}

    def overwritten(self, k):
        head, _ = self.ring_head(k)
        return max(0, head - self.h["ring_capacity"])


class LiveRegion:
    """Incremental reader of a region that a producer is still writing.

    Reads only the header and the records written since the last poll
    (os.pread), so a soak can follow many VMs cheaply.  Counts records by
    type; a record whose seq does not match (torn, or overwritten before we
    read it) is counted as missed, never trusted.
    """

    def __init__(self, path):
        self.path = path
        self.fd = None
        self.next = {}
        self.counts = {}
        self.missed = 0

    def _open(self):
        self.fd = os.open(self.path, os.O_RDONLY)
        hdr = os.pread(self.fd, struct.calcsize(HEADER_FMT), 0)
        vals = struct.unpack_from(HEADER_FMT, hdr, 0)
        self.h = dict(zip(HEADER_FIELDS, vals[: len(HEADER_FIELDS)]))
        if self.h["magic"] != CONSTS["IPT_MAGIC"]:
            os.close(self.fd)
            self.fd = None
            return False
        return True

    def poll(self):
        """Read what is new; returns False while the region is not ready."""
        try:
            if self.fd is None and not self._open():
                return False
        except (OSError, struct.error):
            return False
        cap = self.h["ring_capacity"]
        rsz = CONSTS["IPT_RECORD_SIZE"]
        if not cap or cap & (cap - 1) or self.h["ring_count"] > 4096:
            return False
        for k in range(self.h["ring_count"]):
            off = self.h["header_size"] + k * self.h["ring_stride"]
            raw = os.pread(self.fd, 8, off)
            if len(raw) < 8:
                return False
            head = struct.unpack("<Q", raw)[0]
            start = max(self.next.get(k, 0), head - cap if head > cap else 0)
            self.missed += start - self.next.get(k, 0)
            base = off + CONSTS["IPT_RING_HEADER_SIZE"]
            for idx in range(start, head):
                rec = os.pread(self.fd, 18, base + (idx % cap) * rsz)
                if len(rec) < 18:
                    break
                seq, _tsc, typ = struct.unpack("<QQH", rec)
                if seq != idx:
                    self.missed += 1
                    continue
                name = RECORD_TYPES.get(typ, str(typ))
                self.counts[name] = self.counts.get(name, 0) + 1
            self.next[k] = head
        return True

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def hv_source(region):
    """The hypervisor region's source name from its header extension
    ("kvm-bpf", "kvm-tracefs"), or None (the patched QEMU writes none)."""
    off = CONSTS["IPT_HHDR_EXT_OFFSET"]
    if len(region.data) < off + 112:
        return None
    if struct.unpack_from("<I", region.data, off)[0] != CONSTS["IPT_HHDR_EXT_MAGIC"]:
        return None
    return region.data[off + 80:off + 112].split(b"\0", 1)[0].decode(errors="replace") or None


# ipt_ghdr_ext.stage_src (ABI 1.2): how the guest module observed each
# stage, in IPT_G_STAGES order; values IPT_G_SRCS.
GUEST_STAGES = ("queue", "send", "elide", "irq", "func")
GUEST_SOURCES = {0: "unstated", 1: "tracepoint", 2: "kprobe", 3: "none"}


def guest_stage_src(region):
    """{stage: source} from a guest region's header extension, or None when
    the module wrote no extension."""
    off = CONSTS["IPT_GHDR_EXT_OFFSET"]
    if struct.unpack_from("<I", region.data, off)[0] != CONSTS["IPT_GHDR_EXT_MAGIC"]:
        return None
    raw = region.data[off + 56:off + 56 + len(GUEST_STAGES)]
    return {s: GUEST_SOURCES.get(v, f"unknown {v}") for s, v in zip(GUEST_STAGES, raw)}

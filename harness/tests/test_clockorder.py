"""The one-clock check (ipitrace_harness.clockorder) on a recorded TCG
snapshot: clean as recorded, and it catches a hypervisor clock that runs
late or early."""
import os
import shutil
import struct
import subprocess

import pytest

import conftest  # noqa: F401  (puts the harness on sys.path)
from ipitrace_harness import abi, clockorder

GOLDEN = os.path.join(abi.REPO, "host-agent", "testdata", "golden", "clean-2vcpu")


@pytest.fixture
def snap(tmp_path):
    if not shutil.which("zstd"):
        pytest.skip("zstd missing")
    for f in ("guest", "hv"):
        subprocess.run(["zstd", "-dqf", os.path.join(GOLDEN, f + ".region.zst"), "-o",
                        str(tmp_path / (f + ".region"))], check=True)
    return tmp_path


def _skew_hv(path, delta):
    """Moves every hypervisor record's stamp by delta ticks."""
    r = abi.Region(path)
    data = bytearray(r.data)
    cap = r.h["ring_capacity"]
    for k in range(r.h["ring_count"]):
        base = r.ring_offset(k) + abi.CONSTS["IPT_RING_HEADER_SIZE"]
        for slot in range(cap):
            off = base + slot * abi.CONSTS["IPT_RECORD_SIZE"]
            seq, tsc = struct.unpack_from("<QQ", data, off)
            if seq != 0xffffffffffffffff and tsc:
                struct.pack_into("<Q", data, off + 8, tsc + delta)
    with open(path, "wb") as f:
        f.write(data)


def test_recorded_snapshot_keeps_one_clock(snap):
    c = clockorder.check(str(snap))
    assert c["sends"] > 1000 and c["icrs"] == c["sends"]
    assert c["entries"] > 1000
    assert c["send_after_icr"] == 0 and c["entry_before_ack"] == 0


@pytest.mark.parametrize("delta,broken", [(-2_000_000, "send_after_icr"),
                                          (+2_000_000, "entry_before_ack")])
def test_skewed_hypervisor_clock_is_caught(snap, delta, broken):
    _skew_hv(str(snap / "hv.region"), delta)
    assert clockorder.check(str(snap))[broken] > 10

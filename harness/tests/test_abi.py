"""The Python view of the ABI header agrees with the header itself."""
import os
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ipitrace_harness import abi  # noqa: E402


def test_record_types_parsed_from_header():
    names = set(abi.RECORD_TYPES.values())
    for n in ("G_QUEUE", "G_SEND", "G_IRQ_ENTRY", "G_FUNC_ENTRY", "H_ICR", "H_IRR",
              "H_ACK", "H_EOI"):
        assert n in names
    assert len(abi.RECORD_TYPES) == len(names)


def test_layout_matches_c_compiler(tmp_path):
    src = tmp_path / "sz.c"
    src.write_text('#include <stdio.h>\n#include <stddef.h>\n#include "ipitrace_abi.h"\n'
                   'int main(void){printf("%zu %zu %zu %zu\\n", sizeof(struct ipt_record),'
                   ' offsetof(struct ipt_region_header, apic_id),'
                   ' offsetof(struct ipt_region_header, kernel_release),'
                   ' offsetof(struct ipt_record, a));return 0;}\n')
    exe = tmp_path / "sz"
    subprocess.run(["cc", "-I", os.path.dirname(abi.HEADER), str(src), "-o", str(exe)],
                   check=True)
    rec, apic_off, rel_off, a_off = map(int, subprocess.run(
        [str(exe)], check=True, stdout=subprocess.PIPE, text=True).stdout.split())
    assert rec == struct.calcsize(abi.RECORD_FMT)
    hdr_prefix = struct.calcsize(abi.HEADER_FMT) - 4 * abi.CONSTS["IPT_MAX_CPUS"]
    assert apic_off == hdr_prefix
    assert rel_off == struct.calcsize("<QHHHHIIIIQQIIBBBBIQQQQ")
    assert a_off == struct.calcsize("<QQHHHBBII")

"""ipitrace-dkms: the guest module as users install it in their own guests
(scripts/build-dkms-deb.sh, packaging/debian/).  The package must carry the
tracing module's sources and the record format exactly as the repository
has them, and none of the test module's (ipitrace_test*: load generator,
self-tests), register them with DKMS, and DKMS must build a loadable
module from them for the guest kernel, and only that one (in a private
DKMS tree: nothing on this host changes)."""
import glob
import os
import re
import subprocess

from conftest import TRACING_PARAMS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VERSION = "0.1.0"
# The test module's files: never in the package.
TEST_MODULE_PREFIX = "ipitrace_test"


def build_deb():
    out = subprocess.run(["bash", os.path.join(REPO, "scripts", "build-dkms-deb.sh")],
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    return out.strip().splitlines()[-1]


def guest_kver():
    # guest-kernel.sh: the one place that says which kernel the guest runs
    out = subprocess.run(["bash", "-c", "log() { :; }; die() { echo \"$*\" >&2; exit 1; }; "
                          f"source {REPO}/scripts/guest-kernel.sh && guest_kernel && echo $KVER"],
                         check=True,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
    return out.strip().splitlines()[-1]


def test_package_carries_the_module_as_the_repo_has_it(tmp_path):
    deb = build_deb()
    root = tmp_path / "root"
    subprocess.run(["dpkg-deb", "-x", deb, str(root)], check=True)
    src = root / "usr" / "src" / f"ipitrace-{VERSION}"
    kmod = os.path.join(REPO, "guest-kmod")
    sources = [f for f in os.listdir(kmod) if f.endswith((".c", ".h")) or f == "Kbuild"]
    test_module = [f for f in sources if f.startswith(TEST_MODULE_PREFIX)]
    want = [f for f in sources if f not in test_module]
    assert len(want) >= 9 and len(test_module) >= 3, (want, test_module)
    for f in want:
        assert (src / f).read_bytes() == open(os.path.join(kmod, f), "rb").read(), f
    assert not list(src.glob(TEST_MODULE_PREFIX + "*")), sorted(os.listdir(src))
    assert (src / "abi" / "ipitrace_abi.h").read_bytes() == \
        open(os.path.join(REPO, "abi", "ipitrace_abi.h"), "rb").read()
    conf = (src / "dkms.conf").read_text()
    assert 'PACKAGE_NAME="ipitrace"' in conf
    assert f'PACKAGE_VERSION="{VERSION}"' in conf
    assert 'BUILT_MODULE_NAME[0]="ipitrace"' in conf
    info = subprocess.run(["dpkg-deb", "-f", deb, "Package", "Version", "Depends", "Architecture"],
                          check=True, stdout=subprocess.PIPE, text=True).stdout
    assert "Package: ipitrace-dkms" in info and f"Version: {VERSION}" in info
    assert re.search(r"Depends: .*\bdkms\b", info), info
    assert "Architecture: all" in info
    # dh_dkms's maintainer scripts register and remove it with DKMS
    ctrl = tmp_path / "ctrl"
    subprocess.run(["dpkg-deb", "-e", deb, str(ctrl)], check=True)
    assert "dkms" in (ctrl / "postinst").read_text()
    assert "dkms" in (ctrl / "prerm").read_text()
    doc = root / "usr" / "share" / "doc" / "ipitrace-dkms" / "examples"
    assert (doc / "ipitrace-modules-load.conf").read_text().splitlines()[-1] == "ipitrace"


def test_dkms_builds_a_loadable_module_for_the_guest_kernel(tmp_path):
    deb = build_deb()
    kver = guest_kver()
    root = tmp_path / "root"
    subprocess.run(["dpkg-deb", "-x", deb, str(root)], check=True)
    tree = tmp_path / "dkms"
    tree.mkdir()
    p = subprocess.run(["dkms", "build", "-m", "ipitrace", "-v", VERSION, "-k", kver,
                        "--sourcetree", str(root / "usr" / "src"), "--dkmstree", str(tree)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert p.returncode == 0, p.stdout[-3000:]
    kos = glob.glob(str(tree / "ipitrace" / VERSION / kver / "*" / "module" / "*.ko*"))
    assert [os.path.basename(k).split(".")[0] for k in kos] == ["ipitrace"], \
        (kos, p.stdout[-2000:])
    ko = kos[0]
    if ko.endswith(".xz"):
        subprocess.run(["xz", "-dk", ko], check=True)
        ko = ko[:-3]
    mi = subprocess.run(["modinfo", ko], check=True, stdout=subprocess.PIPE, text=True).stdout
    assert re.search(r"^name:\s+ipitrace$", mi, re.M), mi
    assert re.search(rf"^vermagic:\s+{re.escape(kver)} ", mi, re.M), mi
    assert set(re.findall(r"^parm:\s+(\w+):", mi, re.M)) == TRACING_PARAMS, mi

"""Scenarios are data: TOML files naming the VM shape, the load, the faults
to inject, the duration, the expected verdicts and a required timeout.

    name = "route-single"
    timeout = 240                      # seconds, required
    tags = ["nightly", "fault"]
    [vm]     vcpus = 4, memory_mb = 768, cpu_model = "qemu64", x2apic = false,
             guest = "busybox"         # or "debian12" (vm.GUESTS)
    [load]   mode = "single", wait = 1, seconds = 8, threads = 4
             # debian12: stress = "tlb-shootdown,membarrier" (stress-ng)
    faults = ["route:nth=1500:vector=251"]
    [expect] outcome = "lost-ipi", losses = { "lost-in-routing" = 1 },
             min_requests = 1000
    [watch]  hang_ms = 5000            # the agent watches live (0: off)

`expect.losses` lists the exact count of every loss verdict expected; any
loss verdict not listed must be zero.  `expect.losses = "truth"` (for
probabilistic faults) requires the loss verdicts to be exactly the injected
faults: each named at its stage, source and target, and nothing else.  When a fault is injected the
expected verdict for its stage can also be derived: STAGE_VERDICT.
"""
import os
import tomllib

from . import vm

HERE = os.path.dirname(os.path.abspath(__file__))
LIBRARY = os.path.join(os.path.dirname(HERE), "scenarios")

OUTCOMES = ("passed", "lost-ipi", "hung-unexplained", "vm-crashed", "infra-failed")
# Outcomes where the test bed itself failed (a VM or L1 that died, did not
# boot, stalled or never ended) and nothing was judged: worth running again.
BED_FAILURES = ("vm-crashed", "infra-failed")


def _loss_verdicts():
    """The loss verdicts as the agent publishes them (`ipitrace verdicts
    --json`, from the one table in host-agent/tracker.h)."""
    import json
    import subprocess
    from . import artifacts
    out = subprocess.run([artifacts.agent(), "verdicts", "--json"], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    doc = json.loads(out)
    if not isinstance(doc, dict) or doc.get("schema_version") != 2:
        got = doc.get("schema_version") if isinstance(doc, dict) else "1 (a bare list)"
        raise RuntimeError(f"{artifacts.agent()} verdicts --json: schema_version {got}, "
                           "this harness reads 2: rebuild the agent (scripts/build-agent.sh)")
    return tuple(v["name"] for v in doc["verdicts"] if v["loss"])


LOSS_VERDICTS = _loss_verdicts()
# The verdict the agent must give an IPI dropped at each injectable stage.
# `kick` only delays delivery: no loss, the request is served (late).
STAGE_VERDICT = {
    "icr": "lost-guest-to-hypervisor",
    "route": "lost-in-routing",
    "inject": ("lost-in-injection", "target-blocked"),
    "entry": "lost-in-guest-entry",
    "kick": None,
}

_VM_KEYS = {"vcpus": int, "memory_mb": int, "cpu_model": str, "x2apic": bool,
            "hypervisor": str, "hv_capacity": int, "guest": str}
HYPERVISORS = ("tcg", "kvm-nested")
_LOAD_KEYS = {"mode": str, "wait": int, "seconds": int, "threads": int, "guest_args": str,
              "stress": str}
# What drives the busybox guest's load generator, not the debian12 guest.
_LOADGEN_KEYS = ("mode", "wait", "threads")
_WATCH_KEYS = {"hang_ms": int, "poll_ms": int}
_EXPECT_KEYS = {"outcome": str, "losses": (dict, str), "min_requests": int, "min_injected": int}


class ScenarioError(ValueError):
    pass


def _check_table(path, table, spec, where):
    for k, v in table.items():
        if k not in spec:
            raise ScenarioError(f"{path}: unknown key '{where}.{k}'")
        if not isinstance(v, spec[k]) or (spec[k] is int and isinstance(v, bool)):
            kind = " or ".join(t.__name__ for t in spec[k]) if isinstance(spec[k], tuple) \
                else spec[k].__name__
            raise ScenarioError(f"{path}: '{where}.{k}' must be {kind}")


def load(path):
    """Parse and validate one scenario file; returns a dict with defaults."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ScenarioError(f"{path}: {e}") from e
    allowed = {"name", "description", "timeout", "tags", "vm", "load", "faults", "expect",
               "watch"}
    for k in raw:
        if k not in allowed:
            raise ScenarioError(f"{path}: unknown key '{k}'")
    if "timeout" not in raw:
        raise ScenarioError(f"{path}: 'timeout' is required")
    if not isinstance(raw["timeout"], int) or raw["timeout"] <= 0:
        raise ScenarioError(f"{path}: 'timeout' must be a positive integer (seconds)")
    sc = {
        "name": raw.get("name") or os.path.splitext(os.path.basename(path))[0],
        "description": raw.get("description", ""),
        "timeout": raw["timeout"],
        "tags": list(raw.get("tags", [])),
        "vm": {"vcpus": 4, "memory_mb": 768, "cpu_model": "qemu64", "x2apic": False,
               "hypervisor": "tcg", "guest": "busybox"},
        "load": {"mode": "single", "wait": 1, "seconds": 8, "threads": 0, "guest_args": "",
                 "stress": ""},
        "faults": list(raw.get("faults", [])),
        "expect": {"outcome": "passed", "losses": {}, "min_requests": 0, "min_injected": 0},
        # Like the kernel's csd_lock_timeout: a request outstanding 5 s is a hang.
        "watch": {"hang_ms": 5000, "poll_ms": 1000},
        "path": os.path.abspath(path),
    }
    for key, spec in (("vm", _VM_KEYS), ("load", _LOAD_KEYS), ("expect", _EXPECT_KEYS),
                      ("watch", _WATCH_KEYS)):
        table = raw.get(key, {})
        if not isinstance(table, dict):
            raise ScenarioError(f"{path}: '{key}' must be a table")
        _check_table(path, table, spec, key)
        sc[key].update(table)
    if sc["vm"]["cpu_model"] != "qemu64":
        raise ScenarioError(f"{path}: vm.cpu_model: only 'qemu64' is supported")
    cap = sc["vm"].get("hv_capacity")
    if cap is not None and (cap < 1024 or cap & (cap - 1)):
        raise ScenarioError(f"{path}: vm.hv_capacity must be a power of two >= 1024")
    if sc["vm"]["hypervisor"] not in HYPERVISORS:
        raise ScenarioError(f"{path}: vm.hypervisor must be one of {HYPERVISORS}")
    if not 2 <= sc["vm"]["vcpus"] <= 64:
        raise ScenarioError(f"{path}: vm.vcpus must be within 2..64")
    if sc["load"]["mode"] not in ("single", "many"):
        raise ScenarioError(f"{path}: load.mode must be 'single' or 'many'")
    sc["loadgen_keys"] = sorted(k for k in _LOADGEN_KEYS if k in raw.get("load", {}))
    _check_guest(path, sc)
    for f in sc["faults"]:
        try:
            if sc["vm"]["hypervisor"] == "kvm-nested":
                from . import nested
                nested.parse_fault(f)
            else:
                vm.parse_fault(f)
        except ValueError as e:
            raise ScenarioError(f"{path}: {e}") from e
    if sc["expect"]["outcome"] not in OUTCOMES:
        raise ScenarioError(f"{path}: expect.outcome must be one of {OUTCOMES}")
    if isinstance(sc["expect"]["losses"], str):
        if sc["expect"]["losses"] != "truth":
            raise ScenarioError(f"{path}: expect.losses must be a table or \"truth\"")
    else:
        _check_losses(path, sc["expect"]["losses"])
    if sc["watch"]["hang_ms"] < 0 or not 1 <= sc["watch"]["poll_ms"] <= 1000:
        raise ScenarioError(f"{path}: watch.hang_ms must be >= 0 (0: off), "
                            "watch.poll_ms within 1..1000")
    budget = sc["load"]["seconds"] + 60
    if sc["timeout"] < budget:
        raise ScenarioError(f"{path}: timeout {sc['timeout']}s is shorter than the load "
                            f"plus boot ({budget}s)")
    return sc


def _check_guest(path, sc):
    guest = sc["vm"]["guest"]
    if guest not in vm.GUESTS:
        raise ScenarioError(f"{path}: vm.guest must be one of {vm.GUESTS}")
    if guest == "busybox":
        if sc["load"]["stress"]:
            raise ScenarioError(f"{path}: load.stress (stress-ng) applies to vm.guest "
                                "'debian12'")
        return
    if sc["vm"]["hypervisor"] != "tcg":
        raise ScenarioError(f"{path}: vm.guest '{guest}' runs under vm.hypervisor 'tcg' only")
    if sc["loadgen_keys"]:
        raise ScenarioError(f"{path}: load.{', load.'.join(sc['loadgen_keys'])} drive the "
                            f"busybox guest's load generator; vm.guest '{guest}' runs "
                            "stress-ng (load.stress)")
    try:
        vm.parse_stress(sc["load"]["stress"] or vm.DEFAULT_STRESS)
    except ValueError as e:
        raise ScenarioError(f"{path}: load.stress: {e}") from e


def with_guest(sc, guest):
    """The scenario run in another guest (ipitrace-harness run --guest),
    checked as if its file said so."""
    out = {**sc, "vm": {**sc["vm"], "guest": guest}}
    _check_guest(sc["path"], out)
    return out


def vm_load_args(sc):
    """vm.run()'s arguments for the scenario's load, by its guest."""
    load = sc["load"]
    if sc["vm"]["guest"] == "busybox":
        return {"mode": load["mode"], "wait": load["wait"], "threads": load["threads"] or None}
    return {"guest": sc["vm"]["guest"], "stress": load["stress"] or None}


def _check_losses(path, losses):
    for v, n in losses.items():
        if v not in LOSS_VERDICTS or not isinstance(n, int) or n < 0:
            raise ScenarioError(f"{path}: expect.losses: bad entry '{v}' = {n!r}")


def library(tag=None):
    """All scenarios of the library (harness/scenarios/*.toml), by name."""
    out = []
    for fn in sorted(os.listdir(LIBRARY)):
        if fn.endswith(".toml"):
            sc = load(os.path.join(LIBRARY, fn))
            if tag is None or tag in sc["tags"]:
                out.append(sc)
    return out


def classify(manifest, report, error=None):
    """One run's outcome: (outcome, detail)."""
    if error is not None:
        return (error.outcome if error.outcome in OUTCOMES else "infra-failed"), str(error)
    losses = report.get("losses", []) if report else []
    if losses:
        stages = sorted({x["verdict"] for x in losses})
        return "lost-ipi", ", ".join(stages)
    if manifest.get("outcome") == "guest-hung":
        return "hung-unexplained", "guest hung and the agent found no lost IPI"
    return "passed", ""


def check(sc, outcome, report, truth):
    """Compare a run with the scenario's expectations; returns failures."""
    fails = []
    exp = sc["expect"]
    if outcome != exp["outcome"]:
        fails.append(f"outcome {outcome}, expected {exp['outcome']}")
    counts = (report or {}).get("verdict_counts", {})
    if exp["losses"] == "truth":
        lossy = [t for t in truth if STAGE_VERDICT.get(t["stage"])]
        n = sum(counts.get(v, 0) for v in LOSS_VERDICTS)
        if n != len(lossy):
            fails.append(f"{n} loss verdicts, expected exactly the {len(lossy)} injected")
    else:
        for v in LOSS_VERDICTS:
            want = exp["losses"].get(v, 0)
            if counts.get(v, 0) != want:
                fails.append(f"{v}: {counts.get(v, 0)}, expected {want}")
    if len(truth) < exp["min_injected"]:
        fails.append(f"{len(truth)} faults injected, expected >= {exp['min_injected']}")
    if report and report.get("requests", 0) < exp["min_requests"]:
        fails.append(f"{report.get('requests', 0)} requests, expected >= {exp['min_requests']}")
    # Every injected loss must be named at its stage, source and target.
    for t, got in match_truth(truth, (report or {}).get("losses", []))[0]:
        want = STAGE_VERDICT.get(t["stage"])
        if want is None:
            continue
        wants = want if isinstance(want, tuple) else (want,)
        if got is None or got["verdict"] not in wants:
            fails.append(f"injected {t['stage']} vCPU {t['source']}->{t['target']} "
                         f"at tsc {t.get('tsc')} not named as {'/'.join(wants)}"
                         + (f" (named {got['verdict']})" if got else ""))
    return fails


def match_truth(truth, losses):
    """Pairs each ground-truth line with at most one reported loss, and each
    loss with at most one line: first the loss of the same source and
    target vCPUs queued nearest before the fault fired (truth "tsc", the
    guest's clock), then, for lines still without one, any loss of that
    pair left.  Returns ([(truth, loss or None)] in truth order, [losses
    left over]).  Lines whose stage loses nothing (kick) take no loss."""
    left = list(losses)
    order = sorted(range(len(truth)), key=lambda i: truth[i].get("tsc") or 0)
    got = [None] * len(truth)

    def same_pair(t):
        return [x for x in left
                if (x["source_vcpu"], x["target_vcpu"]) == (t["source"], t["target"])]

    for before_only in (True, False):
        for i in order:
            t = truth[i]
            if got[i] is not None or STAGE_VERDICT.get(t["stage"]) is None:
                continue
            cands = same_pair(t)
            tsc = t.get("tsc")
            if before_only:
                if tsc is None:
                    continue
                cands = [x for x in cands if (x.get("queue_tsc") or 0) <= tsc]
                pick = max(cands, key=lambda x: x.get("queue_tsc") or 0) if cands else None
            else:
                pick = min(cands, key=lambda x: x.get("queue_tsc") or 0) if cands else None
            if pick is not None:
                left.remove(pick)
                got[i] = pick
    return [(truth[i], got[i]) for i in order], left

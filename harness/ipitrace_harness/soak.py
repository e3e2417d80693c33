"""Soak: N traced VMs at once for a duration, across one or more libvirt
URIs (embedded driver by default; qemu:///system; qemu+ssh://host/system for
a fleet), with live progress and a verdict per VM.

Each VM runs a scenario (the clean soak by default) in its own thread; a
progress loop follows every live guest region (LiveRegion) and prints VMs
up, CSD requests/s, losses found so far and time left.  A VM whose guest
hangs is suspended (the evidence frozen), snapshotted and analyzed by
runner.run_scenario.  Ctrl-C stops every VM: each is destroyed, results so
far are kept and the soak is marked partial.
"""
import copy
import json
import os
import threading
import time

from . import abi, runner


def soak(sc, vms, duration, out_dir, uris=None, log=print, progress_every=5.0,
         keep_regions=False):
    uris = uris or [None]
    os.makedirs(out_dir, exist_ok=True)
    stop = threading.Event()
    lock = threading.Lock()
    live = {}
    results = []
    t_end = time.time() + duration + 60

    def worker(i):
        sci = copy.deepcopy(sc)
        sci["load"]["seconds"] = duration
        sci["timeout"] = max(sci["timeout"], duration + 180)
        out = os.path.join(out_dir, f"vm{i:03d}")

        def started(info):
            with lock:
                live[i] = {"info": info, "region": abi.LiveRegion(info["guest_region"]),
                           "last": 0}

        uri = uris[i % len(uris)]
        try:
            res = runner.run_scenario(sci, out, uri=uri, on_start=started,
                                      stop_event=stop, keep_regions=keep_regions,
                                      log=lambda s: log(s))
        except Exception as e:  # noqa: BLE001 - a soak must account for every VM
            res = {"scenario": sci["name"], "out": out, "uri": uri, "outcome": "infra-failed",
                   "detail": repr(e), "failures": [f"harness error: {e!r}"], "passed": False,
                   "requests": 0, "losses": [], "truth": [], "partial": True,
                   "verdict_counts": {}, "latency": None, "duration": 0.0}
        with lock:
            ent = live.pop(i, None)
            if ent:
                ent["region"].close()
            res["vm"] = i
            results.append(res)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(vms)]
    t0 = time.time()
    partial = False
    try:
        for t in threads:
            t.start()
        last = time.time()
        while any(t.is_alive() for t in threads):
            time.sleep(0.5)
            if time.time() - last < progress_every:
                continue
            dt = time.time() - last
            last = time.time()
            with lock:
                rate = 0
                for ent in live.values():
                    if ent["region"].poll():
                        q = ent["region"].counts.get("G_QUEUE", 0)
                        rate += (q - ent["last"]) / dt
                        ent["last"] = q
                losses = sum(len(r["losses"]) for r in results)
                log(f"soak: {len(live)}/{vms} VMs up, {rate:.0f} CSD requests/s, "
                    f"{losses} losses so far, {len(results)} finished, "
                    f"{max(0, t_end - time.time()):.0f}s left")
    except KeyboardInterrupt:
        partial = True
        log("soak: interrupted: stopping and destroying every VM")
        stop.set()
        for t in threads:
            t.join(timeout=60)
    summary = {
        "scenario": sc["name"], "vms": vms, "duration": duration, "uris": uris,
        "elapsed": time.time() - t0, "partial": partial or any(r["partial"] for r in results),
        "outcomes": {}, "requests": sum(r["requests"] for r in results),
        "losses": sum(len(r["losses"]) for r in results),
        "results": sorted(results, key=lambda r: r["vm"]),
    }
    summary["verdict_counts"] = {}
    for r in results:
        summary["outcomes"][r["outcome"]] = summary["outcomes"].get(r["outcome"], 0) + 1
        for v, n in r.get("verdict_counts", {}).items():
            summary["verdict_counts"][v] = summary["verdict_counts"].get(v, 0) + n
    with open(os.path.join(out_dir, "soak.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary

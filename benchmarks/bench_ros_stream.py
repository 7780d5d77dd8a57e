"""Streaming benchmark of the ROS layer: a real-time camera stream (not lockstep) -> localizer node.

    python benchmarks/bench_ros_stream.py [--rate 10] [--duration 20] [--features sift] [--matcher nn]
    python benchmarks/bench_ros_stream.py --preset default --features xfeat --max-keypoints 2048 \
        --config config/localizer_realtime.yaml      # the real-time conf (issue 14)

The replay node plays a synthetic day sequence (640x480) in a loop at ``--rate`` Hz, stamped with the wall clock;
the localizer (tracking then retrieval) processes the latest frame only. This process listens to the results
and reports the achieved processed rate, latency (image stamp -> result received, and the node's own
receive -> publish) p50/p95, dropped frames, the share of frames localized in tracking mode and the machine's load
average around the run. Table on stdout, JSON under ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from imp_core.eval.report import dumps_strict  # noqa: E402


def _prepare(a):
    from imp_core.mapping import build_map
    from imp_core.world.synthetic import SyntheticWorld, make_world

    world = make_world(a.data / ("world" if a.preset == "default" else f"world_{a.preset}"), a.preset)
    map_dir = a.data / "maps" / f"synthetic_{a.preset}_{a.features}_bench"
    if not (map_dir / "map.json").is_file():
        build_map(SyntheticWorld(world), map_dir, {"features": {"name": a.features, "max_keypoints": a.max_keypoints},
                                                    "matcher": {"name": a.matcher}, "device": a.device})
    return Path(world), map_dir


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=10.0, help="stream rate in Hz")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of stream")
    ap.add_argument("--preset", default="tiny", help="synthetic world preset")
    ap.add_argument("--features", default="sift")
    ap.add_argument("--max-keypoints", type=int, default=1024)
    ap.add_argument("--matcher", default="nn")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--config", type=Path, default=REPO / "config" / "localizer_stream.yaml",
                    help="localizer conf (coarse stages, PnP) for the stream")
    ap.add_argument("--image-qos", default="sensor_data", help="QoS of the image stream (sensor_data, reliable)")
    ap.add_argument("--data", type=Path, default=REPO / "data")
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "bench_ros_stream")
    a = ap.parse_args(argv)

    world, map_dir = _prepare(a)
    domain = int(os.environ.get("ROS_DOMAIN_ID") or random.randint(10, 90))
    os.environ.update({"ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
                       "FASTDDS_DEFAULT_PROFILES_FILE": str(REPO / "config" / "fastdds_shm.xml")})
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from imp_msgs.msg import LocalizationResult
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    from imp_ros import common
    from imp_ros.conversions import stamp_to_ns
    from imp_ros.graph import Graph, load_graph

    rclpy.init()
    node = rclpy.create_node("bench_ros_stream")
    results, diags, done = [], [], []
    rel = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(LocalizationResult, common.RESULT_TOPIC,
                             lambda m: results.append((time.time_ns(), m)), rel)
    node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, rel)
    from sensor_msgs.msg import Image

    seen_images = []  # what a plain subscriber receives from the replay (the stream's real rate)
    node.create_subscription(Image, common.IMAGE_TOPIC, lambda m: seen_images.append(time.monotonic()),
                             common.qos_from_param(a.image_qos, depth=1))
    node.create_subscription(String, common.DONE_TOPIC, done.append, common.latched_qos())
    stop = threading.Event()

    def _spin():
        while not stop.is_set():
            rclpy.spin_once(node, timeout_sec=0.05)

    spin = threading.Thread(target=_spin, daemon=True)
    spin.start()
    n_frames = int(a.rate * a.duration)
    spec = load_graph({"graph": {"fastdds_profile": str(REPO / "config" / "fastdds_shm.xml"), "nodes": [
        {"name": "localizer", "executable": "localizer", "daemon": True, "parameters": {
            "autostart": True, "map": str(map_dir), "matcher": a.matcher, "config": str(a.config),
            "device": a.device, "image_qos": a.image_qos}},
        {"name": "replay", "executable": "replay", "parameters": {
            "source": str(world), "condition": "day", "rate": a.rate, "loop": True, "max_frames": n_frames,
            "lockstep": False, "stamp_mode": "now", "image_qos": a.image_qos, "wait_for": ["image"]}},
    ]}})
    a.out.mkdir(parents=True, exist_ok=True)
    log = open(a.out / "graph.log", "w")
    print(f"[bench] streaming {n_frames} frames at {a.rate} Hz ({a.features}+{a.matcher}, domain {domain})")
    load_before = os.getloadavg()
    with Graph(spec, domain, log=log, discovery_range="LOCALHOST") as g:
        codes = g.wait(timeout=a.duration + 180)
        t_end = time.monotonic() + 10.0
        while time.monotonic() < t_end and (not results or time.time_ns() - results[-1][0] < 2e9):
            time.sleep(0.1)  # drain: until no result arrived for 2 s
    load_after = os.getloadavg()
    stop.set()
    spin.join(timeout=2)
    log.close()
    if codes.get("replay") != 0 or not results:
        print(f"[bench] failed: exit codes {codes}, {len(results)} results; see {a.out / 'graph.log'}")
        return 1
    published = json.loads(done[-1].data)["published"] if done else n_frames
    recv = np.array([r for r, _ in results], np.float64) * 1e-9
    lat_stream = np.array([(r - stamp_to_ns(m.header.stamp)) * 1e-6 for r, m in results])
    lat_node = np.array([m.total_latency_ms for _, m in results])
    ok = [m for _, m in results if m.status == LocalizationResult.STATUS_OK]
    dkeys = {kv.key: kv.value for kv in diags[-1].status[0].values} if diags else {}
    span = recv[-1] - recv[0] if len(recv) > 1 else float("nan")
    rep = {
        "stream_rate_hz": a.rate, "frames_published": published, "results": len(results),
        "processed_rate_hz": (len(results) - 1) / span if span > 0 else float("nan"),
        "input_rate_hz_at_node": float(dkeys.get("input_rate_hz", "nan")),
        "stream_rate_seen_by_listener_hz": (len(seen_images) - 1) / (seen_images[-1] - seen_images[0])
        if len(seen_images) > 1 else float("nan"),
        "dropped_frames": published - len(results),
        "dropped_reported_by_node": int(dkeys.get("dropped", -1)),
        "latency_stamp_to_result_ms": {"p50": float(np.percentile(lat_stream, 50)),
                                       "p95": float(np.percentile(lat_stream, 95))},
        "latency_in_node_ms": {"p50": float(np.percentile(lat_node, 50)), "p95": float(np.percentile(lat_node, 95))},
        "localized": len(ok), "tracking_mode": sum(m.mode == "tracking" for m in ok),
        "stage_p50_ms": {k: float(np.median([t.milliseconds for _, m in results for t in m.timings if t.stage == k]))
                         for k in sorted({t.stage for _, m in results for t in m.timings})},
        "image_size": "640x480", "features": a.features, "matcher": a.matcher, "device": a.device,
        "config": str(a.config), "max_keypoints_map": a.max_keypoints,
        # the machine's load average (1, 5, 15 min) before the stream and after it: the numbers depend on it
        "load_avg_before": list(load_before), "load_avg_after": list(load_after), "cpus": os.cpu_count(),
        "keeps_up": bool(span > 0 and (len(results) - 1) / span >= 0.95 * a.rate),
        "per_frame": [{"recv_s": float(r * 1e-9), "node_ms": float(m.total_latency_ms), "mode": m.mode,
                       "status": int(m.status), "stages_ms": {t.stage: round(float(t.milliseconds), 1)
                                                              for t in m.timings}} for r, m in results],
    }
    rows = [("stream rate [Hz]", f"{a.rate:.1f}"), ("processed rate [Hz]", f"{rep['processed_rate_hz']:.2f}"),
            ("frames published / results", f"{published} / {len(results)}"),
            ("dropped (latest-frame policy)", f"{rep['dropped_frames']} (node: {rep['dropped_reported_by_node']})"),
            ("latency stamp->result p50/p95 [ms]",
             f"{rep['latency_stamp_to_result_ms']['p50']:.0f} / {rep['latency_stamp_to_result_ms']['p95']:.0f}"),
            ("latency in node p50/p95 [ms]",
             f"{rep['latency_in_node_ms']['p50']:.0f} / {rep['latency_in_node_ms']['p95']:.0f}"),
            ("localized / tracking mode", f"{len(ok)} / {rep['tracking_mode']}"),
            ("keeps up (>= 95% of stream rate)", str(rep["keeps_up"])),
            ("stage p50 [ms]", ", ".join(f"{k} {v:.0f}" for k, v in rep["stage_p50_ms"].items())),
            ("load average 1/5 min before -> after",
             f"{load_before[0]:.2f} {load_before[1]:.2f} -> {load_after[0]:.2f} {load_after[1]:.2f} "
             f"({os.cpu_count()} CPUs)")]
    w = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{w}}  {v}" for k, v in rows))
    (a.out / "bench_ros_stream.json").write_text(dumps_strict(rep, indent=2))
    print(f"[bench] JSON: {a.out / 'bench_ros_stream.json'}")
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""Leave-one-out on the 10 Sacre-Coeur photos with unknown cameras (issue 9): per photo the rotation error, the
estimated focal length against the one SfM found for the photo in the map of all 10, the confidence, the status and
whether the reported covariance holds the rotation error (its NEES, ``test_sacre_coeur.rotation_nees``); and how
many poses > 5 deg off pass as OK with the old gate (>= 20 inliers) and with the confidence gate.

These photos are for evaluation only: nothing here tunes a threshold (the confidence model comes from the
synthetic world, benchmarks/bench_confidence.py).

    .venv/bin/python benchmarks/bench_sacre_coeur.py --pairs xfeat+lighterglue aliked+lightglue
Writes outputs/bench_sacre_coeur/{results.json, table.txt}; maps are kept under --work.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "test"))
from imp_core.eval.report import dumps_strict  # noqa: E402


def main() -> int:
    from test_sacre_coeur import PAIRS, leave_one_out

    from imp_core.eval.covariance import CHI2_3DOF_95, CHI2_3DOF_MEDIAN, block_consistency

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--pairs", nargs="+", default=["xfeat+lighterglue", "aliked+lightglue"], choices=sorted(PAIRS))
    p.add_argument("--work", type=Path, default=ROOT / "outputs" / "bench_sacre_coeur" / "work")
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_sacre_coeur")
    p.add_argument("--fixed-guess", action="store_true",
                   help="use COLMAP's guessed focal as if known (what imp did before --camera auto)")
    p.add_argument("--protocol", default="sfm", choices=["sfm", "reference"],
                   help="sfm: each 9-image map is its own SfM; reference: triangulated with the 10-image map's poses "
                        "and cameras (test_sacre_coeur.leave_one_out)")
    p.add_argument("--localize-matcher", default=None,
                   help="the localizer's matcher (e.g. eimp: the weights imp ships for the features); default: the "
                        "map's own")
    a = p.parse_args()
    from imp_core.localization.localizer import Localizer

    th = Localizer.default_conf["acceptance"]["min_confidence"]
    a.out.mkdir(parents=True, exist_ok=True)
    rows, lines = [], []
    for pair in a.pairs:
        # the gate off, so that 'before' (>= 20 inliers) and 'after' (confidence) come from the same poses
        drift: dict = {}
        nees: dict = {}
        lconf = {"acceptance": {"min_confidence": 0.0}}
        if a.localize_matcher:
            lconf["matcher"] = {"name": a.localize_matcher}
        out = leave_one_out(a.data, a.work / pair.replace("+", "_"), pair, lconf, fixed_guess=a.fixed_guess,
                            drift=drift, protocol=a.protocol, nees=nees)
        how = (" (focal fixed at the 1.2 x max(w, h) guess: the old behaviour)" if a.fixed_guess
               else " (unknown camera: focal estimated)")
        lines.append(f"{pair}, {a.protocol} protocol{how}"
                     + (f", localized with {a.localize_matcher}" if a.localize_matcher else ""))
        # map drift: the 9-image map's own focal lengths of cameras like the photo's against the 10-image map's
        # (test_sacre_coeur.map_focal_drift); "vs map": the focal error with that drift taken out
        lines.append(f"  {'photo':<26}{'rot err':>9}{'focal err':>11}{'map drift':>11}{'vs map':>8}{'conf':>6}"
                     f"{'inliers':>9}{'rot NEES':>10}  status")
        wrong_before = wrong_after = ok_before = ok_after = 0
        for q, (err, ferr, res) in out.items():
            before = res.pose is not None and res.num_inliers >= 20
            after = before and res.confidence >= th
            wrong_before += before and err > 5
            wrong_after += after and err > 5
            ok_before += before and err <= 5
            ok_after += after and err <= 5
            dq = drift.get(q, float("nan"))
            lines.append(f"  {q:<26}{err:>8.2f}°{100 * ferr:>+10.1f}%{100 * dq:>+10.1f}%"
                         f"{100 * ((1 + ferr) / (1 + dq) - 1):>+7.1f}%{res.confidence:>6.2f}{res.num_inliers:>9}"
                         f"{nees.get(q, float('nan')):>10.2f}  "
                         f"{'OK' if after else 'LOST (' + (res.message or f'confidence < {th}') + ')'}")
            rows.append({"pair": pair, "photo": q, "rot_err_deg": err, "focal_err": ferr, "map_focal_drift": dq,
                         "confidence": res.confidence, "num_inliers": res.num_inliers,
                         "focal_estimated": res.focal_estimated, "ok_after": bool(after),
                         "rotation_nees": nees.get(q),
                         "total_ms": res.timings.get("total")})
        errs = [e for e, _, _ in out.values()]
        ferrs = [abs(f) for _, f, _ in out.values()]
        lines.append(f"  max rotation error {max(errs):.2f}°, max |focal error| {100 * max(ferrs):.1f}%; "
                     f">5° poses OK: before {wrong_before}, after {wrong_after}; poses <=5° OK: before {ok_before}, "
                     f"after {ok_after} (of {len(out)})")
        if nees:
            c = block_consistency(list(nees.values()))
            lines.append(f"  rotation NEES median {c['median']:.2f} (honest: {CHI2_3DOF_MEDIAN:.2f}), within the 95 % "
                         f"bound ({CHI2_3DOF_95:.2f}): {round(c['within_95'] * len(nees))} of {len(nees)}")
    table = "\n".join(lines)
    print(table)
    (a.out / "table.txt").write_text(table + "\n")
    (a.out / "results.json").write_text(dumps_strict(rows, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())

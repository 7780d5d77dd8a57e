"""The one config rule (imp_core.config.merge / load_conf) and the localizer conf built with it."""
from __future__ import annotations

import argparse

import pytest

from imp_core.config import ConfigError, load_conf, merge, parse_overrides

DEFAULTS = {
    "map": None,
    "matcher": None,  # a model slot: whatever model conf is given
    "features": {"name": "aliked", "max_keypoints": 2048},  # a model sub-conf with defaults
    "coarse": [{"name": "tracking"}, {"name": "retrieval"}],
    "acceptance": {"min_inliers": 20, "max_candidates": 8},
    "network": {},  # a free-form sub-conf its component validates
    "device": "auto",
}


def test_mapping_updates_key_by_key_and_checks_keys():
    out = merge(DEFAULTS, {"acceptance": {"min_inliers": 12}}, {"acceptance": {"max_candidates": 3}})
    assert out["acceptance"] == {"min_inliers": 12, "max_candidates": 3}
    with pytest.raises(ConfigError, match=r"unknown key conf.acceptance.min_inlier; known keys: max_candidates, "
                                          r"min_inliers"):
        merge(DEFAULTS, {"acceptance": {"min_inlier": 12}})
    with pytest.raises(ConfigError, match="unknown key localizer.top_k"):
        merge(DEFAULTS, {"top_k": 3}, where="localizer")
    assert DEFAULTS["acceptance"] == {"min_inliers": 20, "max_candidates": 8}  # defaults never modified


def test_model_subconf_same_name_updates_other_name_replaces():
    same = merge(DEFAULTS, {"features": {"name": "aliked", "nms_radius": 3}})
    assert same["features"] == {"name": "aliked", "max_keypoints": 2048, "nms_radius": 3}  # the model checks keys
    assert merge(DEFAULTS, {"features": {"max_keypoints": 512}})["features"] == {"name": "aliked",
                                                                                 "max_keypoints": 512}
    other = merge(DEFAULTS, {"features": {"name": "sift"}})
    assert other["features"] == {"name": "sift"}  # aliked's settings do not carry over to SIFT
    # a null slot and an empty-dict slot take any mapping
    assert merge(DEFAULTS, {"matcher": {"name": "nn", "ratio_threshold": 0.8}})["matcher"] == {
        "name": "nn", "ratio_threshold": 0.8}
    assert merge(DEFAULTS, {"network": {"encoder": "small"}}, {"network": {"classes": 3}})["network"] == {
        "encoder": "small", "classes": 3}


def test_stage_lists_merge_by_name():
    file = {"coarse": [{"name": "tracking", "min_inliers": 30}, {"name": "retrieval", "top_k": 5}]}
    conf = merge(DEFAULTS, file)
    # naming the stages again keeps each one's settings (the ROS `coarse` parameter)
    again = merge(DEFAULTS, file, {"coarse": [{"name": "retrieval"}, {"name": "tracking"}]})
    assert again["coarse"] == [{"name": "retrieval", "top_k": 5}, {"name": "tracking", "min_inliers": 30}]
    # a list names the stages: one left out is gone, a new one comes with its own conf
    assert merge(DEFAULTS, file, {"coarse": [{"name": "retrieval", "top_k": 3}]})["coarse"] == [
        {"name": "retrieval", "top_k": 3}]
    assert merge(DEFAULTS, file, {"coarse": [{"name": "instance", "k_can": 2}]})["coarse"] == [
        {"name": "instance", "k_can": 2}]
    # two stages of one name: the n-th named entry updates the n-th old one
    two = merge(DEFAULTS, {"coarse": [{"name": "retrieval", "top_k": 1}, {"name": "retrieval", "top_k": 9}]},
                {"coarse": [{"name": "retrieval"}, {"name": "retrieval", "num_clusters": 2}]})
    assert two["coarse"] == [{"name": "retrieval", "top_k": 1}, {"name": "retrieval", "top_k": 9, "num_clusters": 2}]
    # lists of plain values replace
    assert merge({"size": [160, 120]}, {"size": [80, 60]}) == {"size": [80, 60]}
    assert conf == merge(DEFAULTS, conf)  # merging a full conf again changes nothing


def test_dotted_overrides():
    file = {"matcher": {"name": "nn", "ratio_threshold": 0.9},
            "coarse": [{"name": "tracking"}, {"name": "retrieval", "top_k": 5}]}
    conf = load_conf(DEFAULTS, file, ["coarse.1.top_k=10", "matcher.ratio_threshold=0.8", "map=maps/x",
                                      "acceptance={min_inliers: 30}", "device=null"])
    assert conf["coarse"][1] == {"name": "retrieval", "top_k": 10}
    assert conf["matcher"] == {"name": "nn", "ratio_threshold": 0.8}
    assert conf["acceptance"] == {"min_inliers": 30, "max_candidates": 8}  # a mapping value updates too
    assert conf["map"] == "maps/x"
    assert conf["device"] is None
    # the same rule as a file: another matcher name replaces the matcher conf
    assert load_conf(DEFAULTS, file, ["matcher.name=lightglue"])["matcher"] == {"name": "lightglue"}
    # list entries by name, and by negative index
    assert load_conf(DEFAULTS, file, ["coarse.retrieval.top_k=7"])["coarse"][1]["top_k"] == 7
    assert load_conf(DEFAULTS, file, ["coarse.-1.top_k=6"])["coarse"][1]["top_k"] == 6
    # typed values (ROS parameters, pairs) are taken as given; strings are YAML
    assert load_conf(DEFAULTS, file, {"coarse.1.top_k": "3"})["coarse"][1]["top_k"] == "3"
    assert load_conf(DEFAULTS, file, [("coarse.1.top_k", 4), "coarse.1.top_k=5"])["coarse"][1]["top_k"] == 5
    assert parse_overrides(["a.b.c=[1, 2]"]) == [{"a": {"b": {"c": [1, 2]}}}]
    # the defaults are there to be addressed without a file
    assert load_conf(DEFAULTS, None, ["coarse.retrieval.top_k=2"])["coarse"] == [
        {"name": "tracking"}, {"name": "retrieval", "top_k": 2}]


@pytest.mark.parametrize("override, message", [
    ("coarse.5.top_k=1", r"conf.coarse.5: index 5 out of range \(2 entries: tracking, retrieval\)"),
    ("coarse.instance.k_can=1", r"conf.coarse.instance: no entry named 'instance' \(entries: tracking, retrieval\)"),
    ("acceptance.min_inlier=3", "unknown key conf.acceptance.min_inlier"),
    ("acceptance=3", r"conf.acceptance is a section: .*acceptance.KEY=VALUE"),
    ("device.kind=cpu", r"conf.device is a value \('auto'\), not a section"),
    ("device", "expected KEY=VALUE"),
    ("coarse..top_k=1", "empty key part"),
    ("map=[unclosed", "cannot parse the value as YAML"),
])
def test_override_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_conf(DEFAULTS, None, [override])


def test_files_and_sections(tmp_path):
    f = tmp_path / "loc.yaml"
    f.write_text("localizer:\n  coarse:\n    - {name: retrieval, top_k: 4}\n")
    assert load_conf(DEFAULTS, f, section="localizer")["coarse"] == [{"name": "retrieval", "top_k": 4}]
    plain = tmp_path / "plain.yaml"
    plain.write_text("device: cpu\n")
    assert load_conf(DEFAULTS, plain, section="localizer")["device"] == "cpu"  # a file without the section
    with pytest.raises(ConfigError, match="config file not found"):
        load_conf(DEFAULTS, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("localizer: [1, 2]\n")
    with pytest.raises(ConfigError, match="section 'localizer' must be a mapping"):
        load_conf(DEFAULTS, bad, section="localizer")
    # no schema: the layers alone (a partial conf), checked when merged with its defaults later
    assert load_conf(None, {"features": {"name": "sift"}}, ["features.max_keypoints=512"]) == {
        "features": {"name": "sift", "max_keypoints": 512}}


def test_localizer_presets_and_single_defaults():
    """hloc-style named confs; the LBR preset puts the recognition conf into its instance stage; top_k has one
    default (the retrieval stage's), which the instance stage's own fallback uses too."""
    from imp_core.localization import CONFS, Localizer, localizer_conf
    from imp_core.recognition.coarse import InstanceCoarseStage
    from imp_core.retrieval.stage import RetrievalStage

    plain = localizer_conf({"map": None})
    assert plain["coarse"] == Localizer.default_conf["coarse"]
    assert plain["matcher"] is None
    lbr = localizer_conf({"recognition": {"model": "m.pt", "k_can": 3}})
    assert lbr["coarse"] == [{"name": "tracking"},
                             {"name": "instance", "fallback": {"name": "retrieval"}, "model": "m.pt", "k_can": 3}]
    assert lbr["matcher"] == {"name": "label_nn"}
    assert lbr["labelled_first"] == {"enabled": True, "oversample": 2.0}
    assert lbr["acceptance"]["min_best_reference_inliers"] == 10
    assert lbr["refinement"]["covisibility"]
    assert lbr["acceptance"]["min_inliers"] == Localizer.default_conf["acceptance"]["min_inliers"]
    assert localizer_conf(lbr) == lbr  # resolving a resolved conf changes nothing
    # the user's conf still wins over the preset, key by key
    mine = localizer_conf({"recognition": {"model": "m.pt"}, "acceptance": {"min_inliers": 30}},
                          ["coarse.instance.rec_th=60"])
    assert mine["acceptance"]["min_inliers"] == 30
    assert mine["acceptance"]["min_best_reference_inliers"] == 10
    assert mine["coarse"][1]["rec_th"] == 60
    assert localizer_conf(None, ["recognition.model=m.pt"])["coarse"][1]["model"] == "m.pt"
    assert localizer_conf({"recognition": {"model": "m.pt"}}, preset="retrieval")["coarse"] == plain["coarse"]
    with pytest.raises(ConfigError, match="unknown localizer preset 'hloc'"):
        localizer_conf(None, preset="hloc")
    assert set(CONFS) == {"retrieval", "lbr"}
    assert "top_k" not in str(CONFS)
    assert "top_k" not in str(Localizer.default_conf)
    assert InstanceCoarseStage.default_conf["fallback_top_k"] == RetrievalStage.default_conf["top_k"]


def _localize_args(**kw):
    from imp_core.localization.commands import register

    ap = argparse.ArgumentParser()
    register(ap.add_subparsers())
    argv = ["localize", "--map", kw.pop("map"), "--image", "x.jpg"]
    for k, v in kw.items():
        for item in (v if isinstance(v, list) else [v]):
            argv += [f"--{k.replace('_', '-')}", str(item)]
    return ap.parse_args(argv)


def test_cli_options_are_overrides(tmp_path):
    """`imp localize` options are dotted overrides after --config: --top-k no longer re-lists the stages (the file's
    tracking stage and its settings stay) and --matcher replaces the file's matcher conf only for another name."""
    from imp_core.localization.commands import localizer_conf_from_args

    cfg = tmp_path / "loc.yaml"
    cfg.write_text("localizer:\n  matcher: {name: nn, ratio_threshold: 0.8}\n  coarse:\n"
                   "    - {name: tracking, min_inliers: 35}\n    - {name: retrieval, top_k: 5}\n")
    conf = localizer_conf_from_args(_localize_args(map="m", config=cfg, top_k=9, set=["acceptance.min_inliers=15"]))
    assert conf["map"] == "m"
    assert conf["acceptance"]["min_inliers"] == 15
    assert conf["coarse"] == [{"name": "tracking", "min_inliers": 35}, {"name": "retrieval", "top_k": 9}]
    assert conf["matcher"] == {"name": "nn", "ratio_threshold": 0.8}
    assert localizer_conf_from_args(_localize_args(map="m", config=cfg, matcher="nn"))["matcher"] == {
        "name": "nn", "ratio_threshold": 0.8}
    assert localizer_conf_from_args(_localize_args(map="m", config=cfg, matcher="lightglue"))["matcher"] == {
        "name": "lightglue"}
    # --set comes last
    conf = localizer_conf_from_args(_localize_args(map="m", config=cfg, top_k=9, set=["coarse.retrieval.top_k=4"]))
    assert conf["coarse"][1]["top_k"] == 4


def test_map_build_and_benchmark_options_are_overrides(tmp_path):
    """`imp map build` and `imp benchmark` read their options through the same rule: --features names the model
    (another one starts from its own defaults), --max-keypoints updates it, --set comes last; the benchmark's map
    conf stays partial (a reused map is checked only against what was asked) and its --top-k no longer drops the
    tracking stage."""
    from imp_core.cli import build_parser
    from imp_core.localization.benchmark import _confs
    from imp_core.mapping import DEFAULT_BUILD_CONF
    from imp_core.mapping.commands import build_conf_from_args

    parse = build_parser().parse_args
    cfg = tmp_path / "b.yaml"
    cfg.write_text("map:\n  features: {name: aliked, max_keypoints: 4096}\n  pairs: {num_neighbors: 8}\n"
                   "localizer:\n  coarse:\n    - {name: tracking}\n    - {name: retrieval, top_k: 4}\n")
    conf = build_conf_from_args(parse(["map", "build", "--images", "x", "--out", "y", "--config", str(cfg),
                                       "--max-keypoints", "1024", "--set", "global.num_clusters=64"]))
    assert conf["features"] == {"name": "aliked", "max_keypoints": 1024}
    assert conf["pairs"]["num_neighbors"] == 8
    assert conf["global"] == {**DEFAULT_BUILD_CONF["global"], "num_clusters": 64}
    conf = build_conf_from_args(parse(["map", "build", "--images", "x", "--out", "y", "--features", "sift"]))
    assert conf["features"] == {"name": "sift"}
    assert conf["matcher"] == DEFAULT_BUILD_CONF["matcher"]
    with pytest.raises(ConfigError, match="unknown key map.pairs.neighbours"):
        build_conf_from_args(parse(["map", "build", "--images", "x", "--out", "y", "--set", "pairs.neighbours=3"]))

    args = parse(["benchmark", "synthetic", "--data", "d", "--config", str(cfg), "--top-k", "7", "--matcher", "nn",
                  "--set", "map.features.resize_max=640", "--set", "localizer.acceptance.min_inliers=12"])
    map_conf, loc_conf, loc_over = _confs(args)
    assert map_conf == {"features": {"name": "aliked", "max_keypoints": 4096, "resize_max": 640},
                        "pairs": {"num_neighbors": 8}, "matcher": {"name": "nn"}}
    from imp_core.localization import localizer_conf

    conf = localizer_conf(loc_conf, loc_over)
    assert conf["coarse"] == [{"name": "tracking"}, {"name": "retrieval", "top_k": 7}]
    assert conf["matcher"] == {"name": "nn"}
    assert conf["acceptance"]["min_inliers"] == 12
    with pytest.raises(ConfigError, match="expected map.KEY=VALUE or localizer.KEY=VALUE"):
        _confs(parse(["benchmark", "synthetic", "--data", "d", "--set", "top_k=3"]))

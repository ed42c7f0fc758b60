"""The node's parameters, its YAML, its statistics and its launch files, without ROS."""
from __future__ import annotations

import ast
import dataclasses
import math
from pathlib import Path

import pytest
import yaml

from hkmr_ros import node_params as P
from hkmr_ros.pipeline import PipelineConfig

ROOT = Path(__file__).resolve().parents[2]


def all_specs():
    return list(P.NODE_PARAMS) + list(P.pipeline_param_specs(PipelineConfig()))


def flat_yaml(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from flat_yaml(v, f"{prefix}{k}.")
        else:
            yield prefix + k, v


def test_every_parameter_has_a_description_and_a_valid_default():
    specs = all_specs()
    names = [s.name for s in specs]
    assert len(names) == len(set(names)), "duplicate parameter names"
    for s in specs:
        assert len(s.description) > 15, s.name
        assert "see hkmr_ros.pipeline" not in s.description, f"{s.name} has no real description"
        assert s.check(s.default) is None, s.name
        if s.kind in (int, float) and s.range is None and (s.name in P.PIPELINE_DOCS or
                                                           s in P.NODE_PARAMS):
            pytest.fail(f"numeric parameter {s.name} has no range")


def test_every_pipeline_setting_is_documented():
    assert P.missing_pipeline_docs(PipelineConfig()) == []


def test_descriptions_come_from_the_config_docstring():
    @dataclasses.dataclass
    class Cfg:
        """alpha: the first one. beta_2: second, with a: colon
        over two lines. gamma: last."""
        alpha: int = 1
        beta_2: float = 0.5
        gamma: bool = True
    assert P.docstring_fields(Cfg) == {"alpha": "the first one.", "beta_2": "second, with a: colon over two lines.",
                                       "gamma": "last."}


def test_yaml_sets_declared_parameters_to_valid_values():
    data = yaml.safe_load((ROOT / "config" / "hkmr.yaml").read_text())
    values = dict(flat_yaml(data["/**"]["ros__parameters"]))
    specs = {s.name: s for s in all_specs()}
    assert set(values) <= set(specs), set(values) - set(specs)
    assert {s.name for s in P.NODE_PARAMS} <= set(values)     # every node parameter is in the file
    for name, value in values.items():
        assert specs[name].check(value) is None, name
    cfg = P.apply_to_config(PipelineConfig(), {k: v for k, v in values.items() if k not in
                                               {s.name for s in P.NODE_PARAMS}})
    assert P.validate_config(cfg) is None


@pytest.mark.parametrize("name,value,needle", [
    ("backend", "cuda", "one of"),
    ("input_queue_depth", 0, "[1, 100]"),
    ("diagnostics_period", math.nan, "finite"),
    ("compressed", 1, "bool"),
    ("threads", True, "int"),
    ("max_people", 65, "[1, 64]"),
])
def test_check_rejects_with_a_reason(name, value, needle):
    spec = {s.name: s for s in all_specs()}[name]
    reason = spec.check(value)
    assert reason is not None and needle in reason and name in reason


def test_float_parameter_accepts_an_integer_value():
    spec = {s.name: s for s in all_specs()}["diagnostics_period"]
    assert spec.check(2) is None


def test_apply_to_config_sets_nested_values_and_the_optional_box():
    cfg = P.apply_to_config(PipelineConfig(), {
        "tracking.detect_every": 3, "smoothing.joints.beta": 2, "detection_classes": ["person", "0"],
        "fixed_box": [10.0, 20.0, 110.0, 220.0], "detector": "fixed"})
    assert cfg.tracking.detect_every == 3
    assert cfg.smoothing.joints.beta == 2.0 and isinstance(cfg.smoothing.joints.beta, float)
    assert tuple(cfg.detection_classes) == ("person", "0")
    assert cfg.fixed_box == (10.0, 20.0, 110.0, 220.0)
    assert P.validate_config(cfg) is None
    unset = P.apply_to_config(cfg, {"fixed_box": [0.0, 0.0, 0.0, 0.0]})
    assert unset.fixed_box is None
    assert "fixed_box" in P.validate_config(unset)        # detector fixed without a box
    # the original is untouched
    assert PipelineConfig().tracking.detect_every != 3 or dataclasses.fields(PipelineConfig)


def test_optional_nested_string_maps_empty_to_none():
    cfg = PipelineConfig()
    if not hasattr(cfg, "blazepose"):
        pytest.skip("this pipeline has no blazepose settings")
    names = {s.name: s for s in P.pipeline_param_specs(cfg)}
    assert names["blazepose.model"].default == ""
    assert P.apply_to_config(cfg, {"blazepose.model": ""}).blazepose.model is None
    assert P.apply_to_config(cfg, {"blazepose.model": "x.onnx"}).blazepose.model == "x.onnx"


def test_detector_choices_are_the_pipeline_s():
    from hkmr_ros.pipeline import DETECTORS
    spec = {s.name: s for s in P.pipeline_param_specs(PipelineConfig())}["detector"]
    assert spec.choices == tuple(DETECTORS)


def test_apply_to_config_rejects_unknown_settings():
    with pytest.raises(ValueError, match="unknown pipeline settings: nope"):
        P.apply_to_config(PipelineConfig(), {"nope": 1})


def test_pipeline_validation_reaches_nested_configs():
    bad = P.apply_to_config(PipelineConfig(), {"tracking.iou_threshold": 1.5})
    assert "iou_threshold" in P.validate_config(bad)


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_window_stats_rates_latency_and_window():
    clock = FakeClock()
    st = P.WindowStats(window_s=2.0, clock=clock)
    for i in range(20):                      # 10 Hz input for 2 s, half processed
        clock.t += 0.1
        st.count("input")
        if i % 2:
            st.count("processed")
            st.latency(10.0 + i, stamp_age_ms=50.0)
    snap = st.snapshot()
    assert snap["input_rate"] == pytest.approx(10.0, rel=0.06)
    assert snap["processed_rate"] == pytest.approx(5.0, rel=0.11)
    assert snap["input_total"] == 20 and snap["processed_total"] == 10
    assert 10.0 <= snap["latency_median_ms"] <= snap["latency_p90_ms"] <= snap["latency_max_ms"] == 29.0
    assert snap["stamp_age_median_ms"] == 50.0
    assert snap["since_input_s"] == pytest.approx(0.0)
    clock.t += 5.0                            # everything leaves the window; totals stay
    snap = st.snapshot()
    assert snap["input_rate"] == 0.0 and snap["input_total"] == 20
    assert "latency_median_ms" not in snap
    assert snap["since_input_s"] == pytest.approx(5.0)


def test_window_stats_before_any_input():
    snap = P.WindowStats().snapshot()
    assert snap["since_input_s"] == math.inf


def test_percentile():
    assert P.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert P.percentile([5.0], 90) == 5.0
    with pytest.raises(ValueError):
        P.percentile([], 50)


@pytest.mark.parametrize("snap,active,dropped,bad,level,text", [
    ({}, False, 0, 0, P.OK, "inactive"),
    ({"since_input_s": math.inf}, True, 0, 0, P.WARN, "no images"),
    ({"since_input_s": 0.1}, True, 0, 0, P.OK, "running"),
    ({"since_input_s": 0.1}, True, 3, 0, P.WARN, "dropping"),
    ({"since_input_s": 0.1}, True, 0, 2, P.WARN, "undecodable"),
    ({"since_input_s": 0.1, "failed_rate": 0.2}, True, 0, 0, P.ERROR, "fail"),
])
def test_diagnostic_summary(snap, active, dropped, bad, level, text):
    got_level, got_text = P.diagnostic_summary(snap, active, 3.0, dropped, bad)
    assert got_level == level and text in got_text


def _launch_args(path: Path):
    """Names in the ARGS table of a launch file (parsed, not imported: no ROS here)."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "ARGS":
            return [elt.elts[0].value for elt in node.value.elts]
    raise AssertionError(f"no ARGS in {path}")


def test_launch_files_declare_the_arguments_the_issue_names():
    args = _launch_args(ROOT / "launch" / "hkmr.launch.py")
    for needed in ("image_topic", "compressed", "camera_info_topic", "detections_topic", "model", "backend",
                   "rviz", "use_sim_time", "autostart"):
        assert needed in args
    assert "bag" in _launch_args(ROOT / "launch" / "hkmr_bag.launch.py")


def test_launch_overrides_are_declared_parameters():
    """Every parameter the main launch file sets exists in the node (a typo would be ignored by ROS)."""
    text = (ROOT / "launch" / "hkmr.launch.py").read_text()
    tree = ast.parse(text)
    keys = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict) and any(isinstance(v, ast.Call) and getattr(v.func, "id", "") == "ParameterValue"
                                              for v in node.values):
            keys |= {k.value for k in node.keys}
    names = {s.name for s in all_specs()} | {"use_sim_time"}
    assert keys and keys <= names, keys - names


def test_rviz_config_shows_the_node_outputs():
    rviz = yaml.safe_load((ROOT / "launch" / "hkmr.rviz").read_text())
    displays = {d["Class"]: d for d in rviz["Visualization Manager"]["Displays"]}
    assert displays["rviz_default_plugins/MarkerArray"]["Topic"]["Value"] == "/hkmr/markers"
    assert displays["rviz_default_plugins/Image"]["Topic"]["Value"] == "/hkmr/overlay"
    assert "rviz_default_plugins/TF" in displays

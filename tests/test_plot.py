"""`tritonep plot`: learning curves of runs, written as PNG and SVG that hold the runs' data."""
import json
import math

import pytest

from svgdata import assert_affine, markers
from tritonep import cli, presets, train

pytest.importorskip("matplotlib")


@pytest.mark.filterwarnings("ignore::tritonep.train.RelaxationWarning")  # run 1 is unsettled on purpose
def test_plot_writes_curves_holding_each_runs_numbers(mnist, tmp_path, capsys):
    runs = []
    for i, (method, feedback) in enumerate((("ep", 0.01), ("ep", 2.0), ("bp", 0.01))):
        cfg = presets.get("mnist-2hl")
        cfg.update(preset="mnist-2hl", method=method, hidden=[16, 16], epochs=3, limit_train=300, limit_test=200,
                   batch_size=50, feedback=feedback, seed=i)
        path = tmp_path / f"run{i}.json"
        train.run(cfg, dataset=mnist, progress=False, out=path)
        runs.append((path, json.loads(path.read_text())))
    assert cli.main(["plot", *(str(p) for p, _ in runs), "--out", str(tmp_path / "fig")]) == 0
    paths = json.loads(capsys.readouterr().out)["plots"]
    png, svg_path = tmp_path / "fig" / "curves.png", tmp_path / "fig" / "curves.svg"
    assert paths == [str(png), str(svg_path)]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    svg = svg_path.read_text()
    for i in range(3):
        assert f"mnist-2hl seed {i}: test" in svg  # the legend names every run
    # accuracy panel: every run's train and test points on one affine scale
    values, ys = [], []
    for i, (_, r) in enumerate(runs):
        for key in ("train_acc", "test_acc"):
            pts = markers(svg, f"run{i}-{key}")
            assert [x for x, _ in pts] == sorted(x for x, _ in pts) and len(pts) == 3  # one per epoch
            values += [e[key] for e in r["epochs"]]
            ys += [y for _, y in pts]
    assert_affine(values, ys)
    # residual panel, log scale: the EP runs' medians; the BP run has none
    values, ys = [], []
    for i in (0, 1):
        values += [math.log10(e["residual_median"]) for e in runs[i][1]["epochs"]]
        ys += [y for _, y in markers(svg, f"run{i}-residual_median")]
    assert_affine(values, ys)
    assert 'id="run2-residual_median"' not in svg and 'id="run2-train_loss"' in svg


def test_plot_reports_bad_input_in_one_line(tmp_path, capsys):
    (tmp_path / "x.json").write_text('{"config": {}}')
    (tmp_path / "y.json").write_text("not json")
    for path, why in ((tmp_path / "x.json", "no per-epoch records"), (tmp_path / "y.json", "not a results JSON"),
                      (tmp_path / "z.json", "no such file")):
        assert cli.main(["plot", str(path), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"tritonep plot: error: {path}") and why in err
    assert not (tmp_path / "o").exists()

"""`tritonep reproduce`: the rows and the paper's numbers, and the --quick pipeline end to end."""
import json
import statistics

import pytest
from svgdata import assert_affine, markers

from tritonep import build, cli, paper, presets, reproduce
from tritonep.cli import reproduce as reproduce_cli


def test_rows_map_to_presets_and_carry_the_papers_numbers():
    t1, t2 = paper.TABLES["table1"], paper.TABLES["table2"]
    assert len(t1) == 11 and len(t2) == 28  # 3 + 5 + 3 rows; 14 per data set
    assert paper.ROWS["mnist-conv"].paper.test == 99.14  # Table 1, conv
    assert paper.ROWS["mnist-conv-table2"].paper.test == 99.27
    assert paper.ROWS["cifar10-conv"].paper.test == 75.04  # Table 2, conv
    assert paper.ROWS["mnist-2hl"].paper.time == "0:01:16"
    for row in t1 + t2:
        assert row.paper is not None and 0 < row.paper.std < row.paper.test <= 100
        assert row.preset is not None, row.key  # every row of both tables runs, conv rows included
        cfg = reproduce.row_config(row, 0, {})
        assert cfg["dataset"] == row.dataset
        build.build_optimizer(build.build_net(cfg), cfg)  # the overrides fit the preset
    assert reproduce.row_config(paper.ROWS["mnist-20hl-bp"], 3, {"epochs": 2})["residual"] is None
    dlr = reproduce.row_config(paper.ROWS["mnist-3hl-sgd-dlr"], 0, {})
    # the rates the authors' code applied (lr[-i] of their list), input to readout
    assert dlr["lr"] == [0.002, 0.2, 0.05, 0.01] and dlr["optimizer"] == "sgd"


def test_rows_run_as_their_numbers_were_made():
    """Table 1's FC EP rows: the layered model (frozen error, constant nudge, free
    readout error; 2HL with K=5); Table 2's FC EP rows: the graph model (ramp, frozen,
    nudged readout error; 50 epochs of batch 500). Every one has an Algorithm 1 twin,
    and the library's own defaults stay Algorithm 1."""
    from tritonep import EPNet

    variant = ("nudge_schedule", "error", "readout_error")
    for row in paper.TABLES["table1"] + paper.TABLES["table2"]:
        cfg = reproduce.row_config(row, 0, {})
        if cfg["method"] != "ep" or cfg.get("conv") or cfg["output"] == "neuron":
            assert f"{row.preset}-alg1" not in presets.PRESETS or cfg["method"] != "ep", row.key
            continue
        want = ("constant", "frozen", "free") if row.table == "table1" else ("ramp", "frozen", "nudged")
        assert tuple(cfg[k] for k in variant) == want, row.key
        if row.table == "table2":
            assert (cfg["epochs"], cfg["batch_size"]) == (50, 500) and row.paper.setting.startswith("50/500-")
        twin = paper.as_variant(row, "alg1")
        assert twin.key == f"{row.key}-alg1" and twin.paper == row.paper
        alg1 = reproduce.row_config(twin, 0, {})
        assert tuple(alg1[k] for k in variant) == ("constant", "dynamic", "free")
        assert {k: v for k, v in alg1.items() if k not in variant + ("description", "preset")} == {
            k: v for k, v in cfg.items() if k not in variant + ("description", "preset")}
    assert reproduce.row_config(paper.ROWS["mnist-2hl"], 0, {})["K"] == 5
    o = EPNet([4, 5, 3]).options
    assert (o.nudge_schedule, o.error, o.readout_error) == ("constant", "dynamic", "free")


def test_bad_targets_and_options(capsys):
    assert cli.main(["reproduce", "tabel1"]) == 2
    assert "unknown table or row 'tabel1'; did you mean table1" in capsys.readouterr().err
    assert cli.main(["reproduce"]) == 2
    assert "give a table" in capsys.readouterr().err
    assert cli.main(["reproduce", "table1", "--seeds", "0"]) == 2
    assert "--seeds must be a positive int" in capsys.readouterr().err
    assert reproduce_cli.main(["table1", "--dataset", "cifar10"]) == 2
    assert "no row of table1 is on cifar10" in capsys.readouterr().err
    assert cli.main(["reproduce", "--list"]) == 0
    assert "mnist-10hl-agt" in capsys.readouterr().out


def _table(md: str) -> dict[str, dict[str, str]]:
    """Markdown table rows keyed by the row key in backticks -> {column: cell}."""
    rows, header = {}, None
    for line in md.splitlines():
        if not line.startswith("| "):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "Row":
            header = cells
            continue
        key = cells[0].split("`")[1]
        rows[key] = dict(zip(header, cells))
    return rows


def test_quick_reproduction_end_to_end(data_dir, tmp_path, capsys):
    out = tmp_path / "rq"
    args = ["reproduce", "mnist-2hl-bp", "mnist-5hl", "mnist-conv-bp", "--quick", "--data-dir", str(data_dir),
            "--no-download", "--out", str(out), "--name", "smoke"]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    md = (out / "smoke.md").read_text()
    assert printed.strip() == md.strip()
    summary = json.loads((out / "smoke.json").read_text())
    table = _table(md)
    assert list(table) == ["mnist-2hl-bp", "mnist-conv-bp", "mnist-5hl"]  # Table 1's rows, then Table 2's
    assert all(list(cells) == list(reproduce.COLUMNS) for cells in table.values())
    assert "**Not the paper's budget**" in md and "tritonep reproduce mnist-2hl-bp mnist-5hl" in md

    drawn = {}
    for key in ("mnist-2hl-bp", "mnist-conv-bp", "mnist-5hl"):
        runs = [json.loads((out / key / f"seed{s}.json").read_text()) for s in (0, 1)]
        assert [r["config"]["seed"] for r in runs] == [0, 1]
        assert all(r["finished"] and len(r["epochs"]) == 1 and (r["train_size"], r["test_size"]) == (1000, 500)
                   for r in runs)
        assert not (out / key / "seed0.ckpt").exists()  # dropped once the run finished
        subsets = [r["subsets"] for r in runs]  # seeded class-stratified subsets, one per seed
        assert all(s["train"]["draw"] == s["test"]["draw"] == "stratified" for s in subsets)
        assert [s["test"]["seed"] for s in subsets] == [0, 1] and sum(subsets[0]["test"]["per_class"]) == 500
        assert subsets[0]["test"]["rows_sha256"] != subsets[1]["test"]["rows_sha256"]
        drawn[key] = [s["train"]["rows_sha256"] for s in subsets]

        def pm(field, digits=2):
            v = [r[field] for r in runs]
            return f"{statistics.fmean(v):.{digits}f} ± {statistics.stdev(v):.{digits}f}"

        cells = table[key]
        assert cells["Ours best test %"] == pm("best_test_acc")
        assert cells["Ours final test %"] == pm("final_test_acc")
        assert cells["Time per run (s)"] == pm("train_seconds", 1)
        assert cells["Device"] == runs[0]["device"] and cells["Seeds"] == "2"
        assert cells["Train / test images"] == "1000 / 500"
        row = paper.ROWS[key]
        assert cells["Paper test % (train)"] == f"{row.paper.test:.2f} ± {row.paper.std:.2f} ({row.paper.train:.2f})"
        s = next(r for r in summary["rows"] if r["key"] == key)
        assert s["status"] == "done" and s["best_test_acc"]["n"] == 2
        assert s["best_test_acc"]["mean"] == pytest.approx(statistics.fmean(r["best_test_acc"] for r in runs))
    assert table["mnist-2hl-bp"]["Our setting"] == "1/500-1/1" and table["mnist-2hl-bp"]["Paper setting"] == (
        "50/500-1/1")
    # Table 2 rows run the authors' graph model, and the table says so; its budget is the notebooks'
    assert table["mnist-5hl"]["Our setting"] == "1/500-50/25 (ramp, frozen error, nudged readout error)"
    assert table["mnist-5hl"]["Paper setting"] == "50/500-50/25"
    assert next(r for r in summary["rows"] if r["key"] == "mnist-5hl")["setting"] == table["mnist-5hl"]["Our setting"]
    conv = table["mnist-conv-bp"]
    assert conv["Paper test % (train)"] == "98.93 ± 0.18 (99.43)" and conv["Paper time"] == "0:01:01"
    assert conv["Our setting"] == "1/128-1/1"
    assert len(set(map(tuple, drawn.values()))) == 1  # every row's seed s trains on the same images

    # the paper against ours, per row: means where the summary puts them
    assert summary["plots"] == [str(out / "smoke.png"), str(out / "smoke.svg")]
    assert (out / "smoke.png").read_bytes()[:4] == b"\x89PNG" and "![The paper's test accuracy" in md
    svg = (out / "smoke.svg").read_text()
    rows = summary["rows"]
    for r in rows:
        assert f"{r['key']} ({r['dataset']})" in svg
    values = [r["paper"]["test"] for r in rows] + [r["best_test_acc"]["mean"] for r in rows]
    xs = [x for x, _ in markers(svg, "paper")] + [x for x, _ in markers(svg, "ours")]
    assert_affine(values, xs)

    # --resume-existing reuses finished runs (same numbers, nothing retrained) ...
    assert cli.main(args + ["--resume-existing"]) == 0
    assert "(reused," in capsys.readouterr().err
    again = json.loads((out / "smoke.json").read_text())
    assert [r["best_test_acc"] for r in again["rows"]] == [r["best_test_acc"] for r in summary["rows"]]
    # ... and refuses runs made with other settings
    assert cli.main(args + ["--resume-existing", "--epochs", "2"]) == 2
    assert "holds a run with other settings" in capsys.readouterr().err
    # --report-only trains nothing and loads no data: finished runs as they are, the others listed
    part = out / "mnist-5hl" / "seed1.json"
    kept = part.read_text()
    stopped = json.loads(kept)  # as if killed after its last epoch, before it was marked finished
    stopped.update(finished=False, epochs=[{**stopped["epochs"][0], "test_acc": 12.5}])
    part.write_text(json.dumps(stopped))
    report = ["reproduce", "mnist-2hl-bp", "mnist-5hl", "mnist-3hl", "--quick", "--out", str(out), "--name", "rep",
              "--data-dir", str(tmp_path / "no-data-here"), "--no-download", "--report-only"]
    assert cli.main(report + ["--epochs", "3"]) == 2  # other settings than the runs on disk: refused
    assert "holds a run with other settings" in capsys.readouterr().err
    assert cli.main(report) == 0
    assert "(reused," in capsys.readouterr().err
    rep = json.loads((out / "rep.json").read_text())
    by_key = {r["key"]: r for r in rep["rows"]}
    assert by_key["mnist-2hl-bp"]["status"] == "done"
    assert by_key["mnist-2hl-bp"]["best_test_acc"] == summary["rows"][0]["best_test_acc"]
    assert by_key["mnist-3hl"]["status"] == "not run" and by_key["mnist-3hl"]["best_test_acc"]["n"] == 0
    assert [r["status"] for r in by_key["mnist-5hl"]["runs"]] == ["reused", "unfinished: 1/1 epochs, best so far 12.50%"]
    assert by_key["mnist-5hl"]["best_test_acc"]["n"] == 1 and not (out / "mnist-3hl").exists()
    assert "seed 1: unfinished" in _table((out / "rep.md").read_text())["mnist-5hl"]["Notes"]
    part.write_text(kept)
    # --variant alg1 runs each row's Algorithm 1 twin (rows without one run as they are)
    assert cli.main(args + ["--variant", "alg1", "--name", "alg1"]) == 0
    alg1 = _table((out / "alg1.md").read_text())
    assert list(alg1) == ["mnist-2hl-bp", "mnist-conv-bp", "mnist-5hl-alg1"]
    assert alg1["mnist-5hl-alg1"]["Our setting"] == "1/500-50/25"
    assert alg1["mnist-5hl-alg1"]["Paper test % (train)"] == table["mnist-5hl"]["Paper test % (train)"]


def test_the_reproduction_figure_reads_at_fifteen_rows(tmp_path):
    """A short title (the tables, or the count of rows) and every row named on the axis,
    however many rows; the old title listed every preset and ran off the figure."""
    from tritonep.analysis.curves import plot_reproduction, reproduction_title

    keys = [r.key for r in paper.TABLES["table2"]][:15]
    rows = [{"key": k, "dataset": paper.ROWS[k].dataset, "paper": {"test": paper.ROWS[k].paper.test,
                                                                   "std": paper.ROWS[k].paper.std},
             "best_test_acc": {"mean": paper.ROWS[k].paper.test - 0.5, "std": 0.1}} for k in keys]
    png, svg = plot_reproduction({"targets": keys, "rows": rows}, tmp_path / "fig")
    text = open(svg).read()
    title = reproduction_title(keys, 15)
    assert title == "Paper against ours: 15 rows" and reproduction_title(["table1", "table2"], 39) == \
        "Paper against ours: table1 and table2"
    assert all(k in text for k in keys)
    assert "mnist-5hl mnist" not in text  # no title listing the presets


def test_ep_rows_show_their_gap_to_bp_beside_the_papers():
    """On a copy of the data that differs from the paper's (the lossy CIFAR-10) the gap
    between our EP and our BP is what compares with the paper's gap."""
    def row(key, mean, paper_test):
        return {"key": key, "best_test_acc": {"mean": mean, "std": 0.1, "n": 3}, "paper": {"test": paper_test}}

    rows = {r["key"]: r for r in (row("cifar10-5hl", 48.88, 50.72), row("cifar10-5hl-bp", 50.68, 49.23),
                                  row("cifar10-10hl", 35.2, 34.9))}
    g = reproduce.gap_to_bp(rows["cifar10-5hl"], rows)
    assert g["ours"] == pytest.approx(-1.80) and g["paper"] == pytest.approx(1.49)
    assert reproduce.fmt_gap(g) == "-1.80 / +1.49"
    assert reproduce.gap_to_bp(rows["cifar10-10hl"], rows) is None  # no BP twin in the summary
    assert reproduce.gap_to_bp(rows["cifar10-5hl-bp"], rows) is None


def test_runs_saved_before_a_config_key_existed_are_reused():
    """A key added since (its default None, e.g. guard_residual) does not make an old
    run "another setting"; a real difference is named."""
    cfg = reproduce.row_config(paper.ROWS["mnist-2hl"], 0, {})
    old = {k: v for k, v in cfg.items() if k != "guard_residual"}
    assert reproduce.comparable(old) == reproduce.comparable(cfg)
    assert reproduce.comparable({**old, "lr": 0.5}) != reproduce.comparable(cfg)

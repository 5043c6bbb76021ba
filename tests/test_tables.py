"""mr2ct.tables on real tiny runs made here: tables cell by cell against results.json, p-values against
paired_ttest, missing rows, failed runs, LaTeX/CSV that parse, figures, the W&B source, the sweep configs."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from mr2ct.core.cli import CONF_DIR
from mr2ct.evaluate import evaluate_checkpoint, evaluation_config
from mr2ct.inference.checkpoint import locate_checkpoint
from mr2ct.methods.registry import METHODS, method_card
from mr2ct.metrics.stats import paired_ttest
from mr2ct.pipeline.run import run_task
from mr2ct.report.runs import collect_local, collect_wandb
from mr2ct.report.wandb_workspace import SECTIONS, build_workspace, panel_metrics
from mr2ct.tables import run_tables
from mr2ct.train import train
from tests.conftest import TINY, TINY_DDIM, compose_config
from tests.wandb_offline import OfflineApi

REPO_ROOT = Path(__file__).resolve().parents[1]
SWEEPS = REPO_ROOT / "multirun_sweeps"


WANDB_GROUP = "tables_test"


def tiny_train(root: Path, cache_dir: Path, name: str, *overrides: str, base: list[str] = TINY) -> Path:
    cfg = compose_config([*base, "logger=wandb", f"logger.group={WANDB_GROUP}", f"paths.cache_dir={cache_dir}", f"paths.output_dir={root / name}", *overrides])
    run_task(cfg, "train", train)
    return root / name


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory, cache_dir) -> Path:
    """Two seeds of pix2pix (two_point), pix2pix with one landmark, ddim_image (also scored on the T2w-like
    external sets, asked for), an evaluate run of it with t=3, and a run that fails on purpose; each also
    an offline W&B run in its run dir."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WANDB_MODE", "offline")
        return make_runs(tmp_path_factory.mktemp("sweep"), cache_dir)


def make_runs(root: Path, cache_dir: Path) -> Path:
    tiny_train(root, cache_dir, "p2p_seed0")
    tiny_train(root, cache_dir, "p2p_seed1", "seed=1")
    tiny_train(root, cache_dir, "p2p_one", "registration=one_point")
    ddim = tiny_train(root, cache_dir, "ddim", "data.score_other_contrasts=true", base=TINY_DDIM)
    with pytest.raises(RuntimeError, match="fail_on_purpose"):
        tiny_train(root, cache_dir, "failed", "fail_on_purpose=true")
    cfg = compose_config([f"ckpt={ddim}", "logger=wandb", f"logger.group={WANDB_GROUP}",
                          f"paths.output_dir={root / 'eval_t3'}", "inference.t=3"],
                         config_name="evaluate")
    train_run, checkpoint = locate_checkpoint(cfg.ckpt)
    merged = evaluation_config(cfg, train_run)
    merged.ckpt_path = str(checkpoint)
    run_task(merged, "evaluate", evaluate_checkpoint)
    return root


@pytest.fixture(scope="module")
def report_dir(runs_root: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    run_tables(compose_config([f"runs={runs_root}", f"out_dir={out}", "figure_subjects=1"], config_name="tables"))
    return out


def results(runs_root: Path, name: str) -> dict:
    return json.loads((runs_root / name / "results.json").read_text())


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    return {row["row"]: row for row in csv.DictReader(io.StringIO(path.read_text()))}


def test_table1_cells_are_the_runs_aggregates_averaged_over_seeds(runs_root, report_dir):
    table = read_csv(report_dir / "table1_image_quality.csv")
    seeds = [results(runs_root, n)["datasets"]["phantom_t1w"]["image_quality"]["aggregates"] for n in ("p2p_seed0", "p2p_seed1")]
    ddim = results(runs_root, "ddim")["datasets"]["phantom_t1w"]["image_quality"]["aggregates"]
    for metric in ("l1", "mse", "psnr", "ssim", "vifp"):
        assert float(table["Pix2Pix UNet"][f"phantom_t1w/{metric}"]) == pytest.approx(np.mean([s[metric] for s in seeds]), rel=1e-12)
        assert float(table["DDIM image η=1, t=2, w=0"][f"phantom_t1w/{metric}"]) == pytest.approx(ddim[metric], rel=1e-12)
    assert table["Pix2Pix UNet"]["runs"] == "2" and table["DDIM image η=1, t=2, w=0"]["runs"] == "1"
    assert table["DDIM noise"]["runs"] == "no runs" and table["DDIM noise"]["phantom_t1w/psnr"] == ""
    # best per column: the higher PSNR, the lower L1
    better_psnr = "Pix2Pix UNet" if np.mean([s["psnr"] for s in seeds]) > ddim["psnr"] else "DDIM image η=1, t=2, w=0"
    assert "phantom_t1w/psnr" in table[better_psnr]["best"].split(";")


def test_table2_and_3_dice_on_every_test_set(runs_root, report_dir):
    assert set(results(runs_root, "p2p_seed0")["datasets"]) == {"phantom_t1w"}  # T2w-like sets: other contrast
    markdown = (report_dir / "table2_dice.md").read_text()
    assert "phantom_external (model: phantom_t1w, other contrast)" in markdown
    dice = read_csv(report_dir / "table2_dice.csv")
    posterior = read_csv(report_dir / "table3_posterior_dice.csv")
    run = results(runs_root, "ddim")["datasets"]
    for dataset, key in (("phantom_t1w", "phantom_t1w"), ("phantom_external", "phantom_t1w>phantom_external"),
                         ("phantom_external_corrected", "phantom_t1w>phantom_external_corrected")):
        aggregates = run[dataset]["dice"]["aggregates"]
        row = "DDIM image η=1, t=2, w=0"
        assert float(dice[row][f"{key}/volume"]) == pytest.approx(aggregates["volume"], rel=1e-12)
        assert float(dice[row][f"{key}/vertebra"]) == pytest.approx(aggregates["vertebra"], rel=1e-12)
        assert float(posterior[row][f"{key}/posterior_volume"]) == pytest.approx(aggregates["posterior_volume"], rel=1e-12)
        assert float(posterior[row][f"{key}/posterior_vertebra"]) == pytest.approx(aggregates["posterior_vertebra"], rel=1e-12)


def test_registration_ablation_rows_and_missing_configuration(runs_root, report_dir):
    table = read_csv(report_dir / "registration_ablation.csv")
    one = results(runs_root, "p2p_one")["datasets"]["phantom_t1w"]
    assert float(table["Pix2Pix UNet, 1 landmark"]["phantom_t1w/psnr"]) == pytest.approx(one["image_quality"]["aggregates"]["psnr"], rel=1e-12)
    assert float(table["Pix2Pix UNet, 1 landmark"]["phantom_t1w/posterior_volume"]) == pytest.approx(one["dice"]["aggregates"]["posterior_volume"], rel=1e-12)
    assert table["Pix2Pix UNet, no registration"]["runs"] == "no runs"
    assert table["Pix2Pix UNet, 2 landmarks"]["runs"] == "2"
    assert table["DDIM image, no registration"]["runs"] == "no runs"
    assert table["DDIM image η=1, t=2, w=0, 2 landmarks"]["runs"] == "1"
    markdown = (report_dir / "registration_ablation.md").read_text()
    assert "| Pix2Pix UNet, no registration | – | – | – | – | – | no runs |" in markdown


def test_inference_ablation_rows_come_from_evaluate_runs(runs_root, report_dir):
    table = read_csv(report_dir / "tableS1_inference_image_quality.csv")
    assert list(table) == ["DDIM image η=1, t=3, w=0"]
    evaluated = results(runs_root, "eval_t3")["datasets"]["phantom_t1w"]["image_quality"]["aggregates"]
    assert float(table["DDIM image η=1, t=3, w=0"]["phantom_t1w/psnr"]) == pytest.approx(evaluated["psnr"], rel=1e-12)


def test_failed_run_is_listed_and_not_averaged(runs_root, report_dir):
    not_included = (report_dir / "runs_not_included.md").read_text()
    assert str(runs_root / "failed") in not_included and "fail_on_purpose" in not_included
    assert read_csv(report_dir / "table1_image_quality.csv")["Pix2Pix UNet"]["runs"] == "2"
    assert str(runs_root / "failed") in (report_dir / "index.html").read_text()


def phantom_t1w_samples(runs_root: Path, names: tuple[str, ...], section: str, table: str, ids: str, value: str) -> dict:
    """Per-sample values ((subject, ids) -> value) of the runs ``names`` on phantom_t1w, averaged over them."""
    runs = []
    for name in names:
        block = results(runs_root, name)["datasets"]["phantom_t1w"][section][table]
        runs.append({(s, i): v for s, i, v in zip(block["subject"], block[ids], block[value])})
    return {key: float(np.mean([run[key] for run in runs])) for key in runs[0]}


def test_pvalues_equal_paired_ttest_on_the_per_sample_values(runs_root, report_dir):
    def per_slice(*names: str) -> dict:
        return phantom_t1w_samples(runs_root, names, "image_quality", "per_slice", "slice", "psnr")

    pix2pix, ddim = per_slice("p2p_seed0", "p2p_seed1"), per_slice("ddim")
    rows = list(csv.DictReader(io.StringIO((report_dir / "table1_image_quality_pvalues.csv").read_text())))
    psnr = [r for r in rows if r["metric"] == "psnr"]
    assert len(psnr) == 1
    best, other = (pix2pix, ddim) if psnr[0]["reference_row"] == "Pix2Pix UNet" else (ddim, pix2pix)
    expected = paired_ttest(best, other)
    assert float(psnr[0]["p_value"]) == pytest.approx(expected.pvalue, rel=1e-9)
    assert int(psnr[0]["n"]) == expected.n == len(ddim)
    # Dice per vertebra: paired by (subject, vertebra)
    dice_rows = [r for r in csv.DictReader(io.StringIO((report_dir / "table2_dice_pvalues.csv").read_text()))
                 if r["column"] == "phantom_t1w" and r["metric"] == "vertebra"]
    assert len(dice_rows) == 1 and (dice_rows[0]["p_value"] or dice_rows[0]["note"])


def test_registration_ablation_tests_two_landmarks_against_one_within_each_method(runs_root, report_dir):
    def per_vertebra(*names: str) -> dict:
        return phantom_t1w_samples(runs_root, names, "dice", "per_vertebra", "vertebra", "posterior")

    two = per_vertebra("p2p_seed0", "p2p_seed1")
    rows = list(csv.DictReader(io.StringIO((report_dir / "registration_ablation_pvalues.csv").read_text())))
    # only within-method pairs: Pix2Pix 2 vs 1 landmark (DDIM has a single registration, nothing to pair)
    assert {(r["reference_row"], r["other_row"]) for r in rows} == {("Pix2Pix UNet, 2 landmarks", "Pix2Pix UNet, 1 landmark")}
    posterior = [r for r in rows if r["metric"] == "posterior_vertebra"]
    expected = paired_ttest(two, per_vertebra("p2p_one"))
    assert float(posterior[0]["p_value"]) == pytest.approx(expected.pvalue, rel=1e-9)
    assert "2-landmark row against its 1- and 0-landmark rows" in (report_dir / "registration_ablation_pvalues.md").read_text()


def latex_cells(line: str) -> int:
    """Columns a LaTeX row spans (multicolumn counted by its span)."""
    body = line.removesuffix(r"\\").strip()
    cells = re.split(r"(?<!\\)&", body)
    return sum(int(m.group(1)) if (m := re.match(r"\s*\\multicolumn\{(\d+)\}", c)) else 1 for c in cells)


@pytest.mark.parametrize("name", ["table1_image_quality", "table2_dice", "table3_posterior_dice",
                                  "tableS1_inference_image_quality", "registration_ablation"])
def test_latex_parses(report_dir, name):
    text = (report_dir / f"{name}.tex").read_text()
    depth = 0
    for ch in re.sub(r"\\[{}]", "", text):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0
    assert depth == 0
    assert re.findall(r"\\begin\{(\w+)\}", text) == re.findall(r"\\end\{(\w+)\}", text)[::-1]
    spec = re.search(r"\\begin\{tabular\}\{(\w+)\}", text).group(1)
    rows = [line for line in text.splitlines() if line.endswith(r"\\")]
    assert rows and all(latex_cells(line) == len(spec) for line in rows)
    assert text.count(r"\textbf{") >= 1 and "_" not in text.replace(r"\_", "")


def test_figures_and_offline_report(report_dir):
    figures = sorted(p.name for p in (report_dir / "figures").glob("*.png"))
    assert figures == ["registration_phantom_t1w.png", "segmentation_phantom_t1w.png", "translation_phantom_t1w.png"]
    assert all((report_dir / "figures" / f).stat().st_size > 10_000 for f in figures)
    page = (report_dir / "index.html").read_text()
    for figure in figures:
        assert f"src='figures/{figure}'" in page
    assert "Table 1" in page and "Registration ablation" in page and "∴" in page


def test_unknown_table_and_missing_runs_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        collect_local(str(tmp_path / "nothing-here*"))
    with pytest.raises(ValueError, match="valid"):
        run_tables(compose_config([f"runs={tmp_path}", f"out_dir={tmp_path / 'out'}", "tables=[table9]"], config_name="tables"))


# ---------------------------------------------------------------------------------------------- W&B source
def test_wandb_source_reads_the_real_offline_runs_back(runs_root, tmp_path, monkeypatch):
    """The runs above were logged by the real W&B logger (offline); read back as public-API Run objects
    (tests/wandb_offline.py: summary tables as SummarySubDict), the tables equal results.json, the
    per-slice values behind the p-values arrive, the failed run is left out, and the figures go to a
    real offline W&B run."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    api = OfflineApi(runs_root)
    assert len(api.runs_found) == 6
    out = tmp_path / "wandb_report"
    cfg = compose_config(["source=wandb", "project=mr2ct", f"group={WANDB_GROUP}", "entity=me", f"out_dir={out}",
                          "figure_subjects=1"], config_name="tables")
    report = run_tables(cfg, api=api)
    assert api.calls == [("me/mr2ct", {"group": WANDB_GROUP})]
    seeds = [results(runs_root, n)["datasets"]["phantom_t1w"]["image_quality"]["aggregates"]["psnr"] for n in ("p2p_seed0", "p2p_seed1")]
    table = read_csv(out / "table1_image_quality.csv")
    assert float(table["Pix2Pix UNet"]["phantom_t1w/psnr"]) == pytest.approx(np.mean(seeds), rel=1e-12)
    assert table["Pix2Pix UNet"]["runs"] == "2"  # the failed run is not averaged in
    assert [r.summary["model"] for r in report.not_included] == ["pix2pix"]
    assert report.not_included[0].reason == "W&B state failed"
    pvalues = list(csv.DictReader(io.StringIO((out / "table1_image_quality_pvalues.csv").read_text())))
    assert [r for r in pvalues if r["metric"] == "psnr" and r["p_value"]]  # per-slice values came from the logged table
    tables_run = OfflineApi(out).runs_found
    assert len(tables_run) == 1 and tables_run[0].state == "finished" and tables_run[0].group == WANDB_GROUP
    assert {f"figures/{p.stem}" for p in report.figures} <= set(tables_run[0].summary.keys()) and report.figures


def test_wandb_run_holds_the_flat_ablation_keys_and_the_dice_tables(runs_root):
    """Lightning's save_hyperparameters must not overwrite ``model``; the run is named from the ablation
    keys, tagged with the commit, and its Dice tables read back as results.json has them."""
    [run] = [r for r in OfflineApi(runs_root / "ddim").runs_found]
    record = results(runs_root, "ddim")
    assert {key: run.config[key] for key in record["summary"]} == record["summary"]
    assert run.config["model"] == "ddim_image" and run.config["card"] == record["card"]
    assert run.name == "ddim_image two_point phantom_t1w sampler=ddim t=2 eta=1.0 w=0.0 seed=0"
    assert run.job_type == "train" and f"commit:{record['meta']['git']['commit'][:12]}" in run.tags
    [read] = collect_wandb(OfflineApi(runs_root / "ddim"), "mr2ct", WANDB_GROUP)
    dice = record["datasets"]["phantom_t1w"]["dice"]
    assert read.datasets["phantom_t1w"]["dice"]["per_volume"] == dice["per_volume"]
    assert read.datasets["phantom_t1w"]["dice"]["per_vertebra"] == dice["per_vertebra"]


def test_wandb_workspace_panels_show_keys_the_runs_log(runs_root):
    """Every metric a workspace panel plots is in a real run's summary and every key it groups by is in the
    run config, so the ready dashboard is not empty; the definition passes wandb-workspaces' own schema."""
    [run] = OfflineApi(runs_root / "ddim").runs_found
    for panels in SECTIONS.values():
        for panel in panels:
            assert set(panel_metrics(panel, "phantom_t1w")) <= set(run.summary.keys()), panel.title
            assert panel.by is None or panel.by in run.config
    pytest.importorskip("wandb_workspaces")
    view = build_workspace("me", "mr2ct")._to_model().model_dump_json()
    assert all(title in view for title in SECTIONS)
    assert '"group_by":"registration.value"' in view and '"group_by":"method.value"' in view
    assert '"summary_metrics.phantom_t1w/dice_vertebra"' in view


def test_every_run_keeps_its_training_curves_on_disk(runs_root):
    """Whatever the logger: Lightning's metrics.csv (losses and the learning rate) and a loss plot."""
    header = (runs_root / "p2p_seed0" / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert any("loss" in column for column in header) and any(column.startswith("lr-") for column in header)
    assert (runs_root / "p2p_seed0" / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------------------------------------- sweep configs
def sweep(name: str):
    with initialize_config_dir(config_dir=str(SWEEPS), version_base="1.3"):
        return compose(config_name=name, overrides=[f"hydra.searchpath=[file://{CONF_DIR}]"], return_hydra_config=True)


def test_registration_ablation_sweeps_the_paper_methods_over_landmarks():
    cfg = sweep("registration_ablation")
    assert dict(cfg.hydra.sweeper.params) == {"model": "pix2pix,cut,syndiff,ddim_image",
                                              "registration": "none,one_point,two_point"}
    assert cfg.experiment_name == "registration_ablation" and cfg.model.name == "ddim_image"


def test_method_comparison_sweeps_cover_every_method_once_in_one_experiment():
    swept = {}
    for name in ("method_comparison", "method_comparison_3d"):
        cfg = sweep(name)
        assert cfg.experiment_name == "method_comparison"
        models = cfg.hydra.sweeper.params.model.split(",")
        assert {method_card(model).dims for model in models} == {3 if name.endswith("_3d") else 2}
        swept.update({model: name for model in models})
    assert sorted(swept) == sorted(METHODS)
    assert sweep("method_comparison").hydra.sweeper.params.data == "phantom_t1w,phantom_t2w"
    assert sweep("method_comparison_3d").inference.t == 25  # inference=ddim_3d
    assert sweep("method_comparison_3d").iso is True  # the super-resolved outputs of Fig. 7


def test_sweep_command_line_keeps_the_primary_conf_on_the_search_path():
    command = [sys.executable, "-m", "mr2ct.train", "--config-dir", str(SWEEPS), "--config-name", "registration_ablation",
               "--cfg", "hydra", "-p", "hydra.sweeper.params"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "model: pix2pix,cut,syndiff,ddim_image" in completed.stdout and "registration: none,one_point,two_point" in completed.stdout


def test_inference_ablation_sweeps_compose_on_the_evaluate_config():
    with initialize_config_dir(config_dir=str(SWEEPS), version_base="1.3"):
        grid = compose(config_name="inference_ablation", overrides=[f"hydra.searchpath=[file://{CONF_DIR}]", "ckpt=x"], return_hydra_config=True)
        ddpm = compose(config_name="inference_ablation_ddpm", overrides=[f"hydra.searchpath=[file://{CONF_DIR}]", "ckpt=x", "inference=ddpm"], return_hydra_config=True)
    assert dict(grid.hydra.sweeper.params) == {"inference.t": "10,20,50", "inference.eta": "0,1", "inference.w": "0,1,2"}
    assert dict(ddpm.hydra.sweeper.params) == {"inference": "ddpm"}
    assert ddpm.inference.sampler.value == "ddpm" and grid.ckpt == "x"


# ---------------------------------------------------------------------------------------------- method cards
def test_rows_labels_and_settings_columns_come_from_the_cards_even_for_a_method_only_a_test_knows(runs_root, tmp_path):
    """A run of a method no table code knows (its card written by the run) gets its card's label and
    exactly the inference settings its card reads, in the row label and the CSV's settings columns."""
    record = results(runs_root, "eval_t3")
    card = {"name": "toy", "label": "Toy sampler", "paired": True, "dims": 2, "reads": ["t"],
            "tiling": {"window": None, "overlap": 0.25}}
    toy = tmp_path / "runs" / "toy"
    toy.mkdir(parents=True)
    summary = {**record["summary"], "model": "toy", "method": "Toy sampler", "inference.t": 7, "inference.eta": 0.5}
    (toy / "results.json").write_text(json.dumps({**record, "summary": summary, "card": card}))
    out = tmp_path / "report"
    run_tables(compose_config([f"runs=[{toy},{runs_root / 'p2p_seed0'}]", f"out_dir={out}", "figures=false"],
                              config_name="tables"))
    inference = list(csv.DictReader(io.StringIO((out / "tableS1_inference_image_quality.csv").read_text())))
    assert [row["row"] for row in inference] == ["Toy sampler t=7"]  # eta is not read by this card: not in the label
    assert inference[0]["inference.t"] == "7" and "inference.eta" not in inference[0]
    main = read_csv(out / "table1_image_quality.csv")
    assert "inference.t" not in main["Pix2Pix UNet"]  # Pix2Pix reads no inference setting: no such column
    assert main["DDIM noise"]["runs"] == "no runs"  # expected rows are named by the registered cards

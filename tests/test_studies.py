"""Every committed study re-analyses from git: its run records are committed under
results/<study>/runs/, and `python -m harness.analysis results/<study>/runs` gives back the
committed table.csv, paired.csv and lr_ratio.csv exactly (so nobody has to trust a table they
cannot regenerate)."""

import json

import pytest

from conftest import REPO

STUDIES = sorted(p.parent for p in (REPO / "results").glob("*/table.csv"))


def test_there_are_committed_studies_and_each_has_its_records():
    assert STUDIES, "no committed study under results/"
    for study in STUDIES:
        records = list((study / "runs").glob("*/result.json"))
        assert records, f"{study.name}: no run records committed under {study / 'runs'}"


@pytest.mark.parametrize("study", STUDIES, ids=[s.name for s in STUDIES])
def test_study_reanalyses_to_its_committed_table(study):
    from harness import analysis
    report = analysis.build([study / "runs"], study.name)
    assert report.table.to_csv(index=False) == (study / "table.csv").read_text()
    assert report.pairs.to_csv(index=False) == (study / "paired.csv").read_text()
    ratio_file = study / "lr_ratio.csv"  # the LR-ratio answer is a table too: it must not go stale
    assert (report.ratio is not None) == ratio_file.exists()
    if report.ratio is not None:
        assert report.ratio["per_config"].to_csv(index=False) == ratio_file.read_text()
        headline = [line for line in report.markdown.splitlines() if "optimal-LR ratio" in line]
        assert headline and headline[0] in (study / "table.md").read_text()  # the pooled ratio too


def test_the_report_notebook_default_input_exists_in_a_clone():
    nb = json.loads((REPO / "notebooks" / "report.ipynb").read_text())
    params = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    namespace = {}
    exec("".join(params["source"]), namespace)  # noqa: S102 - our own notebook's parameter cell
    for d in namespace["sweep_dirs"]:
        assert list((REPO / "notebooks" / d).glob("*/result.json")), f"notebook default input {d} has no records"


def test_reft_capacity_paired_loss_script_reproduces_the_readme_figures():
    """results/reft_capacity/paired_loss.py reads only the committed records; every interval it
    prints is the one the README quotes (README minus signs are U+2212)."""
    import re
    import subprocess
    import sys
    folder = REPO / "results" / "reft_capacity"
    out = subprocess.run([sys.executable, str(folder / "paired_loss.py")], capture_output=True, text=True,
                         check=True).stdout
    figures = re.findall(r"([+-]\d\.\d{3} \[[+-]\d\.\d{3}, [+-]\d\.\d{3}\]) \(n=5\)", out)
    assert len(figures) == 9, out
    readme = (folder / "README.md").read_text()
    for figure in figures:
        assert figure.replace("-", "\u2212") in readme, figure

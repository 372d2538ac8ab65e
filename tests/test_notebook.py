"""notebooks/report.ipynb executes headlessly on the smoke sweep (papermill, a fresh kernel)."""

import json

import pytest

from conftest import REPO


@pytest.mark.timeout(400)
def test_report_notebook_runs_on_the_smoke_sweep(use_mirror, smoke_sweep, tmp_path):
    import papermill
    sweep_dir, run = smoke_sweep  # the session's smoke sweep (conftest), read only
    assert run.returncode == 0, run.stderr[-2000:]
    out = tmp_path / "report.ipynb"
    papermill.execute_notebook(str(REPO / "notebooks" / "report.ipynb"), str(out), kernel_name="python3",
                               parameters={"sweep_dirs": [str(sweep_dir)], "name": "smoke"},
                               cwd=str(REPO / "notebooks"), progress_bar=False)
    cells = json.loads(out.read_text())["cells"]
    outputs = [o for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    from harness import analysis
    drawn = analysis.build([sweep_dir], "smoke").figures  # what the analysis draws for this sweep
    assert {"pareto", "lr_sweep", "loss_curves", "ranks", "pareto_cost"} <= set(drawn)
    assert len(images) == len(drawn)  # the notebook shows every figure the analysis drew
    assert any("Sweep: smoke" in "".join(o.get("data", {}).get("text/markdown", "")) for o in outputs)

"""notebooks/ablations.ipynb runs headlessly end to end on the smoke budget, so it cannot rot."""

import os

import nbclient
import nbformat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ablation_notebook_executes(tmp_path, monkeypatch):
    # The kernel inherits this environment: the smoke budget, a fresh root, 2 CPU devices.
    monkeypatch.setenv("RLVR_ABLATION_QUICK", "1")
    monkeypatch.setenv("RLVR_ABLATION_ROOT", str(tmp_path))
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    monkeypatch.setenv("PYTHONPATH", ROOT)
    nb = nbformat.read(os.path.join(ROOT, "notebooks", "ablations.ipynb"), as_version=4)
    nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": ROOT}}
    ).execute()
    outputs = "".join(
        o.get("text", "") for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs
    )
    assert "| DAPO + DelTA |" in outputs and "| POPD (linear) |" in outputs
    assert "TOPD vs OPD:" in outputs and "RLIF (no labels):" in outputs
    assert os.path.exists(tmp_path / "ablations.png")

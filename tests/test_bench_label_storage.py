"""bench/label_storage.py: rows from saved evaluation reports and the accuracy-vs-bytes table."""

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "label_storage.py"


def _bench():
    spec = importlib.util.spec_from_file_location("label_storage", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report(name: str, syn: float, rnd: float) -> dict:
    storage = {"parts": {"images": 313600, "labels": 40800, "label_generator": 0}, "label_bytes": 40000,
               "models_at_training": 0, "training_models": {}, "total": 354400, "total_with_models": 354400,
               "ratio_to_full": 0.0084, "counted_images": 100, "training_instances": 100,
               "per_epoch_label_bytes": 410000}
    return {"summary": {"convnet": {"synthetic": {"mean": syn, "std": 0.3, "n": 3},
                                    "random": {"mean": rnd, "std": 1.0, "n": 3}}},
            "storage": storage, "protocol": {"name": name, "epochs": 100}}


def test_rows_from_saved_reports_make_the_table():
    bench = _bench()
    rows = [bench.row("nrr", _report("dbr", 95.04, 94.73), None), bench.row("infer", _report("infer", 96.4, 95.9), 1.0)]
    settings = {"dataset": "mnist", "ipc": 10, "model": "convnet", "runs": 3, "machine": "test", "params": {},
                "from_reports": {"nrr": "nrr_eval.json"}}
    table = bench.markdown(rows, settings)
    assert "| nrr | dbr (100) | 95.04 ± 0.30 | 94.73 ± 1.00 | +0.31 |" in table
    assert "| infer | infer (100) | 96.40 ± 0.30 | 95.90 ± 1.00 | +0.50 |" in table
    assert "410.0 kB" in table and "354.4 kB" in table and "nrr: `nrr_eval.json`" in table

import json
import math

from sftgo.report import moving_average, plot_loss_groups, report_run


def test_moving_average_trailing_and_nan_skipping():
    assert moving_average([1.0, 3.0, 5.0], 2) == [1.0, 2.0, 4.0]
    out = moving_average([1.0, float("nan"), 3.0], 2)
    assert out[0] == 1.0 and out[1] == 1.0 and out[2] == 3.0
    assert math.isnan(moving_average([float("nan")], 3)[0])


def test_report_redraws_png_from_metrics(tmp_path):
    recs = [{"step": i, "loss": 2.0 - i / 50, "loss_ce": 2.0, "loss_important": 3.0, "loss_unimportant": 1.5}
            for i in range(1, 31)]
    recs[3]["loss_important"] = None  # an empty group at one step
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    png = report_run(tmp_path)
    assert png.exists() and png.stat().st_size > 1000
    assert plot_loss_groups(recs[:1], tmp_path / "one.png").exists()

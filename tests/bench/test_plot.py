"""bench.plot renders the committed benchmark results, and refuses files it cannot read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import plot

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_the_committed_results_render_as_a_png(tmp_path: Path) -> None:
    out = tmp_path / "latency.png"
    assert plot.main(["--out", str(out)]) == 0
    data = out.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (13 * 90, int(3 * 4.2 * 90))  # three panels at 90 dpi


def test_each_panel_holds_the_runs_of_its_benchmark() -> None:
    panels = plot.panels(
        plot.RESULTS / "gateway-streams.json",
        plot.RESULTS / "dlp_gateway-streams.json",
        plot.RESULTS / "opa_envoy-streams.json",
    )
    gateway, dlp, opa = (tuple(bar.label.replace("\n", " ") for bar in panel.bars) for panel in panels)
    assert gateway == (
        "Envoy direct 1 conn",
        "no-op Check 1 conn",
        "Aegis 1 conn",
        "Envoy direct 500 RPS",
        "no-op Check 500 RPS",
        "Aegis 500 RPS",
    )
    assert "slack Aegis" in dlp and "crm no-op Check+ext_proc" in dlp
    assert opa[:4] == ("direct 200 RPS", "OPA-Envoy 200 RPS", "Aegis 200 RPS", "Aegis+DLP 200 RPS")
    raw = json.loads((plot.RESULTS / "gateway-streams.json").read_text())
    aegis_1 = next(
        r for r in raw["measurements"] if r["target"] == "aegis" and r["mode"] == "connections" and r["load"] == 1
    )
    assert panels[0].bars[2].percentiles_ms[2] == aegis_1["latency_us"]["p99"] / 1000


@pytest.mark.parametrize("content", ["not json", "[]", '{"measurements": [{"target": "aegis"}]}'])
def test_a_file_that_is_not_a_result_is_a_clear_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "gateway.json"
    path.write_text(content)
    with pytest.raises(plot.PlotError, match="gateway.json"):
        plot.panels(path, None, None)
    with pytest.raises(SystemExit) as exited:
        plot.main(["--gateway", str(path), "--out", str(tmp_path / "x.png")])
    assert exited.value.code == 2
    assert not (tmp_path / "x.png").exists()


def test_a_result_of_several_rounds_plots_the_median_of_each_percentile(tmp_path: Path) -> None:
    def run(target: str, round_index: int, p50_us: float) -> dict[str, object]:
        latency = {"p50": p50_us, "p90": 2 * p50_us, "p99": 3 * p50_us, "p999": 4 * p50_us}
        return {"call": "slack", "target": target, "connections": 1, "round": round_index, "latency_us": latency}

    runs = [run("aegis", 0, 1000), run("direct", 0, 300), run("aegis", 1, 3000), run("aegis", 2, 2000)]
    runs.append({**run("aegis", 0, 9000), "connections": 32})  # another load: not in this panel
    path = tmp_path / "dlp.json"
    path.write_text(json.dumps({"runs": runs}))
    [panel] = plot.panels(None, path, None)
    assert panel.title.endswith("medians of 3 rounds")
    assert [bar.label for bar in panel.bars] == ["slack\nAegis", "slack\ndirect"]
    assert panel.bars[0].percentiles_ms == (2.0, 4.0, 6.0, 8.0)
    assert panel.bars[1].percentiles_ms == (0.3, 0.6, 0.9, 1.2)


def test_a_gateway_result_of_several_rounds_plots_the_median_of_each_percentile(tmp_path: Path) -> None:
    def run(
        target: str, round_index: int, p50_us: float, mode: str = "connections", load: int = 1
    ) -> dict[str, object]:
        latency = {"p50": p50_us, "p90": 2 * p50_us, "p99": 3 * p50_us, "p999": 4 * p50_us}
        return {"target": target, "mode": mode, "load": load, "round": round_index, "latency_us": latency}

    runs = [run("aegis", 0, 1000), run("aegis", 1, 3000), run("aegis", 2, 2000), run("direct", 0, 300)]
    runs.append(run("aegis", 0, 9000, load=32))  # another load: not in this panel
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps({"measurements": runs}))
    [panel] = plot.panels(path, None, None)
    assert panel.title == "bench.gateway: clean call, medians of 3 rounds"
    assert [bar.label.split("\n")[1] for bar in panel.bars] == ["1 conn", "1 conn"]
    assert panel.bars[0].percentiles_ms == (2.0, 4.0, 6.0, 8.0)

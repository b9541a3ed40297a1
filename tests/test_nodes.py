"""Node exporters: every real payload in tests/fixtures/nodes/ parsed verbatim.

The fixtures are real exporter output (see their README for where each came from);
the expected figures below are read off the files by eye, not computed by our code.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from lanewarden.core.nodes import (
    DCGM_FAMILIES,
    MIB,
    CpuCounters,
    cpu_busy,
    merge,
    parse_exporter,
)

FIXTURES = Path(__file__).parent / "fixtures" / "nodes"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def test_dcgm_t4_single_gpu() -> None:
    reading = parse_exporter(fixture("dcgm_exporter_metrics_1x_t4_datadog_fixture.txt"))
    assert reading.kinds == ("dcgm",)
    [gpu] = reading.gpus
    assert gpu.gpu == "0" and gpu.model == "Tesla T4"
    assert gpu.util == 0.0
    assert gpu.temperature_c == 25.0
    assert gpu.power_w == pytest.approx(8.969)
    # FB_USED 0 + FB_FREE 15109 MiB: FB_TOTAL is not a default counter, the parts add up to it
    assert gpu.vram_used_bytes == 0.0
    assert gpu.vram_total_bytes == 15109 * MIB


def test_dcgm_eight_a800_with_a_mig_gpu() -> None:
    reading = parse_exporter(fixture("dcgm_exporter_metrics_8x_a800_mig_blog.txt"))
    assert [g.gpu for g in reading.gpus] == [str(i) for i in range(8)]
    mig, plain = reading.gpus[0], reading.gpus[1]
    # GPU 0 is in MIG mode: no GPU_UTIL sample (and no profiling field in this capture)
    assert mig.util is None
    # its three 2g.20gb instances each report 10 MiB used + 19957 free: summed, not deduplicated
    assert mig.vram_used_bytes == 3 * 10 * MIB
    assert mig.vram_total_bytes == 3 * (10 + 19957) * MIB
    assert plain.util == 0.0
    assert plain.vram_used_bytes == 2 * MIB
    assert plain.vram_total_bytes == (81226 + 2) * MIB
    assert plain.model == "NVIDIA A800-SXM4-80GB"
    figures = merge([reading], None, [])
    assert figures.gpu_util == 0.0  # the mean of the seven that report it
    assert figures.vram_total_bytes == (3 * 19967 + 7 * 81228) * MIB
    assert figures.gpu_temperature_c == 33.0  # the hottest (GPU 0)


def test_dcgm_current_label_set_partial_capture() -> None:
    reading = parse_exporter(fixture("dcgm_exporter_metrics_pr736_hostname_lowercase_partial.txt"))
    # lowercase hostname, pci_bus_id, k8s labels on the MIG row: two GPUs, free memory only
    assert [(g.gpu, g.model) for g in reading.gpus] == [
        ("1", "NVIDIA RTX 2000 Ada Generation"),
        ("2", "NVIDIA A30"),
    ]
    assert all(g.vram_used_bytes is None and g.util is None for g in reading.gpus)


def test_node_exporter_live_1_5_0() -> None:
    reading = parse_exporter(fixture("node_exporter_1.5.0_live_trimmed.txt"))
    assert reading.kinds == ("node",)
    assert reading.load1 == 2.08
    assert reading.ram_total_bytes == 2.5276059648e10
    assert reading.ram_available_bytes == 2.4113422336e10
    assert reading.cpu is not None and reading.cpu.cpus == 2
    assert reading.gpus == ()


def test_node_exporter_e2e_fixture_without_memavailable() -> None:
    reading = parse_exporter(fixture("node_exporter_e2e_fixture_linux_trimmed.txt"))
    assert reading.cpu is not None and reading.cpu.cpus == 8
    assert reading.load1 == 0.21
    assert reading.ram_total_bytes == 3.831959552e09
    # no MemAvailable on that kernel: MemFree + Buffers + Cached stands in
    text = fixture("node_exporter_e2e_fixture_linux_trimmed.txt")
    values = {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith(
            ("node_memory_MemFree_bytes ", "node_memory_Buffers_bytes ", "node_memory_Cached_bytes ")
        )
    }
    assert len(values) == 3
    assert reading.ram_available_bytes == pytest.approx(sum(values.values()))


def test_cpu_busy_comes_from_two_scrapes() -> None:
    first = CpuCounters(busy_seconds=100.0, total_seconds=400.0, cpus=4)
    second = CpuCounters(busy_seconds=130.0, total_seconds=440.0, cpus=4)
    assert cpu_busy(None, second) is None
    assert cpu_busy(first, second) == pytest.approx(0.75)
    assert cpu_busy(second, first) is None  # counters went back: a reboot
    live = parse_exporter(fixture("node_exporter_1.5.0_live_trimmed.txt")).cpu
    assert cpu_busy(live, live) is None


def test_amd_prefixed_gfx_activity_and_temperature() -> None:
    prefixed = parse_exporter(fixture("amd_device_metrics_exporter_issue233_prefixed_gfx_activity.txt"))
    assert prefixed.kinds == ("amd",)
    [gpu] = prefixed.gpus
    assert gpu.util == 0.0 and gpu.model == "Aqua Vanjaram [Instinct MI300X VF]"
    edge = parse_exporter(fixture("amd_device_metrics_exporter_issue171_mi300x_vf_partial.txt"))
    # a comma inside a quoted label value does not break the parse
    [gpu] = edge.gpus
    assert gpu.temperature_c == 0.0 and gpu.vram_used_bytes is None


def test_amd_partial_capture_starting_mid_family() -> None:
    reading = parse_exporter(fixture("amd_device_metrics_exporter_issue259_partial.txt"))
    assert reading.kinds == ("amd",)
    [gpu] = reading.gpus
    assert gpu.gpu == "0" and gpu.util is None  # only free VRAM is visible: no used, no total


def test_concatenated_exporters_merge_into_one_host() -> None:
    gpus = parse_exporter(fixture("dcgm_exporter_metrics_1x_t4_datadog_fixture.txt"))
    host = parse_exporter(fixture("node_exporter_1.5.0_live_trimmed.txt"))
    figures = merge([gpus, host], 0.5, [])
    assert figures.known
    assert figures.vram_total_bytes == 15109 * MIB and figures.ram_total_bytes == 2.5276059648e10
    assert figures.ram_available_ratio == pytest.approx(2.4113422336e10 / 2.5276059648e10)
    assert not merge([], None, ["http://x: ConnectError"]).known


def test_the_counters_we_read_are_dcgm_exporter_defaults() -> None:
    with (FIXTURES / "dcgm_exporter_default-counters.csv").open(encoding="utf-8") as handle:
        rows = [r for r in csv.reader(handle) if r and not r[0].lstrip().startswith("#")]
    enabled = {r[0].strip() for r in rows}
    for field in ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE"):
        assert field in enabled
    assert {"DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE"} <= enabled
    # FB_TOTAL is read when someone enables it, but the default deployment lacks it
    assert "DCGM_FI_DEV_FB_TOTAL" in DCGM_FAMILIES and "DCGM_FI_DEV_FB_TOTAL" not in enabled


def test_text_that_is_not_prometheus_is_rejected() -> None:
    with pytest.raises(ValueError):
        parse_exporter("DCGM_FI_DEV_GPU_UTIL{gpu=0 oops\n")
    assert parse_exporter("<html>nothing here</html>\n").empty

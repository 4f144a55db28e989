"""The status tab's charts against the real server: after real requests the request chart's data shows them,
and both charts come back as pictures that are not blank."""

from __future__ import annotations

import base64
import io
import re

from PIL import Image

REQUESTS = 7


def charts(gradio) -> tuple[dict, str, dict, str]:
    _models, _devices, _queue, memory_plot, memory_text, traffic_plot, traffic_text, *_ = gradio.predict(
        api_name="/status")
    return memory_plot, memory_text, traffic_plot, traffic_text


def figure(name: str, text: str) -> float:
    match = re.search(name, text)
    assert match, f"{name!r} not in {text!r}"
    return float(match.group(1))


def picture(plot: dict) -> Image.Image:
    assert plot["type"] == "matplotlib"
    head, _, data = plot["plot"].partition(",")
    assert head == "data:image/png;base64"
    return Image.open(io.BytesIO(base64.b64decode(data))).convert("L")


def test_requests_show_as_a_rate_and_in_the_hour(gradio, client):
    hour = r"last hour: (\d+) API requests"
    before = figure(hour, charts(gradio)[3])
    for _ in range(REQUESTS):
        assert client.post("/v1/embeddings", json={"input": ["今天天气很好"]}).status_code == 200
    client.get("/healthz")  # not work: must not count
    memory_plot, memory_text, traffic_plot, traffic_text = charts(gradio)
    # Not 0.00: it once read that when a refresh came within a second of a sample and the interval since was
    # dropped with the requests it counted (tests/unit/test_history.py holds the fix).
    assert figure(r"last minute: API \*\*([\d.]+) req/s", traffic_text) > 0
    # Other tests may add API requests of their own in between, never fewer.
    assert figure(hour, traffic_text) >= before + REQUESTS
    # Milliseconds below a second, seconds above (the shared server may be slow when the whole suite runs).
    assert re.search(r"last minute: .* p95 \*\*(\d+ ms|\d+\.\d\d s)\*\*", traffic_text), traffic_text
    # No launcher runs the shared server: the chart is the process's own memory, without a threshold.
    assert "no launcher is running this app" in memory_text and "no restart threshold" in memory_text
    assert figure(r"newest \*\*(\d+) MiB", memory_text) > 10
    for plot, size in ((memory_plot, (800, 272)), (traffic_plot, (800, 448))):
        image = picture(plot)
        assert image.size == size
        low, high = image.getextrema()
        assert high - low > 100  # lines and text on a white ground, not one flat colour

"""The choreography map in a real browser: the system's headless Chromium driven by Playwright
(``executable_path``: no browser is ever downloaded; ``scripts/browser`` installs Chromium).

One run of the reference application (``loom dev``: embedded Temporal with its UI, the
embedded broker, the worker, the participants and the sidecar) and one page, checked for what
an operator relies on: nothing off-origin and no console error; the routes and workflow types
drawn; numbers that move without a reload; a poison event on a dead-letter edge with its
reason; an unrouted type marked; hostile text shown, never run; and a compensated order's
timeline, its emitted commands linked to their causes, with a working Temporal UI link.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiokafka import AIOKafkaProducer
from kit import LoomProcess, StartLoom, eventually
from playwright.async_api import Browser, ConsoleMessage, Page, Request, async_playwright
from temporalio.client import Client

from bridge.events import CAUSATION_ID, CORRELATION_ID, PARTITION_KEY, Event
from bridge.kafka.binding import encode
from routes import router
from services.shop import SOURCE, order_event, sample_orders

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'

pytestmark = [pytest.mark.kafka, pytest.mark.temporal, pytest.mark.timeout(300)]


def chromium() -> str:
    """The system's Chromium (Debian's ``chromium``)."""
    found = os.environ.get("LOOM_TEST_CHROMIUM") or shutil.which("chromium")
    assert found, "no chromium on PATH: scripts/browser installs it (apt-get install chromium)"
    return found


def _after(output: str, label: str) -> str:
    match = re.search(rf"{label}\s+(\S+)", output)
    assert match, f"{label!r} not printed yet"
    return match.group(1)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            yield launched
        finally:
            await launched.close()


async def publish(bootstrap: str, *events: tuple[str, Event]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        for topic, event in events:
            key, value, headers = encode(event)
            await producer.send_and_wait(topic, value=value, key=key, headers=headers)
    finally:
        await producer.stop()


async def number(page: Page, label: str) -> str:
    """The live numbers drawn on the node labelled ``label``."""
    return str(await page.locator(f'g.node[data-label="{label}"] text.num').text_content())


async def total(page: Page, label: str) -> int:
    return int((await number(page, label)).split(" ")[0] or 0)


async def test_the_map_and_a_timeline_of_the_reference_app(
    start_loom: StartLoom, browser: Browser
) -> None:
    dev: LoomProcess = await start_loom(
        "dev", "--orders", "6", python_path=[ROOT], env={"COLUMNS": "200"}, name="dev"
    )
    await eventually(lambda: "every order finished" in dev.output, timeout=180,
                     what=f"the demo's orders finished: {dev.tail()}")
    map_url = _after(dev.output, "Map")
    kafka = _after(dev.output, "Kafka")
    temporal = _after(dev.output, "Temporal")
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(map_url))

    page = await browser.new_page()
    errors: list[str] = []
    requests: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    def on_request(request: Request) -> None:
        requests.append(request.url)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("request", on_request)
    await page.goto(map_url)

    # The static layers: every route of the reference app, and its workflow types.
    drawn = set(await page.locator("g.node").evaluate_all("gs => gs.map(g => g.dataset.label)"))
    assert {r.name for r in router.routes} <= drawn
    assert {"OrderSaga", "CustomerCredit"} <= drawn
    await page.evaluate("window.__loaded = true")  # gone if the page reloads

    # Live numbers move without a reload.
    await eventually(lambda: total(page, "order-placed"), timeout=30, until=lambda n: n >= 6,
                     what="the demo's orders counted")
    before = await total(page, "order-placed")
    orders = sample_orders(3, prefix=f"b{uuid.uuid4().hex[:5]}")
    placed = [order_event(o) for o in orders]
    # One carries a malformed correlation: ignored for linking, counted, still delivered.
    placed[0] = dataclasses.replace(placed[0], extensions={
        **placed[0].extensions, CORRELATION_ID: "", CAUSATION_ID: "x" * 2000,
    })
    await publish(kafka, *(("orders", e) for e in placed))
    await eventually(lambda: total(page, "order-placed"), timeout=60,
                     until=lambda n: n >= before + 3, what="counts moved after 3 orders")
    assert await page.evaluate("window.__loaded === true")
    live = await (await page.request.get(f"{origin}/map/live.json")).json()
    assert live["malformed_links"] >= 2
    client = await Client.connect(temporal)
    started = await client.get_workflow_handle(f"order-{orders[0].order_id}").describe()
    assert started.workflow_type == "OrderSaga"

    # A poison event (data that fails the route's model), a type no route takes, hostile text.
    poison = Event(id=f"poison-{uuid.uuid4().hex[:6]}", source=SOURCE, type="order.placed",
                   data={"nonsense": True}, extensions={PARTITION_KEY: "p"})
    unrouted = Event(id=f"stray-{uuid.uuid4().hex[:6]}", source="legacy/erp", type="order.archived",
                     data={}, extensions={PARTITION_KEY: "s"})
    hostile = Event(id=HOSTILE, source=HOSTILE, type=HOSTILE, data={}, extensions={PARTITION_KEY: "h"})
    await publish(kafka, ("orders", poison), ("orders", unrouted), ("orders", hostile))
    dead = page.locator("text.reason", has_text="data-validation")
    await eventually(lambda: dead.count(), timeout=60, what="a dead-letter edge for the poison")
    await eventually(lambda: dead.first.text_content(), timeout=30,
                     until=lambda t: t is not None and re.search(r"data-validation \([1-9]", t),
                     what="the poison counted on its edge")
    marked = page.locator('g.node.unrouted[data-label="order.archived"]')
    await eventually(lambda: marked.count(), timeout=30, what="the unrouted type marked")
    assert unrouted.id in str(await marked.locator("title").text_content())
    shown = page.locator("g.node.unrouted", has_text="<img")
    await eventually(lambda: shown.count(), timeout=30, what="the hostile type drawn as text")
    assert await page.evaluate("window.__pwned === undefined")
    assert await page.evaluate("window.__loaded === true")

    # A compensated order's timeline.
    compensated = None
    async for wf in client.list_workflows("WorkflowType = 'OrderSaga' AND ExecutionStatus = 'Completed'"):
        result: Any = await client.get_workflow_handle(wf.id).result()
        if (result.get("status") if isinstance(result, dict) else None) == "compensated":
            compensated = wf.id
            break
    assert compensated is not None
    await page.fill('input[name="q"]', compensated)
    await page.click("form[role=search] button")
    await page.wait_for_url(re.compile(r"/map/workflows/"))
    rows = page.locator("tbody tr")
    kinds = await rows.evaluate_all("rs => rs.map(r => r.children[1].textContent)")
    times = await rows.evaluate_all("rs => rs.map(r => r.children[0].textContent)")
    assert kinds[0] == "received" and "emitted" in kinds and "reply" in kinds
    assert times == sorted(times)
    emitted = page.locator("tr.emitted")
    types = await emitted.evaluate_all("rs => rs.map(r => r.children[2].textContent)")
    assert "order.compensated" in types and any(t.endswith(".release") or t.endswith(".refund") for t in types)
    for n in range(await emitted.count()):
        cause = emitted.nth(n).locator("a.cause")
        href = str(await cause.get_attribute("href"))
        # The cause is a row of this timeline, listed before its effect.
        assert await page.locator(href).count() == 1
        cause_row = await page.locator(href).evaluate("r => [...r.parentNode.children].indexOf(r)")
        effect_row = await emitted.nth(n).evaluate("r => [...r.parentNode.children].indexOf(r)")
        assert cause_row < effect_row
    assert errors == []
    off_origin = [u for u in requests if not u.startswith(origin)]
    assert off_origin == [], off_origin

    # The Temporal UI link answers (asked from the test, not from the page).
    link = str(await page.locator("#temporal-ui").get_attribute("href"))
    assert f"/workflows/{compensated}/" in link
    ui = await page.request.get(link)
    assert ui.ok, link

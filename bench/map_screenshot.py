"""``python -m bench.map_screenshot [OUT.png]``: the choreography map during the demo.

Runs ``loom dev`` (the reference app on embedded servers), waits for its orders to finish,
publishes a few more orders, one poison event (data its route's model refuses) and one event
of a type no route takes, then photographs ``/map`` in the system's headless Chromium
(Playwright with ``executable_path``; ``scripts/browser`` installs Chromium). The README's
picture (``docs/map.png``) comes from here.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sys
import uuid
from pathlib import Path

from aiokafka import AIOKafkaProducer
from playwright.async_api import async_playwright

from bridge.events import PARTITION_KEY, Event
from bridge.kafka.binding import encode
from services.shop import SOURCE, order_event, sample_orders

ROOT = Path(__file__).resolve().parent.parent


async def _wait_for(lines: list[str], pattern: str, timeout: float) -> re.Match[str]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        found = re.search(pattern, "".join(lines))
        if found:
            return found
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{pattern!r} not printed by loom dev within {timeout}s:\n{''.join(lines[-30:])}")


async def _publish(bootstrap: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        events = [order_event(o) for o in sample_orders(6, prefix=uuid.uuid4().hex[:6])]
        events.append(Event(id="poison-1", source=SOURCE, type="order.placed",
                            data={"nonsense": True}, extensions={PARTITION_KEY: "p"}))
        events.append(Event(id="stray-1", source="legacy/erp", type="order.archived", data={},
                            extensions={PARTITION_KEY: "s"}))
        for event in events:
            key, value, headers = encode(event)
            await producer.send_and_wait("orders", value=value, key=key, headers=headers)
    finally:
        await producer.stop()


async def shoot(out: Path) -> None:
    """Run the demo and write the map's picture to ``out``."""
    chromium = os.environ.get("LOOM_TEST_CHROMIUM") or shutil.which("chromium")
    if chromium is None:
        raise SystemExit("no chromium on PATH: run scripts/browser")
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge.cli", "dev", "--orders", "12", "--no-ui",
        cwd=ROOT, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
    )
    lines: list[str] = []

    async def read() -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            lines.append(line.decode(errors="replace"))

    reader = asyncio.create_task(read())
    try:
        url = (await _wait_for(lines, r"Map\s+(\S+)", 180)).group(1)
        kafka = (await _wait_for(lines, r"Kafka\s+(\S+)", 5)).group(1)
        await _wait_for(lines, "every order finished", 180)
        await _publish(kafka)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = await browser.new_page(viewport={"width": 1900, "height": 760})
            await page.goto(url)
            await page.locator("text.reason", has_text="data-validation").wait_for()
            await page.locator('g.node.unrouted[data-label="order.archived"]').wait_for()
            # A few live updates (the page's policy forbids eval: wait_for_function cannot run).
            while int(await page.locator("#graph").get_attribute("data-updates") or 0) < 3:
                await asyncio.sleep(0.5)
            # Wide enough for the whole drawing (the page scrolls it otherwise).
            width = float(await page.locator("#map").get_attribute("width") or 1900)
            await page.set_viewport_size({"width": int(width) + 60, "height": 760})
            await page.screenshot(path=str(out), full_page=True)
            await browser.close()
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        reader.cancel()
    print(f"wrote {out}")


if __name__ == "__main__":
    asyncio.run(shoot(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "map.png"))

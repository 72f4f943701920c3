"""The live event console in a real headless Chromium against real gateway processes.

One walk-through covers what a person does: connect with the prefilled development token,
subscribe (with a SmartModule chain), publish from the generated forms and as raw JSON,
read the ACKs and the errors, filter and expand the live stream, move through it with the
keyboard, read the topics, try the memory search, then restart the gateway and watch the
page reconnect and resume where it stopped. Another test follows a publish through the
memory pipeline to the memory update the page shows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import GatewayProcess

pytest.importorskip("playwright.sync_api", reason="the console tests need the `playwright` package")
from playwright.sync_api import Page, expect

NARROW = {"width": 390, "height": 844}


def dev_token(gateway: GatewayProcess) -> str:
    response = httpx.get(gateway.url + "/api/v1/dev/token", timeout=5)
    response.raise_for_status()
    return str(response.json()["token"])


def publish(
    gateway: GatewayProcess, token: str, topic: str, event: dict[str, Any]
) -> dict[str, Any]:
    response = httpx.post(
        gateway.url + "/api/v1/stream/events",
        headers={"Authorization": f"Bearer {token}"},
        json={"topic": topic, "event": event},
        timeout=10,
    )
    response.raise_for_status()
    return dict(response.json())


def produce(gateway: GatewayProcess, topic: str, event: dict[str, Any]) -> None:
    """Write an event with the command line, straight into the gateway's data directory."""
    subprocess.run(
        [sys.executable, "-m", "gateway", "produce", topic, "--org", "dev", "--user", "dev"],
        input=json.dumps(event).encode() + b"\n",
        env=gateway.env,
        capture_output=True,
        timeout=30,
        check=True,
    )


def agent_action(action: str, importance: float) -> dict[str, Any]:
    payload = {"agent_id": "planner", "action": action, "importance": importance}
    return {"type": "agent_action", "payload": payload}


def end_offsets(gateway: GatewayProcess, token: str, topic: str) -> dict[int, int]:
    response = httpx.get(
        f"{gateway.url}/api/v1/topics/{topic}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    response.raise_for_status()
    return {p["partition"]: p["end_offset"] for p in response.json()["partitions"]}


def open_console(page: Page, gateway: GatewayProcess) -> None:
    page.goto(gateway.url + "/")
    expect(page.locator("html")).to_have_attribute("data-ready", "true")


def connect(page: Page) -> None:
    page.get_by_role("button", name="Connect", exact=True).click()
    expect(page.locator("#connection-badge")).to_have_text("Connected")


def subscribe(page: Page, topic: str, start: str = "New records only") -> None:
    panel = page.locator("section.subscribe")
    panel.get_by_label("Topic").select_option(topic)
    panel.get_by_label(start).check()
    panel.get_by_role("button", name="Subscribe", exact=True).click()
    expect(panel.locator(".sub", has_text=topic).locator(".sub-state")).to_have_text("subscribed")


def stream_row(page: Page, text: str) -> Any:
    return page.locator("#stream-list .record", has_text=text)


def test_console_walkthrough(
    page: Page, dev_gateway: GatewayProcess, screenshot: Callable[[Page, str], Path]
) -> None:
    gateway = dev_gateway
    token = dev_token(gateway)
    open_console(page, gateway)

    # The development token is prefilled; connecting shows who we are.
    expect(page.get_by_label("Token")).not_to_have_value("")
    expect(page.locator("#token-note")).to_contain_text("Development token prefilled")
    connect(page)
    expect(page.locator("#connection-status")).to_contain_text("Connected as dev of dev")

    # Subscriptions: user-events from the end, memory-updates (nothing is published there:
    # the memory pipeline writes it), and agent-actions from the beginning through an
    # event-filter chain keeping importance >= 0.6.
    subscribe(page, "user-events")
    subscribe(page, "memory-updates")
    kept = publish(gateway, token, "agent-actions", agent_action("kept-step", 0.9))
    publish(gateway, token, "agent-actions", agent_action("dropped-step", 0.2))
    panel = page.locator("section.subscribe")
    panel.get_by_label("SmartModule to add").select_option("event-filter")
    panel.get_by_role("button", name="Add", exact=True).click()
    panel.get_by_label("min_importance").fill("0.6")
    subscribe(page, "agent-actions", start="The oldest stored record")
    expect(stream_row(page, "kept-step")).to_contain_text(
        f"partition {kept['partition']} · offset {kept['offset']}"
    )
    expect(stream_row(page, "dropped-step")).to_have_count(0)

    # A module failing on one record: its words appear under that subscription, which goes on.
    panel.get_by_role("button", name="Remove event-filter from the chain").click()
    panel.get_by_label("SmartModule to add").select_option("data-transform")
    panel.get_by_role("button", name="Add", exact=True).click()
    subscribe(page, "system-metrics")
    log_entry = {"type": "log_entry", "payload": {"level": "info", "message": "disk almost full"}}
    publish(gateway, token, "system-metrics", log_entry)
    failing = panel.locator(".sub", has_text="system-metrics")
    expect(failing.locator(".error-text")).to_contain_text("A SmartModule failed on one record")
    expect(failing.locator(".error-text")).to_contain_text("not user_interaction")
    expect(failing.locator(".sub-state")).to_have_text("subscribed")
    panel.get_by_role("button", name="Remove data-transform from the chain").click()

    # Publish from the generated form: the ACK names the partition and offset the log has.
    before = end_offsets(gateway, token, "user-events")
    form = page.locator("#publish-form")
    form.get_by_label("Topic").select_option("user-events")
    form.get_by_label("Event type").select_option("user_interaction")
    form.get_by_label("action").fill("opened settings")
    form.get_by_label("importance").fill("0.8")
    form.get_by_role("button", name="Publish").click()
    ack = page.locator("#ack-list .ack").first
    expect(ack.locator(".ack-status")).to_have_text("ACK")
    after = end_offsets(gateway, token, "user-events")
    changed = [p for p in after if after[p] != before[p]]
    assert len(changed) == 1 and after[changed[0]] == before[changed[0]] + 1
    partition, offset = changed[0], before[changed[0]]
    expect(ack).to_contain_text(f"partition {partition} · offset {offset}")
    row = stream_row(page, "opened settings")
    expect(row).to_contain_text(f"user-events partition {partition} · offset {offset}")
    expect(page.locator("#latency-text")).to_contain_text("ms")

    # Expand the record to its full JSON.
    row.get_by_role("button").click()
    detail = row.locator("pre")
    expect(detail).to_be_visible()
    shown = json.loads(detail.inner_text())
    assert shown["data"]["payload"]["action"] == "opened settings"
    assert (shown["topic"], shown["partition"], shown["offset"]) == (
        "user-events",
        partition,
        offset,
    )

    # Errors are told next to what caused them: a missing field (checked in the page), a
    # value the gateway refuses (its problem goes next to the field, or under the raw JSON).
    action = form.get_by_label("action")
    action_error = page.locator(f"#{action.get_attribute('id')}-error")
    action.fill("")
    form.get_by_role("button", name="Publish").click()
    expect(action_error).to_be_visible()
    expect(action).to_have_attribute("aria-invalid", "true")
    action.fill("x" * 5000)
    form.get_by_role("button", name="Publish").click()
    expect(action_error).to_contain_text("length <= 4096")
    expect(page.locator("#pub-error")).to_contain_text("The event does not match its schema")
    expect(page.locator("#ack-list .ack").first.locator(".ack-status")).to_have_text("error")
    form.get_by_label("Raw JSON").check()
    raw = form.get_by_label("Event envelope (JSON)")
    raw.fill('{"type": "user_interaction", "payload": {"action": "too loud", "importance": 2}}')
    form.get_by_role("button", name="Publish").click()
    expect(page.locator("#pub-raw-text-error")).to_contain_text("$.event.payload.importance")
    form.get_by_label("Form", exact=True).check()  # the raw JSON comes back into the form
    expect(action).to_have_value("too loud")
    expect(form.get_by_label("importance")).to_have_value("2")
    form.get_by_label("importance").fill("0.5")

    # Other event types, from their own forms.
    form.get_by_label("Event type").select_option("sensor_data")
    form.get_by_label("sensor_id").fill("thermo-7")
    form.get_by_label("readings").fill('{"celsius": 21.5}')
    form.get_by_role("button", name="Publish").click()
    expect(stream_row(page, "thermo-7")).to_contain_text("sensor_data")
    form.get_by_label("Topic").select_option("chat-messages")
    form.get_by_label("Event type").select_option("chat_message")
    form.get_by_label("conversation_id").fill("c-1")
    form.get_by_label("role").select_option("user")
    form.get_by_label("content").fill("remember that I prefer dark mode")
    form.get_by_role("button", name="Publish").click()
    expect(page.locator("#ack-list .ack").first).to_contain_text(
        "chat_message to chat-messages: partition"
    )

    # A memory update (written here by the command line: the memory pipeline is not part of
    # this test) is shown as one, and the kind filter keeps only those.
    produce(
        gateway,
        "memory-updates",
        {
            "type": "memory_update",
            "payload": {
                "op": "created",
                "memory_id": "m-1",
                "memory_type": "semantic",
                "organization_id": "dev",
                "user_id": "dev",
                "content": "prefers dark mode",
                "importance": 0.8,
            },
        },
    )
    memory_row = stream_row(page, "prefers dark mode")
    expect(memory_row).to_contain_text("memory created")
    expect(memory_row).to_contain_text("memory-updates partition")
    page.get_by_label("Kind").select_option("memory")
    expect(page.locator("#stream-list .record")).to_have_count(1)
    page.get_by_label("Kind").select_option("")

    # Filters: a search that matches nothing hides the rows; pause holds new records.
    search = page.get_by_label("Search", exact=True)
    search.fill("no-such-words")
    expect(page.locator("#stream-list .record")).to_have_count(0)
    search.fill("thermo")
    expect(page.locator("#stream-list .record")).to_have_count(1)
    search.fill("")
    page.get_by_role("button", name="Pause").click()
    expect(page.locator("#stream-status")).to_contain_text("Paused")
    publish(
        gateway,
        token,
        "user-events",
        {"type": "user_interaction", "payload": {"action": "held while paused"}},
    )
    expect(page.locator("#stream-status")).to_contain_text("1 new record held")
    expect(stream_row(page, "held while paused")).to_have_count(0)
    page.get_by_role("button", name="Resume").click()
    expect(stream_row(page, "held while paused")).to_have_count(1)

    # Keyboard: the list is one tab stop (the record used last); arrows, Home and End move,
    # Enter expands; the focus is visible.
    focused = page.locator("#stream-list .record-summary:focus")
    page.get_by_role("button", name="Clear").focus()
    page.keyboard.press("Tab")
    expect(focused).to_contain_text("opened settings")
    page.keyboard.press("Home")
    expect(focused).to_contain_text("held while paused")
    page.keyboard.press("ArrowDown")
    expect(focused).not_to_contain_text("held while paused")
    expect(focused).to_have_attribute("aria-expanded", "false")
    page.keyboard.press("Enter")
    expect(focused).to_have_attribute("aria-expanded", "true")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"
    page.keyboard.press("Enter")

    # Topics with their offsets; memory search answers plainly when it is not there.
    topics = page.locator("#topics-list")
    card = topics.locator(".topic-card", has_text="user-events").first
    expect(card).to_contain_text("16 partitions")
    card.get_by_role("button", name="Partitions").click()
    expect(card.locator("table")).to_contain_text(str(partition))
    page.get_by_label("Words to find in your memories").fill("dark mode")
    page.get_by_role("button", name="Search", exact=True).click()
    status = page.locator("#memory-status")
    expect(status).not_to_have_text("")
    expect(status).not_to_contain_text("Searching")
    if "not available" in status.inner_text():
        expect(status).to_have_text("Memory search is not available on this gateway.")
    card.get_by_role("button", name="Partitions").click()

    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "console-desktop")

    # Restart the gateway. While it is down, a record is written to the log by the command
    # line: the page resumes from its offsets after reconnecting, so it must show it.
    assert gateway.stop() == 0
    expect(page.locator("#connection-badge")).to_have_text("Reconnecting")
    expect(page.locator("#connection-status")).to_contain_text("restarting")
    down = {"type": "user_interaction", "payload": {"action": "written while the gateway was down"}}
    produce(gateway, "user-events", down)
    gateway.start()
    expect(page.locator("#connection-badge")).to_have_text("Connected", timeout=30_000)
    expect(page.locator("#connection-reconnects")).to_contain_text("Reconnected 1 time")
    expect(stream_row(page, "written while the gateway was down")).to_have_count(1)
    expect(page.locator(".sub", has_text="user-events")).to_contain_text(
        "resumed from its offsets after 1 reconnect"
    )

    # Publishing works again on the new session.
    page.locator("#publish-form").get_by_label("Topic").select_option("user-events")
    form.get_by_label("Event type").select_option("user_interaction")
    form.get_by_label("action").fill("after the restart")
    form.get_by_role("button", name="Publish").click()
    expect(page.locator("#ack-list .ack").first).to_contain_text(
        "user_interaction to user-events: partition"
    )
    expect(stream_row(page, "after the restart")).to_have_count(1)

    # A narrow screen: one column, nothing wider than the viewport.
    page.set_viewport_size(NARROW)
    page.evaluate("window.scrollTo(0, 0)")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= NARROW["width"], f"the page is {width}px wide at {NARROW['width']}px"
    screenshot(page, "console-narrow")


def test_memory_updates_from_the_pipeline_appear(
    page: Page, start_dev_gateway: Callable[..., GatewayProcess]
) -> None:
    """A publish from the page becomes a memory update, shown live, when the gateway runs
    the memory pipeline (it says so in its log); skipped on a gateway that runs none."""
    gateway = start_dev_gateway(AGENTMEM_MEMORY_PIPELINE="serve")
    log = (gateway.data_dir.parent / f"gateway-{gateway.port}.log").read_text()
    if "memory_pipeline_started" not in log:
        pytest.skip("this gateway runs no memory pipeline (no memory_pipeline_started in its log)")
    open_console(page, gateway)
    connect(page)
    subscribe(page, "memory-updates")
    form = page.locator("#publish-form")
    form.get_by_label("Topic").select_option("user-events")
    form.get_by_label("action").fill("likes green tea")
    form.get_by_label("importance").fill("0.9")
    form.get_by_role("button", name="Publish").click()
    expect(page.locator("#ack-list .ack-status").first).to_have_text("ACK")
    page.get_by_label("Kind").select_option("memory")
    update = stream_row(page, "likes green tea")
    expect(update).to_contain_text("memory created", timeout=20_000)
    expect(update).to_contain_text("memory-updates partition")
    expect(page.locator("#stream-list .record")).to_have_count(
        1
    )  # the event itself is filtered out
    # The new memory is found by the memory search.
    page.get_by_label("Words to find in your memories").fill("green tea")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.locator("#memory-status")).to_contain_text("found for", timeout=10_000)
    expect(page.locator("#memory-results")).to_contain_text("likes green tea")


def test_a_refused_token_is_explained_next_to_it(page: Page, gateway: GatewayProcess) -> None:
    """With ``AGENTMEM_JWT_SECRET`` set there is no development token: a forged one is refused."""
    open_console(page, gateway)
    token = page.get_by_label("Token")
    expect(token).to_have_value("")
    expect(page.locator("#token-note")).to_contain_text("Paste a token")
    expect(page.locator("#topics-status")).to_contain_text("Connect to read the topics")

    page.get_by_role("button", name="Connect", exact=True).click()
    expect(page.locator("#token-error")).to_have_text("Enter a token first.")

    forged = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ4Iiwib3JnIjoieCIsImV4cCI6OTk5OTk5OTk5OX0.c2lnbmF0dXJl"
    token.fill(forged)
    page.get_by_role("button", name="Connect", exact=True).click()
    expect(page.locator("#connection-badge")).to_have_text("Closed")
    expect(page.locator("#token-error")).to_contain_text("The gateway refused the token")
    expect(token).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_role("button", name="Connect", exact=True)).to_be_visible()

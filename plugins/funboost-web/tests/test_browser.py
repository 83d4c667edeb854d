"""The web manager in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright's Python
package; no browser download), against a consumer process on the sqlite broker and the sqlite state backend.

Set FUNBOOST_WEB_SCREENSHOTS=<dir> to save a screenshot of each page (scripts/web_screenshots.sh does, into
docs/web/)."""
from __future__ import annotations

import os
import re
import shutil
import time
import uuid

import pytest

from conftest import PASSWORD, ConsumerProcess, LiveServer, publish_many, state_backend

from funboost.admin import DeadLetterFilter, QueueAdmin
from funboost.testing import require_service, wait_until
from funboost_web.auth import UserStore

CHROMIUM = os.environ.get("FUNBOOST_CHROMIUM", "/usr/bin/chromium")
SHOTS = os.environ.get("FUNBOOST_WEB_SCREENSHOTS")


@pytest.fixture(scope="module")
def env():
    if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
        require_service(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    pw_api = pytest.importorskip("playwright.sync_api")
    admin = QueueAdmin(state_backend("sqlite"))
    user = f"admin_{uuid.uuid4().hex[:6]}"
    UserStore(admin.state).set_user(user, PASSWORD, "admin")
    consumer = ConsumerProcess("sqlite_queue", "sqlite")
    server = LiveServer(admin)
    pw = pw_api.sync_playwright().start()
    browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    page.on("dialog", lambda d: d.accept())  # the confirmations of every action
    try:
        yield page, server, admin, consumer, user
    finally:
        browser.close()
        pw.stop()
        server.close()
        consumer.close()
        admin.close()


def shot(page, name: str) -> None:
    if SHOTS:
        os.makedirs(SHOTS, exist_ok=True)
        page.screenshot(path=os.path.join(SHOTS, f"{name}.png"), full_page=True)


def _row(page, queue: str):
    return page.locator(f'#queues tr[data-queue="{queue}"]')


def _last_seconds_rate(admin: QueueAdmin, queue: str, n: int = 5) -> float:
    pts = admin.series(queue, "60s")[-(n + 1):-1]  # the last n complete seconds
    return sum(p.runs for p in pts) / n


def test_manager_in_a_browser(env):
    page, server, admin, consumer, user = env
    work, add, fail = consumer.q("work"), consumer.q("add"), consumer.q("fail")
    # ---- log in
    page.goto(server.url + "/queues")
    assert "/login" in page.url
    shot(page, "login")
    page.fill("#username", user)
    page.fill("#password", PASSWORD)
    page.click("#login")
    page.wait_for_url(re.compile(r".*/queues$"))
    # ---- a running consumer appears, with its rate rising
    wait_until(lambda: admin.record(work) and admin.record(add) and admin.record(fail), timeout=20)
    publish_many(admin, work, [{"x": i} for i in range(3000)])
    page.reload()
    row = _row(page, work)
    row.wait_for(timeout=10000)
    page.wait_for_function(
        f"""() => {{ const r = document.querySelector('#queues tr[data-queue="{work}"]');
                    return r && parseFloat(r.querySelector('.rate').textContent) > 5
                           && r.querySelector('.consumers').textContent.trim() === '1'; }}""", timeout=20000)
    shot(page, "queues")
    # ---- pause from the page: the consumer stops taking tasks within 5 s
    row.locator("button.pause").click()
    page.wait_for_url(re.compile(r".*/queues$"))
    t0 = time.monotonic()
    wait_until(lambda: admin.applied(work, "pause").on == 1, timeout=5, message="pause applied within 5 s")
    assert time.monotonic() - t0 < 5
    page.wait_for_function(f"""() => document.querySelector('#queues tr[data-queue="{work}"] .state')
                                       .textContent.includes('applied on 1 of 1')""", timeout=10000)
    ready = admin.sizes(work)[0].ready
    seen = admin.consumers(work)[0]["last_seen"]
    # two more heartbeats (the consumer's own clock): nothing was taken in between
    wait_until(lambda: admin.consumers(work)[0]["last_seen"] > seen + 1.5, timeout=10)
    assert admin.sizes(work)[0].ready == ready > 0
    # ---- resume
    _row(page, work).locator("button.resume").click()
    page.wait_for_url(re.compile(r".*/queues$"))
    wait_until(lambda: admin.sizes(work)[0].ready < ready, timeout=10)
    # ---- set qps: the observed rate follows
    f = _row(page, work).locator("form.actions")
    f.locator("input[name=qps]").fill("20")
    f.locator("button.setqps").click()
    page.wait_for_url(re.compile(r".*/queues$"))
    wait_until(lambda: admin.applied(work, "qps").on == 1, timeout=10)
    wait_until(lambda: 14 <= _last_seconds_rate(admin, work) <= 26, timeout=30, message="rate near qps 20")
    # ---- queue detail with the consumer, and charts with data points
    page.goto(server.url + f"/queues/{work}")
    page.wait_for_selector("#consumers td.crate")
    page.wait_for_function("""() => { const c = document.querySelector('.chart[data-series="runs"]');
        return c && c.querySelector('canvas') && parseInt(c.getAttribute('data-nonzero') || '0') > 3; }""",
                           timeout=20000)
    shot(page, "queue")
    page.goto(server.url + "/charts")
    page.wait_for_function("""() => { const c = document.querySelector('.chart[data-series="depth"]');
        return c && c.querySelector('canvas') && parseInt(c.getAttribute('data-nonzero') || '0') > 0; }""",
                           timeout=20000)
    assert page.locator(".chart[data-series=runs]").get_attribute("data-points") == "60"
    shot(page, "charts")
    # ---- clear
    page.goto(server.url + "/queues")
    assert admin.sizes(work)[0].ready > 0
    _row(page, work).locator("button.clear").click()
    page.wait_for_url(re.compile(r".*/queues$"))
    assert "dropped" in page.inner_text("#flash")
    wait_until(lambda: admin.sizes(work)[0].ready == 0, timeout=5)
    # ---- the RPC form returns the function's result
    page.goto(server.url + f"/rpc?queue={add}")
    page.select_option("#rpc-queue", add)
    page.fill("#rpc-kwargs", '{"x": 19, "y": 23}')
    page.click("#rpc-send")
    page.wait_for_selector("#rpc-result", timeout=20000)
    assert page.inner_text("#rpc-result").strip() == "42"
    shot(page, "rpc")
    # ---- results search finds a failed task by its exception
    tag = uuid.uuid4().hex[:10]
    publish_many(admin, fail, [{"n": f"{tag}"}])
    publish_many(admin, fail, [{"n": i} for i in range(5)])
    wait_until(lambda: admin.search(fail, text=tag), timeout=20)
    page.goto(server.url + f"/results?queue={fail}")
    page.fill("input[name=text]", f"kaboom {tag}")
    page.select_option("select[name=status]", "failure")
    page.click("#search button[type=submit]")
    page.wait_for_selector("#results tbody tr.bad")
    rows = page.locator("#results tbody tr")
    assert rows.count() == 1 and f"kaboom {tag}" in rows.first.inner_text()
    shot(page, "results")
    rows.first.locator("a").click()
    page.wait_for_selector("ol.timeline")
    assert "published" in page.inner_text("ol.timeline") and f"kaboom {tag}" in page.inner_text("ol.timeline")
    shot(page, "task")
    # ---- dead letters: bulk retry by filter with a preview and a confirmation; edit one and rerun it
    wait_until(lambda: admin.dead_letters(fail, "count").matched >= 6, timeout=20)
    page.goto(server.url + f"/deadletters?queue={fail}&reason=kaboom")
    page.wait_for_selector("#deadletters tbody tr")
    total = int(page.inner_text("#dl-total"))
    assert total >= 6 and f"kaboom {tag}" in page.inner_text("#deadletters")
    shot(page, "deadletters")
    page.click("button.bulk-retry")
    page.wait_for_selector("#preview")
    assert f"{total} dead-lettered messages match" in page.inner_text("#preview")
    shot(page, "deadletters_confirm")
    page.click("#confirm")
    page.wait_for_selector("#flash")
    assert f"retry: {total} dead letters" in page.inner_text("#flash")
    # they fail again and come back: then edit the one with the tag and rerun it with other arguments
    edited = f"edited-{tag}"
    wait_until(lambda: admin.search(fail, text=tag, limit=5) and len(admin.search(fail, text=tag, limit=5)) >= 2,
               timeout=20)
    wait_until(lambda: admin.dead_letters(fail, "count", DeadLetterFilter(text=tag)).matched == 1, timeout=20)
    page.goto(server.url + f"/deadletters?queue={fail}&text={tag}")
    page.wait_for_selector("#deadletters tbody tr")
    page.click("#deadletters details summary")
    page.fill("#deadletters textarea.edit-args", '{"n": "%s"}' % edited)
    page.click("#deadletters button.edit-rerun")
    page.wait_for_selector("#preview")
    assert "1 dead-lettered message matches" in page.inner_text("#preview") and edited in page.inner_text("#preview")
    page.click("#confirm")
    wait_until(lambda: admin.search(fail, text=f"kaboom {edited}"), timeout=20)
    # ---- other pages render
    for path, name, sel in (("/consumers", "consumers", "#all-consumers"), ("/audit", "audit", "#audit")):
        page.goto(server.url + path)
        page.wait_for_selector(sel)
        shot(page, name)
    audit = page.inner_text("#audit")
    assert "queue.pause" in audit and "rpc.publish" in audit and "dead_letters.retry" in audit

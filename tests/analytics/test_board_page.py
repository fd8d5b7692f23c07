"""The board page of the admin (a saved board drawn from /api/analytics/boards/{id}/data) in headless Chromium: each
widget shows what the API answers, a board reordered and resized on the page reloads as it was saved, a widget
dragged onto another takes its place, a refused save puts the board back as last saved, the page fits a 700 px
window; and who may open it, from where it is linked."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from rest_framework.test import APIClient

from analytics.boards.services import default_boards_create
from analytics.mirror.sync import runs_sync
from analytics.models import Board
from tests.analytics.test_dashboard import today_ms, wait_for
from tests.browser import narrow_window, staff_session

PAGE = "/admin/analytics/board/{}/view/"
WIDGETS = [
    {"title": "Banking runs", "metric": "runs", "filters": {"module": "banking"}, "days": 7, "chart": "number",
     "width": 3, "height": 1},
    {"title": "Runs per day", "metric": "runs", "breakdown": "day", "days": 7, "chart": "line", "width": 9},
    {"title": "Confidence per intent", "metric": "avg_confidence", "breakdown": "intent", "days": 7, "chart": "bar"},
    {"title": "Error rate per module", "metric": "error_rate", "breakdown": "module", "days": 7, "chart": "table"},
]
COUNTS = {"runs", "labelled_runs", "tokens", "cost_usd"}  # a day without runs counts 0 of them


def widgets_shown(driver) -> list[dict]:
    """Each widget card in the page's order: its place, title, width, chart and the values it shows."""
    return driver.execute_script("""
        return Array.from(document.querySelectorAll('#bd-grid .bd-widget')).map((card) => {
            const body = card.querySelector('.bd-widget-body');
            const canvas = body.querySelector('canvas');
            const chart = canvas && Chart.getChart(canvas);
            const number = body.querySelector('.ad-number');
            return {index: Number(card.dataset.index), title: card.querySelector('h2').textContent,
                    width: Number(card.dataset.width), chart: body.dataset.chart,
                    path: card.querySelector('.bd-path').textContent,
                    number: number ? JSON.parse(number.dataset.value) : null,
                    labels: chart ? chart.data.labels : null, values: chart ? chart.data.datasets[0].data : null,
                    rows: Array.from(body.querySelectorAll('tr[data-key]')).map((tr) => [tr.dataset.key, JSON.parse(tr.dataset.value)]),
                    exports: Array.from(card.querySelectorAll('.bd-exports a')).map((a) => a.getAttribute('href')),
                    editButtons: card.querySelectorAll('.bd-edit button').length};
        });""")


def expected_widgets(answers: list[dict], board_id: int) -> list[dict]:
    """What each widget must show for the API's /data answer."""
    expected = []
    for place, answer in enumerate(answers):
        widget, data = answer["widget"], answer["data"]
        rows = [(row["key"], 0 if row["value"] is None and not row["runs"] and data["metric"] in COUNTS else row["value"])
                for row in data["rows"]]
        chart = widget["chart"]
        expected.append({
            "index": place, "title": widget["title"], "width": widget["width"], "chart": chart, "path": data["path"],
            "number": data["total"]["value"] if chart == "number" else None,
            "labels": [key for key, _ in rows] if chart in ("line", "bar") else None,
            "values": [value for _, value in rows] if chart in ("line", "bar") else None,
            "rows": [list(row) for row in rows] if chart == "table" else [],
            "exports": [f"/api/analytics/boards/{board_id}/export?format={fmt}&widget={place}" for fmt in ("csv", "parquet")],
        })
    return expected


def ready(driver, *, saved: int | None = None) -> None:
    wait_for(driver, "const s = document.getElementById('analytics-board').dataset;"
                     "return s.state !== 'loading' && (arguments[0] === null || (s.saved === String(arguments[0])"
                     " && s.saving === 'false'));", saved)
    assert driver.execute_script("return document.getElementById('analytics-board').dataset.state") == "ready", \
        driver.find_element("id", "bd-message").text


def click(driver, place: int, label: str) -> None:
    driver.find_element("css selector", f'.bd-widget[data-index="{place}"] button[aria-label="{label}"]').click()


def test_a_board_shows_the_api_data_and_reloads_reordered_and_resized_as_saved(
        transactional_db, live_server, browser, django_user_model, run_logger):
    # given: runs of two modules over three days, mirrored; a board of four widgets owned by the browser's user
    for second, (intent, module, error) in enumerate([("balance", "banking", None), ("transfer", "banking", "lm_timeout"),
                                                     ("balance", "banking", None), ("exchange_rate", "travel", None),
                                                     ("international_visa", "travel", None)]):
        run_logger.log(start_ms=today_ms(second % 3, seconds=second), intent=intent, module=module,
                       confidence=0.5 + second / 10, error_category=error)
    runs_sync()
    staff_session(live_server, browser, django_user_model)
    analyst = APIClient()
    analyst.force_authenticate(django_user_model.objects.get(username="analyst"))
    created = analyst.post("/api/analytics/boards/", {"name": "Mine", "widgets": WIDGETS}, format="json")
    assert created.status_code == 201, created.content
    board_id = created.json()["id"]
    data = lambda: analyst.get(f"/api/analytics/boards/{board_id}/data").json()  # noqa: E731

    # when: the page opens
    browser.get(f"{live_server.url}{PAGE.format(board_id)}")
    ready(browser)
    first = widgets_shown(browser)
    # then: every widget shows its /data answer, drawn by its chart type, with its path and exports
    assert [{k: v for k, v in w.items() if k != "editButtons"} for w in first] == expected_widgets(data(), board_id)
    assert first[0]["number"] == 3 and len(first[1]["labels"]) == 7 and {w["editButtons"] for w in first} == {4}

    # when: the first widget moves one place later, then the intents' bars are made wider (by their new place)
    click(browser, 0, "Move later")
    ready(browser, saved=1)
    click(browser, 2, "Wider")
    ready(browser, saved=2)
    browser.refresh()
    ready(browser)
    again = widgets_shown(browser)

    # then: the saved order and width are the board's, and each widget still shows its /data answer
    titles = ["Runs per day", "Banking runs", "Confidence per intent", "Error rate per module"]
    assert [w["title"] for w in again] == titles and [w["width"] for w in again] == [9, 3, 7, 6]
    assert [w["title"] for w in Board.objects.get(pk=board_id).widgets] == titles
    assert [{k: v for k, v in w.items() if k != "editButtons"} for w in again] == expected_widgets(data(), board_id)

    # when: the window is 700 px wide, nothing sticks out sideways and the charts fit their boxes
    narrow = narrow_window(browser, 700)
    assert narrow["scroll"] <= narrow["client"] <= 700
    assert len(narrow["charts"]) == 2 and all(0 < width <= box for width, box in narrow["charts"])

    # when: a default board (shared with all staff, not theirs) opens: drawn, without the rearranging buttons
    default_boards_create()
    shared = Board.objects.get(name="Support team: banking module")
    browser.get(f"{live_server.url}{PAGE.format(shared.pk)}")
    ready(browser)
    shown = widgets_shown(browser)
    assert browser.execute_script("return document.getElementById('analytics-board').dataset.editable") == "false"
    assert len(shown) == len(shared.widgets) and {w["editButtons"] for w in shown} == {0}


@pytest.mark.django_db
def test_the_board_page_opens_for_staff_who_see_the_board_and_is_linked_from_the_admin_and_the_dashboard(
        client, django_user_model):
    ana = django_user_model.objects.create_user("ana", password="pw-ana-12345", is_staff=True)
    bob = django_user_model.objects.create_user("bob", password="pw-bob-12345", is_staff=True)
    root = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")
    customer = django_user_model.objects.create_user("customer", password="pw-customer-123")
    mine = Board.objects.create(name="Ana's", owner=ana, widgets=WIDGETS)
    team = Board.objects.create(name="Team's", owner=bob, visibility=Board.Visibility.GROUP,
                                group=Group.objects.create(name="support"))

    client.force_login(ana)
    own = client.get(PAGE.format(mine.pk))
    others = client.get(PAGE.format(team.pk))
    not_an_id = client.get(PAGE.format("x"))
    dashboard = client.get("/admin/analytics/detectionanalytics/")
    client.force_login(customer)
    refused = client.get(PAGE.format(mine.pk))
    client.force_login(root)
    listing = client.get("/admin/analytics/board/")
    change = client.get(f"/admin/analytics/board/{mine.pk}/change/")
    any_board = client.get(PAGE.format(team.pk))

    # staff see the boards the API shows them (their own, shared with them), by the API's URLs
    assert own.status_code == 200 and f'data-data-url="/api/analytics/boards/{mine.pk}/data"'.encode() in own.content
    assert b"analytics/board.js" in own.content and b"analytics/charts.js" in own.content
    assert others.status_code == 404 and not_an_id.status_code == 404
    assert refused.status_code == 302 and "/admin/login/" in refused["Location"]
    assert any_board.status_code == 200  # analytics.change_board (a superuser) sees every board
    # linked: from the dashboard (the boards the user sees), the admin's list and a board's page
    assert PAGE.format(mine.pk).encode() in dashboard.content and PAGE.format(team.pk).encode() not in dashboard.content
    assert b'href="/admin/analytics/board/"' not in dashboard.content  # the admin's list: for those who may see it
    assert PAGE.format(mine.pk).encode() in listing.content and PAGE.format(team.pk).encode() in listing.content
    assert PAGE.format(mine.pk).encode() in change.content and b"View board" in change.content


DRAG = """
    const [source, target] = [arguments[0], arguments[1]].map(
        (place) => document.querySelector(`#bd-grid .bd-widget[data-index="${place}"]`));
    const transfer = new DataTransfer();
    source.querySelector('.bd-handle').dispatchEvent(new MouseEvent('mousedown', {bubbles: true}));
    const fire = (element, type) => element.dispatchEvent(
        new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: transfer}));
    fire(source, 'dragstart');
    fire(target, 'dragover');
    fire(target, 'drop');
    fire(source, 'dragend');
"""


def test_a_widget_dragged_onto_another_takes_its_place_and_a_refused_save_puts_the_board_back(
        transactional_db, live_server, browser, django_user_model, run_logger):
    # given: a few runs, mirrored; a board of three widgets owned by the browser's user
    for second, module in enumerate(["banking", "banking", "travel"]):
        run_logger.log(start_ms=today_ms(0, seconds=second), intent="balance", module=module)
    runs_sync()
    staff_session(live_server, browser, django_user_model)
    analyst = APIClient()
    analyst.force_authenticate(django_user_model.objects.get(username="analyst"))
    created = analyst.post("/api/analytics/boards/", {"name": "Mine", "widgets": WIDGETS[:3]}, format="json")
    assert created.status_code == 201, created.content
    board = Board.objects.get(pk=created.json()["id"])
    browser.get(f"{live_server.url}{PAGE.format(board.pk)}")
    ready(browser)

    # when: the first widget is dragged by its handle onto the third
    browser.execute_script(DRAG, 0, 2)
    ready(browser, saved=1)
    # then: it takes the third place, on the page and in the saved board
    order = ["Runs per day", "Confidence per intent", "Banking runs"]
    assert [w["title"] for w in widgets_shown(browser)] == order
    assert [w["title"] for w in Board.objects.get(pk=board.pk).widgets] == order
    widths = [w["width"] for w in widgets_shown(browser)]

    # given: the board now belongs to someone else (shared with all staff: still shown, no longer theirs to change)
    other = django_user_model.objects.create_user("other", password="pw-other-12345", is_staff=True)
    Board.objects.filter(pk=board.pk).update(owner=other, visibility=Board.Visibility.STAFF)
    # when: the page (opened before) drags again and, before that is answered, widens a widget: both are refused
    browser.execute_script(DRAG + "document.querySelector("
                           "'.bd-widget[data-index=\"1\"] button[aria-label=\"Wider\"]').click();", 2, 0)
    wait_for(browser, "return document.getElementById('analytics-board').dataset.saving === 'false'"
                      " && !document.getElementById('bd-message').hidden;")
    # then: the page says so and shows the board as last saved (not as after the first refused change); the board
    # is unchanged
    message = browser.find_element("id", "bd-message").text
    assert message == "Not saved: Only its owner, or a user with analytics.change_board, changes this board.", message
    shown = widgets_shown(browser)
    assert [w["title"] for w in shown] == order and [w["width"] for w in shown] == widths
    saved = Board.objects.get(pk=board.pk)
    assert [w["title"] for w in saved.widgets] == order and saved.owner == other

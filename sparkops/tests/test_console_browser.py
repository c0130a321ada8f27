"""The operator console in a real browser: Debian's Chromium, driven by Selenium, against the admin
served by a live server with the engine running inline. Log in, read the dashboard's counts and
charts, approve a waiting step from its run page and see the run finish. The dashboard and run page
screenshots in docs/ are taken here.

Skipped, saying why, only when chromium or chromedriver is not installed (.ci/run installs them).
"""

import os
import random
import shutil
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission
from django.utils import timezone

from accounts.tests.factories import UserFactory
from policies.tests.factories import PolicyFactory, SpendEntryFactory
from projects.tests.factories import MembershipFactory, ProjectFactory
from runs.choices import RunStatus
from runs.models import Run
from runs.tests.factories import agent_step, approval_step, bare_run, make_catalog, make_workflow, start

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
#: Where the screenshots go: docs/ when SPARKOPS_SCREENSHOTS=docs (to refresh README's pictures),
#: else the test's temporary folder, so a test run leaves the tree as it was.
DOCS = Path(settings.BASE_DIR) / "docs"
PASSWORD = "a-long-passphrase"

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="browser tests need Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver",
)


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(5)
    yield driver
    driver.quit()


def log_in(browser, live_server, email: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{live_server.url}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys(email)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    # Wait for the login to land: a page asked for at once would race the POST and meet the login.
    WebDriverWait(browser, 10).until(lambda b: "/login/" not in b.current_url)


def history(project, catalog) -> None:
    """A week of runs and spend, so the charts have something to draw."""
    brief, review = make_workflow(project, slug="research-brief"), make_workflow(project, slug="weekly-review")
    now, rng = timezone.now(), random.Random(7)
    for hours_ago in range(0, 160, 3):
        workflow = brief if hours_ago % 2 else review
        status = rng.choice([RunStatus.SUCCEEDED] * 6 + [RunStatus.FAILED, RunStatus.CANCELLED])
        queued = now - timedelta(hours=hours_ago, minutes=rng.randint(0, 50))
        run = bare_run(workflow, status=status, title=rng.choice(["Solar", "Wind", "Tides", ""]))
        finished = queued + timedelta(seconds=rng.uniform(2, 40))
        cost = Decimal(rng.randint(2, 90)) / 1000
        Run.objects.filter(pk=run.pk).update(
            queued_at=queued,
            started_at=queued,
            finished_at=finished,
            cost_usd=cost,
            input_tokens=900,
            output_tokens=300,
        )
        SpendEntryFactory(
            project=project, run=run, workflow=workflow, agent=rng.choice([catalog.writer, catalog.helper]),
            model=rng.choice(["echo-1", "echo-1", "gpt-4o-mini"]), cost_usd=cost, created_at=queued,
        )  # fmt: skip
    for status in (RunStatus.RUNNING, RunStatus.QUEUED):
        bare_run(brief, status=status, title="Overnight digest")


@pytest.fixture
def shots(tmp_path) -> Path:
    return DOCS if os.environ.get("SPARKOPS_SCREENSHOTS") == "docs" else tmp_path


def test_an_operator_reads_the_dashboard_and_approves_a_step_from_the_run_page(
    live_server, browser, engine_inline, shots
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    project = ProjectFactory(name="Research bots")
    operator = UserFactory(
        email="ops@example.com", name="Ada Operator", password=PASSWORD, is_staff=True, is_superuser=True
    )
    MembershipFactory(user=operator, project=project, role="owner")
    catalog = make_catalog(project)
    history(project, catalog)
    PolicyFactory(project=project, name="Daily budget", config={"amount_usd": 1, "window": "day", "timezone": "UTC"})
    gated = make_workflow(
        project,
        agent_step("draft"),
        approval_step("sign_off", depends_on=["draft"]),
        agent_step("publish", prompt="Publish {{ steps.draft.output }}", depends_on=["sign_off"]),
        slug="gated-post",
    )
    run = start(gated, title="Launch note")  # the engine runs the draft inline and parks at the gate
    assert run.status == RunStatus.WAITING_APPROVAL

    log_in(browser, live_server, operator.email)

    # The dashboard: counts that link to their lists, charts drawn with data.
    cards = {
        c.get_attribute("data-card"): c for c in browser.find_elements(By.CSS_SELECTOR, "#console-dashboard .card")
    }
    assert cards["waiting"].find_element(By.CLASS_NAME, "n").text == "1"
    assert cards["running"].find_element(By.CLASS_NAME, "n").text == "1"
    assert int(cards["failed"].find_element(By.CLASS_NAME, "n").text) >= 0
    drawn = browser.execute_script(
        "return Object.fromEntries(Object.entries(window.consoleCharts)"
        ".map(([k, c]) => [k, c.data.datasets.reduce((n, d) => n + d.data.filter(v => v).length, 0)]))"
    )
    assert all(drawn[name] > 0 for name in ("runs", "spend", "durations", "agents", "models", "workflows")), drawn
    browser.set_window_size(1400, 1350)
    browser.save_screenshot(str(shots / "console-dashboard.png"))
    browser.set_window_size(1400, 1000)

    # The run list reads well; the run page shows the step waiting for approval.
    browser.get(f"{live_server.url}/admin/runs/run/")
    shown = browser.find_element(By.CSS_SELECTOR, "#changelist .results").rect  # scrolls what is wider
    for column in ("project", "run_duration", "cost", "finished"):  # all in view on a 1400 px screen
        header = browser.find_element(By.CSS_SELECTOR, f"#result_list thead th.column-{column}")
        assert header.rect["x"] + header.rect["width"] <= shown["x"] + shown["width"], column
    browser.save_screenshot(str(shots / "console-runs.png"))
    browser.find_element(By.LINK_TEXT, "Waiting for approval").click()
    row = browser.find_element(By.CSS_SELECTOR, "#result_list tbody tr")
    assert f"Gated-Post · Launch note · {run.short_id}" in row.text
    row.find_element(By.LINK_TEXT, str(run)).click()
    approval = browser.find_element(By.ID, "approval-sign_off")
    assert "waiting for approval" in approval.text
    browser.save_screenshot(str(shots / "console-run.png"))

    approval.find_element(By.NAME, "comment").send_keys("Reads well, ship it")
    approval.find_element(By.CSS_SELECTOR, "button.approve").click()

    WebDriverWait(browser, 10).until(ready.text_to_be_present_in_element((By.CSS_SELECTOR, ".messagelist"), "approved"))
    browser.refresh()
    status = browser.find_element(By.CSS_SELECTOR, "#run-status .badge")
    assert status.get_attribute("data-status") == "succeeded"
    assert Run.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED
    steps = {r.get_attribute("data-step"): r.text for r in browser.find_elements(By.CSS_SELECTOR, "#steps tbody tr")}
    assert "Succeeded" in steps["publish"]


def test_an_operator_freezes_a_project_and_sees_its_schedules_paused_and_new_runs_refused(
    live_server, browser, engine_inline
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import Select, WebDriverWait

    def shows(locator, text):  # each click loads a page: wait for it rather than read the old one
        WebDriverWait(browser, 10).until(ready.text_to_be_present_in_element(locator, text))
        return browser.find_element(*locator).text

    from schedules import services as schedule_services
    from schedules.models import Schedule

    project = ProjectFactory(name="Burning bots")
    operator = UserFactory(email="ops@example.com", name="Ada Operator", password=PASSWORD, is_staff=True)
    operator.user_permissions.add(*Permission.objects.filter(content_type__app_label__in=("projects", "schedules")))
    MembershipFactory(user=operator, project=project, role="admin")  # staff acting with their project role
    make_catalog(project)
    gated = make_workflow(project, approval_step("gate"), agent_step("after", depends_on=["gate"]), slug="gated")
    hourly = schedule_services.schedule_save(
        schedule=Schedule(project=project, workflow=gated, name="Hourly", cron="0 * * * *", inputs={"name": "Ada"})
    )
    waiting = start(gated)
    assert waiting.status == RunStatus.WAITING_APPROVAL

    log_in(browser, live_server, operator.email)
    browser.get(f"{live_server.url}/admin/projects/project/")
    browser.find_element(By.CSS_SELECTOR, f"input[name=_selected_action][value='{project.pk}']").click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("freeze")
    browser.find_element(By.NAME, "index").click()

    # The confirmation page says what will happen and asks for the reason.
    shows((By.ID, "content"), "pauses every schedule")
    browser.find_element(By.NAME, "reason").send_keys("runaway spend")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit][value='Yes, freeze']").click()
    shows((By.CSS_SELECTOR, ".messagelist"), "frozen; 1 schedule(s) paused, 1 run(s) cancelled")

    # Its schedule shows paused with the freeze's reason; running it now is refused, naming the freeze.
    browser.get(f"{live_server.url}/admin/schedules/schedule/{hourly.pk}/change/")
    assert "runaway spend" in browser.find_element(By.CSS_SELECTOR, ".field-paused_reason").text
    browser.get(f"{live_server.url}/admin/schedules/schedule/")
    browser.find_element(By.CSS_SELECTOR, f"input[name=_selected_action][value='{hourly.pk}']").click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("run_now")
    browser.find_element(By.NAME, "index").click()
    refused = shows((By.CSS_SELECTOR, ".messagelist"), "blocked")
    assert "frozen" in refused, refused

    hourly.refresh_from_db()
    waiting.refresh_from_db()
    assert (hourly.enabled, hourly.paused_by_freeze, waiting.status) == (False, True, RunStatus.CANCELLED)
    assert Run.objects.filter(project=project).count() == 1  # the refused fire started nothing

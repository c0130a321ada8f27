"""The schedule admin: it lists the next fire, shows the fire ledger inline, runs the same checks
as the API, and its actions go through the schedules service (database and PeriodicTask)."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils import formats, timezone
from django_celery_beat.models import PeriodicTask, PeriodicTasks

from accounts.tests.factories import UserFactory
from projects.tests.factories import ProjectFactory
from runs.choices import Trigger
from runs.models import Run
from schedules import services
from schedules.choices import FireOutcome, OverlapPolicy
from schedules.models import Schedule, ScheduleFire
from schedules.tests.factories import published_workflow

LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
# The inline prefix of the fire ledger on the change form.
NO_FIRES = {
    "fires-TOTAL_FORMS": "0",
    "fires-INITIAL_FORMS": "0",
    "fires-MIN_NUM_FORMS": "0",
    "fires-MAX_NUM_FORMS": "0",
}


@pytest.fixture
def superuser(db):
    return UserFactory(is_staff=True, is_superuser=True)


@pytest.fixture
def admin_client(superuser) -> Client:
    client = Client()
    client.force_login(superuser)
    return client


@pytest.fixture
def project(db):
    return ProjectFactory()


@pytest.fixture
def workflow(project):
    return published_workflow(project)


def make_schedule(workflow, name: str = "Hourly digest", **fields) -> Schedule:
    values = {"cron": "0 * * * *", "timezone": "UTC", "inputs": {"topic": "news"}} | fields
    return services.schedule_save(schedule=Schedule(project=workflow.project, workflow=workflow, name=name, **values))


def task_of(schedule: Schedule) -> PeriodicTask | None:
    return PeriodicTask.objects.select_related("crontab").filter(name=f"schedule:{schedule.pk}").first()


def form_data(workflow, **fields) -> dict:
    return (
        {
            "project": str(workflow.project_id),
            "workflow": str(workflow.pk),
            "version": "",
            "name": "Morning digest",
            "cron": "0 9 * * mon-fri",
            "timezone": "Europe/Berlin",
            "inputs": json.dumps({"topic": "news"}),
            "enabled": "on",
            "overlap_policy": OverlapPolicy.SKIP,
            "max_active": "1",
            "catchup_policy": "skip_missed",
            "catchup_window_seconds": "3600",
            "auto_pause_after": "",
            "jitter_seconds": "0",
        }
        | NO_FIRES
        | fields
    )


def act(admin_client, action: str, *selected: Schedule):
    return admin_client.post(
        reverse("admin:schedules_schedule_changelist"),
        {"action": action, "_selected_action": [str(s.pk) for s in selected]},
        follow=True,
    )


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def shown(moment: datetime) -> str:
    """A date-time as the admin renders it."""
    return formats.localize(timezone.template_localtime(moment))


# ------------------------------------------------------------------------------
# Pages
# ------------------------------------------------------------------------------
def test_the_changelist_shows_each_schedules_next_fire(admin_client, workflow):
    schedule = make_schedule(workflow)
    paused = make_schedule(workflow, name="Paused one", cron="0 9 * * *")
    services.schedule_set_enabled(schedule=paused, enabled=False)

    response = admin_client.get(reverse("admin:schedules_schedule_changelist"))

    assert response.status_code == 200
    rows = {s.name: s for s in response.context["cl"].result_list}
    assert rows["Hourly digest"].next_fire_at == Schedule.objects.get(pk=schedule.pk).next_fire_at
    assert rows["Paused one"].next_fire_at is None
    page = response.content.decode()
    assert "Next fire at" in page
    assert shown(schedule.next_fire_at) in page


def test_the_changelist_searches_by_name_and_filters_by_enabled(admin_client, workflow):
    make_schedule(workflow)
    paused = make_schedule(workflow, name="Weekly", cron="0 9 * * mon")
    services.schedule_set_enabled(schedule=paused, enabled=False)
    url = reverse("admin:schedules_schedule_changelist")
    assert [s.name for s in admin_client.get(url, {"q": "weekly"}).context["cl"].result_list] == ["Weekly"]
    assert [s.name for s in admin_client.get(url, {"enabled__exact": "1"}).context["cl"].result_list] == [
        "Hourly digest"
    ]


def test_the_change_page_shows_the_fire_ledger_inline(admin_client, workflow):
    schedule = make_schedule(workflow)
    first = schedule.next_fire_at
    services.fire(schedule_id=schedule.pk, now=first + timedelta(seconds=1))
    services.fire(schedule_id=schedule.pk, now=first + 3 * HOUR + timedelta(minutes=5))

    response = admin_client.get(reverse("admin:schedules_schedule_change", args=[schedule.pk]))

    assert response.status_code == 200
    inline = next(f for f in response.context["inline_admin_formsets"] if f.formset.model is ScheduleFire)
    assert [form.instance.outcome for form in inline.formset.forms] == [
        FireOutcome.SKIPPED_LATE,
        FireOutcome.SKIPPED_LATE,
        FireOutcome.SKIPPED_LATE,
        FireOutcome.STARTED,
    ]
    page = response.content.decode()
    assert "Started a run" in page
    assert "Missed while no scheduler was firing." in page
    assert "300s late." in page


def test_the_change_page_shows_only_the_newest_fires_of_a_busy_schedule(admin_client, workflow):
    schedule = make_schedule(workflow, cron="* * * * *")
    first = schedule.next_fire_at
    services.fire(schedule_id=schedule.pk, now=first + timedelta(minutes=120))
    assert schedule.fires.count() == 121

    response = admin_client.get(reverse("admin:schedules_schedule_change", args=[schedule.pk]))

    inline = next(f for f in response.context["inline_admin_formsets"] if f.formset.model is ScheduleFire)
    nominal = [form.instance.nominal_time for form in inline.formset.forms]
    assert len(nominal) == 50
    assert nominal[0] == first + timedelta(minutes=120)
    assert nominal == sorted(nominal, reverse=True)


def test_a_busy_schedule_still_saves_from_its_change_page(admin_client, workflow):
    schedule = make_schedule(workflow, cron="* * * * *")
    services.fire(schedule_id=schedule.pk, now=schedule.next_fire_at + timedelta(minutes=80))
    newest = list(schedule.fires.order_by("-nominal_time").values_list("pk", flat=True)[:50])
    shown_rows = {f"fires-{i}-id": str(pk) for i, pk in enumerate(newest)}
    shown_rows |= {f"fires-{i}-schedule": str(schedule.pk) for i in range(len(newest))}
    management = {"fires-TOTAL_FORMS": "50", "fires-INITIAL_FORMS": "50", "fires-MAX_NUM_FORMS": "0"}

    response = admin_client.post(
        reverse("admin:schedules_schedule_change", args=[schedule.pk]),
        form_data(workflow, name="Busy", cron="*/5 * * * *") | management | shown_rows,
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    assert (Schedule.objects.get().name, task_of(schedule).crontab.minute) == ("Busy", "*/5")
    assert schedule.fires.count() == 81


def test_the_add_form_opens(admin_client, workflow):
    assert admin_client.get(reverse("admin:schedules_schedule_add")).status_code == 200


# ------------------------------------------------------------------------------
# Forms go through the service
# ------------------------------------------------------------------------------
def test_adding_a_schedule_creates_its_periodic_task(admin_client, workflow, superuser):
    response = admin_client.post(reverse("admin:schedules_schedule_add"), form_data(workflow))

    assert response.status_code == 302, response.context["adminform"].form.errors
    schedule = Schedule.objects.get()
    assert (schedule.name, schedule.cron, schedule.created_by) == ("Morning digest", "0 9 * * mon-fri", superuser)
    assert schedule.next_fire_at is not None
    task = task_of(schedule)
    assert (task.task, json.loads(task.args), task.crontab.day_of_week) == (
        "runs.schedule_fire",
        [str(schedule.pk)],
        "mon-fri",
    )


def test_a_bad_cron_in_the_form_shows_an_error_and_saves_nothing(admin_client, workflow):
    response = admin_client.post(reverse("admin:schedules_schedule_add"), form_data(workflow, cron="61 9 * * *"))

    assert response.status_code == 200
    form = response.context["adminform"].form
    assert form.errors["cron"] == ["minute: 61 is outside 0-59."]
    assert "minute: 61 is outside 0-59." in response.content.decode()
    assert not Schedule.objects.exists()
    assert not PeriodicTask.objects.exists()


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"timezone": "Mars/Olympus_Mons"}, "timezone", "Unknown timezone 'Mars/Olympus_Mons'"),
        ({"inputs": json.dumps({"topic": 3})}, "inputs", "topic: 3 is not of type 'string'"),
        ({"jitter_seconds": "3601"}, "jitter_seconds", "At most 3600 seconds."),
    ],
)
def test_the_form_runs_the_same_checks_as_the_api(admin_client, workflow, fields, field, message):
    response = admin_client.post(reverse("admin:schedules_schedule_add"), form_data(workflow, **fields))
    assert response.status_code == 200
    assert message in " ".join(response.context["adminform"].form.errors[field])
    assert not Schedule.objects.exists()


def test_editing_in_the_admin_moves_the_task(admin_client, workflow):
    schedule = make_schedule(workflow)
    url = reverse("admin:schedules_schedule_change", args=[schedule.pk])

    response = admin_client.post(url, form_data(workflow, name="Hourly digest", cron="30 18 * * fri"))

    assert response.status_code == 302, response.context["adminform"].form.errors
    assert Schedule.objects.get().cron == "30 18 * * fri"
    task = task_of(schedule)
    assert (task.crontab.minute, task.crontab.hour, task.crontab.day_of_week) == ("30", "18", "fri")
    assert str(task.crontab.timezone) == "Europe/Berlin"


def test_deleting_in_the_admin_removes_the_task(admin_client, workflow):
    schedule = make_schedule(workflow)
    response = admin_client.post(reverse("admin:schedules_schedule_delete", args=[schedule.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert not Schedule.objects.exists()
    assert task_of(schedule) is None


def test_bulk_deleting_in_the_admin_removes_every_task(admin_client, workflow):
    picked = [make_schedule(workflow, name=f"S{n}") for n in range(2)]
    response = admin_client.post(
        reverse("admin:schedules_schedule_changelist"),
        {"action": "delete_selected", "_selected_action": [str(s.pk) for s in picked], "post": "yes"},
    )
    assert response.status_code == 302
    assert not Schedule.objects.exists()
    assert not PeriodicTask.objects.filter(name__startswith="schedule:").exists()


# ------------------------------------------------------------------------------
# Actions
# ------------------------------------------------------------------------------
def test_the_disable_and_enable_actions_change_schedules_and_their_tasks(admin_client, workflow):
    first, second, other = (make_schedule(workflow, name=name) for name in ("A", "B", "C"))
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": LONG_AGO})

    response = act(admin_client, "disable", first, second)

    assert "Disabled 2." in messages_of(response)
    assert dict(Schedule.objects.values_list("name", "enabled")) == {"A": False, "B": False, "C": True}
    assert [task_of(s).enabled for s in (first, second, other)] == [False, False, True]
    assert PeriodicTasks.last_change() > LONG_AGO
    assert Schedule.objects.get(name="A").next_fire_at is None

    response = act(admin_client, "enable", first)

    assert "Enabled 1." in messages_of(response)
    row = Schedule.objects.get(name="A")
    assert (row.enabled, row.next_fire_at is not None) == (True, True)
    assert task_of(first).enabled is True
    assert task_of(second).enabled is False


def test_the_run_now_action_starts_manual_runs(admin_client, workflow):
    schedule = make_schedule(workflow)

    response = act(admin_client, "run_now", schedule)

    assert "Hourly digest: started" in messages_of(response)
    fire = ScheduleFire.objects.get()
    assert (fire.manual, fire.outcome) == (True, FireOutcome.STARTED)
    assert Run.objects.get() == fire.run
    assert fire.run.trigger == Trigger.SCHEDULE


def test_run_now_reports_a_run_that_cannot_start(admin_client, workflow):
    schedule = make_schedule(workflow)
    workflow.active = False
    workflow.save(update_fields=["active"])

    response = act(admin_client, "run_now", schedule)

    assert "Hourly digest: failed workflow: The workflow is inactive." in messages_of(response)
    assert ScheduleFire.objects.get().outcome == FireOutcome.FAILED
    assert not Run.objects.exists()


# ------------------------------------------------------------------------------
# The forecast panel
# ------------------------------------------------------------------------------
def test_the_change_page_shows_the_forecast_of_the_saved_schedule(admin_client, workflow):
    schedule = make_schedule(workflow)

    response = admin_client.get(reverse("admin:schedules_schedule_change", args=[schedule.pk]))

    assert response.status_code == 200
    assert response.context["stored_forecast"]["period"] == "month"
    assert b"Forecast: the next month (as saved)" in response.content
    assert b"Preview forecast (saves nothing)" in response.content


def test_preview_shows_the_forecast_of_the_form_and_saves_nothing(admin_client, workflow):
    from policies.tests.factories import PolicyFactory

    schedule = make_schedule(workflow)
    PolicyFactory(project=workflow.project, name="tiny", config={"amount_usd": 0.000001, "window": "day"})
    url = reverse("admin:schedules_schedule_change", args=[schedule.pk])
    data = form_data(workflow, name="Renamed", cron="*/5 * * * *", timezone="UTC") | {
        "_forecast": "1",
        "_forecast_period": "day",
    }

    response = admin_client.post(url, data)

    assert response.status_code == 200
    preview = response.context["adminform"].form.forecast
    assert (preview["period"], preview["fires"]) == ("day", 288)
    assert "'tiny'" in preview["warnings"][0]
    assert b"nothing was saved" in response.content
    assert b"would run out on" in response.content
    schedule.refresh_from_db()
    assert (schedule.name, schedule.cron) == ("Hourly digest", "0 * * * *")


def test_preview_on_the_add_form_creates_nothing(admin_client, workflow):
    data = form_data(workflow) | {"_forecast": "1"}

    response = admin_client.post(reverse("admin:schedules_schedule_add"), data)

    assert response.status_code == 200
    assert response.context["adminform"].form.forecast["fires"] > 0
    assert not Schedule.objects.exists()
    assert not PeriodicTask.objects.filter(name__startswith="schedule:").exists()


def test_enabling_a_schedule_that_would_run_out_a_budget_warns_and_enables_it(admin_client, workflow):
    from policies.tests.factories import PolicyFactory

    schedule = make_schedule(workflow, name="A", enabled=False)
    PolicyFactory(project=workflow.project, name="tiny", config={"amount_usd": 0.000001, "window": "day"})

    response = act(admin_client, "enable", schedule)

    assert "Enabled 1." in messages_of(response)
    assert any(m.startswith("A: Budget 'tiny'") and "run out on" in m for m in messages_of(response))
    assert Schedule.objects.get(pk=schedule.pk).enabled is True

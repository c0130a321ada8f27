"""The live stream's wake-up on PostgreSQL: a statement trigger on the two logs it reads sends
NOTIFY in the transaction that inserts rows, which PostgreSQL delivers on commit, once per
transaction (identical notifications of one transaction are folded into one). A trigger costs
the writer no round trip and no writer can forget it, whatever the path of the insert (ORM,
bulk_create, raw SQL). SQLite has no NOTIFY: the stream polls there (live/hub.py)."""

from django.db import migrations

FUNCTION = """
CREATE OR REPLACE FUNCTION sparkops_live_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('sparkops_live', '');
    RETURN NULL;
END
$$;
"""
TABLES = ["runs_runevent", "notices_notice"]


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(FUNCTION)
    for table in TABLES:
        schema_editor.execute(
            f"CREATE TRIGGER {table}_live_notify AFTER INSERT ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION sparkops_live_notify()"
        )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in TABLES:
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_live_notify ON {table}")
    schema_editor.execute("DROP FUNCTION IF EXISTS sparkops_live_notify()")


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0010_run_recent_index"),
        ("notices", "0002_budgetcrossing"),
    ]

    operations = [migrations.RunPython(create, drop)]

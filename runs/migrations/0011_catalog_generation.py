"""runs.CatalogGeneration and the triggers that keep it: any insert, update or delete of an agent,
a tool, an agent's tool, a credential or a policy bumps its project's number; of a global policy
or a model price, every project's. In the database, so that no write path (the ORM's queryset
updates, bulk writes, raw SQL, another program) can change the catalog without the engine's
per-process cache noticing (runs/engine/catalog.py)."""

import django.db.models.deletion
from django.db import migrations, models

# table -> how a row names its project: its project_id, its agent's, or none (every project).
# A policy whose project_id is NULL is global: every project's number moves.
TABLES = {
    "agents_agent": "project",
    "agents_tool": "project",
    "agents_providercredential": "project",
    "agents_agent_tools": "agent",
    "policies_policy": "project",
    "agents_modelprice": "all",
}

PG_FUNCTION = """
CREATE OR REPLACE FUNCTION runs_catalog_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    rec record;
    pid uuid;
BEGIN
    IF TG_OP = 'DELETE' THEN rec := OLD; ELSE rec := NEW; END IF;
    IF TG_ARGV[0] = 'agent' THEN
        SELECT project_id INTO pid FROM agents_agent WHERE id = rec.agent_id;
        IF pid IS NULL THEN RETURN NULL; END IF;  -- its agent's own delete moved the number
    ELSIF TG_ARGV[0] = 'project' THEN
        pid := rec.project_id;
    END IF;
    IF pid IS NULL THEN
        INSERT INTO runs_cataloggeneration (project_id, number) SELECT id, 1 FROM projects_project
        ON CONFLICT (project_id) DO UPDATE SET number = runs_cataloggeneration.number + 1;
    ELSE
        INSERT INTO runs_cataloggeneration (project_id, number) VALUES (pid, 1)
        ON CONFLICT (project_id) DO UPDATE SET number = runs_cataloggeneration.number + 1;
    END IF;
    RETURN NULL;
END
$$;
"""

_BUMP_ONE = (
    "INSERT INTO runs_cataloggeneration (project_id, number) VALUES ({pid}, 1) "
    "ON CONFLICT (project_id) DO UPDATE SET number = number + 1;"
)
_BUMP_ALL = (
    "INSERT INTO runs_cataloggeneration (project_id, number) SELECT id, 1 FROM projects_project WHERE true "
    "ON CONFLICT (project_id) DO UPDATE SET number = number + 1;"
)


def _sqlite_triggers(table: str, names: str):
    for op, row in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD")):
        name = f"runs_catalog_{table}_{op.lower()}"
        if names == "all":
            yield name, f"CREATE TRIGGER {name} AFTER {op} ON {table} BEGIN {_BUMP_ALL} END"
        elif names == "agent":
            # An agent's own delete moves its project's number: its tools' rows, deleted with it, need not.
            pid = f"(SELECT project_id FROM agents_agent WHERE id = {row}.agent_id)"
            yield name, (
                f"CREATE TRIGGER {name} AFTER {op} ON {table} WHEN {pid} IS NOT NULL "
                f"BEGIN {_BUMP_ONE.format(pid=pid)} END"
            )
        else:
            pid = f"{row}.project_id"
            one, every = f"{name}_one", f"{name}_all"
            yield one, (
                f"CREATE TRIGGER {one} AFTER {op} ON {table} WHEN {pid} IS NOT NULL "
                f"BEGIN {_BUMP_ONE.format(pid=pid)} END"
            )
            yield every, f"CREATE TRIGGER {every} AFTER {op} ON {table} WHEN {pid} IS NULL BEGIN {_BUMP_ALL} END"


def create(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_FUNCTION)
        for table, names in TABLES.items():
            schema_editor.execute(
                f"CREATE TRIGGER runs_catalog_changed AFTER INSERT OR UPDATE OR DELETE ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION runs_catalog_changed('{names}')"
            )
    elif vendor == "sqlite":
        for table, names in TABLES.items():
            for _, sql in _sqlite_triggers(table, names):
                schema_editor.execute(sql)
    else:
        raise NotImplementedError(f"the catalog's triggers exist for PostgreSQL and SQLite, not {vendor}")


def drop(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        for table in TABLES:
            schema_editor.execute(f"DROP TRIGGER IF EXISTS runs_catalog_changed ON {table}")
        schema_editor.execute("DROP FUNCTION IF EXISTS runs_catalog_changed()")
    elif vendor == "sqlite":
        for table, names in TABLES.items():
            for name, _ in _sqlite_triggers(table, names):
                schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [
        ("projects", "0003_freeze_and_retention"),
        ("agents", "0003_board_fields"),
        ("policies", "0002_spend_slugs"),
        ("runs", "0010_run_recent_index"),
    ]

    operations = [
        migrations.CreateModel(
            name="CatalogGeneration",
            fields=[
                (
                    "project",
                    models.OneToOneField(
                        db_constraint=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="+",
                        serialize=False,
                        to="projects.project",
                    ),
                ),
                ("number", models.BigIntegerField(default=0)),
            ],
        ),
        migrations.RunPython(create, drop),
    ]

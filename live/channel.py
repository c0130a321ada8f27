"""The wake-up of the live stream on PostgreSQL: the channel its hub LISTENs on. Writers do
nothing: a statement trigger on ``runs_runevent`` and ``notices_notice`` sends the NOTIFY in the
inserting transaction, delivered when (and only if) it commits, once per transaction however
many rows it wrote (live/migrations/0001_notify_on_insert.py); the rows themselves are read from
their tables."""

CHANNEL = "sparkops_live"

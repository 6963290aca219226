"""The database cache's table (settings.CACHES without REDIS_URL): throttle counts shared by every web worker.
`createcachetable` is idempotent and does nothing for a cache that is not in the database."""
from django.core.management import call_command
from django.db import migrations


def create_cache_table(apps, schema_editor) -> None:
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = [("feedback", "0004_entry_confidence")]
    operations = [migrations.RunPython(create_cache_table, migrations.RunPython.noop)]

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("feedback", "0002_alter_fixture_slug_alter_widget_name_and_more")]

    operations = [
        migrations.AddField(
            model_name="fixture",
            name="sites",
            field=models.JSONField(blank=True, default=list, help_text="Sites that have this fixture; empty: every site."),
        ),
    ]

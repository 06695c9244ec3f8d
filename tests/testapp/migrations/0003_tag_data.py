from django.db import migrations


def make_tag(apps, schema_editor):
    apps.get_model("testapp", "Tag").objects.using(schema_editor.connection.alias).create(
        name="from-migration"
    )


class Migration(migrations.Migration):
    dependencies = [("testapp", "0002_tag")]
    operations = [migrations.RunPython(make_tag, migrations.RunPython.noop)]

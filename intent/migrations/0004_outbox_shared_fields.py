# The tracking outboxes share one abstract model (intent.models.Outbox): the feedback gains the record's run-id index
# and lease help text, the record the request id's help text.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('intent', '0003_detection_owner_and_label_history'),
    ]

    operations = [
        migrations.AlterField(
            model_name='detectionfeedback',
            name='lease_token',
            field=models.CharField(blank=True, db_index=True, help_text='Which claim owns it.', max_length=32),
        ),
        migrations.AlterField(
            model_name='detectionfeedback',
            name='mlflow_run_id',
            field=models.CharField(blank=True, db_index=True, max_length=64),
        ),
        migrations.AlterField(
            model_name='detectionrecord',
            name='request_id',
            field=models.UUIDField(help_text="The detection's request id.", unique=True),
        ),
    ]

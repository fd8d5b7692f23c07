"""Latency sketches from their JSON text (`[[keys], [counts]]`) to their binary stored form (6 bytes a bucket:
int16 key, uint32 count, little-endian; `analytics.mirror.sketch.STORED`), which a report reads with no parsing.
Every rollup row is converted, both ways; the format is written out here, as it was when this ran."""

import json

import numpy as np
from django.db import migrations

import analytics.models.mirror

BUCKET = np.dtype([("key", "<i2"), ("count", "<u4")])
CHUNK = 5000
HELP = "The buckets of `analytics.mirror.sketch.LatencySketch` (key, count): percentiles within 1 % of exact."


def _binary(text) -> bytes:
    if isinstance(text, (bytes, memoryview)):
        text = bytes(text).decode()
    stored = json.loads(text or "[]")
    if not stored or not len(stored[0]):
        return b""
    buckets = np.empty(len(stored[0]), BUCKET)
    buckets["key"], buckets["count"] = stored[0], stored[1]
    return buckets.tobytes()


def _text(blob) -> str:
    buckets = np.frombuffer(bytes(blob or b""), BUCKET)
    return json.dumps([buckets["key"].tolist(), buckets["count"].tolist()] if len(buckets) else [],
                      separators=(",", ":"))


def _convert(apps, schema_editor, *, source: str, target: str, convert) -> None:
    connection = schema_editor.connection
    for name in ("DailyRollup", "WindowRollup"):
        table = connection.ops.quote_name(apps.get_model("analytics", name)._meta.db_table)
        last = 0
        with connection.cursor() as cursor:
            while True:
                cursor.execute(f"SELECT id, {source} FROM {table} WHERE id > %s ORDER BY id LIMIT {CHUNK}", [last])
                rows = cursor.fetchall()
                if not rows:
                    break
                cursor.executemany(f"UPDATE {table} SET {target} = %s WHERE id = %s",
                                   [(convert(value), pk) for pk, value in rows])
                last = rows[-1][0]


def forwards(apps, schema_editor):
    _convert(apps, schema_editor, source="latency_sketch", target="latency_sketch_stored", convert=_binary)


def backwards(apps, schema_editor):
    _convert(apps, schema_editor, source="latency_sketch_stored", target="latency_sketch", convert=_text)


class Migration(migrations.Migration):

    dependencies = [
        ('analytics', '0016_sketch_text'),
    ]

    operations = [
        *(migrations.AddField(
            model_name=model, name='latency_sketch_stored',
            field=analytics.models.mirror.SketchField(blank=True, default=b'', help_text=HELP),
        ) for model in ('dailyrollup', 'windowrollup')),
        migrations.RunPython(forwards, backwards),
        *(migrations.RemoveField(model_name=model, name='latency_sketch') for model in ('dailyrollup', 'windowrollup')),
        *(migrations.RenameField(model_name=model, old_name='latency_sketch_stored', new_name='latency_sketch')
          for model in ('dailyrollup', 'windowrollup')),
    ]

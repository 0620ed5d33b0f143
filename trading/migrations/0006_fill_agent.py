"""Fills carry their order's agent (trading.models.Fill.agent says why)."""

from django.db import migrations, models
import django.db.models.deletion


class Migration(migrations.Migration):

    dependencies = [
        ('trading', '0005_backtests'),
    ]

    operations = [
        migrations.AddField(
            model_name='fill',
            name='agent',
            field=models.ForeignKey(db_index=False, null=True, on_delete=django.db.models.deletion.PROTECT,
                                    related_name='fills', to='trading.agent'),
        ),
        # The rows already there take their order's agent. The new key is checked at once, not at
        # commit: PostgreSQL will not alter a table with trigger events still pending.
        migrations.RunSQL(
            "UPDATE fills SET agent_id = orders.agent_id FROM orders WHERE orders.id = fills.order_id; "
            "SET CONSTRAINTS ALL IMMEDIATE;",
            reverse_sql=migrations.RunSQL.noop,
        ),
        migrations.AlterField(
            model_name='fill',
            name='agent',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT,
                                    related_name='fills', to='trading.agent'),
        ),
        migrations.AddIndex(
            model_name='fill',
            index=models.Index(fields=['agent', '-executed_at', '-id'], name='fills_agent_executed_idx'),
        ),
    ]

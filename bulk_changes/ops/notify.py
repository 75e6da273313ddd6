"""The last op of ``process_bulk_change``: deliver this bulk change's notifications."""

from dagster import MetadataValue, OpExecutionContext, Output, op

from bulk_changes.notify.dispatcher import build_dispatcher
from bulk_changes.resources.amop_db import AmopDatabase
from bulk_changes.resources.mail import Mailer
from bulk_changes.resources.tenant_config import TenantConfig
from bulk_changes.resources.webhooks import NotificationSettings, WebhookSender


@op
def deliver_notifications(
    context: OpExecutionContext,
    final: dict,
    amop_db: AmopDatabase,
    tenant_config: TenantConfig,
    mail: Mailer,
    webhooks: WebhookSender,
    notifications: NotificationSettings,
) -> Output[dict]:
    """Send what is due of this bulk change's outbox, within a short time budget.

    Runs after finalize, so a slow or failing receiver never holds up a device. It never
    fails the run for a receiver: what is not delivered stays in the outbox for the
    sweep sensor, with its retry schedule.
    """
    dispatcher = build_dispatcher(
        amop_db=amop_db,
        tenant_config=tenant_config,
        mail=mail,
        webhooks=webhooks,
        notifications=notifications,
        holder=f"run:{context.run_id}",
        log=context.log,
    )
    report = dispatcher.deliver(
        final["bulk_change_id"], budget_seconds=notifications.op_budget_seconds
    )
    context.log.info(f"notifications of bulk change {final['bulk_change_id']}: {report.summary()}")
    return Output(
        {"bulk_change_id": final["bulk_change_id"], **report.as_metadata()},
        metadata={
            **report.as_metadata(),
            "notifications": MetadataValue.md(
                "\n".join(
                    f"- {e['type']} `{e['event_id']}`: "
                    + (
                        ", ".join(
                            f"{d['channel']} {d['status'].lower()} ({d['attempts']} attempt(s))"
                            for d in e["deliveries"]
                        )
                        or "no destination"
                    )
                    for e in dispatcher.outbox.notifications_of(final["bulk_change_id"])
                )
                or "none"
            ),
        },
    )

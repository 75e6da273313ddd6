"""The last op of ``process_bulk_change``: deliver this bulk change's notifications."""

from dagster import MetadataValue, OpExecutionContext, Output, op

from bulk_changes.resources.notifier import Notifier


@op
def deliver_notifications(
    context: OpExecutionContext,
    final: dict,
    notifier: Notifier,
) -> Output[dict]:
    """Send what is due of this bulk change's outbox, within a short time budget.

    Runs after finalize, so a slow or failing receiver never holds up a device. It never
    fails the run for a receiver: what is not delivered stays in the outbox for the
    sweep sensor, with its retry schedule.
    """
    dispatcher = notifier.dispatcher(holder=f"run:{context.run_id}", log=context.log)
    report = dispatcher.deliver(
        final["bulk_change_id"], budget_seconds=notifier.notifications.op_budget_seconds
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

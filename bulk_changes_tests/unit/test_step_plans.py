from bulk_changes.domain.change_types import UNSUPPORTED, ChangeType, Integration
from bulk_changes.domain.step_plans import PLANS, STAGE_ORDER, UPDATE_AMOP, plan_for


def names(change_type, integration, request):
    return [s.name for s in plan_for(ChangeType(change_type), Integration(integration), request)]


def test_every_offered_combination_has_a_plan():
    for change_type in ChangeType:
        for integration in Integration:
            assert ((change_type, integration) in PLANS) != (
                (change_type, integration) in UNSUPPORTED
            )


def test_every_plan_ends_with_the_amop_update():
    assert all(plan[-1] is UPDATE_AMOP for plan in PLANS.values())


def test_steps_are_in_stage_order():
    for plan in PLANS.values():
        stages = [STAGE_ORDER.index(s.stage) for s in plan]
        assert stages == sorted(stages)


def test_jasper_username_only_skips_revio():
    assert names("username_cost_center", "jasper", {"username": "a"}) == [
        "jasper.set_username",
        "amop.update_device",
    ]


def test_jasper_cost_center_only_skips_jasper():
    assert names("username_cost_center", "jasper", {"cost_center_1": "c"}) == [
        "revio.set_cost_centers",
        "amop.update_device",
    ]


def test_telegence_username_goes_to_revio_not_the_carrier():
    assert names("username_cost_center", "telegence", {"username": "a"}) == [
        "revio.set_username_cost_centers",
        "amop.update_device",
    ]


def test_equipment_without_new_iccid_leaves_revio_alone():
    assert names("equipment", "telegence", {"new_imei": "1", "reason_code": "R"}) == [
        "telegence.change_equipment",
        "amop.update_device",
    ]


def test_every_step_has_a_handler():
    from bulk_changes.processing.steps import HANDLERS

    for plan in PLANS.values():
        for step in plan:
            assert step is UPDATE_AMOP or step.name in HANDLERS

"""The rollout driver's pure step planner (worker.rollouts.plan_step): given the replicas there are, what next."""

from __future__ import annotations

from worker.rollouts import Policy, Replica, Step, placements, plan_step

POLICY = Policy(max_surge=1, max_unavailable=0, min_healthy_seconds=2, healthy_deadline_seconds=60)


def replica(
    name: str, release: int, status: str = "running", healthy: float | None = 10.0, age: float = 20.0, **extra: object
) -> Replica:
    values: dict[str, object] = {
        "id": name,
        "name": name,
        "release": release,
        "status": status,
        "desired_state": "running",
        "reason": None,
        "age_seconds": age,
        "healthy_seconds": healthy if status == "running" else None,
        "registered": True,
    }
    values.update(extra)
    return Replica(**values)  # type: ignore[arg-type]


def test_a_deploy_surges_one_new_replica_before_stopping_an_old_one() -> None:
    # GIVEN three ready replicas of release 1 and release 2 pending
    old = [replica(f"old-{i}", 1) for i in range(3)]
    # WHEN the first step is planned
    step = plan_step(2, "pending", 1, 3, POLICY, old)
    # THEN it starts the release and creates one replica, removing nothing
    assert step == Step(start=True, create=1)


def test_a_new_replica_not_ready_long_enough_holds_the_old_ones() -> None:
    replicas = [*(replica(f"old-{i}", 1) for i in range(3)), replica("new-0", 2, healthy=1.0)]
    assert plan_step(2, "rolling", 1, 3, POLICY, replicas) == Step()


def test_a_ready_new_replica_lets_one_old_one_go_and_the_next_one_start() -> None:
    replicas = [*(replica(f"old-{i}", 1) for i in range(3)), replica("new-0", 2)]
    step = plan_step(2, "rolling", 1, 3, POLICY, replicas)
    assert step.remove == ("old-0",) and step.create == 1 and step.finish is None


def test_an_unregistered_replica_is_not_ready() -> None:
    replicas = [*(replica(f"old-{i}", 1) for i in range(3)), replica("new-0", 2, registered=False)]
    assert plan_step(2, "rolling", 1, 3, POLICY, replicas) == Step()


def test_the_release_is_healthy_once_only_ready_new_replicas_are_left() -> None:
    replicas = [replica(f"new-{i}", 2) for i in range(3)]
    assert plan_step(2, "rolling", 1, 3, POLICY, replicas).finish == "healthy"
    leaving = replica("old-0", 1, status="stopping", desired_state="deleted")
    assert plan_step(2, "rolling", 1, 3, POLICY, [*replicas, leaving]).finish is None


def test_a_failing_new_replica_rolls_back_and_only_it_is_removed() -> None:
    replicas = [
        *(replica(f"old-{i}", 1) for i in range(3)),
        replica("new-0", 2, status="unhealthy", reason="GET / on port 8080 answered 500"),
    ]
    step = plan_step(2, "rolling", 1, 3, POLICY, replicas)
    assert step.revert_to == 1 and step.remove == ("new-0",)
    assert step.reason == "replica new-0: GET / on port 8080 answered 500"


def test_without_auto_rollback_the_release_fails_and_then_nothing_moves() -> None:
    policy = Policy(max_surge=1, min_healthy_seconds=2, healthy_deadline_seconds=60, auto_rollback=False)
    replicas = [replica("old-0", 1), replica("new-0", 2, status="starting", age=61.0)]
    step = plan_step(2, "rolling", 1, 1, policy, replicas)
    assert step.finish == "failed" and step.reason is not None and "not healthy within 60 s" in step.reason
    assert plan_step(2, "failed", 1, 1, policy, replicas) == Step()


def test_after_a_rollback_new_replicas_go_only_as_old_ones_come_back() -> None:
    # Release 2 had replaced one old replica when it failed: the service is back on release 1.
    replicas = [replica("old-1", 1), replica("old-2", 1), replica("new-0", 2)]
    step = plan_step(1, "healthy", None, 3, POLICY, replicas)
    assert step.remove == () and step.create == 1  # the ready new one stays until an old one is back


def test_scaling_down_keeps_the_floor_and_removes_not_ready_replicas_first() -> None:
    replicas = [replica("a", 1), replica("b", 1, age=15.0), replica("c", 1, status="starting")]
    assert plan_step(1, "healthy", None, 1, POLICY, replicas).remove == ("c", "b")


def test_max_unavailable_without_surge_stops_an_old_replica_first() -> None:
    policy = Policy(max_surge=0, max_unavailable=1, min_healthy_seconds=2, healthy_deadline_seconds=60)
    step = plan_step(2, "rolling", 1, 3, policy, [replica(f"old-{i}", 1) for i in range(3)])
    assert len(step.remove) == 1 and step.create == 1


def test_a_replica_lost_or_stopped_by_hand_is_replaced_to_keep_the_count() -> None:
    replicas = [replica("a", 1), replica("b", 1, desired_state="stopped", status="stopped")]
    assert plan_step(1, "healthy", None, 2, POLICY, replicas).create == 1


def test_new_replicas_fill_each_regions_minimum_first_then_go_anywhere() -> None:
    regions = {"eu": 2, "us": 1}
    # GIVEN nothing yet: the minimums in their order, then any region
    assert placements(1, regions, [], 4) == ["eu", "eu", "us", None]
    assert placements(1, regions, [], 2) == ["eu", "eu"]  # a surge-bounded step fills what it can
    # GIVEN one eu replica of the release (and pinned ones of an old release, or leaving, which do not count)
    replicas = [
        replica("a", 2, region="eu"),
        replica("b", 1, region="us"),
        replica("c", 2, region="us", desired_state="deleted"),
    ]
    assert placements(2, regions, replicas, 3) == ["eu", "us", None]
    assert placements(2, {}, replicas, 2) == [None, None]


def test_scaling_down_removes_unpinned_replicas_before_those_a_minimum_needs() -> None:
    # GIVEN 3 ready replicas: the newest two pinned for eu's and us's minimums, the oldest unpinned
    replicas = [
        replica("free", 1, age=30.0),
        replica("eu", 1, age=20.0, region="eu"),
        replica("us", 1, age=10.0, region="us"),
    ]
    # WHEN scaled to 2 THEN the unpinned one goes, although the newest would go without regions
    assert plan_step(1, "healthy", None, 2, POLICY, replicas, {"eu": 1, "us": 1}).remove == ("free",)
    assert plan_step(1, "healthy", None, 2, POLICY, replicas).remove == ("us",)

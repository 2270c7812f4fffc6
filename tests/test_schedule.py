"""InjectionSchedule without a Trainer: when each option injects, and when it cannot."""

import math

import pytest

from lightning_inflect.injection import InjectionSchedule


@pytest.mark.parametrize(
    ("kwargs", "total", "planned", "first_due"),
    [
        ({"at_step": 0}, 10, 0, 0),
        ({"at_step": 7}, math.inf, 7, 7),
        ({"at_fraction": 0.3}, 100, 30, 30),
        ({"at_fraction": 0.3}, 5, 2, 2),  # round(1.5) = 2
        ({"at_fraction": 0.01}, 10, 0, 0),
        ({"at_fraction": 0.01, "min_step": 1}, 10, 1, 1),  # gradients of a step before the injection
    ],
)
def test_planned_step_and_first_due_step(kwargs, total, planned, first_due):
    s = InjectionSchedule(**kwargs)
    assert s.plan(total) == planned
    assert next(step for step in range(200) if s.due(step)) == first_due
    assert not any(s.due(step) for step in range(first_due))


def test_at_epoch_is_the_first_step_of_that_epoch_or_later():
    s = InjectionSchedule(at_epoch=2)
    assert s.plan(100) is None and not s.due(50)
    assert s.on_epoch_start(1, 20) is None
    assert s.on_epoch_start(2, 40) == 40 and s.due(40) and not s.due(39)
    assert s.on_epoch_start(3, 60) == 40  # fixed once
    resumed = InjectionSchedule(at_epoch=2)
    assert resumed.on_epoch_start(4, 80) == 80  # resumed past the epoch: inject at once


def test_postpone():
    s = InjectionSchedule(at_step=3)
    s.plan(10)
    s.postpone_to(4)
    assert not s.due(3) and s.due(4)


@pytest.mark.parametrize(
    ("kwargs", "limits", "match"),
    [
        ({"at_step": 10}, (5, None, 5), r"at optimizer step 10, but training stops at max_steps=5"),
        ({"at_epoch": 2}, (-1, 2, 20), r"epoch 2, but training stops after max_epochs=2 \(epochs 0 to 1\)"),
        ({"at_step": 30}, (-1, 3, 24), r"this fit plans 24 optimizer steps"),
        ({"at_step": 3}, (10, None, 10), None),
        ({"at_epoch": 1}, (-1, 2, 20), None),
    ],
)
def test_too_late(kwargs, limits, match):
    s = InjectionSchedule(**kwargs)
    s.plan(limits[2])
    why = s.too_late(*limits)
    assert (why is None) if match is None else __import__("re").search(match, why)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, r"exactly one of `at_step`, `at_epoch`, `at_fraction` but got none"),
        ({"at_step": 1, "at_fraction": 0.5}, r"but got at_step=1, at_fraction=0.5"),
        ({"at_step": -1}, r"`at_step` to be a non-negative int or None but got -1"),
        ({"at_epoch": 1.5}, r"`at_epoch` to be a non-negative int or None but got 1.5"),
        ({"at_fraction": 1.0}, r"`at_fraction` to be a number in \(0.0, 1.0\) but got 1.0"),
    ],
)
def test_bad_schedules(kwargs, match):
    with pytest.raises(ValueError, match=match):
        InjectionSchedule(**kwargs)


def test_fraction_needs_a_bounded_fit():
    with pytest.raises(ValueError, match="needs a known number of optimizer steps"):
        InjectionSchedule(at_fraction=0.5).plan(math.inf)

"""``lambda-os controller`` refuses contradictory scaling settings before it connects."""

from __future__ import annotations

import pytest

from lambda_os import cli


def test_a_minimum_above_the_maximum_stops_the_controller_with_the_reason():
    with pytest.raises(SystemExit, match="min <= max, not 9, 4"):
        cli.main(["controller", "--scale-min-hosts", "9", "--scale-max-hosts", "4"])


def test_marks_the_wrong_way_round_stop_the_controller_with_the_reason():
    with pytest.raises(SystemExit, match="low < high"):
        cli.main(["controller", "--scale-low-mark", "0.8", "--scale-high-mark", "0.5"])

"""The suite's tasks; importing this package registers every one of them."""

from sims.tasks import button, drawer, pick, place, push, reach, slide  # noqa: F401

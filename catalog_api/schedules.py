"""``/v1/functions/{id}/schedules``: a function's cron schedules and rates, with their next ticks.

A schedule is ``{"cron": "*/5 * * * *", "timezone": "Europe/Paris"}`` (the time zone
defaults to UTC) or ``{"rate_s": 300}``, one or the other. Each lists when it fires
next, when it last fired, and how many ticks it missed while no listener ran
(``listener.schedule`` fires them). A function's schedules are its project's, as the
function is, and go with it when it is deleted.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import falcon
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from catalog_api.auth.scope import scope_of
from catalog_api.forms import MAX_CONFIG_BODY, read_json_object
from lambda_os.catalogue import Catalogue
from lambda_os.cron import MAX_RATE_S, MIN_RATE_S, Cron, InvalidSchedule, zone_named
from lambda_os.records import ScheduleRecord, utcnow
from listener.schedule import next_tick

MAX_SCHEDULES_PER_FUNCTION = 20


class ScheduleSchema(Schema):
    class Meta:
        unknown = RAISE

    cron = fields.String(validate=validate.Length(min=9, max=256))
    timezone = fields.String(load_default="UTC", validate=validate.Length(min=1, max=64))
    rate_s = fields.Integer(strict=True, validate=validate.Range(MIN_RATE_S, MAX_RATE_S))

    @validates_schema
    def _one_kind(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if ("cron" in data) == ("rate_s" in data):
            raise ValidationError("give either cron (with an optional timezone) or rate_s")
        try:
            if "cron" in data:
                Cron.parse(data["cron"], data["timezone"])
            else:
                zone_named(data["timezone"])
        except InvalidSchedule as exc:
            raise ValidationError(str(exc)) from exc


def schedule_url(function_id: str, schedule_id: str) -> str:
    return f"/v1/functions/{function_id}/schedules/{schedule_id}"


class SchedulesResource:
    """``/v1/functions/{id}/schedules``: list (GET) and add (POST) a function's schedules."""

    def __init__(self, catalogue: Catalogue) -> None:
        self._catalogue = catalogue

    def on_get(self, req: falcon.Request, resp: falcon.Response, function_id: str) -> None:
        function = scope_of(req, self._catalogue).function(function_id)
        schedules = self._catalogue.list_schedules(function.id)
        resp.media = {"schedules": [s.to_api() for s in schedules]}

    def on_post(self, req: falcon.Request, resp: falcon.Response, function_id: str) -> None:
        function = scope_of(req, self._catalogue).function(function_id)
        data = ScheduleSchema().load(read_json_object(req, MAX_CONFIG_BODY))
        if len(self._catalogue.list_schedules(function.id)) >= MAX_SCHEDULES_PER_FUNCTION:
            raise falcon.HTTPConflict(
                title="Too many schedules",
                description=f"a function has at most {MAX_SCHEDULES_PER_FUNCTION} schedules",
            )
        now = utcnow()
        draft = ScheduleRecord(
            id="",
            function_id=function.id,
            owner=function.owner,
            cron=data.get("cron"),
            timezone=data["timezone"],
            rate_s=data.get("rate_s"),
            start_at=now if "rate_s" in data else None,
        )
        first = next_tick(draft, now)
        if first is None:
            raise falcon.HTTPUnprocessableEntity(
                title="Invalid schedule",
                description=f"cron {draft.cron!r} names no date that comes (February 30th?)",
            )
        record = self._catalogue.add_schedule(dataclasses.replace(draft, next_fire_at=first))
        resp.status = falcon.HTTP_201
        resp.location = schedule_url(function.id, record.id)
        resp.media = record.to_api()


class ScheduleResource:
    """``/v1/functions/{id}/schedules/{schedule_id}``: remove one (DELETE)."""

    def __init__(self, catalogue: Catalogue) -> None:
        self._catalogue = catalogue

    def on_delete(
        self, req: falcon.Request, resp: falcon.Response, function_id: str, schedule_id: str
    ) -> None:
        function = scope_of(req, self._catalogue).function(function_id)
        self._catalogue.delete_schedule(function.id, schedule_id)
        resp.status = falcon.HTTP_204

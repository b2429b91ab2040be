"""Routes mounted from the domain packages (``gbplatform.api.routing``) and the typed context."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from klein import Klein
from twisted.web.server import Request

from gbplatform.alarms.http import AlarmRoutes
from gbplatform.api.app import Api
from gbplatform.api.routing import Routes, Web, mount
from gbplatform.app.context import AppContext
from gbplatform.control.config_http import Config2022Routes
from gbplatform.control.http import ControlRoutes
from gbplatform.control.http_2022 import Ptz2022Routes
from gbplatform.control.http_maintenance import MaintenanceRoutes
from gbplatform.devices.http import DeviceRoutes
from gbplatform.events.http import EventRoutes
from gbplatform.outputs.http import OutputRoutes
from gbplatform.recording.http import RecordingRoutes
from gbplatform.sessions.http import SessionRoutes
from gbplatform.snapshots.http import SnapshotRoutes
from gbplatform.subscriptions.http import SubscriptionRoutes
from tests.unit.test_api import TOKEN, Client, make_platform

ROUTE_SETS = {"device_routes": DeviceRoutes, "session_routes": SessionRoutes, "output_routes": OutputRoutes,
              "recording_routes": RecordingRoutes, "control_routes": ControlRoutes}
ROUTE_SETS["snapshot_routes"] = SnapshotRoutes  # gbplatform.snapshots (GB/T 28181-2022 snapshot upload)
ROUTE_SETS["event_routes"] = EventRoutes  # gbplatform.events (Server-Sent Events, stats)
ROUTE_SETS["subscription_routes"] = SubscriptionRoutes  # gbplatform.subscriptions (catalog/alarm/position)
ROUTE_SETS["alarm_routes"] = AlarmRoutes  # gbplatform.alarms (alarms, Alarm Query, positions, tracks)
ROUTE_SETS["config2022_routes"] = Config2022Routes  # gbplatform.control.config_http (2022 config types)
ROUTE_SETS["ptz2022_routes"] = Ptz2022Routes  # gbplatform.control.http_2022 (2022 PTZ commands, queries)
ROUTE_SETS["maintenance_routes"] = MaintenanceRoutes  # gbplatform.control.http_maintenance (SD cards, upgrade)


def rules(app: Klein) -> set[tuple[str, frozenset[str], str]]:
    return {(r.rule, frozenset(r.methods or ()), r.endpoint) for r in app.url_map.iter_rules()}


def test_the_root_holds_every_package_route_and_its_own() -> None:
    mounted = set().union(*(rules(cls.app) for cls in ROUTE_SETS.values()))
    root = rules(Api.app)
    assert mounted < root
    own = {rule for rule, _, _ in root - mounted}
    assert own == {"/api/v1/health", "/api/v1/openapi.json"}


def test_each_route_runs_on_its_package_route_set() -> None:
    platform, _ = make_platform()
    api = Api(platform)
    for attr, cls in ROUTE_SETS.items():
        routes = getattr(api, attr)
        assert type(routes) is cls and routes.web is api.web and routes.platform is platform


def test_a_mounted_route_answers_through_the_root() -> None:
    platform, _ = make_platform()
    client = Client(Api(platform))
    assert client("GET", "/record/plans").json == {"items": []}
    # The root's error mapping and 405 list cover mounted routes too.
    reply = client("GET", "/channels/34020000001320000001/play")
    assert reply.code == 405 and reply.header("Allow") == "POST"
    assert client("GET", "/devices", token=TOKEN + "x").code == 401


def test_run_in_thread_is_shared_by_every_route_set() -> None:
    platform, _ = make_platform()
    api = Api(platform)

    def run(*a: object, **kw: object) -> None:
        raise AssertionError

    api.run_in_thread = run  # type: ignore[assignment]
    assert api.output_routes.web.run_in_thread is run and api.run_in_thread is run


def test_a_route_mounted_twice_is_refused() -> None:
    class Twice(Routes):
        app = Klein()

        @app.route("/x")
        async def x(self, request: Request) -> bytes:
            return b""

    root = Klein()
    mount(root, Twice.app, "twice")
    with pytest.raises(ValueError, match="already mounted"):
        mount(root, Twice.app, "twice")


def test_the_context_has_no_any() -> None:
    for f in dataclasses.fields(AppContext):
        assert "Any" not in str(f.type), f.name


def test_the_api_does_not_import_the_service_builder() -> None:
    # gbplatform.app.service builds the API; the API importing it back was a cycle.
    code = "import sys, gbplatform.api.app; print('gbplatform.app.service' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_web_blocking_uses_the_pools_when_there_are_some() -> None:
    platform, _ = make_platform()
    web = Web(platform)
    assert web.blocking("snapshot") == web.run_in_thread

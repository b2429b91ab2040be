"""``AppContext``: the platform's long-lived services, typed, shared by SIP and the API.

``gbplatform.app.service.build_platform`` fills one in and ``make_service``
adds what needs a reactor (SIP transport, worker pools, recording). The
domain packages' HTTP routes (``gbplatform/*/http.py``) and the services
read their collaborators from here, so every part has its real type and no
package needs to import ``gbplatform.app.service`` (which builds the API:
importing it back was a cycle).

The optional parts are ``None`` where a platform runs without them: no
media receiver (``live``), no recording (``recording``), no worker pools in
unit tests (``workers``: blocking work then runs on the API's
``run_in_thread``), no SIP socket before ``SipService`` starts
(``transport``). They are set once, while the service is assembled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only types: building them is gbplatform.app.service's job
    from gbplatform.alarms.service import AlarmService
    from gbplatform.app.config import Config
    from gbplatform.auth.play_tokens import PlayTokens
    from gbplatform.control.maintenance import MaintenanceService
    from gbplatform.control.service import ControlService
    from gbplatform.core.clock import Clock
    from gbplatform.core.workers import Workers
    from gbplatform.db.database import Database
    from gbplatform.devices.catalog import CatalogSync
    from gbplatform.devices.onboarding import DeviceQueries
    from gbplatform.devices.registrar import DeviceEvent, DeviceManager
    from gbplatform.events.bus import EventBus
    from gbplatform.events.webhooks import Webhooks
    from gbplatform.recording.manager import RecordingManager
    from gbplatform.sessions.live import LiveStreams
    from gbplatform.signalling.router import SipRouter
    from gbplatform.signalling.trace import SipTrace
    from gbplatform.snapshots.service import DeviceSnapshots
    from gbplatform.subscriptions.service import SubscriptionService
    from sip.endpoint import Endpoint
    from sip.transport import SipTransport

__all__ = ["AppContext"]


@dataclass
class AppContext:
    """The platform's long-lived objects; the API and the SIP side share them."""

    config: Config
    clock: Clock
    db: Database
    endpoint: Endpoint
    router: SipRouter
    devices: DeviceManager
    catalog: CatalogSync
    queries: DeviceQueries
    control: ControlService
    trace: SipTrace
    api_token: str
    started_at: float
    play_tokens: PlayTokens
    bus: EventBus  # what happened, for the event stream, webhooks and cascade (gbplatform.events)
    events: list[DeviceEvent] = field(default_factory=list)
    transport: SipTransport | None = None
    live: LiveStreams | None = None
    recording: RecordingManager | None = None
    snapshots: DeviceSnapshots | None = None  # device snapshot upload (GB/T 28181-2022 SnapShotConfig)
    alarms: AlarmService | None = None  # alarms and positions (gbplatform.alarms); set by build_platform
    subscriptions: SubscriptionService | None = None  # RFC 6665 subscriptions (gbplatform.subscriptions)
    workers: Workers | None = None  # blocking work's pools; None in unit tests: the API's run_in_thread
    webhooks: Webhooks | None = None  # [webhooks] delivery (gbplatform.events.webhooks); None in unit tests
    maintenance: MaintenanceService | None = None  # SD cards, firmware upgrade (gbplatform.control.maintenance)

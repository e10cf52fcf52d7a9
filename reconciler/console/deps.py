"""What every console screen is given: built once by the daemon, shared by the routers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reconciler.runtime.live_config import ConfigHolder
from reconciler.runtime.metrics import DaemonMetrics
from reconciler.runtime.settings import DaemonSettings
from reconciler.state.base import Store


@dataclass(frozen=True)
class ConsoleDeps:
    store: Store
    settings: DaemonSettings
    config: ConfigHolder
    metrics: DaemonMetrics
    # The daemon's app.state: hooks it sets after start-up (wake_worker, sync_wake).
    app_state: Any

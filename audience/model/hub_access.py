"""Whether the Hugging Face Hub can be used now: the offline switch and a fast TCP probe.

huggingface_hub retries an unreachable Hub for about 23-46 s before it gives up; a failed probe
within PROBE_TIMEOUT_S lets the caller go to the local cache (or say what to do) at once. Shared by
models (timm's pretrained download) and hub (served checkpoints), so both decide the same way.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from huggingface_hub import constants as hub_constants

from audience.settings import env_flag

PROBE_TIMEOUT_S = 3.0


def hub_offline() -> bool:
    """HF_HUB_OFFLINE, as huggingface_hub read it at import or as the environment says now."""
    return bool(hub_constants.HF_HUB_OFFLINE) or env_flag("HF_HUB_OFFLINE")


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the Hub endpoint (or the HTTPS proxy in use) opens within `timeout` s."""
    # HF_ENDPOINT is read now, not only at import: a process (or a test) may point it elsewhere later.
    target = urlparse(os.environ.get("HF_ENDPOINT", "").strip() or hub_constants.ENDPOINT)
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    if proxy and target.scheme == "https":
        target = urlparse(proxy if "://" in proxy else f"http://{proxy}")
    try:
        port = target.port or (443 if target.scheme == "https" else 80)
        with socket.create_connection((target.hostname, port), timeout=timeout):
            return True
    except (OSError, TypeError, ValueError):  # refused, timed out, no such host, or a malformed endpoint
        return False

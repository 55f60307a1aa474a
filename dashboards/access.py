"""Who may open the owner's apps (results, dataset). On the loopback address (the default) anyone who can reach
the machine's own port already owns it; bound to any other address, `avatar dash` gives the app an owner token
(AVATAR_OWNER_TOKEN) and the app answers only links that carry it, as the rater app answers only rater tokens."""

from __future__ import annotations

import hmac
import os

OWNER_TOKEN_ENV = "AVATAR_OWNER_TOKEN"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def owner_allowed(given: str | None) -> bool:
    """True when the app needs no owner token, or `given` is it."""
    expected = os.environ.get(OWNER_TOKEN_ENV)
    return not expected or hmac.compare_digest(str(given or ""), expected)


def allowed_datasets() -> list[str]:
    """The dataset folders the dataset app was started with (AVATAR_DATASET, os.pathsep-separated): no others."""
    return [p for p in os.environ.get("AVATAR_DATASET", "outputs/demo").split(os.pathsep) if p]

"""The one `ray.init` of the project: an instance of our own by default, or the cluster the user names."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

CONNECT_TIMEOUT_S = 10.0


class RayUnreachable(ConnectionError):
    """The Ray cluster named by the user does not answer: names the address and the fix."""

    def __init__(self, what: str, fix: str):
        super().__init__(f"{what}. Fix: {fix}")
        self.what, self.fix = what, fix


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """A RayUnreachable unless something listens at a `host:port` or `ray://host:port` address (within `timeout_s`):
    Ray itself would retry for minutes, printing warnings. "auto" and "local" are not probed."""
    if address in ("auto", "local"):
        return
    parts = urlsplit(address if "://" in address else f"gcs://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or not port:
        raise RayUnreachable(f"--ray-address {address!r} is not host:port", "give HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        raise RayUnreachable(f"no Ray cluster answers at {address} ({exc.strerror or type(exc).__name__})",
                             "start it (`ray start --head`) or give the address it printed; leave --ray-address out "
                             "to run on this machine") from None


def start_ray(address: str | None = None, num_cpus: int | None = None, env_vars: dict[str, str] | None = None,
              logging_level: str = "WARNING") -> None:
    """Start a local Ray instance (`address` None) or join the cluster at `address`; nothing if Ray is running.

    Address "local" starts an instance of our own: `ray.init()` with no address would join whatever cluster
    RAY_ADDRESS or the last `ray start` on this machine names, even a dead one. `num_cpus` sizes a local instance only
    (Ray refuses it when joining). `env_vars` reach every worker (e.g. where the weights are)."""
    import ray

    if address is not None:  # first: a Ray this process already runs says nothing of the address asked for
        check_reachable(address)
    if ray.is_initialized():
        return
    kwargs = dict(address=address or "local", include_dashboard=False, log_to_driver=False,
                  logging_level=logging_level)
    if env_vars:
        kwargs["runtime_env"] = {"env_vars": dict(env_vars)}
    if address is None and num_cpus is not None:
        kwargs["num_cpus"] = num_cpus
    ray.init(**kwargs)

"""The one `ray.init` of the project: an instance of our own by default, or the cluster the user names."""

from __future__ import annotations


def start_ray(address: str | None = None, num_cpus: int | None = None, env_vars: dict[str, str] | None = None,
              logging_level: str = "WARNING") -> None:
    """Start a local Ray instance (`address` None) or join the cluster at `address`; nothing if Ray is running.

    Address "local" starts an instance of our own: `ray.init()` with no address would join whatever cluster
    RAY_ADDRESS or the last `ray start` on this machine names, even a dead one. `num_cpus` sizes a local instance only
    (Ray refuses it when joining). `env_vars` reach every worker (e.g. where the weights are)."""
    import ray

    if ray.is_initialized():
        return
    kwargs = dict(address=address or "local", include_dashboard=False, log_to_driver=False,
                  logging_level=logging_level)
    if env_vars:
        kwargs["runtime_env"] = {"env_vars": dict(env_vars)}
    if address is None and num_cpus is not None:
        kwargs["num_cpus"] = num_cpus
    ray.init(**kwargs)

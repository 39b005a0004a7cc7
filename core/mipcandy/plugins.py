"""Bundle discovery and selection, on top of pluggy.

Bundles are found through ``importlib.metadata`` entry points in the group ``mipcandy.bundles``. Each
entry point is loaded and validated on its own: a bundle that fails to import, or whose hooks do not
match the specs (a misspelled hook, an unknown argument), is recorded as broken, unregistered, and
loading goes on with the others. Nothing here imports torch.

Environment switches, read when bundles are first loaded:

* ``CANDY_PLUGINS``: comma-separated allowlist of bundle (entry-point) or distribution names. When the
  variable is set but empty, no bundle is loaded. Bundles outside the allowlist are not listed.
* ``CANDY_DISABLED_PLUGINS``: comma-separated blocklist; such bundles are listed as ``blocked``.
* ``CANDY_DISABLE_PLUGIN_AUTOLOAD=1``: do not walk entry points at all; only bundles registered in
  process with :meth:`BundleManager.register` exist.
"""
from __future__ import annotations

import os
import traceback
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any, Literal

import pluggy

from mipcandy import hookspecs
from mipcandy.hookspecs import BROADCAST_HOOKS, ENTRY_POINT_GROUP, OPTIONAL_HOOKS, PROJECT_NAME

Status = Literal["ok", "error", "invalid", "blocked"]
DEFAULTS_NAME = "mipcandy.defaults"


class BundleError(RuntimeError):
    """A bundle was asked for that cannot be used."""


class BroadcastWarning(RuntimeWarning):
    """A plugin failed while handling a broadcast hook (preview, experiment events); the others went on."""


@dataclass
class BundleRecord:
    """One discovered bundle and what became of it."""

    name: str
    distribution: str | None = None
    version: str | None = None
    module: str | None = None
    status: Status = "ok"
    error: str | None = None
    hooks: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    traceback: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict[str, Any]:
        """The ``candy plugins --json`` object for this bundle."""
        data = asdict(self)
        data.pop("traceback")
        info = data.pop("info")
        data.update(summary=info.get("summary"), dimensions=info.get("dimensions"), variants=info.get("variants"))
        return data


def _split_env(name: str) -> set[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return {item.strip() for item in value.split(",") if item.strip()}


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _validate_info(info: Any) -> dict[str, Any]:
    if info is None:
        return {}
    if not isinstance(info, Mapping):
        raise TypeError(f"bundle_info() must return a dict, got {type(info).__name__}")
    unknown = set(info) - set(hookspecs.BundleInfo.__annotations__)
    if unknown:
        raise TypeError(f"bundle_info() returned unknown keys {sorted(unknown)}")
    dims = info.get("dimensions", [])
    if not all(d in (2, 3) for d in dims):
        raise TypeError(f"bundle_info()['dimensions'] must hold 2 and/or 3, got {dims!r}")
    return dict(info)


class BundleManager:
    """Owns the pluggy ``PluginManager``, the record of every bundle, and per-bundle hook calls."""

    def __init__(self, *, group: str = ENTRY_POINT_GROUP) -> None:
        self.group = group
        self.pm = pluggy.PluginManager(PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        from mipcandy import defaults

        self.pm.register(defaults, name=DEFAULTS_NAME)
        self.records: list[BundleRecord] = []
        self._loaded = False

    # ---- discovery -------------------------------------------------------------------------------------------
    def load(self) -> None:
        """Walk the entry points once; later calls do nothing."""
        if self._loaded:
            return
        self._loaded = True
        if os.environ.get("CANDY_DISABLE_PLUGIN_AUTOLOAD", "").strip() not in ("", "0"):
            return
        allow = _split_env("CANDY_PLUGINS")
        block = _split_env("CANDY_DISABLED_PLUGINS") or set()
        eps = sorted(metadata.entry_points(group=self.group), key=lambda ep: (ep.name, ep.value))
        for ep in eps:
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else None
            version = dist.version if dist is not None else None
            names = {ep.name, dist_name}
            if allow is not None and not names & allow:
                continue
            record = BundleRecord(ep.name, dist_name, version, ep.value)
            self.records.append(record)
            if names & block:
                record.status = "blocked"
                continue
            if self.pm.has_plugin(ep.name) or self.pm.is_blocked(ep.name):
                owner = self.get(ep.name)
                record.status, record.error = "error", (
                    f"bundle name {ep.name!r} is also provided by {owner.distribution if owner else 'another plugin'}; "
                    f"uninstall one of them")
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # one broken bundle must never take down the others
                record.status, record.error, record.traceback = "error", _describe(exc), traceback.format_exc()
                continue
            self._register_record(plugin, record)

    def register(self, plugin: object, name: str, *, distribution: str | None = None,
                 version: str | None = None) -> BundleRecord:
        """Register an in-process bundle (a module or object with hook implementations) under ``name``.

        Useful in notebooks and tests; the bundle is validated like an installed one.
        """
        self.load()
        record = BundleRecord(name, distribution, version, getattr(plugin, "__name__", type(plugin).__name__))
        self.records.append(record)
        if self.pm.has_plugin(name):
            record.status, record.error = "error", f"a bundle named {name!r} is already registered"
            return record
        self._register_record(plugin, record)
        return record

    def unregister(self, name: str) -> None:
        """Remove a bundle and its record (in-process registrations, tests)."""
        if self.pm.has_plugin(name):
            self.pm.unregister(name=name)
        self.records = [r for r in self.records if r.name != name]

    def _register_record(self, plugin: object, record: BundleRecord) -> None:
        try:
            self.pm.register(plugin, name=record.name)
            self.pm.check_pending()
            record.hooks = sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or [])
            record.info = _validate_info(self._subset("bundle_info", record.name)())
        except Exception as exc:
            # pluggy 1.6 leaves a plugin registered after a failed validation: always clean up.
            if self.pm.has_plugin(record.name):
                self.pm.unregister(name=record.name)
            record.status, record.error, record.traceback = "invalid", _describe(exc), traceback.format_exc()

    # ---- lookup and calls ------------------------------------------------------------------------------------
    def get(self, name: str) -> BundleRecord | None:
        """The record of the loaded (``ok``) bundle ``name``, else the first record with that name."""
        self.load()
        matches = [r for r in self.records if r.name == name]
        return next((r for r in matches if r.ok), matches[0] if matches else None)

    def require(self, name: str) -> BundleRecord:
        """The usable bundle ``name``, or a :class:`BundleError` saying why it cannot be used."""
        record = self.get(name)
        if record is None:
            available = ", ".join(r.name for r in self.records if r.ok) or "none"
            raise BundleError(f"no bundle named {name!r} is installed (available: {available}). Install it, e.g. "
                              f"`pip install candy-{name}`, or check CANDY_PLUGINS / CANDY_DISABLED_PLUGINS.")
        if record.status == "blocked":
            raise BundleError(f"bundle {name!r} is blocked by CANDY_DISABLED_PLUGINS; remove it from that list.")
        if not record.ok:
            raise BundleError(f"bundle {name!r} ({record.distribution} {record.version}) is broken: {record.error}. "
                              f"Run `candy plugins -v` for the traceback.")
        return record

    def _subset(self, hook: str, name: str) -> Any:
        others = [plugin for plugin_name, plugin in self.pm.list_name_plugin()
                  if plugin_name not in (name, DEFAULTS_NAME)]
        return self.pm.subset_hook_caller(hook, remove_plugins=others)

    def call(self, name: str, hook: str, **kwargs: Any) -> Any:
        """Call a per-bundle hook on bundle ``name`` alone, falling back to the core's default.

        :raises BundleError: when the bundle is missing or broken, or nothing answers the hook.
        """
        if hook in BROADCAST_HOOKS:
            raise ValueError(f"{hook!r} is a broadcast hook; use BundleManager.broadcast()")
        self.require(name)
        result = self._subset(hook, name)(**kwargs)
        if result is None and hook not in OPTIONAL_HOOKS:
            raise BundleError(f"bundle {name!r} does not implement {hook!r} and the core has no default for it")
        return result

    def broadcast(self, hook: str, *, strict: bool = False, **kwargs: Any) -> list[Any]:
        """Call a broadcast hook on every plugin implementing it; returns their non-``None`` results.

        Each implementation runs on its own (pluggy would stop at the first exception): a failure is reported
        as a ``BroadcastWarning`` naming the plugin, and the others still run. ``strict=True`` re-raises instead.
        """
        if hook not in BROADCAST_HOOKS:
            raise ValueError(f"{hook!r} is not a broadcast hook; use BundleManager.call() for per-bundle hooks")
        self.load()
        results = []
        for impl in reversed(getattr(self.pm.hook, hook).get_hookimpls()):
            try:
                result = impl.function(**{name: kwargs[name] for name in impl.argnames})
            except Exception as exc:
                if strict:
                    raise
                warnings.warn(f"plugin {impl.plugin_name!r} failed in {hook}: {_describe(exc)}", BroadcastWarning,
                              stacklevel=2)
                continue
            if result is not None:
                results.append(result)
        return results


_manager: BundleManager | None = None


def get_plugin_manager() -> BundleManager:
    """The process-wide :class:`BundleManager`, created and loaded lazily, once."""
    global _manager
    if _manager is None:
        _manager = BundleManager()
    _manager.load()
    return _manager


def reset_plugin_manager() -> None:
    """Forget the loaded bundles, so the next call rediscovers them (tests, changed environment)."""
    global _manager
    _manager = None


def load_bundles() -> list[BundleRecord]:
    """Discover bundles (once) and return every record, broken ones included."""
    return list(get_plugin_manager().records)


def list_bundles() -> list[BundleRecord]:
    """Alias of :func:`load_bundles`, reading better at call sites that only list."""
    return load_bundles()


def get_bundle(name: str) -> BundleRecord:
    """The usable bundle ``name``; raises :class:`BundleError` with the reason otherwise."""
    return get_plugin_manager().require(name)


def call_bundle_hook(bundle: str, hook: str, **kwargs: Any) -> Any:
    """Call ``hook`` on the selected ``bundle`` only (see :mod:`mipcandy.hookspecs`)."""
    return get_plugin_manager().call(bundle, hook, **kwargs)


def build_network(bundle: str, example_shape: Sequence[int], num_classes: int,
                  options: Mapping[str, Any] | None = None) -> Any:
    """Build ``bundle``'s network for inputs shaped ``example_shape`` (channels first, no batch axis)."""
    return call_bundle_hook(bundle, "build_network", example_shape=tuple(example_shape), num_classes=num_classes,
                            options=dict(options or {}))

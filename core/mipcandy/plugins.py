"""Plugin discovery, selection and hook dispatch, on top of pluggy.

Two kinds of plugins come through one pluggy ``PluginManager``: **bundles** (entry-point group
``mipcandy.bundles``: networks and their training recipe) and **frontends** (group ``mipcandy.frontends``:
experiment trackers). Each entry point is loaded and validated on its own: a plugin that fails to import (any
exception, ``SystemExit`` included), whose hooks do not match the specs, or whose name another distribution also
claims, is recorded with its reason and left out, and loading goes on with the others. An import that takes longer
than :data:`SLOW_IMPORT_SECONDS` is named on stderr while it runs, with the way to skip it. Nothing here imports
torch.

Dispatch lives here and nowhere else:

* per-bundle hooks (``build_network``, ``build_optimizer``...) run on the selected bundle plus the core's defaults,
  through a pluggy subset caller built once per (hook, bundle) and cached until the set of plugins changes;
* broadcast hooks (``preview``, the experiment events) run on every bundle, one plugin at a time through its own
  cached subset caller, so one failing plugin is reported and the others still run. Wrapper implementations
  (``wrapper=True``/``hookwrapper=True``) of broadcast hooks are refused at registration, because a wrapper could
  only ever see its own plugin's call;
* frontends receive the experiment events only when a run selects them (:meth:`PluginManager.deliver`).

Environment switches, read when plugins are first loaded:

* ``CANDY_PLUGINS``: comma-separated allowlist of plugin (entry-point) or distribution names. Set but empty: no
  plugin is loaded. Plugins outside the allowlist are counted as filtered, not listed.
* ``CANDY_DISABLED_PLUGINS``: comma-separated blocklist; such plugins are listed as ``blocked``.
* ``CANDY_DISABLE_PLUGIN_AUTOLOAD``: ``1``/``true``/``yes``/``on`` load no entry point at all (only plugins
  registered in process with :meth:`PluginManager.register`); ``0``/``false``/``no``/``off``/empty leave it on.
"""
from __future__ import annotations

import os
import sys
import threading
import traceback
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any, Literal

import pluggy

from mipcandy import hookspecs
from mipcandy.hookspecs import BROADCAST_HOOKS, ENTRY_POINT_GROUP, OPTIONAL_HOOKS, PER_BUNDLE_HOOKS, PROJECT_NAME

Kind = Literal["bundle", "frontend"]
Status = Literal["ok", "error", "invalid", "blocked", "conflict"]
FRONTEND_GROUP = "mipcandy.frontends"
GROUPS: dict[Kind, str] = {"bundle": ENTRY_POINT_GROUP, "frontend": FRONTEND_GROUP}
DEFAULTS_NAME = "mipcandy.defaults"
SLOW_IMPORT_SECONDS = 5.0
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


class BundleError(RuntimeError):
    """A plugin was asked for that cannot be used (missing, broken, blocked or claimed twice)."""


class BroadcastWarning(RuntimeWarning):
    """A plugin failed while handling a broadcast hook (preview, experiment events); the others went on."""


@dataclass
class PluginRecord:
    """One discovered plugin and what became of it."""

    name: str
    kind: Kind = "bundle"
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
        """The ``candy plugins --json`` object for this plugin."""
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


def autoload_enabled() -> bool:
    """Whether entry points are walked (``CANDY_DISABLE_PLUGIN_AUTOLOAD`` unset or false)."""
    value = os.environ.get("CANDY_DISABLE_PLUGIN_AUTOLOAD", "").strip().lower()
    if value in _TRUE:
        return False
    if value not in _FALSE:
        warnings.warn(f"CANDY_DISABLE_PLUGIN_AUTOLOAD={value!r} is neither true ({', '.join(_TRUE)}) nor false "
                      f"({', '.join(repr(v) for v in _FALSE)}); plugins are loaded", RuntimeWarning, stacklevel=2)
    return True


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


def _distribution(ep: metadata.EntryPoint) -> tuple[str | None, str | None]:
    dist = ep.dist
    return (dist.metadata["Name"], dist.version) if dist is not None else (None, None)


class _SlowImportNotice:
    """Names a plugin on stderr when importing it takes longer than ``seconds`` (a hang gets a clue)."""

    def __init__(self, name: str, kind: Kind, seconds: float) -> None:
        self.timer = threading.Timer(seconds, self._warn, args=(name, kind, seconds))
        self.timer.daemon = True

    @staticmethod
    def _warn(name: str, kind: Kind, seconds: float) -> None:
        print(f"candy: loading {kind} {name!r} is taking more than {seconds:.0f} s; if it hangs, skip it with "
              f"CANDY_DISABLED_PLUGINS={name}", file=sys.stderr, flush=True)

    def __enter__(self) -> None:
        self.timer.start()

    def __exit__(self, *exc: Any) -> None:
        self.timer.cancel()


class PluginManager:
    """Owns the pluggy manager, the record of every plugin, and every hook dispatch."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        from mipcandy import defaults

        self.pm.register(defaults, name=DEFAULTS_NAME)
        self.records: list[PluginRecord] = []
        self.filtered: list[str] = []  # installed plugins left out by CANDY_PLUGINS
        self.autoload = True
        self._callers: dict[tuple[str, str], Any] = {}
        self._loaded = False

    # ---- discovery -------------------------------------------------------------------------------------------
    def load(self) -> None:
        """Walk the entry points once; later calls do nothing."""
        if self._loaded:
            return
        self._loaded = True
        self.autoload = autoload_enabled()
        allow = _split_env("CANDY_PLUGINS")
        block = _split_env("CANDY_DISABLED_PLUGINS") or set()
        for kind, group in GROUPS.items():
            by_name: dict[str, list[metadata.EntryPoint]] = defaultdict(list)
            for ep in metadata.entry_points(group=group):
                by_name[ep.name].append(ep)
            for name in sorted(by_name):
                eps = sorted(by_name[name], key=lambda ep: (_distribution(ep)[0] or "", ep.value))
                dist_names = {_distribution(ep)[0] for ep in eps}
                if not self.autoload or (allow is not None and not ({name} | dist_names) & allow):
                    self.filtered.append(name)
                    continue
                if len(eps) > 1:
                    self._conflict(name, kind, eps)
                elif ({name} | dist_names) & block:
                    dist, version = _distribution(eps[0])
                    self.records.append(PluginRecord(name, kind, dist, version, eps[0].value, "blocked"))
                else:
                    self._load_entry_point(eps[0], kind)

    def _conflict(self, name: str, kind: Kind, eps: Sequence[metadata.EntryPoint]) -> None:
        owners = [f"{d or '?'} {v or ''}".strip() for d, v in map(_distribution, eps)]
        error = (f"{len(eps)} distributions claim the {kind} name {name!r} ({', '.join(owners)}); neither is used. "
                 f"Uninstall all but one")
        for ep in eps:
            dist, version = _distribution(ep)
            self.records.append(PluginRecord(name, kind, dist, version, ep.value, "conflict", error))

    def _load_entry_point(self, ep: metadata.EntryPoint, kind: Kind) -> None:
        dist, version = _distribution(ep)
        record = PluginRecord(ep.name, kind, dist, version, ep.value)
        self.records.append(record)
        try:
            with _SlowImportNotice(ep.name, kind, SLOW_IMPORT_SECONDS):
                plugin = ep.load()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit too: one plugin's import must never end the command
            record.status, record.error, record.traceback = "error", _describe(exc), traceback.format_exc()
            return
        self._register_record(plugin, record)

    def register(self, plugin: object, name: str, *, kind: Kind = "bundle", distribution: str | None = None,
                 version: str | None = None) -> PluginRecord:
        """Register an in-process plugin (a module or object with hook implementations) under ``name``.

        Useful in notebooks and tests; the plugin is validated like an installed one.
        """
        self.load()
        module = plugin.__name__ if isinstance(plugin, type(sys)) else type(plugin).__name__
        record = PluginRecord(name, kind, distribution, version, module)
        self.records.append(record)
        if self.pm.has_plugin(name):
            record.status, record.error = "error", f"a plugin named {name!r} is already registered"
            return record
        self._register_record(plugin, record)
        return record

    def unregister(self, name: str) -> None:
        """Remove a plugin and its record (in-process registrations, tests)."""
        if self.pm.has_plugin(name):
            self.pm.unregister(name=name)
            self._callers.clear()
        self.records = [r for r in self.records if r.name != name]

    def _register_record(self, plugin: object, record: PluginRecord) -> None:
        try:
            self.pm.register(plugin, name=record.name)
            self._callers.clear()
            self.pm.check_pending()
            callers = self.pm.get_hookcallers(plugin) or []
            record.hooks = sorted(caller.name for caller in callers)
            _refuse_broadcast_wrappers(callers, record.name)
            if record.kind == "frontend":
                _check_frontend_hooks(record.hooks, record.name)
            else:
                record.info = _validate_info(self._caller("bundle_info", record.name)())
        except Exception as exc:
            # pluggy 1.6 leaves a plugin registered after a failed validation: always clean up.
            if self.pm.has_plugin(record.name):
                self.pm.unregister(name=record.name)
                self._callers.clear()
            record.status, record.error, record.traceback = "invalid", _describe(exc), traceback.format_exc()

    # ---- lookup ----------------------------------------------------------------------------------------------
    def get(self, name: str, kind: Kind = "bundle") -> PluginRecord | None:
        """The record of the loaded (``ok``) plugin ``name``, else the first record with that name."""
        self.load()
        matches = [r for r in self.records if r.name == name and r.kind == kind]
        return next((r for r in matches if r.ok), matches[0] if matches else None)

    def require(self, name: str, kind: Kind = "bundle") -> PluginRecord:
        """The usable plugin ``name``, or a :class:`BundleError` saying why it cannot be used."""
        record = self.get(name, kind)
        if record is None:
            available = ", ".join(r.name for r in self.records if r.ok and r.kind == kind) or "none"
            hint = f"`pip install candy-{name}`" if kind == "bundle" else "install the frontend's package"
            raise BundleError(f"no {kind} named {name!r} is installed (available: {available}). Install it, e.g. "
                              f"{hint}, or check CANDY_PLUGINS / CANDY_DISABLED_PLUGINS.")
        if record.status == "blocked":
            raise BundleError(f"{kind} {name!r} is blocked by CANDY_DISABLED_PLUGINS; remove it from that list.")
        if not record.ok:
            owner = " ".join(filter(None, (record.distribution, record.version)))
            source = f" ({owner})" if owner else ""
            state = "is claimed twice" if record.status == "conflict" else "is broken"
            raise BundleError(f"{kind} {name!r}{source} {state}: {record.error}. Run `candy plugins -v` for details.")
        return record

    # ---- dispatch --------------------------------------------------------------------------------------------
    def _caller(self, hook: str, name: str) -> Any:
        """The pluggy caller of ``hook`` restricted to plugin ``name`` and the core's defaults (cached)."""
        key = (hook, name)
        caller = self._callers.get(key)
        if caller is None:
            others = [plugin for plugin_name, plugin in self.pm.list_name_plugin()
                      if plugin_name not in (name, DEFAULTS_NAME)]
            caller = self._callers[key] = self.pm.subset_hook_caller(hook, remove_plugins=others)
        return caller

    def call(self, name: str, hook: str, **kwargs: Any) -> Any:
        """Call a per-bundle hook on bundle ``name`` alone, falling back to the core's default.

        :raises BundleError: when the bundle is missing or broken, or nothing answers the hook.
        """
        if hook not in PER_BUNDLE_HOOKS:
            raise ValueError(f"{hook!r} is not a per-bundle hook ({', '.join(PER_BUNDLE_HOOKS)}); broadcast hooks "
                             "go through PluginManager.broadcast()")
        self.require(name)
        result = self._caller(hook, name)(**kwargs)
        if result is None and hook not in OPTIONAL_HOOKS:
            raise BundleError(f"bundle {name!r} does not implement {hook!r} and the core has no default for it")
        return result

    def broadcast(self, hook: str, *, strict: bool = False, **kwargs: Any) -> list[Any]:
        """Call a broadcast hook on every bundle implementing it; returns their non-``None`` results.

        Each plugin runs on its own: a failure is reported as a ``BroadcastWarning`` naming the plugin, and the
        others still run. ``strict=True`` re-raises instead. Frontends are not called: see :meth:`deliver`.
        """
        if hook not in BROADCAST_HOOKS:
            raise ValueError(f"{hook!r} is not a broadcast hook; use PluginManager.call() for per-bundle hooks")
        self.load()
        bundles = {r.name for r in self.records if r.ok and r.kind == "bundle"}
        results = []
        for impl in reversed(getattr(self.pm.hook, hook).get_hookimpls()):
            if impl.plugin_name not in bundles:
                continue
            try:
                result = self._caller(hook, impl.plugin_name)(**kwargs)
            except Exception as exc:
                if strict:
                    raise
                warnings.warn(f"plugin {impl.plugin_name!r} failed in {hook}: {_describe(exc)}", BroadcastWarning,
                              stacklevel=2)
                continue
            results.extend(result)
        return results

    def deliver(self, frontend: str, hook: str, **kwargs: Any) -> None:
        """Call experiment event ``hook`` on one selected frontend (exceptions propagate to the caller)."""
        if hook not in hookspecs.EVENT_HOOKS:
            raise ValueError(f"{hook!r} is not an experiment event ({', '.join(hookspecs.EVENT_HOOKS)})")
        self.require(frontend, "frontend")
        self._caller(hook, frontend)(**kwargs)


def _refuse_broadcast_wrappers(callers: Sequence[Any], name: str) -> None:
    for caller in callers:
        if caller.name in BROADCAST_HOOKS:
            for impl in caller.get_hookimpls():
                if impl.plugin_name == name and (impl.wrapper or impl.hookwrapper):
                    raise TypeError(f"{caller.name} is a broadcast hook: each plugin is called on its own, so a "
                                    f"wrapper implementation would never wrap the others; implement it as a plain "
                                    f"hook")


def _check_frontend_hooks(hooks: Sequence[str], name: str) -> None:
    extra = sorted(set(hooks) - set(hookspecs.EVENT_HOOKS))
    if extra:
        raise TypeError(f"frontend {name!r} implements {extra}; a frontend implements only the experiment events "
                        f"({', '.join(hookspecs.EVENT_HOOKS)})")
    if not hooks:
        raise TypeError(f"frontend {name!r} implements none of the experiment events")


_manager: PluginManager | None = None


def get_plugin_manager() -> PluginManager:
    """The process-wide :class:`PluginManager`, created and loaded lazily, once."""
    global _manager
    if _manager is None:
        _manager = PluginManager()
    _manager.load()
    return _manager


def reset_plugin_manager() -> None:
    """Forget the loaded plugins, so the next call rediscovers them (tests, changed environment)."""
    global _manager
    _manager = None


def load_bundles() -> list[PluginRecord]:
    """Discover plugins (once) and return every record, broken ones and frontends included."""
    return list(get_plugin_manager().records)


def get_bundle(name: str) -> PluginRecord:
    """The usable bundle ``name``; raises :class:`BundleError` with the reason otherwise."""
    return get_plugin_manager().require(name)


def build_network(bundle: str, example_shape: Sequence[int], num_classes: int,
                  options: Mapping[str, Any] | None = None) -> Any:
    """Build ``bundle``'s network for inputs shaped ``example_shape`` (channels first, no batch axis)."""
    return get_plugin_manager().call(bundle, "build_network", example_shape=tuple(example_shape),
                                     num_classes=num_classes, options=dict(options or {}))

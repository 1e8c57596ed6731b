"""Child process of `doctor cache verify`: import compiled-cache modules one by one and report each.

Run as `python _verify_child.py CONFIG_JSON` under the interpreter being checked, where the doctor may not be
installed: stdlib only, and the event channel's child side (doctor/_util/events.py) is loaded by its path.
Events: {"event": "preload-start"/"preload-done", ...} around the preload, {"event": "start", "i": n} before
module n and {"event": "done", "i": n, "status": ...} after it, so the parent can pin a hang or a crash on the
module that was running. The modules' own prints go to the log. Bytecode is never written into the cache.
"""

import importlib
import importlib.util
import json
import os
import sys
import traceback

FROZEN = "<frozen "  # importlib's own frames, between an import statement and the module it runs


def _open_channel():  # type: ignore[no-untyped-def]
    """doctor._util.events.open_channel(), loaded from the file next to this package (not from sys.path)."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_util", "events.py")
    spec = importlib.util.spec_from_file_location("_tune_doctor_events", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.open_channel()


def _not_installed(exc, root):  # type: ignore[no-untyped-def]
    """The top-level package a ModuleNotFoundError names, when nothing provides it here (else None)."""
    name = getattr(exc, "name", None) or ""
    top = name.split(".", 1)[0]
    if not top or os.path.exists(os.path.join(root, top + ".py")) or os.path.isdir(os.path.join(root, top)):
        return None
    try:
        found = importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        found = False
    return None if found else top


def _importer(exc):  # type: ignore[no-untyped-def]
    """The file whose import statement failed: the deepest frame that is not importlib's own."""
    for fr in reversed(traceback.extract_tb(exc.__traceback__)):
        if not fr.filename.startswith(FROZEN):
            return fr.filename
    return ""


def _inside(path, root):  # type: ignore[no-untyped-def]
    """Whether path is a file of the cache root."""
    try:
        return os.path.commonpath([os.path.abspath(path), os.path.abspath(root)]) == os.path.abspath(root)
    except ValueError:
        return False


def _where(exc, path):  # type: ignore[no-untyped-def]
    """'file:line' of the deepest frame inside the module being checked, if any."""
    tb = traceback.extract_tb(exc.__traceback__)
    for fr in reversed(tb):
        if fr.filename == path:
            return f"{os.path.basename(path)}:{fr.lineno}"
    return ""


def _module_not_found(exc, path, root, stack):  # type: ignore[no-untyped-def]
    """A missing stack package, or a package's missing dependency, is the environment's fault: unverified.
    A compiled module importing what nothing here provides is broken (unsloth regenerates it)."""
    dep = _not_installed(exc, root)
    if dep and (dep in stack or not _inside(_importer(exc), root)):
        return {"status": "missing-dependency", "dependency": dep,
                "error": f"ModuleNotFoundError: {exc} (not installed here: install {dep} to check this module)"}
    if dep:
        return {"status": "import-error", "where": _where(exc, path),
                "error": f"ModuleNotFoundError: {exc} (no installed package provides it, and it is not part of the "
                         "training stack: the module does not match this environment)"}
    return {"status": "import-error", "error": f"ModuleNotFoundError: {exc}", "where": _where(exc, path)}


def check(name, path, root, stack=()):  # type: ignore[no-untyped-def]
    """Compile, then import through a spec; a dict describing the outcome."""
    try:
        with open(path, "rb") as fh:
            source = fh.read()
    except OSError as exc:
        return {"status": "unreadable", "error": f"{type(exc).__name__}: {exc}"}
    try:
        compile(source, path, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:  # ValueError: source with NUL bytes
        line = getattr(exc, "lineno", None)
        return {"status": "syntax-error", "error": f"{type(exc).__name__}: {getattr(exc, 'msg', exc)}",
                "where": f"{os.path.basename(path)}:{line}" if line else ""}
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        return {"status": "import-error", "error": "no import spec for this file"}
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except ModuleNotFoundError as exc:
        return _module_not_found(exc, path, root, stack)
    except ImportError as exc:
        return {"status": "import-error", "error": f"ImportError: {exc}", "where": _where(exc, path)}
    except BaseException as exc:  # NameError from a truncated file, SystemExit, anything the module raises
        return {"status": "exec-error", "error": f"{type(exc).__name__}: {exc}"[:500], "where": _where(exc, path)}
    # unsloth's compiled trainer modules define a class named like the file (UnslothSFTTrainer.py ->
    # UnslothSFTTrainer); a file cut at a statement boundary still compiles but lacks it.
    if name.startswith("Unsloth") and name.endswith("Trainer") and not hasattr(module, name):
        return {"status": "incomplete", "error": f"imports, but does not define {name} (truncated?)"}
    return {"status": "ok"}


def main():  # type: ignore[no-untyped-def]
    if sys.path and sys.path[0] == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]  # never let this script's directory shadow anything
    sys.dont_write_bytecode = True
    channel = _open_channel()  # from here on the modules' prints go to the log, not into the protocol
    cfg = json.loads(sys.argv[1])
    root = cfg["root"]
    stack = frozenset(cfg.get("stack", ()))
    sys.path.insert(0, root)  # as unsloth_zoo does before importing from its cache
    for mod in cfg.get("preload", []):
        channel.emit(event="preload-start", name=mod)
        try:
            importlib.import_module(mod)
        except BaseException as exc:
            channel.emit(event="preload-done", name=mod, ok=False, error=f"{type(exc).__name__}: {exc}"[:500])
            return 0
        channel.emit(event="preload-done", name=mod, ok=True)
    for i, (name, path) in enumerate(cfg["modules"]):
        channel.emit(event="start", i=i)
        result = check(name, path, root, stack)
        channel.emit(event="done", i=i, **result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Child process of `doctor cache verify`: import compiled-cache modules one by one and report each.

Run as `python _verify_child.py CONFIG_JSON` (stdlib only; it never imports the doctor). Protocol: one JSON
object per line on the ORIGINAL stdout, flushed: {"event": "start", "i": n} before module n and
{"event": "done", "i": n, "status": ...} after it, so the parent can pin a hang or a crash on the module
that was running. The modules' own prints go to stderr. Bytecode is never written into the cache.
"""

import importlib
import importlib.util
import json
import os
import sys
import traceback


def _emit(out, **event):  # type: ignore[no-untyped-def]
    out.write(json.dumps(event) + "\n")
    out.flush()


def _missing_dependency(exc, root):  # type: ignore[no-untyped-def]
    """The top-level package a ModuleNotFoundError names, when it is not installed at all (else None)."""
    name = getattr(exc, "name", None) or ""
    top = name.split(".", 1)[0]
    if not top or os.path.exists(os.path.join(root, top + ".py")) or os.path.isdir(os.path.join(root, top)):
        return None
    try:
        found = importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        found = False
    return None if found else top


def _where(exc, path):  # type: ignore[no-untyped-def]
    """'file:line' of the deepest frame inside the module being checked, if any."""
    tb = traceback.extract_tb(exc.__traceback__)
    for fr in reversed(tb):
        if fr.filename == path:
            return f"{os.path.basename(path)}:{fr.lineno}"
    return ""


def check(name, path, root):  # type: ignore[no-untyped-def]
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
        dep = _missing_dependency(exc, root)
        if dep:
            return {"status": "missing-dependency", "error": f"ModuleNotFoundError: {exc}", "dependency": dep}
        return {"status": "import-error", "error": f"ModuleNotFoundError: {exc}", "where": _where(exc, path)}
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
    out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)  # the modules' prints go to stderr, not into the protocol
    sys.stdout = sys.stderr
    sys.dont_write_bytecode = True
    cfg = json.loads(sys.argv[1])
    root = cfg["root"]
    sys.path.insert(0, root)  # as unsloth_zoo does before importing from its cache
    for mod in cfg.get("preload", []):
        _emit(out, event="preload-start", name=mod)
        try:
            importlib.import_module(mod)
        except BaseException as exc:
            _emit(out, event="preload-done", name=mod, ok=False, error=f"{type(exc).__name__}: {exc}"[:500])
            return 0
        _emit(out, event="preload-done", name=mod, ok=True)
    for i, (name, path) in enumerate(cfg["modules"]):
        _emit(out, event="start", i=i)
        result = check(name, path, root)
        _emit(out, event="done", i=i, **result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

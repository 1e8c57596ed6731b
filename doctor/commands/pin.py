"""`doctor pin`: known-good pins for the installed torch, and the pre-install hook that keeps them in force."""

from __future__ import annotations

import argparse
import json
import os
import sys

from doctor.commands import add_common
from doctor.errors import DoctorError
from doctor.exits import ExitCode, epilog

EXIT_CODES = epilog((ExitCode.HEALTHY, ExitCode.WARNINGS, ExitCode.BAD_INPUT, ExitCode.INTERNAL, ExitCode.INTERRUPTED),
                    notes=("1: a package asked for with --for has no release that fits (alternatives are listed), "
                           "or the hook is installed but not in force",
                           "3 also: a file the hook must write cannot be written (nothing was changed)"))

FORMATS = ("constraints", "requirements", "json")


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register `doctor pin` and its options."""
    p = sub.add_parser("pin", help="known-good pins that keep the installed torch; --hook keeps them in force for pip/uv",
                       description="Known-good pins for the installed torch build and the packages coupled to it, "
                                   "each with its reason and source (offline: installed files + the embedded matrix). "
                                   "--hook puts them in force for every later pip install in the environment "
                                   "(its site pip.conf); it does not stop `pip uninstall`.",
                       epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--for", dest="only", nargs="+", default=[], metavar="PKG",
                   help="only these packages (torch's own pin always comes along: the others are only good with it)")
    p.add_argument("--torch", default=None, metavar="VER", help="pin for this torch release instead of the installed one")
    p.add_argument("--cuda", default=None, metavar="VER",
                   help="that torch's CUDA family (12.8, cu128, cpu); its builds come from that family's PyTorch index")
    p.add_argument("--format", choices=FORMATS, default="constraints",
                   help="constraints (default; pip -c / uv -c), requirements (pip -r) or json")
    p.add_argument("-o", "--output", default=None, metavar="FILE", help="write the pins to FILE (atomically) instead of stdout")
    p.add_argument("--python", default=None, metavar="PATH",
                   help="the environment of another interpreter (a python executable or a venv directory)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--hook", action="store_true",
                      help="put the pins in force: [install] constraint (and build-constraint on pip >= 26.2) in the "
                           "environment's site pip.conf, backed up first")
    mode.add_argument("--unhook", action="store_true", help="remove the hook: pip.conf back byte for byte")
    mode.add_argument("--status", action="store_true", help="what pip and uv apply in the environment, and why")
    p.add_argument("--shell", action="store_true",
                   help="with --hook: also export UV_CONSTRAINT / UV_BUILD_CONSTRAINT from the venv's bin/activate "
                        "(uv never reads pip.conf); --unhook restores it")
    p.add_argument("--service", default=None, metavar="URL",
                   help="take the pins from this resolution service (default $DOCTOR_SERVICE_URL); on any failure the "
                        "local matrix answers, and one line says so")
    add_common(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Compute the pins; print or write them, or install / remove / report the hook."""
    _validate(args)
    from doctor.compat_matrix.loader import load_matrix
    from doctor.resolve.pins import known_good_pins, pin_facts

    facts = pin_facts(args.python)
    if args.unhook or args.status:
        return _unhook_or_status(args, facts)
    ps = _from_service(args, facts)
    if ps is None:
        ps = known_good_pins(facts, load_matrix(), only=args.only, torch=args.torch, cuda=args.cuda)
    if args.hook:
        return _hook(args, ps)
    from doctor.report.pins import pins_file, pins_text

    text = pins_file(ps, args.format)
    code = ExitCode.WARNINGS if ps.unfit else ExitCode.HEALTHY
    if args.output is None:
        sys.stdout.write(text)
        return code
    _write(args.output, text)
    if args.format != "json":
        print("\n".join(pins_text(ps)))
    print(f"wrote {len(ps.pins)} pins to {args.output} (use: pip install -c {args.output} ...)")
    return code


def _from_service(args: argparse.Namespace, facts):  # type: ignore[no-untyped-def]
    """The service's pins for `facts` (validated and re-parsed), or None: no service, or it failed (one line says so)."""
    from doctor.envvars import DOCTOR_SERVICE_URL

    if args.service is None and not os.environ.get(DOCTOR_SERVICE_URL, "").strip():
        return None
    from doctor.resolve.pins import parse_names
    from doctor.service.client import ServiceError, ask, fallback_line, pin_set, service_token, service_url

    url = service_url(args.service)
    if url is None:
        return None
    only = parse_names(args.only)  # bad --for is bad input whoever answers
    try:
        answer = ask(url, facts, packages=only, torch=args.torch, cuda=args.cuda, token=service_token(), plan=False)
    except ServiceError as exc:
        print(fallback_line(url, exc), file=sys.stderr)
        return None
    return pin_set(answer, facts, only)


def _validate(args: argparse.Namespace) -> None:
    """Options that make no sense together are bad input (exit 3), before any work."""
    if args.shell and not args.hook:
        raise DoctorError("--shell only applies with --hook (--unhook undoes it by itself)")
    if (args.unhook or args.status) and (args.only or args.torch or args.cuda or args.output):
        raise DoctorError(f"--{'unhook' if args.unhook else 'status'} takes no --for/--torch/--cuda/-o")
    if args.hook and args.output:
        raise DoctorError("--hook keeps its own constraints file in the environment; -o does not apply")
    if args.hook and args.format == "requirements":
        raise DoctorError("--hook writes constraints; --format requirements does not apply")
    if args.service is not None:
        if args.unhook or args.status:
            raise DoctorError(f"--service does not apply with --{'unhook' if args.unhook else 'status'}")
        from doctor.service.client import service_url

        service_url(args.service)


def _hook(args: argparse.Namespace, ps) -> int:  # type: ignore[no-untyped-def]
    """Install (or update) the hook for the target environment and say what is in force."""
    from doctor.report.pins import hook_document, hook_text, pins_text
    from doctor.resolve.hook import install_hook

    result = install_hook(ps, shell=args.shell)
    if args.format == "json":
        sys.stdout.write(json.dumps(hook_document(result), indent=2) + "\n")
    else:
        print("\n".join(pins_text(ps) + [""] + hook_text(result)))
    return ExitCode.HEALTHY if result.in_force and not ps.unfit else ExitCode.WARNINGS


def _unhook_or_status(args: argparse.Namespace, facts) -> int:  # type: ignore[no-untyped-def]
    """--unhook / --status for the target environment."""
    from doctor.report.pins import hook_document, hook_text, status_document, status_text
    from doctor.resolve.hook import hook_status, remove_hook

    prefix, pip = facts.python.prefix, facts.version_of("pip")
    if args.unhook:
        result = remove_hook(prefix, pip_version=pip)
        if args.format == "json":
            sys.stdout.write(json.dumps(hook_document(result), indent=2) + "\n")
        else:
            print("\n".join(hook_text(result)))
        return ExitCode.HEALTHY
    st = hook_status(prefix, pip_version=pip, torch=facts.version_of("torch"))
    if args.format == "json":
        sys.stdout.write(json.dumps(status_document(st), indent=2) + "\n")
    else:
        print("\n".join(status_text(st)))
    return ExitCode.WARNINGS if st.problems else ExitCode.HEALTHY


def _write(path: str, text: str) -> None:
    """Write the file atomically (temp + os.replace in its directory); DoctorError with one line, nothing half-written."""
    from doctor.resolve.atomic_files import write_all  # lazy, as above: the parser is built without resolve

    target = os.path.abspath(path)
    if os.path.isdir(target):
        raise DoctorError(f"-o {path}: is a directory")
    try:
        write_all({target: text.encode("utf-8")}, modes={target: 0o644})
    except DoctorError as exc:
        raise DoctorError(f"-o {path}: {exc}") from None

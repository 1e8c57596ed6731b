"""Which GPUs a CUDA process sees (CUDA_VISIBLE_DEVICES read as CUDA reads it), and how a probe child is shown one.

CUDA's rules, as the CUDA C Programming Guide ("CUDA Environment Variables") states them and torch.cuda
re-implements them (`_parse_visible_devices`, `_transform_uuid_to_ordinals`), which is what is followed here:

- unset: every GPU; set but empty (or blank): none.
- a comma list; an entry is a device index, read as C's strtoul reads it (`1x` is 1), or a UUID `GPU-...`,
  any prefix of one that names a single GPU. The first entry that names no GPU (not a number, an index
  past the last GPU, a UUID prefix that matches none or several) ends the list: only the GPUs before it
  are visible.
- a GPU named twice: CUDA shows none at all.
- MIG instances (`MIG-...`) are not whole GPUs and are not probed here: `Visible.problem` says so.

Indices count in CUDA's order. That is nvidia-smi's order (PCI bus) under CUDA_DEVICE_ORDER=PCI_BUS_ID, and
in practice when every GPU is the same model (CUDA's default, FASTEST_FIRST, breaks ties by PCI bus); on a node
of mixed models without it, the indices are read in PCI order and a note says that CUDA's may differ.

A probe child gets CUDA_VISIBLE_DEVICES set to its GPU's UUID when the UUID is known (unambiguous whatever the
order), else to its nvidia-smi index with CUDA_DEVICE_ORDER=PCI_BUS_ID (which makes that index mean the same GPU).
Nothing here raises on what the variable holds: user input becomes notes or a problem.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from doctor._util.regex import lazy
from doctor.envvars import CUDA_DEVICE_ORDER, CUDA_VISIBLE_DEVICES
from doctor.facts import GPU

PCI_BUS_ID = "PCI_BUS_ID"  # the CUDA_DEVICE_ORDER value that makes CUDA's indices nvidia-smi's
_LEADING_NUMBER = lazy(r"\+?([0-9]+)")  # strtoul's reading: digits at the start, the rest ignored


class Visible(NamedTuple):
    """The GPUs a CUDA process would see, and what was noticed reading CUDA_VISIBLE_DEVICES."""

    gpus: Tuple[GPU, ...]  # in CUDA's order (cuda:0 first)
    notes: Tuple[str, ...] = ()  # entries dropped and why, order caveats: shown with the results
    problem: str = ""  # why the visible set cannot be worked out here (MIG, UUIDs unknown); the caller refuses


def visible_gpus(gpus: Sequence[GPU], environ: Mapping[str, str]) -> Visible:
    """The GPUs among `gpus` (the driver's list, every physical GPU) that CUDA_VISIBLE_DEVICES leaves visible."""
    ordered = tuple(sorted(gpus, key=lambda g: g.index))
    value = environ.get(CUDA_VISIBLE_DEVICES)
    if value is None:
        return Visible(ordered)
    var = f"{CUDA_VISIBLE_DEVICES}={value!r}"
    if not value.strip():
        return Visible((), (f"{var}: CUDA shows no GPU",))
    entries = [e.strip() for e in value.split(",")]
    if any(e.startswith("MIG-") for e in entries):
        return Visible((), (), f"{var} names MIG instances: they are not whole GPUs, and probing each is not supported "
                               "here (run `doctor probe` with CUDA_VISIBLE_DEVICES set to one MIG instance)")
    if any(e.startswith("GPU-") for e in entries) and not any(g.uuid for g in ordered):
        return Visible((), (), f"{var} names GPUs by UUID, but the GPUs' UUIDs are unknown here (the GPU detection "
                               "found none): name them by index instead")
    picked: List[GPU] = []
    notes: List[str] = []
    for pos, entry in enumerate(entries):
        gpu, why = _entry(entry, ordered)
        if gpu is None:
            rest = ",".join(entries[pos:])
            notes.append(f"{var}: entry {entry!r} {why}, so CUDA stops reading there and {rest!r} is ignored"
                         + ("" if picked else " (no GPU is visible)"))
            break
        if gpu in picked:
            return Visible((), (f"{var}: GPU {gpu.index} is named twice, and then CUDA shows no GPU",))
        picked.append(gpu)
    if (any(not e.startswith("GPU-") for e in entries) and environ.get(CUDA_DEVICE_ORDER) != PCI_BUS_ID
            and len({(g.name, g.compute_capability) for g in ordered}) > 1):
        notes.append(f"{var} counts GPUs in CUDA's order, read here as nvidia-smi's (PCI bus); on a node of mixed "
                     f"models CUDA's default order may differ: set {CUDA_DEVICE_ORDER}={PCI_BUS_ID} or name GPUs by UUID")
    return Visible(tuple(picked), tuple(notes))


def _entry(entry: str, ordered: Sequence[GPU]) -> Tuple[Optional[GPU], str]:
    """The GPU one entry names, or (None, why it names none)."""
    if entry.startswith("GPU-"):
        matches = [g for g in ordered if g.uuid and g.uuid.startswith(entry)]
        if len(matches) == 1:
            return matches[0], ""
        return None, ("matches no GPU's UUID" if not matches
                      else f"is ambiguous (the UUIDs of GPUs {', '.join(str(g.index) for g in matches)} start so)")
    m = _LEADING_NUMBER.match(entry)
    if m is None:
        return None, "is not a GPU index or UUID"
    position = int(m.group(1))
    if position >= len(ordered):
        return None, f"is past the last GPU ({len(ordered)} found)"
    return ordered[position], ""


def device_env(gpu: GPU) -> Dict[str, str]:
    """The variables that show a child exactly this GPU: its UUID, else its index in PCI bus order."""
    if gpu.uuid:
        return {CUDA_VISIBLE_DEVICES: gpu.uuid}
    return {CUDA_VISIBLE_DEVICES: str(gpu.index), CUDA_DEVICE_ORDER: PCI_BUS_ID}


def gpu_label(gpu: GPU) -> str:
    """'GPU 1 (GPU-8932f937-...)': how verdicts and findings name a GPU (index as nvidia-smi counts, and UUID)."""
    return f"GPU {gpu.index}" + (f" ({gpu.uuid})" if gpu.uuid else " (UUID unknown)")


def gpu_choice_problem(gpus: Sequence[GPU], environ: Mapping[str, str], index: int) -> str:
    """Why the GPU of nvidia-smi index `index` cannot be probed alone ('' when it can): no such GPU, or one that
    CUDA_VISIBLE_DEVICES hides (the user narrowed the GPUs on purpose; probing another would go around that)."""
    if not gpus:
        return ""  # nothing detected to check against: the probes themselves will say what they find
    if index not in {g.index for g in gpus}:
        return f"no such GPU (found {', '.join(str(g.index) for g in sorted(gpus, key=lambda g: g.index))})"
    visible = visible_gpus(gpus, environ)
    if visible.problem:
        return visible.problem
    if index not in {g.index for g in visible.gpus}:
        shown = ", ".join(str(g.index) for g in visible.gpus) or "none"
        return (f"GPU {index} is not visible: {CUDA_VISIBLE_DEVICES}={environ.get(CUDA_VISIBLE_DEVICES)!r} shows GPU(s) "
                f"{shown} (nvidia-smi's indices); unset it to probe any GPU")
    return ""

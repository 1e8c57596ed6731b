"""The distributed probe: all-reduce / all-gather correctness and bus bandwidth through torch.distributed.

NCCL over one process per GPU, gloo over CPU processes: the same code path (worker.py). launcher.py
starts the ranks on this machine as isolated children; `torchrun ... -m doctor.probes.distributed`
runs the same worker across nodes (__main__.py); verdicts.py turns what each rank reported, or how
it hung or died, into ProbeResults naming the rank.
"""

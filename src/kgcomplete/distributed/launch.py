"""Starting BESS workers: ``N`` local processes (``kgc train --workers N``) or ``torchrun``.

- Local: :func:`train_distributed` creates the run folder and the sharding, then starts
  ``workers`` processes with ``torch.multiprocessing`` (spawn) that meet at
  ``tcp://master_addr:master_port`` (a free port by default). ``workers: 1`` runs the same code
  path in this process, without a process group.
- torchrun (one or many nodes): ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` are set, so
  every process calls :func:`train_distributed` itself and joins with ``env://``::

      torchrun --nproc-per-node 2 -m kgcomplete train -d umls -m distmult --epochs 20
      torchrun --nnodes 2 --node-rank R --master-addr HOST --nproc-per-node 4 -m kgcomplete train ...

Backend ``auto``: NCCL when the workers use CUDA devices, gloo otherwise.
"""

from __future__ import annotations

import logging
import os
import platform
import signal
import socket
import sys
import threading
import time
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ..config import Config
from ..data.dataset import Dataset
from ..device import resolve_device
from ..runs.files import RunFolder, verify_all
from .checkpoint import init_shard_model, recover_shards, restore_worker, save_worker
from .exchange import Comm
from .section import DistConfig
from .sharding import Sharding
from .trainer import PHASES, BessTrainer

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def pick_device(dcfg: DistConfig, local_rank: int) -> torch.device:
    """The worker's device: the CPU, or GPU ``local_rank`` (modulo the GPUs there are) when
    ``distributed.device`` (or ``training.device``/``--device``) asks for CUDA or is auto and a GPU is there."""
    if dcfg.device == "cpu" or (dcfg.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    resolve_device(dcfg.device)  # a CUDA device that is not there: a one-line error
    return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))


def pick_backend(dcfg: DistConfig, device: torch.device) -> str:
    if dcfg.backend != "auto":
        return dcfg.backend
    return "nccl" if device.type == "cuda" else "gloo"


def init_group(backend: str, rank: int, world: int, addr: Optional[str], port: Optional[int],
               timeout_s: float, device: Optional[torch.device] = None) -> None:
    """Join the process group (``env://`` when ``addr`` is None, as under torchrun)."""
    init = "env://" if addr is None else f"tcp://{addr}:{port}"
    kw = {}
    if device is not None and device.type == "cuda":
        torch.cuda.set_device(device)
        kw["device_id"] = device
    dist.init_process_group(backend, init_method=init, rank=rank, world_size=world,
                            timeout=timedelta(seconds=timeout_s), **kw)


def spawn(fn: Callable, nprocs: int, args: tuple = (), timeout_s: Optional[float] = None,
          start_method: str = "spawn") -> None:
    """Run ``fn(rank, *args)`` in ``nprocs`` new processes; raise if any fails or the deadline
    passes (stragglers are terminated, so a hung collective cannot block the caller).

    ``start_method="fork"`` starts faster (no re-import); the child then runs single-threaded
    until ``fn`` sets its own thread count (forked OpenMP pools are not safe to reuse)."""
    ctx = mp.get_context(start_method)
    parent = os.getpid() if start_method in ("fork", "spawn") else None  # forkserver: not our child
    procs = [ctx.Process(target=_guard, args=(fn, r, args, parent), daemon=False) for r in range(nprocs)]
    for p in procs:
        p.start()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    failed = None
    try:
        while any(p.is_alive() for p in procs):
            for r, p in enumerate(procs):
                p.join(0.05)
                if not p.is_alive() and p.exitcode != 0 and failed is None:
                    failed = f"worker {r} exited with code {p.exitcode}"
            if failed or (deadline is not None and time.monotonic() > deadline):
                break
        if failed is None:
            for r, p in enumerate(procs):
                if p.exitcode not in (0, None):
                    failed = f"worker {r} exited with code {p.exitcode}"
        if failed is None and any(p.is_alive() for p in procs):
            failed = f"workers still running after {timeout_s}s"
    finally:
        stopped = {r for r, p in enumerate(procs) if p.is_alive()}  # stopped by us, not failed on their own
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(5)
                if p.is_alive():
                    p.kill()
                    p.join()
    if failed:
        if not failed.startswith("workers still running"):  # every worker's end, a killed one first
            ends = sorted(((r, p.exitcode) for r, p in enumerate(procs) if p.exitcode not in (0, None)
                           and r not in stopped), key=lambda rc: (rc[1] >= 0, rc[0]))
            failed = "; ".join(_ending(r, code) for r, code in ends) or failed
        raise WorkerFailed(f"distributed run failed: {failed} (the others were stopped; see the output above); "
                           f"the last checkpoint is kept: resume with --resume")


def _ending(rank: int, code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"worker {rank} was killed by {name}"
    return f"worker {rank} exited with code {code}"


class WorkerFailed(ChildProcessError, RuntimeError):
    """A worker process of a local launch died or failed; the launcher stopped the others."""


def _die_with_parent(parent: int) -> None:
    """End this worker when the launcher ``parent`` dies, even by SIGKILL (no clean-up runs there):
    an orphaned worker would go on training and writing into the run folder, racing a resume.
    Linux: the kernel sends SIGKILL (``PR_SET_PDEATHSIG``); elsewhere a thread polls the parent."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            if ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0) == 0:  # PR_SET_PDEATHSIG
                if os.getppid() != parent:  # it died before the call
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="kgc-parent-watch", daemon=True).start()


#: what a collective raises in a worker whose peer died (gloo / NCCL)
_PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL communicator was aborted")


def _guard(fn, rank, args, parent=None):
    if parent is not None:
        _die_with_parent(parent)
    torch.set_num_threads(1)
    try:
        fn(rank, *args)
    except Exception as e:
        if any(m in str(e) for m in _PEER_GONE):  # another worker died: that one's end is the news
            print(f"worker {rank}: stopping, a peer worker is gone ({str(e).splitlines()[0][:160]})",
                  file=sys.stderr, flush=True)
            os._exit(1)
        traceback.print_exc()
        raise
    except BaseException:
        traceback.print_exc()
        raise
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


# -------------------------------------------------------------- training
def make_sharding(cfg: Config, dataset: Dataset, n: int, dcfg: DistConfig) -> Sharding:
    seed = cfg.training.seed if dcfg.sharding_seed is None else dcfg.sharding_seed
    types = dataset.entity_types if cfg.training.negative_sampler == "type" else None
    return Sharding.create(dataset.num_entities, n, seed, types)


def train_distributed(cfg: Config, dataset: Dataset, out_dir: Path, resume: bool = False, evaluate_test: bool = True):
    """Train with BESS; returns the :class:`~kgcomplete.distributed.run.ShardedRun`. ``evaluate_test``:
    rank the valid and test splits with the best weights at the end (metrics.json)."""
    from .run import ShardedRun

    dcfg = DistConfig.from_config(cfg)
    tc = cfg.training
    if tc.entity_table == "host" or tc.autocast != "none":
        asked = "training.entity_table=host" if tc.entity_table == "host" else f"training.autocast={tc.autocast}"
        raise ValueError(f"{asked} is for single-process runs; BESS shards the entity table over its workers "
                         f"(more workers or GPUs hold a larger table) and scores in float32")
    folder = RunFolder(out_dir)
    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    if env_world > 1:  # torchrun: this process is one worker
        rank = int(os.environ["RANK"])
        cfg.distributed.workers = env_world
        device = pick_device(dcfg, int(os.environ.get("LOCAL_RANK", "0")))
        if not dist.is_initialized():
            init_group(pick_backend(dcfg, device), rank, env_world, None, None, dcfg.timeout_s, device)
        if rank == 0:
            _prepare_folder(folder, cfg, dataset, env_world, dcfg, resume)
        dist.barrier()
        _worker_main(rank, env_world, cfg, dataset, folder.path, resume, device, evaluate_test)
        dist.barrier()
        return ShardedRun.load(folder.path, dataset=dataset)
    n = max(1, dcfg.workers)
    _prepare_folder(folder, cfg, dataset, n, dcfg, resume)
    if n == 1:
        _worker_main(0, 1, cfg, dataset, folder.path, resume, pick_device(dcfg, 0), evaluate_test)
    else:
        port = dcfg.master_port or free_port(dcfg.master_addr)
        spawn(_spawned_worker, n, (n, cfg, dataset, str(folder.path), resume, dcfg.master_addr, port, evaluate_test),
              start_method=dcfg.start_method)
    return ShardedRun.load(folder.path, dataset=dataset)


def _prepare_folder(folder: RunFolder, cfg: Config, dataset: Dataset, n: int, dcfg: DistConfig, resume: bool) -> None:
    if resume:
        if not (folder / "sharding.json").exists():
            raise FileNotFoundError(f"{folder.path}: not a sharded run (no sharding.json)")
        recover_shards(folder.path, roll_back=True)
        verify_all(folder.path)  # a damaged shard is one error naming it, before any worker starts
        cfg.save(folder / "config.yaml")
        return
    if (folder / "sharding.json").exists() or (folder / "checkpoint.safetensors").exists():
        raise FileExistsError(f"{folder.path} already holds a trained run; use resume or another --out")
    cfg.distributed.workers = n
    folder.create(cfg, dataset)
    make_sharding(cfg, dataset, n, dcfg).save(folder.path)


def _spawned_worker(rank, world, cfg, dataset, out, resume, addr, port, evaluate_test=True):
    dcfg = DistConfig.from_config(cfg)
    device = pick_device(dcfg, rank)
    init_group(pick_backend(dcfg, device), rank, world, addr, port, dcfg.timeout_s, device)
    _worker_main(rank, world, cfg, dataset, Path(out), resume, device, evaluate_test)


def _worker_main(rank: int, world: int, cfg: Config, dataset: Dataset, out: Path, resume: bool, device,
                 evaluate_test: bool = True) -> None:
    dcfg = DistConfig.from_config(cfg)
    threads = dcfg.threads or cfg.training.threads or max(1, (os.cpu_count() or 1) // world)
    torch.set_num_threads(threads)
    folder = RunFolder(out)
    sharding = Sharding.load(folder.path)
    if sharding.n_shard != world:
        raise ValueError(f"{out} is sharded for {sharding.n_shard} workers, not {world}; re-shard it first "
                         f"(kgc shards reshard {out} --workers {world} --out NEW)")
    comm = Comm.from_env() if world > 1 else Comm()
    model = init_shard_model(cfg, dataset.num_relations, sharding, rank).to(device)
    trainer = BessTrainer(cfg, dataset, sharding, model, comm, dcfg, device,
                          checkpoint=lambda t, reason: save_worker(folder, t, reason), log_epoch=folder.append_log)
    if resume and restore_worker(folder, trainer):
        log.info("worker %d resumed %s at epoch %d", rank, out, trainer.epoch)
    trainer.fit()
    trainer.load_best()
    info = {"valid": None, "test": None}
    for split in ("valid", "test") if evaluate_test else ():
        triples = dataset.splits.get(split)
        if triples is not None and len(triples):
            t0 = time.perf_counter()
            m = trainer.rank(triples).metrics(dataset.relations.labels, per_relation=cfg.evaluation.per_relation)
            m.update(filtered=True, protocol="all-entities")
            info[split] = m
            info[f"{split}_eval_time_s"] = time.perf_counter() - t0
    if rank == 0:
        last = trainer.history[-1] if trainer.history else {}
        n_params = sum(p.numel() for p in model.parameters()) - model.entity_emb.weight.numel()
        summary = {
            "dataset": dataset.summary(), "model": cfg.model.name, "epochs": trainer.epoch,
            "best_epoch": trainer.best_epoch, "train_time_s": trainer.train_time_s,
            "train_triples_per_s": trainer.train_triples / max(trainer.train_time_s, 1e-9),
            "num_parameters": int(n_params + dataset.num_entities * model.entity_emb.weight.shape[1]),
            "torch": torch.__version__, "threads": threads, "machine": platform.machine(),
            "workers": world, "exchange": dcfg.exchange, "batch_sampler": dcfg.batch_sampler,
            "positives_per_block": trainer.P, "negatives_per_shard": trainer.k, "device": str(device),
            "ms_per_step": last.get("ms_per_step", {p: 0.0 for p in PHASES}), **trainer.memory(),
        }
        summary.update({k: v for k, v in info.items() if v is not None})
        folder.update_metrics(**summary)
    comm.barrier()

"""Dask's distributed client, at the edge: a LocalCluster by default, or an existing scheduler;
the worker plugin that holds a model on each worker; GPU workers found by their resource."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator

from distributed import Client, LocalCluster, WorkerPlugin, get_worker

from srcnn.models.files import ModelSpec

log = logging.getLogger(__name__)

# Worker processes per GPU: Pillow encodes JPEG holding the GIL (~11 ms per 2-Mpx output on
# an H200 host), so one process feeds the GPU ~90 images/s at most; four share it (measured on
# an H200: 4 beat 8, whose CUDA contexts time-slice the GPU). infra: `--nworkers 4`.
GPU_PROCESSES = 4


@contextlib.contextmanager
def dask_client(address: str | None = None, n_workers: int | None = None,
                gpu: bool = False, small: bool = False) -> Iterator[Client]:
    """A Client (the default one while the context is open) on the scheduler at `address`, or
    on a LocalCluster sized to this machine: one single-threaded worker process per core, or,
    with `gpu` and CUDA here, `GPU_PROCESSES` workers that share the GPU and offer the `GPU`
    resource (the net is fast there; encoding outputs needs several processes' CPUs).
    `small` (a job of a few images): one worker thread in this process, which starts in a
    fraction of the time worker processes take."""
    if address:
        with Client(address) as client:
            log.info("using Dask scheduler at %s (%d workers now)", address,
                     len(client.nthreads()))
            yield client
        return
    resources = None
    if gpu and _gpu_on_host():
        n_workers, resources = n_workers or GPU_PROCESSES, {"GPU": 1}
    if small:  # one worker thread here: no worker processes to start
        sized = {"n_workers": 1, "processes": False}
    else:
        # One thread per worker process: the per-image work is GIL-bound Python and PIL.
        sized = {"n_workers": n_workers or os.cpu_count() or 1, "processes": True}
    # dashboard_address=None still binds :8787 in this distributed release, so two clusters on
    # one machine (tests, a benchmark beside a build) would collide; ":0" takes a free port.
    with LocalCluster(threads_per_worker=1, dashboard_address=":0", resources=resources,
                      **sized) as cluster, Client(cluster) as client:
        log.info("started a Dask LocalCluster with %d workers%s%s", sized["n_workers"],
                 " (GPU)" if resources else "", "" if sized["processes"] else " in this process")
        yield client


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _gpu_on_host() -> bool:
    """Whether this machine has an NVIDIA GPU, asked of the CUDA driver itself: the driver of a
    flow stays free of torch (~200 MB); the workers check torch's CUDA build when they load."""
    import ctypes

    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int(0)
    return cuda.cuInit(0) == 0 and cuda.cuDeviceGetCount(ctypes.byref(count)) == 0 \
        and count.value > 0


def current_worker() -> str | None:
    """The address of the Dask worker running this code, or None outside a worker."""
    try:
        return get_worker().address
    except ValueError:
        return None


def gpu_workers(client: Client) -> list[str]:
    """Workers that advertise a `GPU` resource (`dask worker --resources GPU=1`)."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    return [addr for addr, w in workers.items() if w.get("resources", {}).get("GPU", 0) >= 1]


def run_on_gpu_worker(address: str | None, fn, *args):
    """Run `fn(*args)` on a GPU worker of the cluster at `address` when it has one (asking
    the scheduler for the `GPU` resource), here otherwise."""
    if not address:
        return fn(*args)
    with Client(address) as client:
        if not gpu_workers(client):
            log.info("no GPU workers at %s: running here", address)
            return fn(*args)
        log.info("running %s on a GPU worker at %s", getattr(fn, "__name__", fn), address)
        return client.submit(fn, *args, resources={"GPU": 1}, pure=False).result()


class ModelPlugin(WorkerPlugin):
    """Holds one model on each worker: rebuilt from its bytes on first use (no registry or
    network access on the worker), on the worker's GPU when it offers one, and kept for every
    later task of the run. Registered by name (`plugin_name`), removed when the run ends."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.name = plugin_name(spec)
        self._model = None
        self._lock = threading.Lock()
        self._device = "cpu"

    def setup(self, worker) -> None:
        if worker.state.total_resources.get("GPU", 0) >= 1 and _cuda_available():
            self._device = "cuda"
        _keep_freed_memory()

    def __getstate__(self):  # the lock and a loaded model do not travel
        return {"spec": self.spec, "name": self.name}

    def __setstate__(self, state):
        self.__init__(state["spec"])

    @property
    def model(self):
        with self._lock:
            if self._model is None:
                from srcnn.inference.tiling import prepare

                self._model = prepare(self.spec.build(), self._device)
                log.info("worker loaded %s (%s) on %s", self.spec.source,
                         self.spec.digest[:12], self._device)
            return self._model


def _keep_freed_memory() -> None:
    """Undo, for this worker process, what the Dask nanny's MALLOC_TRIM_THRESHOLD_ does to a
    net's activations: with the trim threshold set, glibc stops adapting its mmap threshold,
    so every buffer over 128 KB is mapped and unmapped (and its pages zeroed) per convolution:
    inference ran 40% slower in a worker than in a plain process. Buffers up to 64 MB are
    kept in the heap again; memory is still given back above 256 MB of free heap."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt"):  # not glibc
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 64 * 2**20)
    libc.mallopt(m_trim_threshold, 256 * 2**20)


def plugin_name(spec: ModelSpec) -> str:
    return f"srcnn-model-{spec.digest[:16]}"


def worker_model(name: str):
    """The model of the plugin `name` on the Dask worker running this code."""
    return get_worker().plugins[name].model


@contextlib.contextmanager
def model_on_workers(client: Client, spec: ModelSpec) -> Iterator[str]:
    """Register the model's plugin on every worker (and on workers that join later);
    yields its name; unregistered on the way out."""
    plugin = ModelPlugin(spec)
    client.register_plugin(plugin, name=plugin.name)
    try:
        yield plugin.name
    finally:
        with contextlib.suppress(Exception):  # a scheduler already gone has nothing to remove
            client.unregister_worker_plugin(plugin.name)

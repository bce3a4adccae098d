"""Running a command on Dask: option checks and the client (``--scheduler``/``--workers``)."""
import os


def wanted(args):
    """Whether to run on Dask (``--scheduler``/``--workers``); checks the options first."""
    if args.scheduler is None and args.workers is None:
        return False
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    if args.fill_nonfinite:
        raise ValueError("--fill-nonfinite is not available with --scheduler/--workers "
                         "(the data are never loaded in one process)")
    if args.max_memory is not None:
        raise ValueError("--max-memory checks this process's memory; with --scheduler/"
                         "--workers the workers' memory limits apply (set them on the "
                         "cluster)")
    return True


class DaskClient:
    """Connect to ``--scheduler`` or start a LocalCluster of ``--workers`` processes (a
    context manager yielding the client; the client and any cluster are closed on exit)."""

    def __init__(self, args):
        self.args = args
        self.cluster = self.client = None

    def __enter__(self):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise ImportError("--scheduler/--workers need dask.distributed: pip install "
                              "'fastalign[dask]'") from None
        a = self.args
        if a.scheduler is not None:
            self.client = Client(a.scheduler, timeout="30s")
        else:
            threads = a.threads or max(1, (os.cpu_count() or 1) // a.workers)
            self.cluster = LocalCluster(n_workers=a.workers, threads_per_worker=threads,
                                        processes=True, dashboard_address=None)
            self.client = Client(self.cluster)
        return self.client

    def __exit__(self, *exc):
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        return False

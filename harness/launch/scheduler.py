"""The local backend's scheduler as a process of its own: `python -m harness.launch.scheduler
RUNS_DIR SWEEP`, started by `harness submit --cluster local` (harness.backends.local) and
detached from it, releases the sweep's queued runs as slots free up.

It lives in the launching layer because it joins what the backend cannot import: the job each
run becomes (harness.launch.submit.make_train_job) and the sweep's [cluster] table
(harness.planning.sweep.ClusterConfig). The backend is handed this command line
(`SCHEDULER_COMMAND`), so it never names a module above it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from harness.backends.local import run_scheduler, scheduler_ended
from harness.config.run_config import ConfigError
from harness.launch.submit import make_train_job
from harness.planning.sweep import ClusterConfig, SweepError

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    """Run the sweep's local scheduler until no queued run is left; 1 if a job ended unfinished,
    2 on a [cluster] table it cannot read."""
    parser = argparse.ArgumentParser(prog="python -m harness.launch.scheduler")
    parser.add_argument("runs_dir", metavar="RUNS_DIR")
    parser.add_argument("sweep", metavar="SWEEP")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s scheduler %(message)s")
    try:
        return 1 if run_scheduler(args.runs_dir, args.sweep, job_factory=make_train_job,
                                  parse_cluster=ClusterConfig.from_dict) else 0
    except (ConfigError, SweepError) as e:
        log.error("%s", e)
        return 2
    finally:
        scheduler_ended(Path(args.runs_dir), args.sweep)


if __name__ == "__main__":
    sys.exit(main())

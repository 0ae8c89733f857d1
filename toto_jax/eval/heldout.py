"""The fixed list of NAB and cloud-monitoring series held out from pretraining the shipped model.

The list was fixed before any training, to cover each domain (EC2/RDS CPU, network, disk, load balancer,
machine temperature, taxi demand, tweet volume, data ingress, database and API request rates, crash and
purchase rates, API latency) with series long enough for the long horizon where the data allows it. The
bundled demo series (``toto_jax/assets/sample_nab_cpu.csv``) is one of them, so the README's forecast
is out of sample. Paths are relative to the shared data root (``../shared/data`` from the repository).

``python -m toto_jax.eval.heldout link-training ROOT OUT`` links every other CSV series of
``ROOT/nab/data`` and ``ROOT/cloud-monitoring/data`` into ``OUT`` (keeping the layout), the input of
``toto-jax data convert`` for the pretraining mix; ``link-heldout`` links the held-out ones, the
input of ``toto-jax eval``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

HELDOUT_NAB = (
    "nab/data/realAWSCloudwatch/ec2_cpu_utilization_5f5533.csv",  # the bundled demo series
    "nab/data/realAWSCloudwatch/ec2_cpu_utilization_825cc2.csv",
    "nab/data/realAWSCloudwatch/rds_cpu_utilization_e47b3b.csv",
    "nab/data/realAWSCloudwatch/ec2_network_in_257a54.csv",
    "nab/data/realAWSCloudwatch/elb_request_count_8c0756.csv",
    "nab/data/realAWSCloudwatch/ec2_disk_write_bytes_1ef3de.csv",
    "nab/data/realKnownCause/machine_temperature_system_failure.csv",
    "nab/data/realKnownCause/nyc_taxi.csv",
    "nab/data/realKnownCause/cpu_utilization_asg_misconfiguration.csv",
    "nab/data/realTweets/Twitter_volume_AAPL.csv",
    "nab/data/artificialNoAnomaly/art_daily_small_noise.csv",
)
HELDOUT_CLOUD = (
    "cloud-monitoring/data/data-ingress-rate/ingress-03.csv",
    "cloud-monitoring/data/mongodb-application-rps/mongo-02.csv",
    "cloud-monitoring/data/mongodb-machine-rps/machine-01.csv",
    "cloud-monitoring/data/ecommerce-api-incoming-rps/api-01.csv",
    "cloud-monitoring/data/application-crash-rate-2/app2-05.csv",
    "cloud-monitoring/data/middle-tier-api-dependency-latency/outbound-04.csv",
    "cloud-monitoring/data/consumer-purchase-rate/purchase-03.csv",
    "cloud-monitoring/data/application-crash-rate-1/app1-04.csv",
)
HELDOUT = HELDOUT_NAB + HELDOUT_CLOUD
# The CC BY-ND ETT data is only ever evaluated (LSF protocol), never trained on.
CORPORA = ("nab/data", "cloud-monitoring/data")


def _all_series(root: Path) -> list[str]:
    found = []
    for corpus in CORPORA:
        directory = root / corpus
        if not directory.is_dir():
            raise FileNotFoundError(f"no {corpus} directory under {root}")
        found += sorted(p.relative_to(root).as_posix() for p in directory.rglob("*.csv"))
    return found


def heldout_files(root: str | os.PathLike) -> list[Path]:
    root = Path(root)
    missing = [name for name in HELDOUT if not (root / name).is_file()]
    if missing:
        raise FileNotFoundError(f"held-out series missing under {root}: {missing}")
    return [root / name for name in HELDOUT]


def training_files(root: str | os.PathLike) -> list[Path]:
    """Every NAB / cloud-monitoring CSV series under ``root`` except the held-out ones."""
    root = Path(root)
    held = set(HELDOUT)
    return [root / name for name in _all_series(root) if name not in held]


def link_files(files: list[Path], root: Path, out: Path) -> int:
    """Symlink ``files`` into ``out`` under their path relative to ``root``."""
    for path in files:
        target = out / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.exists():
            target.unlink()
        target.symlink_to(path.resolve())
    return len(files)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toto_jax.eval.heldout", description=__doc__.split("\n\n")[0])
    parser.add_argument("which", choices=("link-training", "link-heldout", "list"))
    parser.add_argument("root", help="the shared data root (holding nab/ and cloud-monitoring/)")
    parser.add_argument("out", nargs="?", help="directory to create the links in")
    args = parser.parse_args(argv)
    root = Path(args.root)
    files = training_files(root) if args.which == "link-training" else heldout_files(root)
    if args.which == "list" or args.out is None:
        print("\n".join(str(p) for p in files))
        return 0
    print(f"linked {link_files(files, root, Path(args.out))} series into {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

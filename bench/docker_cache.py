"""Layer cache: a rebuild of an unchanged Dockerfile against the time of its first build.

    python3 bench/docker_cache.py [--save] [--rounds 3]

Starts its own engine and registry on loopback as the tests do (tests/dockerinfra.py), then runs
the Docker builder twice on the same source: the first build runs every step, the second finds
them in the engine's layer cache. Each build is the builder's whole job: build, then push to the
registry (or, with --save, `docker save` into the gzip artifact). Prints both times and the ratio;
the target is a rebuild under 30% of the first build.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from builders.base import BuildContext  # noqa: E402
from builders.config import RepoConfig  # noqa: E402
from builders.docker import DockerBuilder  # noqa: E402
from builders.log import BuildLog  # noqa: E402
from builders.runner import CommandRunner  # noqa: E402
from core.settings import Settings  # noqa: E402
from tests.dockerinfra import DockerInfra, missing_tools  # noqa: E402

TARGET_RATIO = 0.30
DOCKERFILE = """\
FROM {base}
RUN echo round {round} && mkdir -p /app/data && for i in $(seq 1 300); do head -c 16384 /dev/urandom > /app/data/blob-$i; done
RUN cd /app && find data -type f | sort | xargs sha256sum > SUMS && wc -l SUMS
RUN mkdir -p /etc /www && echo 'app:x:1000:1000::/www:/bin/sh' >> /etc/passwd && chown 1000 /www
COPY www /www
EXPOSE 8080
USER app
CMD ["sh", "-c", "exec httpd -f -p 127.0.0.1:$PORT -h /www"]
"""


def write_source(folder: Path, base: str, round_number: int) -> None:
    """The bench app; its first step names the round, so no round finds another's layers."""
    (folder / "www").mkdir(parents=True)
    (folder / "www" / "index.html").write_text("<!doctype html><h1>cache bench</h1>", encoding="utf-8")
    (folder / "Dockerfile").write_text(DOCKERFILE.format(base=base, round=round_number), encoding="utf-8")


def timed_build(builder: DockerBuilder, source: Path, work: Path, *, sha: str) -> float:
    work.mkdir(parents=True)
    log = BuildLog(work / "build.log")
    context = BuildContext(
        deployment_id="cbenchdockercache000000000",
        repository="bench/docker-cache",
        commit_sha=sha,
        source_dir=source,
        work_dir=work,
        config=RepoConfig(),
        log=log,
        runner=CommandRunner(),
        env={},
        deadline=time.monotonic() + 600,
    )
    started = time.perf_counter()
    try:
        builder.build(context)
    finally:
        log.close()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", action="store_true", help="no registry: docker save into the artifact")
    parser.add_argument("--rounds", type=int, default=3, help="pairs of a first build and its rebuild")
    args = parser.parse_args()
    missing = missing_tools()
    if missing:
        print("cannot run: missing " + ", ".join(missing), file=sys.stderr)
        return 2
    firsts, rebuilds = [], []
    with tempfile.TemporaryDirectory(prefix="dyonisus-bench-") as folder:
        infra = DockerInfra.start(Path(folder) / "infra")
        try:
            registry = None if args.save else infra.registry.url
            settings = Settings(
                docker_host=infra.engine.docker_host,
                registry_url=registry,
                registry_username=infra.registry.username,
                registry_password=infra.registry.password,
            )
            builder = DockerBuilder(settings)
            for round_number in range(args.rounds):
                source = Path(folder) / f"src-{round_number}"
                write_source(source, infra.base_image, round_number)
                sha = f"{round_number:040x}"
                firsts.append(timed_build(builder, source, Path(folder) / f"work-{round_number}-a", sha=sha))
                rebuilds.append(timed_build(builder, source, Path(folder) / f"work-{round_number}-b", sha=sha))
        finally:
            infra.stop()
    first, rebuild = statistics.median(firsts), statistics.median(rebuilds)
    ratio = rebuild / first
    mode = "build + docker save (gzip artifact)" if args.save else "build + push to the loopback registry"
    print(f"mode:           {mode}, {args.rounds} round(s), median")
    print(f"first build:    {first:.2f} s   (each: {', '.join(f'{t:.2f}' for t in firsts)})")
    print(f"rebuild:        {rebuild:.2f} s   (each: {', '.join(f'{t:.2f}' for t in rebuilds)})")
    print(f"ratio:          {ratio:.1%} (target: under {TARGET_RATIO:.0%})")
    return 0 if ratio < TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())

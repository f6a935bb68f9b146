"""Static sites: npm install or ci, npm run build, pack the output folder."""

from __future__ import annotations

import json
from pathlib import Path

from builders.base import BuildContext, BuildOutput, require_folder
from builders.config import OUTPUT_DIR_CANDIDATES, RepoConfig
from builders.unpack import pack_folder
from core.errors import BuildFailed

LOCKFILES = ("package-lock.json", "npm-shrinkwrap.json")


def read_manifest(project_dir: Path) -> dict[str, object] | None:
    """package.json as a dict, None when there is none; BuildFailed when it is broken."""
    path = project_dir / "package.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise BuildFailed(f"package.json is not valid JSON: {error}") from None
    if not isinstance(manifest, dict):
        raise BuildFailed("package.json must hold a JSON object")
    return manifest


def plan_commands(config: RepoConfig, project_dir: Path) -> list[tuple[str, ...]]:
    """The commands of a static build, in order (pure apart from reading package.json)."""
    manifest = read_manifest(project_dir)
    scripts = manifest.get("scripts") if manifest else None
    has_build = isinstance(scripts, dict) and isinstance(scripts.get("build"), str)
    commands: list[tuple[str, ...]] = []
    if config.install_command:
        commands.append(config.install_command)
    elif manifest is not None:
        locked = any((project_dir / name).is_file() for name in LOCKFILES)
        commands.append(("npm", "ci") if locked else ("npm", "install"))
    if config.build_command:
        commands.append(config.build_command)
    elif has_build:
        commands.append(("npm", "run", "build"))
    return commands


def find_output_dir(config: RepoConfig, project_dir: Path) -> Path:
    if config.output_dir:
        return require_folder(project_dir / config.output_dir, "the output_dir")
    for name in OUTPUT_DIR_CANDIDATES:
        if (project_dir / name).is_dir():
            return project_dir / name
    raise BuildFailed(
        "the build produced no output folder (looked for "
        + ", ".join(OUTPUT_DIR_CANDIDATES)
        + "); set output_dir in dyonisus.yml"
    )


class StaticBuilder:
    name = "static"

    def build(self, context: BuildContext) -> BuildOutput:
        project_dir = require_folder(context.project_dir, "the root folder")
        commands = plan_commands(context.config, project_dir)
        if not commands and not (project_dir / "index.html").is_file() and not context.config.output_dir:
            raise BuildFailed(
                "nothing to build: no package.json with a build script, no build_command "
                "in dyonisus.yml and no index.html"
            )
        for argv in commands:
            code = context.runner.run(
                argv,
                cwd=project_dir,
                env=context.env,
                log=context.log,
                deadline=context.deadline,
                should_stop=context.should_stop,
            )
            if code != 0:
                raise BuildFailed(f"`{' '.join(argv)}` exited with code {code}")
        output = find_output_dir(context.config, project_dir) if commands else self._plain_site(context)
        if not any(output.iterdir()):
            raise BuildFailed(f"the output folder {output.name!r} is empty")
        artifact = context.work_dir / "artifact.tar.gz"
        context.log.step(f"packing {output.relative_to(context.source_dir)}")
        pack_folder(output, artifact)
        return BuildOutput(artifact=artifact, provider_meta={"output_dir": str(output.relative_to(project_dir))})

    def _plain_site(self, context: BuildContext) -> Path:
        if context.config.output_dir:
            return require_folder(context.project_dir / context.config.output_dir, "the output_dir")
        return context.project_dir

"""The service's small error hierarchy; every failure a deployment can meet is one of these."""

from __future__ import annotations


class DeployError(Exception):
    """Base of every error the service raises on purpose."""


class ConfigError(DeployError):
    """A setting of the service, or a repository's dyonisus.yml, is missing or malformed."""


class BuildFailed(DeployError):
    """The user's build could not produce a site: a fault of the code, not of the service."""

    def __init__(self, reason: str, *, conclusion: str = "failure") -> None:
        super().__init__(reason)
        self.reason = reason
        self.conclusion = conclusion


class BuildTimedOut(BuildFailed):
    """The build ran over its time limit and was stopped."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, conclusion="timed_out")


class BuildCancelled(DeployError):
    """The build was stopped because it was cancelled or superseded."""


class UnsafeArchive(BuildFailed):
    """The source archive holds an entry that would land outside the work directory."""


class InfrastructureError(DeployError):
    """A dependency of the service failed: GitHub, storage, the engine. Retried, then `error`."""

    # Whether a build that met this error goes back to the queue (with backoff) before failing.
    retryable: bool = True


class GitHubError(InfrastructureError):
    """GitHub answered with an error or could not be reached."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class StorageError(InfrastructureError):
    """Artifact or log storage could not be read or written."""


class EngineUnavailable(InfrastructureError):
    """The Docker engine at DOCKER_HOST cannot be reached: Docker deployments fail at once."""

    retryable = False


class RegistryError(InfrastructureError):
    """The image registry refused a push or pull, or its credential cannot be read."""


class BuildSkipped(DeployError):
    """The deployment is not needed (a skip marker, or no path of interest changed)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

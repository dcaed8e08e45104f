"""Settings: read once (flags, ``HANGAR_*`` environment variables), then frozen.

Every field is documented here; ``docs/configuration.md`` is generated from this class
(``hangar config-reference``) and a test fails when the two differ.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL_ROUTES: dict[str, str] = {"claude-*": "anthropic", "scripted*": "scripted"}


class ExtraModel(BaseModel):
    """An extra entry of the ``/v1/models`` catalogue (see ``Settings.extra_models``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, description="Model id, routed like any other by `model_routes`.")
    display_name: str | None = Field(default=None, description="Human-readable name (default: the id).")
    max_input_tokens: int = Field(default=200_000, gt=0, description="Context window, in tokens.")
    max_tokens: int = Field(default=64_000, gt=0, description="Largest `max_tokens` of one request.")
    created_at: datetime | None = Field(default=None, description="Release time (default: the epoch).")


class Settings(BaseSettings):
    """Hangar's configuration. Environment variables use the ``HANGAR_`` prefix."""

    model_config = SettingsConfigDict(env_prefix="HANGAR_", frozen=True, extra="ignore")

    host: str = Field(default="127.0.0.1", description="Interface the HTTP server binds to.")
    port: int = Field(default=8400, ge=0, le=65535, description="TCP port of the HTTP server.")
    data_dir: Path = Field(
        default=Path(".hangar"),
        description="Directory holding the SQLite database, uploaded files and session workspaces.",
    )
    database_url: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy-style database URL. Unset: SQLite at `<data_dir>/hangar.db`. "
            "`postgresql://user@host:port/db` selects PostgreSQL (psycopg 3)."
        ),
    )
    durability: Literal["process", "disk"] = Field(
        default="process",
        description=(
            "`process`: every acknowledged write survives Hangar's process being killed at any "
            "moment; an operating-system or database-server crash may lose the last fraction of a "
            "second of writes (SQLite `synchronous=NORMAL` in WAL mode, PostgreSQL "
            "`synchronous_commit=off`). `disk`: a client's write is acknowledged only once it is "
            "on disk (SQLite `synchronous=FULL`, PostgreSQL `synchronous_commit=on`), at the cost "
            "of a disk flush per request (about 4 ms on the reference machine)."
        ),
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="An API key registered (hashed) at start-up, for automation and tests.",
    )
    anthropic_base_url: str | None = Field(
        default=None, description="Upstream Messages API base URL for the `anthropic` provider."
    )
    anthropic_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("HANGAR_ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY"),
        description="Upstream API key for the `anthropic` provider (`ANTHROPIC_API_KEY` also read).",
    )
    anthropic_timeout_s: float = Field(
        default=600.0, gt=0, description="Timeout of one upstream model request, in seconds."
    )
    openai_base_url: str | None = Field(
        default=None,
        description=(
            "Base URL of an OpenAI-compatible chat-completions API for the `openai` provider, "
            "ending in `/v1` (e.g. `http://127.0.0.1:8000/v1` for vLLM, `http://127.0.0.1:11434/v1` "
            "for Ollama)."
        ),
    )
    openai_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("HANGAR_OPENAI_API_KEY", "OPENAI_API_KEY"),
        description=(
            "API key for the `openai` provider, sent as a bearer token (`OPENAI_API_KEY` also read; "
            "unset: no `Authorization` header, as most local servers want)."
        ),
    )
    openai_timeout_s: float = Field(
        default=600.0, gt=0, description="Timeout of the `openai` provider's requests, in seconds (per read)."
    )
    openai_model_map: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "JSON object mapping Hangar model ids to the upstream model names the `openai` provider "
            'sends, e.g. `{"local-llama": "meta-llama/Llama-3.1-8B-Instruct"}`; unmapped ids are sent as is.'
        ),
    )
    model_routes: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_MODEL_ROUTES),
        description=(
            "JSON object mapping model-id glob patterns to providers (`anthropic`, `openai`, `scripted`). "
            "The first matching pattern wins; unmatched models use `default_provider`."
        ),
    )
    default_provider: str = Field(
        default="anthropic", description="Provider for models that no route matches."
    )
    extra_models: tuple[ExtraModel, ...] = Field(
        default=(),
        description=(
            "JSON list of extra `/v1/models` entries `{id, display_name?, max_input_tokens?, "
            "max_tokens?, created_at?}`, e.g. models behind a proxy at `anthropic_base_url`. "
            "An entry with a built-in id replaces the built-in one."
        ),
    )
    scripted_latency_ms: float = Field(
        default=0.0, ge=0, description="Artificial per-request latency of the `scripted` provider."
    )
    scripted_script: Path | None = Field(
        default=None,
        description=(
            "JSON file of replies for the `scripted` provider (see `hangar.runtime.models.scripted`)."
        ),
    )
    model_max_attempts: int = Field(
        default=4,
        ge=1,
        le=20,
        description="Attempts per model request before a turn gives up (retries_exhausted).",
    )
    max_model_requests_per_turn: int = Field(
        default=200,
        ge=1,
        description=(
            "Model requests one turn may make (tool rounds) before it ends with "
            "`tool_use_limit_reached_error`."
        ),
    )
    compaction_threshold: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description=(
            "Fraction of the model's context window at which older turns are summarised (compaction)."
        ),
    )
    usage_event_interval_s: float = Field(
        default=30.0,
        ge=0,
        description=(
            "Least time between two `session.usage` events of a running session "
            "(0: after every model request)."
        ),
    )
    max_body_bytes: int = Field(
        default=32 * 1024 * 1024, gt=0, description="Largest accepted request body, in bytes."
    )
    sse_ping_interval_s: float = Field(
        default=15.0, gt=0, description="Interval between `ping` frames on idle event streams."
    )
    bash_timeout_s: float = Field(
        default=120.0, gt=0, description="Default timeout of one `bash` tool command, in seconds."
    )
    bash_max_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="Largest timeout a `bash` tool call may ask for with `timeout_ms`, in seconds.",
    )
    web_search_url: str | None = Field(
        default=None,
        description=(
            "URL template of a SearXNG-compatible JSON search API for the `web_search` tool; "
            "`{query}` is replaced by the URL-encoded query, e.g. "
            "`http://127.0.0.1:8888/search?q={query}&format=json`. Unset: `web_search` fails."
        ),
    )
    web_fetch_timeout_s: float = Field(
        default=30.0, gt=0, description="Timeout of one `web_fetch` / `web_search` HTTP request, in seconds."
    )
    web_allow_private_addresses: bool = Field(
        default=False,
        description=(
            "Let `web_fetch` reach hosts that resolve to loopback, private or link-local "
            "addresses (refused by default)."
        ),
    )
    egress_upstream_ca_file: Path | None = Field(
        default=None,
        description=(
            "Extra CA certificates (PEM file) the egress proxy trusts, besides the system's, when it "
            "forwards a sandbox's HTTPS request carrying an `environment_variable` credential to the "
            "real host (for tests and private CAs)."
        ),
    )
    work_lease_ttl_seconds: int = Field(
        default=90,
        ge=1,
        le=3600,
        description=(
            "Lease of a self-hosted work item, in seconds: a worker that acks or heartbeats it holds "
            "it this long (unless a heartbeat asks for `desired_ttl_seconds`); when the lease lapses "
            "the item goes back to the queue for another worker. 90 s matches the SDK worker's own "
            "assumption, so it heartbeats every 30 s and can miss one beat."
        ),
    )
    sandbox_cpu_time_s: int = Field(
        default=1800,
        ge=1,
        description="CPU seconds one process in a bubblewrap sandbox may use (`RLIMIT_CPU`).",
    )
    sandbox_memory_mb: int = Field(
        default=1024,
        ge=16,
        description=(
            "Private writable memory (heap, anonymous mappings) one process in a bubblewrap sandbox "
            "may allocate, in MiB (`RLIMIT_DATA`)."
        ),
    )
    sandbox_max_processes: int = Field(
        default=256,
        ge=8,
        description="Processes and threads one bubblewrap sandbox may run at once (`RLIMIT_NPROC`).",
    )
    sandbox_max_file_mb: int = Field(
        default=1024,
        ge=1,
        description="Largest file a process in a bubblewrap sandbox may write, in MiB (`RLIMIT_FSIZE`).",
    )
    sandbox_tmp_mb: int = Field(
        default=512,
        ge=1,
        description=(
            "Size of each in-memory filesystem of a bubblewrap sandbox (`/tmp`, `/dev/shm`, the "
            "home directory), in MiB."
        ),
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description=(
            "Key that encrypts vault credential secrets at rest (AES-256-GCM): the base64 encoding of "
            "32 random bytes (`hangar secrets generate-key` prints one). Unset: the key file "
            "`<data_dir>/secret.key`, created with mode 0600 when the first secret is stored; Hangar "
            "refuses to start when group or others can read it (`chmod 600` fixes it). Rotation: with "
            "the key file, `hangar secrets rotate-key` makes a new key and re-encrypts every stored "
            "secret; with this setting, move the old key to `secret_key_retired`, set a new one, run "
            "`hangar secrets rotate-key`, then drop the retired key."
        ),
    )
    secret_key_retired: SecretStr | None = Field(
        default=None,
        description=(
            "Comma-separated base64 keys that only decrypt secrets stored under an older "
            "`secret_key`, while `hangar secrets rotate-key` re-encrypts them under the current one."
        ),
    )
    vault_probe_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description=(
            "Timeout of each HTTP request of `mcp_oauth_validate` (the MCP `initialize` probe and the "
            "token refresh), in seconds."
        ),
    )
    mcp_max_result_bytes: int = Field(
        default=400_000,
        ge=1024,
        description=(
            "Largest MCP tool result the model gets inline, in bytes of text (400,000 is about 100K "
            "tokens). A larger result is saved to a file in the session's workspace and the model "
            "gets a preview and the file's path."
        ),
    )
    tunnel_domain: str = Field(
        default="tunnel.hangar.internal",
        max_length=200,
        pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$",
        description=(
            "Parent domain of MCP tunnels: each new tunnel gets the domain `<random>.<tunnel_domain>`, "
            "and an agent's MCP server URL on a subdomain of it (`https://<route>.<random>."
            "<tunnel_domain>/mcp`) is sent through the tunnel's connected `hangar tunnel` client. "
            "Never resolved in DNS: requests to any host under it go through a tunnel or fail."
        ),
    )
    tunnel_response_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description=(
            "Longest wait for the response head of a request sent through a tunnel, in seconds "
            "(the caller's own read timeout applies when it is shorter)."
        ),
    )
    unsafe_no_sandbox: bool = Field(
        default=False,
        description=(
            "Run cloud sessions' tools directly in their workspace directory, without a sandbox "
            "(`hangar serve --unsafe-no-sandbox`). For development only; logged loudly at start."
        ),
    )
    max_live_executors: int = Field(
        default=32,
        ge=1,
        description=(
            "Sessions whose shell or sandbox is kept running; opening one more closes the least "
            "recently used idle one (its workspace stays)."
        ),
    )
    pip_index_url: str | None = Field(
        default=None,
        description=(
            "Package index the environments' `pip` packages are installed from (`pip --index-url`). "
            "Unset: pip's default (PyPI)."
        ),
    )
    npm_registry: str | None = Field(
        default=None,
        description="Registry the environments' `npm` packages are installed from. Unset: npm's default.",
    )
    gem_source: str | None = Field(
        default=None,
        description="Source the environments' `gem` packages are installed from. Unset: RubyGems.",
    )
    go_proxy: str | None = Field(
        default=None,
        description="`GOPROXY` of the environments' `go` packages. Unset: Go's default.",
    )
    package_install_timeout_s: float = Field(
        default=900.0,
        gt=0,
        description=(
            "Time one package manager may take to install an environment's packages, in seconds; "
            "longer fails the install (a `session.error`)."
        ),
    )
    repository_clone_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="Time the clone of one `github_repository` session resource may take, in seconds.",
    )
    max_output_file_mb: int = Field(
        default=1024,
        ge=1,
        description=(
            "Largest file of a session's `/mnt/session/outputs/` copied to the Files API after a "
            "turn, in MiB (larger ones are skipped and logged)."
        ),
    )
    log_level: str = Field(default="info", description="Log level of the server.")

    @property
    def resolved_database_url(self) -> str:
        """The database URL with the driver spelled out for SQLAlchemy's async engine."""
        url = self.database_url or f"sqlite:///{(self.data_dir / 'hangar.db').resolve()}"
        return to_async_url(url)

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")


def to_async_url(url: str) -> str:
    """Map a plain database URL onto the async driver SQLAlchemy should use."""
    for plain, driver in (
        ("postgresql+psycopg://", "postgresql+psycopg://"),
        ("postgresql://", "postgresql+psycopg://"),
        ("postgres://", "postgresql+psycopg://"),
        ("sqlite+aiosqlite://", "sqlite+aiosqlite://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    raise ValueError(f"unsupported database URL scheme: {url.split(':', 1)[0]!r}")


def to_sync_url(url: str) -> str:
    """The same database through a synchronous driver (used by Alembic)."""
    return url.replace("sqlite+aiosqlite://", "sqlite://")

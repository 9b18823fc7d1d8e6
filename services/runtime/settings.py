"""Settings from the environment, all prefixed ``TUBEFLOW_``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import ByteSize, Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.options import IMPERSONATE_TARGET
from services.runtime.addresses import PROXY_SCHEMES, AddressPolicy, parse_networks
from services.runtime.jsruntime import default_js_runtime
from services.runtime.nats.connection import NatsAuth
from services.runtime.sitelimits import parse_duration, parse_limits, parse_pacing, parse_site_values


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUBEFLOW_", extra="ignore")

    nats_url: str | None = Field(
        default=None, description="NATS server(s), comma-separated; `tubeflow up` starts its own when unset"
    )
    nats_connect_timeout: float = Field(default=10.0, gt=0, description="seconds to reach NATS at start, then fail")
    nats_user: str | None = None
    nats_password: SecretStr | None = None
    nats_token: SecretStr | None = None
    nats_nkey_seed: Path | None = Field(default=None, description="file holding an NKey seed")
    nats_creds: Path | None = Field(default=None, description="a .creds file (user JWT and NKey seed)")
    nats_tls_ca: Path | None = Field(default=None, description="CA certificate(s) to trust for NATS' TLS")
    nats_tls_cert: Path | None = Field(default=None, description="client certificate for NATS' TLS")
    nats_tls_key: Path | None = Field(default=None, description="the client certificate's key")
    data_dir: Path = Field(default=Path("tubeflow-data"), description="media files and the embedded NATS store")
    presets_file: Path | None = Field(default=None, description="JSON of read-only presets: name -> job fields")
    ytdlp_options_file: Path | None = Field(
        default=None, description="JSON of extra YoutubeDL params, trusted (only the operator writes it)"
    )
    download_concurrency: int = Field(default=3, ge=1, le=64)
    slot_lanes: int = Field(
        default=32,
        ge=1,
        le=64,
        description="yt-dlp calls one slot process runs at once, on threads sharing its memory (1: a process each)",
    )
    slot_idle_seconds: float = Field(
        default=300.0,
        ge=0,
        description="seconds an idle yt-dlp slot process, and then its zygote, is kept before it ends (0: kept)",
    )
    extract_concurrency: int = Field(default=2, ge=1, le=64)
    allow_private_urls: bool = False
    max_playlist_items: int = Field(default=1000, ge=1)
    max_recording: float = Field(default=6 * 3600.0, gt=0, description="seconds a live stream is recorded at most")
    resolve_timeout: float = Field(default=600.0, gt=0, description="seconds one resolve may take (then it fails)")
    download_timeout: float = Field(
        default=4 * 3600.0, gt=0, description="seconds one item's download may take, post-processing included"
    )
    # Disk. Sizes take units: 500MB, 16GiB; 0 turns a bound off.
    max_filesize: ByteSize = Field(
        default=ByteSize(16 * 1024**3), ge=0, description="bytes one item's download (or its audio) may take"
    )
    max_job_bytes: ByteSize = Field(
        default=ByteSize(100 * 1024**3), ge=0, description="bytes one job's downloads may take together"
    )
    min_free_disk: ByteSize = Field(
        default=ByteSize(1024**3), ge=0, description="under this much free space new downloads wait (disk_low)"
    )
    media_retention_days: float = Field(
        default=0.0, ge=0.0, description="delete a job's media this many days after its last file changed (0: keep)"
    )
    # The queue (see README: queue and library)
    auto_start: bool = Field(default=True, description="new jobs start at once unless they say `start: false`")
    site_concurrency: str | None = Field(
        default=None, description="downloads at a time per site, over all downloaders: youtube.com=2,*=6"
    )
    site_rate: str | None = Field(default=None, description="downloads started per minute per site: youtube.com=30")
    site_pacing: str | None = Field(
        default=None,
        description="per site, yt-dlp's sleep between requests and a random gap between downloads started, over all "
        "downloaders: youtube.com=requests:1s,downloads:5-30s;*=downloads:2s",
    )
    engine_dir: Path | None = Field(
        default=None,
        description="where yt-dlp versions updated at run time are installed (default: <data dir>/engine); in "
        "Kubernetes a volume of each pod's own",
    )
    ytdlp_auto_update: Literal["off", "daily", "nightly"] = Field(
        default="off",
        description="install the newest yt-dlp on a schedule (one scheduler does it): daily (24 h after the last "
        "look) or nightly (around 03:00 local time)",
    )
    site_cooldown: str = Field(
        default="10m",
        description="how long a site that answered 429, a bot check or a burst of 403s gets no requests from any "
        "downloader or subscription check, doubling on repeat (off: never)",
    )
    job_retention_days: float = Field(
        default=0.0, ge=0.0, description="finished jobs are deleted this many days after they finished (0: kept)"
    )
    webhook_retry_delay: float = Field(
        default=5.0, gt=0.0, description="first webhook retry after this many seconds, doubling up to an hour, for 24 h"
    )
    scheduler_lease: float = Field(
        default=15.0, gt=0.0, description="seconds a scheduler holds its lease; a dead one is replaced within this"
    )
    subscription_min_interval: float = Field(
        default=300.0, gt=0.0, description="the shortest interval a subscription may ask for (seconds)"
    )
    public_url: str | None = Field(
        default=None,
        description="the API's address as people reach it (http://host:port): absolute media URLs in notifications",
    )
    apprise_urls: str | None = Field(
        default=None, description="Apprise URLs (comma or space separated): a short message per finished job or batch"
    )
    jellyfin_url: str | None = Field(
        default=None, max_length=512, description="Jellyfin (or Emby): scanned when files land"
    )
    jellyfin_api_key: SecretStr | None = Field(default=None, description="a Jellyfin API key (Dashboard, API Keys)")
    plex_url: str | None = Field(default=None, max_length=512, description="Plex Media Server: scanned when files land")
    plex_token: SecretStr | None = Field(default=None, description="the X-Plex-Token")
    plex_section: str | None = Field(
        default=None, max_length=20, description="the Plex library section's id to scan (unset: every section)"
    )
    kodi_url: str | None = Field(
        default=None,
        max_length=512,
        description="Kodi's JSON-RPC endpoint (http://user:password@host:8080/jsonrpc): its library scans the folder",
    )
    library_path: str | None = Field(
        default=None,
        max_length=1024,
        description="the media folder as the media servers see it (their mount of it), for the paths they scan "
        "(unset: as tubeflow sees it)",
    )
    library_refresh_delay: float = Field(
        default=30.0,
        gt=0.0,
        le=3600.0,
        description="files landing within this many seconds make one scan request per media server",
    )
    retention_every: float = Field(default=3600.0, gt=0.0, description="seconds between retention sweeps")
    retention_delete_files: bool = Field(
        default=False, description="a job deleted by retention takes its files with it"
    )
    check_timeout: float = Field(
        default=180.0, gt=0.0, description="seconds one subscription check may take (its listing), then it fails"
    )
    proxy: str | None = Field(
        default=None,
        description="proxy for every download (yt-dlp's syntax); proxy variables of the environment are ignored",
    )
    # Real sites (docs/deploy.md: real sites): the JavaScript runtime, impersonation, PO tokens, plugins.
    js_runtime: str | None = Field(
        default=None,
        description="the deno binary yt-dlp solves JavaScript challenges with (default: the one `uv sync` installs; "
        "`none`: no runtime)",
    )
    impersonate: str | None = Field(
        default=None,
        description="browser impersonation per site: vimeo.com=chrome,*= (a target per site; empty: none); a job's "
        "`impersonate` option overrides it",
    )
    pot_provider_url: str | None = Field(
        default=None,
        description="a PO-token provider's HTTP server (bgutil-ytdlp-pot-provider, e.g. http://bgutil:4416): this "
        "URL alone is exempt from the address policy",
    )
    plugin_dirs: str | None = Field(
        default=None, description="folders of yt-dlp plugins (os.pathsep-separated) every slot process loads"
    )
    # Seconds between progress events of one item, unless the item moved by at least `progress_min_step` percent.
    progress_interval: float = Field(default=0.25, ge=0.0)
    progress_min_step: float = Field(default=1.0, ge=0.0)
    sse_heartbeat: float = Field(default=15.0, gt=0.0)
    sse_max_streams: int = Field(default=4096, ge=0, description="open SSE streams per API process (0: no limit)")
    sse_max_streams_per_client: int = Field(default=256, ge=0, description="open SSE streams per client (0: no limit)")
    worker_name: str | None = Field(default=None, description="overrides host:pid in events' `worker` field")
    # Deployment
    declare: bool = Field(default=True, description="create missing streams/buckets at start (false after setup)")
    stream_replicas: int = Field(default=1, ge=1, le=5, description="JetStream replicas of streams and buckets")
    health_port: int = Field(default=0, ge=0, le=65535, description="workers: /healthz, /readyz, /metrics (0: off)")
    health_host: str = "127.0.0.1"
    # Reliability
    ack_wait: float = Field(default=30.0, gt=0.0, description="seconds before unacked work is redelivered")
    download_attempts: int = Field(default=3, ge=1, le=5, description="tries of an item on transient errors")
    retry_delay: float = Field(default=2.0, ge=0.0, description="first retry delay; doubles per attempt")
    shutdown_grace: float = Field(default=20.0, ge=0.0)
    tracing: bool = Field(default=False, description="OpenTelemetry trace context in NATS headers (the otel extra)")
    # Security
    api_token: str | None = Field(default=None, description="when set, /api/* and /media/* need this bearer token")
    auth: Literal["none", "token", "forward", "oidc"] | None = Field(
        default=None,
        description="who may call the API: none (loopback only, unless said explicitly), token (TUBEFLOW_API_TOKEN "
        "and personal tokens), forward (a proxy's Remote-User from TUBEFLOW_TRUSTED_PROXIES), oidc (sign-in with "
        "an OpenID Connect provider, TUBEFLOW_OIDC_*); unset: token when TUBEFLOW_API_TOKEN is set, else none",
    )
    oidc_issuer: str | None = Field(
        default=None, max_length=512, description="oidc: the provider's issuer URL (its discovery document is read)"
    )
    oidc_client_id: str | None = Field(default=None, max_length=256, description="oidc: this app's client id")
    oidc_client_secret: str | None = Field(
        default=None, max_length=1024, description="oidc: its secret (unset: a public client, PKCE only)"
    )
    oidc_scopes: str = Field(default="openid profile email", max_length=512, description="oidc: scopes asked for")
    oidc_groups_claim: str = Field(default="groups", max_length=64, description="oidc: the claim listing groups")
    oidc_user_claim: str = Field(
        default="preferred_username",
        max_length=64,
        description="oidc: the claim naming the user (then email, then sub where it is missing or unusable)",
    )
    oidc_redirect_url: str | None = Field(
        default=None,
        max_length=512,
        description="oidc: this API's public /auth/callback URL as registered with the provider (unset: from the "
        "request, fine when the API is reached directly)",
    )
    trusted_proxies: str | None = Field(
        default=None, description="forward: the proxies (comma-separated CIDRs) whose user headers are believed"
    )
    forward_user_header: str = Field(default="Remote-User", max_length=64)
    forward_email_header: str = Field(default="Remote-Email", max_length=64)
    forward_groups_header: str = Field(default="Remote-Groups", max_length=64)
    admin_groups: str = Field(default="admins", description="groups (comma-separated) whose members are admins")
    users_file: Path | None = Field(
        default=None,
        description="JSON: user name -> {role, token_sha256}: roles by name (over groups, every mode) and, in token "
        "mode, people's tokens (their SHA-256 only)",
    )
    viewer_groups: str = Field(default="", description="groups whose members may only read")
    schedule_file: Path | None = Field(
        default=None,
        description="JSON: the download schedule (windows, budget, caps) put in force at the API's start, as "
        "PUT /api/queue/schedule would",
    )
    clock_offset: float = Field(
        default=0.0,
        ge=-366 * 86400.0,
        le=366 * 86400.0,
        description="seconds added to the clock the download schedule reads (tests move it to a midnight)",
    )
    allowed_networks: str | None = Field(default=None, description="comma-separated CIDRs: only these may be fetched")
    rate_limit: int = Field(default=120, ge=0, description="job creations per client per minute (0: no limit)")
    forwarded_allow_ips: str | None = Field(
        default=None, description="proxies (comma-separated IPs) whose X-Forwarded-For is believed; unset: none"
    )
    allowed_origins: str | None = Field(
        default=None, description="comma-separated origins (besides the API's own) whose pages may change state"
    )

    allowed_hosts: str | None = Field(
        default=None,
        description="comma-separated host names the API answers to besides IP literals and localhost "
        "(e.g. tubeflow.example.org, *.example.org; * for any): against DNS rebinding",
    )

    @field_validator("site_concurrency", "site_rate")
    @classmethod
    def _site_limits(cls, value: str | None, info) -> str | None:  # noqa: ANN001
        parse_limits(value, f"TUBEFLOW_{info.field_name.upper()}")
        return value

    @field_validator("site_pacing")
    @classmethod
    def _site_pacing(cls, value: str | None) -> str | None:
        parse_pacing(value)
        return value or None

    @field_validator("site_cooldown")
    @classmethod
    def _site_cooldown(cls, value: str) -> str:
        parse_duration(value, "TUBEFLOW_SITE_COOLDOWN")
        return value

    def engine_root(self) -> Path:
        return self.engine_dir or self.data_dir / "engine"

    def cooldown_seconds(self) -> float:
        return parse_duration(self.site_cooldown, "TUBEFLOW_SITE_COOLDOWN")

    @field_validator("proxy")
    @classmethod
    def _proxy(cls, value: str | None) -> str | None:
        # The guard proxy speaks to these (services.engine.upstream): said at start, not in a slot process.
        if value and value.split("://", 1)[0].lower() not in PROXY_SCHEMES and "://" in value:
            raise ValueError(f"TUBEFLOW_PROXY must be one of {', '.join(s + '://' for s in PROXY_SCHEMES)}")
        return value or None

    @field_validator("impersonate")
    @classmethod
    def _impersonate(cls, value: str | None) -> str | None:
        impersonate_rules(value)
        return value or None

    @field_validator("pot_provider_url")
    @classmethod
    def _pot_provider_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"TUBEFLOW_POT_PROVIDER_URL must be an http(s) URL (e.g. http://bgutil:4416), not {value!r}"
            )
        return value.rstrip("/")

    @field_validator("plugin_dirs")
    @classmethod
    def _plugin_dirs(cls, value: str | None) -> str | None:
        for folder in split_paths(value):
            if not Path(folder).is_dir():
                raise ValueError(f"TUBEFLOW_PLUGIN_DIRS: {folder} is not a folder")
        return value or None

    @field_validator("js_runtime")
    @classmethod
    def _js_runtime(cls, value: str | None) -> str | None:
        if not value:
            return None
        if value != "none" and not (Path(value).is_file() and os.access(value, os.X_OK)):
            raise ValueError(f"TUBEFLOW_JS_RUNTIME: {value} is not an executable file (a deno binary), nor `none`")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: str | None) -> str | None:
        if value:
            try:
                parse_networks(value)
            except ValueError as exc:
                raise ValueError(f"TUBEFLOW_TRUSTED_PROXIES: {exc} (comma-separated CIDRs, e.g. 10.0.0.0/8)") from exc
        return value or None

    @field_validator("jellyfin_url", "plex_url", "kodi_url")
    @classmethod
    def _media_server_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"TUBEFLOW_{str(info.field_name).upper()} must be an http(s) URL, not {value[:100]!r}")
        return value or None

    @field_validator("schedule_file")
    @classmethod
    def _schedule_file(cls, value: Path | None) -> Path | None:
        if value is not None:
            from services.runtime.schedule import read_schedule_file

            read_schedule_file(value)  # a file that does not parse stops start-up, naming it
        return value

    @model_validator(mode="after")
    def _auth_complete(self) -> "Settings":
        if self.auth == "forward" and not self.trusted_proxies:
            raise ValueError("TUBEFLOW_AUTH=forward needs TUBEFLOW_TRUSTED_PROXIES: the proxies whose headers count")
        if self.auth == "none" and self.api_token:
            raise ValueError("TUBEFLOW_AUTH=none with TUBEFLOW_API_TOKEN set: unset one (a token means token mode)")
        if self.auth == "token" and not self.api_token:
            raise ValueError("TUBEFLOW_AUTH=token needs TUBEFLOW_API_TOKEN (the admin's token)")
        if self.auth == "oidc":
            for name in ("oidc_issuer", "oidc_client_id"):
                if not getattr(self, name):
                    raise ValueError(f"TUBEFLOW_AUTH=oidc needs TUBEFLOW_{name.upper()}")
            for name in ("oidc_issuer", "oidc_redirect_url"):
                value = getattr(self, name)
                parts = urlsplit(value or "")
                if value and (parts.scheme not in ("http", "https") or not parts.hostname):
                    raise ValueError(f"TUBEFLOW_{name.upper()} must be an http(s) URL, not {value[:100]!r}")
            if "openid" not in self.oidc_scopes.split():
                raise ValueError("TUBEFLOW_OIDC_SCOPES must include openid")
        return self

    def auth_mode(self) -> str:
        """TUBEFLOW_AUTH, else token with TUBEFLOW_API_TOKEN, else none."""
        return self.auth or ("token" if self.api_token else "none")

    def group_list(self, which: str) -> frozenset[str]:
        return frozenset(g.strip() for g in getattr(self, which).split(",") if g.strip())

    @field_validator("api_token")
    @classmethod
    def _token_not_empty(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("TUBEFLOW_API_TOKEN is set but empty: unset it for no authentication, or give a token")
        return value

    def plugin_dir_list(self) -> tuple[str, ...]:
        return tuple(str(Path(folder).resolve()) for folder in split_paths(self.plugin_dirs))

    def js_runtime_path(self) -> str | None:
        """TUBEFLOW_JS_RUNTIME, else the deno binary of the environment (the `deno` package), else None."""
        if self.js_runtime == "none":
            return None
        if self.js_runtime is not None:
            return str(Path(self.js_runtime).resolve())
        return default_js_runtime()

    def allowed_host_list(self) -> tuple[str, ...]:
        return tuple(h.strip() for h in (self.allowed_hosts or "").split(",") if h.strip())

    def allowed_origin_list(self) -> tuple[str, ...]:
        return tuple(o.strip() for o in (self.allowed_origins or "").split(",") if o.strip())

    def nats_auth(self) -> NatsAuth:
        return NatsAuth(
            user=self.nats_user,
            password=self.nats_password.get_secret_value() if self.nats_password else None,
            token=self.nats_token.get_secret_value() if self.nats_token else None,
            nkey_seed=self.nats_nkey_seed,
            creds=self.nats_creds,
            tls_ca=self.nats_tls_ca,
            tls_cert=self.nats_tls_cert,
            tls_key=self.nats_tls_key,
        )

    @property
    def media_dir(self) -> Path:
        return self.data_dir / "media"

    @property
    def nats_store_dir(self) -> Path:
        return self.data_dir / "nats"

    def address_policy(self) -> AddressPolicy:
        """Which addresses may be fetched: the API checks literal hosts with it, the downloader every resolved name."""
        return AddressPolicy(self.allow_private_urls, parse_networks(self.allowed_networks))


def impersonate_rules(text: str | None) -> dict[str, str]:
    """TUBEFLOW_IMPERSONATE: ``vimeo.com=chrome,*=`` -> {"vimeo.com": "chrome", "*": ""} (empty: no impersonation)."""
    return parse_site_values(
        text,
        "TUBEFLOW_IMPERSONATE",
        "vimeo.com=chrome,*=",
        lambda v: None if not v or IMPERSONATE_TARGET.fullmatch(v) else f"{v!r} is not an impersonation target",
    )


def split_paths(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(os.pathsep) if part.strip()]


def worker_identity(settings: Settings) -> str:
    import os
    import socket

    return settings.worker_name or f"{socket.gethostname()}:{os.getpid()}"

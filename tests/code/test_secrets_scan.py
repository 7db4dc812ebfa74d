"""No credential is committed: every file git would carry is scanned for secret patterns.

"Would carry" = `git ls-files` plus untracked files that are not ignored (what `git add -A`
would pick up). Secrets belong in `.env` (git-ignored; `.env.example` holds placeholders),
`.dvc/config.local`, the environment or a Kubernetes secret (docs/deploy.md).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_BYTES = 2 << 20  # larger files are data, which never belongs in git anyway

# Values that are obviously not real secrets (fixtures, docs, placeholders).
PLACEHOLDER = re.compile(
    r"^(\$[{(].*|<[^>]*>|\.\.\.|\*+|x+|change-me.*|placeholder.*|test-only.*|testing|test|"
    r"example|user(name)?|pass(word)?|secret|minioadmin|airflow|postgres|redis)$",
    re.I,
)

PATTERNS: dict[str, re.Pattern] = {
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b"),
    "AWS secret access key": re.compile(
        r"(?i)aws.{0,20}secret.{0,20}[=:]\s*[\"']?(?P<value>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])"
    ),
    "private key": re.compile(r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY(?: BLOCK)?-----"),
    "password in a URL": re.compile(
        r"\b[a-z][a-z0-9+.-]*://[^\s:/@'\"<>]+:(?P<value>[^\s/@'\"<>]+)@[\w.-]"
    ),
    "GitHub token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_\w{50,})\b"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    "Fernet key": re.compile(r"(?i)fernet\w*[\"']?\s*[=:]\s*[\"']?(?P<value>[\w-]{43}=)"),
}
# In env files every secret-named key must hold a placeholder.
ENV_SECRET = re.compile(
    r"^\s*(?:export\s+)?(?P<key>\w*(?:PASSWORD|SECRET|TOKEN|_KEY|_KEY_ID)\w*)"
    r"\s*=\s*[\"']?(?P<value>[^\"'\s#]*)"
)


def scan_text(text: str, *, env_file: bool = False) -> list[tuple[int, str]]:
    """[(line number, kind)] of credential-looking values in `text`."""
    hits = []
    for n, line in enumerate(text.splitlines(), 1):
        for kind, pattern in PATTERNS.items():
            for m in pattern.finditer(line):
                value = m.groupdict().get("value")
                if value is None or not PLACEHOLDER.match(value):
                    hits.append((n, kind))
        m = ENV_SECRET.match(line) if env_file else None
        if m and m.group("value") and not PLACEHOLDER.match(m.group("value")):
            hits.append((n, f"{m.group('key')} holds a value, not a placeholder"))
    return hits


def files_git_would_carry() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    return [ROOT / p for p in sorted(set(out.decode().split("\0"))) if p]


def is_env_file(path: Path) -> bool:
    return path.name.startswith(".env") or path.suffix == ".env"


def test_no_credentials_in_files_git_would_carry() -> None:
    files = files_git_would_carry()
    assert any(p.name == "pyproject.toml" for p in files), "git ls-files found no project"
    found = []
    for path in files:
        if not path.is_file() or path.stat().st_size > MAX_BYTES:
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:  # binary
            continue
        for n, kind in scan_text(data.decode("utf-8", "replace"), env_file=is_env_file(path)):
            found.append(f"{path.relative_to(ROOT)}:{n}: {kind}")
    assert not found, (
        "credential-looking values (move them to .env / the environment):\n" + "\n".join(found)
    )


@pytest.mark.parametrize("path", [".env", "docker/.env", ".dvc/config.local"])
def test_secret_files_are_git_ignored(path: str) -> None:
    ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT)
    assert ignored.returncode == 0, f"{path} is not git-ignored: its secrets would be committed"


def test_env_example_is_carried_and_holds_only_placeholders() -> None:
    example = ROOT / ".env.example"
    assert example in files_git_would_carry(), ".env.example must be committed"
    assert scan_text(example.read_text(), env_file=True) == []


def test_the_scan_catches_each_kind_of_credential() -> None:
    """Built at run time, so this file itself never holds a credential-looking string."""
    key_id = "AKIA" + "Q7XB2M4N6P8R1T3V"
    secret = "wJalr" + "XUtnFEMI/K7MDENG/bPxRfiCY" + "9Z8Y7X6W5V"  # 40 characters
    samples = {
        "AWS access key id": f"key = {key_id}",
        "AWS secret access key": f"aws_secret_access_key = {secret}",
        "private key": "-----BEGIN " + "RSA PRIVATE KEY-----",
        "password in a URL": "postgresql://airflow:" + "s3cr3tHunter2" + "@db/airflow",
        "GitHub token": "ghp_" + "a1B2c3D4" * 5,
        "Slack token": "xoxb-" + "1234567890-abcdef",
        "Fernet key": "AIRFLOW__CORE__FERNET_KEY=" + "A" * 43 + "=",
    }
    for kind, text in samples.items():
        assert (1, kind) in scan_text(text), f"the scan misses a {kind}"
    assert scan_text("AIRFLOW_ADMIN_PASSWORD=" + "hunter2hunter2", env_file=True)
    # ... and lets placeholders and interpolations through.
    for ok in (
        "postgresql://airflow:${POSTGRES_PASSWORD}@postgres/airflow",
        "AWS_SECRET_ACCESS_KEY=change-me-secret-key",
        "https://user:pass@host/x",
        "redis://:@redis:6379/0",
    ):
        assert scan_text(ok, env_file=True) == [], ok

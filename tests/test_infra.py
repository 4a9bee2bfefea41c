"""The deployment files run real commands of ours with valid arguments.

Each template is rendered with sample values (infra/render.py), parsed
(yaml.safe_load; the Dockerfile instruction by instruction), and the
``python -m jobs ...`` command it runs is parsed by the project's own CLI
parser (``jobs.__main__.build_parser``), so a renamed or removed option fails here.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from jobs.__main__ import build_parser

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"

SAMPLE = {
    "JOB_NAME": "sam2-label-batch1",
    "NAMESPACE": "labeling",
    "IMAGE": "registry.example.com:5000/sam2-labeler:0.1.0",
    "MANIFEST_URI": "s3://sample-bucket/manifests/batch1.jsonl",
    "OUTPUT_URI": "s3://sample-bucket/labels/batch1/",
    "MODEL": "sam2.1_hiera_large",
    "CHECKPOINT_URI": "s3://sample-bucket/ckpts/sam2.1_hiera_large.pt",
    "WORKERS": "3",
    "S3_SECRET_NAME": "sam2-labeler-s3",
    "CLUSTER_NAME": "sam2-labeler-test",
    "AWS_REGION": "us-west-2",
    "AMI_ID": "ami-0123456789abcdef0",
    "WORKER_INSTANCE_PROFILE_ARN": "arn:aws:iam::123456789012:instance-profile/sam2-labeler-worker",
}


def _load_render():
    spec = importlib.util.spec_from_file_location("infra_render", INFRA / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = _load_render()


def _rendered(relpath: str) -> tuple[str, dict]:
    text = (INFRA / relpath).read_text()
    out = render.render(text, SAMPLE, source=relpath)
    assert "${" not in out, f"{relpath}: a placeholder was left unfilled"
    return out, yaml.safe_load(out)


def _parse_jobs_command(command: str | list[str]):
    """Parse a ``python -m jobs ...`` command line with the project's real parser."""
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    assert argv[:3] == ["python", "-m", "jobs"], f"not a `python -m jobs` command: {argv[:3]}"
    parser, runners = build_parser()
    try:
        args = parser.parse_args(argv[3:])
    except SystemExit as exc:  # argparse reports the bad option on stderr and exits 2
        pytest.fail(f"the CLI rejects this command line (exit {exc.code}): {shlex.join(argv)}")
    assert args.command in runners
    return args


def _assert_label_args(args) -> None:
    assert args.command == "label"
    assert args.manifest == SAMPLE["MANIFEST_URI"]
    assert args.output == SAMPLE["OUTPUT_URI"]
    assert args.model == SAMPLE["MODEL"]
    assert args.checkpoint == SAMPLE["CHECKPOINT_URI"]
    assert args.workers == int(SAMPLE["WORKERS"])
    assert args.gpus_per_worker == 1
    assert args.ray_address == "auto"


# --- render.py ---------------------------------------------------------------------------------


def test_render_fills_only_upper_case_placeholders_and_lists_every_missing_one():
    text = "a: ${FIRST}\nb: $HOME ${lower} $(date) ${SECOND}\n"
    assert render.placeholders(text) == ["FIRST", "SECOND"]
    assert (
        render.render(text, {"FIRST": "1", "SECOND": "x/y"})
        == "a: 1\nb: $HOME ${lower} $(date) x/y\n"
    )
    with pytest.raises(ValueError, match=r"t\.yaml: no value for placeholder\(s\) FIRST, SECOND"):
        render.render(text, {}, source="t.yaml")
    with pytest.raises(ValueError, match="SECOND"):
        render.render(text, {"FIRST": "1", "SECOND": "two words"})


def test_render_command_line_reads_set_and_environment(tmp_path, monkeypatch, capsys):
    template = tmp_path / "t.yaml"
    template.write_text("m: ${MANIFEST_URI}\nw: ${WORKERS}\n")
    monkeypatch.setenv("WORKERS", "7")
    out = tmp_path / "r.yaml"
    assert render.main([str(template), "--set", "MANIFEST_URI=s3://b/m.jsonl", "-o", str(out)]) == 0
    assert yaml.safe_load(out.read_text()) == {"m": "s3://b/m.jsonl", "w": 7}
    monkeypatch.delenv("WORKERS")
    assert render.main([str(template)]) == 1
    assert "MANIFEST_URI, WORKERS" in capsys.readouterr().err


# --- KubeRay RayJob ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rayjob() -> dict:
    return _rendered("kuberay/rayjob.yaml")[1]


def test_rayjob_entrypoint_is_a_valid_label_command(rayjob):
    assert rayjob["apiVersion"] == "ray.io/v1" and rayjob["kind"] == "RayJob"
    assert rayjob["metadata"]["name"] == SAMPLE["JOB_NAME"]
    _assert_label_args(_parse_jobs_command(rayjob["spec"]["entrypoint"]))
    assert rayjob["spec"]["shutdownAfterJobFinishes"] is True


def test_rayjob_cluster_has_a_cpu_head_and_one_gpu_per_worker(rayjob):
    import ray

    cluster = rayjob["spec"]["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__, (
        "the cluster's Ray must be the Ray the image installs"
    )
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"]
    assert all("nvidia.com/gpu" not in json.dumps(c.get("resources", {})) for c in head)
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    (group,) = cluster["workerGroupSpecs"]
    workers = int(SAMPLE["WORKERS"])
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == workers
    containers = group["template"]["spec"]["containers"]
    assert containers
    for c in containers:
        for kind in ("requests", "limits"):
            assert int(c["resources"][kind]["nvidia.com/gpu"]) == 1, (c["name"], kind)
    for c in head + containers:
        assert c["image"] == SAMPLE["IMAGE"]


def test_rayjob_reads_object_storage_credentials_from_a_secret(rayjob):
    cluster = rayjob["spec"]["rayClusterSpec"]
    pods = [cluster["headGroupSpec"]] + cluster["workerGroupSpecs"]
    for pod in pods:
        for c in pod["template"]["spec"]["containers"]:
            env = {e["name"]: e for e in c["env"]}
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                assert "value" not in env[key], (
                    f"{c['name']}: {key} must not be written in the manifest"
                )
                ref = env[key]["valueFrom"]["secretKeyRef"]
                assert ref == {"name": SAMPLE["S3_SECRET_NAME"], "key": key}
            for e in env.values():  # optional extras come from the same Secret
                assert e["valueFrom"]["secretKeyRef"]["name"] == SAMPLE["S3_SECRET_NAME"]


# --- Ray cluster launcher (AWS) ----------------------------------------------------------------


@pytest.fixture(scope="module")
def aws() -> tuple[str, dict]:
    return _rendered("cluster/aws.yaml")


def test_aws_config_passes_rays_own_schema_validation(aws):
    import copy

    from ray.autoscaler._private.util import prepare_config, validate_config

    config = aws[1]
    validate_config(prepare_config(copy.deepcopy(config)))
    broken = copy.deepcopy(config)
    broken["unknown_top_level_key"] = 1  # the check has teeth
    with pytest.raises(Exception, match="unknown_top_level_key|Additional properties"):
        validate_config(prepare_config(broken))


def test_aws_config_runs_the_image_on_gpu_workers(aws):
    config = aws[1]
    assert config["provider"]["type"] == "aws"
    assert config["docker"]["image"] == SAMPLE["IMAGE"]
    # The launcher runs `docker run ... IMAGE bash`: the image's `python -m jobs` entrypoint must be cleared.
    assert "--entrypoint=''" in config["docker"]["run_options"]
    head_type = config["head_node_type"]
    types = config["available_node_types"]
    assert types[head_type]["resources"].get("GPU", 0) == 0
    gpu_types = [
        t for name, t in types.items() if name != head_type and t["resources"].get("GPU", 0) >= 1
    ]
    assert gpu_types and all(
        t["min_workers"] == t["max_workers"] == int(SAMPLE["WORKERS"]) for t in gpu_types
    )
    assert "$RAY_HEAD_IP" in " ".join(config["worker_start_ray_commands"]), (
        "the launcher's own variable must survive rendering"
    )


def test_aws_documented_run_command_is_a_valid_label_command(aws):
    text = aws[0]
    commands = []
    for line in text.splitlines():
        if line.lstrip("# ").startswith("ray exec"):
            words = shlex.split(line.lstrip("# "))
            commands += [w for w in words if w.startswith("python -m jobs")]
    assert len(commands) == 1, 'expected one documented `ray exec ... "python -m jobs ..."` line'
    _assert_label_args(_parse_jobs_command(commands[0]))


# --- Dockerfile --------------------------------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions, current = [], ""
    for raw in (INFRA / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, rest = current.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        current = ""
    assert not current, "Dockerfile ends inside a continued line"
    return instructions


def test_dockerfile_installs_pinned_torch_first_then_locked_deps_then_the_project():
    steps = _dockerfile_instructions()
    froms = [a for k, a in steps if k == "FROM"]
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for k, a in steps if k == "ARG" and "=" in a}
    base = froms[0].replace("${CUDA_IMAGE}", args.get("CUDA_IMAGE", ""))
    assert base.startswith("nvidia/cuda:") and "runtime" in base, base
    runs = [(i, a) for i, (k, a) in enumerate(steps) if k == "RUN"]
    assert any("python3.11 -m venv" in a for _, a in runs)

    torch_steps = [i for i, a in runs if re.search(r"pip install[^&]*\btorch==2\.13\.0\b", a)]
    assert len(torch_steps) == 1, "torch==2.13.0 must be installed in exactly one step"
    torch_run = steps[torch_steps[0]][1]
    index = (
        torch_run.split("--index-url", 1)[1]
        .split()[0]
        .replace("${TORCH_INDEX_URL}", args.get("TORCH_INDEX_URL", ""))
    )
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d+", index), index

    lock_steps = [i for i, a in runs if "pip install -r" in a and "requirements.lock" in a]
    project_steps = [i for i, a in runs if re.search(r"pip install --no-deps \.(\s|$)", a)]
    assert lock_steps and project_steps
    assert torch_steps[0] < lock_steps[0] < project_steps[0], "order: torch, pinned deps, project"
    copies = {i: a for i, (k, a) in enumerate(steps) if k == "COPY"}
    assert any("infra/requirements.lock" in a and i < lock_steps[0] for i, a in copies.items())
    for package in ("sam2_core", "pipeline", "jobs"):
        assert any(a.split()[0] == package and i < project_steps[0] for i, a in copies.items()), (
            package
        )


def _apt_packages(steps: list[tuple[str, str]]) -> set[str]:
    """Every package named by an ``apt-get install`` in the Dockerfile's RUN steps."""
    packages: set[str] = set()
    for keyword, args in steps:
        if keyword != "RUN":
            continue
        for command in re.split(r"&&|;", args):
            if command.strip().startswith("apt-get install"):
                packages.update(w for w in shlex.split(command)[2:] if not w.startswith("-"))
    return packages


def test_dockerfile_has_the_c_compiler_and_python_headers_that_torch_compile_needs():
    """Triton (torch.compile on CUDA) compiles a C launcher per kernel against Python.h: the
    image needs a C compiler, libc headers and the venv's Python headers."""
    steps = _dockerfile_instructions()
    packages = _apt_packages(steps)
    assert {"gcc", "libc6-dev"} <= packages or "build-essential" in packages, sorted(packages)
    (venv,) = [m.group(1) for _, a in steps if (m := re.search(r"\b(python3\.\d+) -m venv", a))]
    assert f"{venv}-dev" in packages, (
        f"{venv}-dev (Python.h for the venv's {venv}) missing from {sorted(packages)}"
    )


def test_dockerfile_entrypoint_is_python_m_jobs():
    steps = _dockerfile_instructions()
    (entrypoint,) = [a for k, a in steps if k == "ENTRYPOINT"]
    argv = json.loads(entrypoint)
    assert argv == ["python", "-m", "jobs"]
    cmd = [json.loads(a) for k, a in steps if k == "CMD"]
    # The image's default command line parses with the real CLI parser (argparse exits 0 for --help).
    parser, _ = build_parser()
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(cmd[-1] if cmd else [])
    assert exc.value.code == 0


def test_requirements_lock_pins_every_runtime_dependency_and_leaves_torch_out():
    pins = {}
    for line in (INFRA / "requirements.lock").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+!\-]+)", line.strip())
        assert match, f"requirements.lock: not an exact pin: {line!r}"
        pins[canonicalize_name(match.group(1))] = match.group(2)
    assert "torch" not in pins, "torch comes from the CUDA index, before the lock"
    with open(REPO / "pyproject.toml", "rb") as f:
        dependencies = tomllib.load(f)["project"]["dependencies"]
    for text in dependencies:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        if name == "torch":
            assert req.specifier.contains("2.13.0"), "pyproject must admit the image's torch pin"
            continue
        assert name in pins, f"{name} missing from infra/requirements.lock"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{name}=={pins[name]} violates {req}"
        )
    # ray[default]'s dashboard dependencies (needed by the Jobs API) are there too.
    for name in ("aiohttp", "aiohttp-cors", "grpcio", "opencensus", "prometheus-client", "py-spy"):
        assert name in pins, name

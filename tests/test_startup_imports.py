"""What start-up imports: ``--help`` and recipe validation load no heavy library; ``evaluate`` never reaches ``online``.

Each check runs in a fresh interpreter (``sys.modules`` of the test process already holds torch). Not
timed: ``bench/cli_startup.py`` measures the seconds.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "peft", "datasets", "sklearn", "accelerate", "scipy", "pyarrow", "numpy")
# Every CPU recipe (one per loss family), the quickstart and the online recipes; the GPU recipes ask
# torch whether CUDA is there (model.qlora), which is the point of that check.
def recipes(folder: str) -> list[str]:
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "recipes" / folder).glob("*.yaml"))


TRAIN_RECIPES = recipes("cpu")
ROUNDS_RECIPES = ["recipes/quickstart.yaml", *recipes("online")]
HELP_COMMANDS = [
    [], ["train"], ["rounds"], ["data"], ["data", "inspect"], ["data", "debias"], ["eval"], ["eval", "accuracy"],
    ["eval", "lc-winrate"], ["export"], ["annotate"], ["annotate", "cdr"], ["annotate", "treg"],
]  # fmt: skip


def modules_after(code: str) -> list[str]:
    """Run ``code`` in a fresh interpreter on this checkout; which of :data:`HEAVY` it left loaded."""
    script = f"{code}\nimport sys\nprint(sorted(n for n in {HEAVY!r} if n in sys.modules))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300,
                          check=False, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return eval(done.stdout.strip().splitlines()[-1])  # a printed list of str


def test_recipe_validation_imports_no_heavy_library():
    """Loading and validating every recipe (each loss's hyperparameters included) needs no torch."""
    code = f"""
from prefopt.config import LossConfig, load_recipe
from prefopt.losses import available_losses
from prefopt.online.config import load_rounds_recipe
for path in {TRAIN_RECIPES!r}:
    recipe = load_recipe(path)
    recipe.loss.requires_reference
for path in {ROUNDS_RECIPES!r}:
    load_rounds_recipe(path)
required = {{"mix": {{"terms": [{{"name": "dpo"}}, {{"name": "sft"}}]}}, "wpo": {{"base": {{"name": "simpo"}}}}}}
for name in available_losses():  # every registered loss, the ones without a recipe too
    LossConfig(name=name, **required.get(name, {{}})).requires_reference
"""
    assert "recipes/cpu/dpo.yaml" in TRAIN_RECIPES and len(TRAIN_RECIPES) > 10
    assert modules_after(code) == []


def test_dry_run_commands_import_no_heavy_library():
    code = """
import contextlib, io
from prefopt.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    assert main(["train", "recipes/cpu/dpo.yaml", "--dry-run", "optim.optimizer=sgd"]) == 0
    assert main(["rounds", "recipes/quickstart.yaml", "--dry-run"]) == 0
"""
    assert modules_after(code) == []


def test_a_bad_value_is_still_rejected_without_torch():
    """The torch-free validation is the real one: a bad value fails at load, torch still unloaded."""
    code = """
from prefopt.config import RecipeError, load_recipe
for override in ("loss.beta=0", "loss.label_smoothing=0.5", "loss.f_divergence=kl", "optim.scheduler=cosin"):
    try:
        load_recipe("recipes/cpu/dpo.yaml", [override])
    except RecipeError as err:
        assert override.partition("=")[0] + ":" in str(err), err
    else:
        raise AssertionError(override)
"""
    assert modules_after(code) == []


def test_every_help_imports_no_heavy_library():
    code = f"""
import contextlib, io
from prefopt.cli import main
for argv in {HELP_COMMANDS!r}:
    quiet = contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO())
    with quiet[0], quiet[1], contextlib.suppress(SystemExit):
        main([*argv, "--help"])
"""
    assert modules_after(code) == []


def test_a_loss_imports_torch_when_it_computes():
    """The lazy binding is real: the first loss computed loads torch, and computes the right value."""
    code = """
import sys
from prefopt.losses import get_loss
loss_fn = get_loss("dpo", beta=0.1)
assert "torch" not in sys.modules
import torch
from prefopt.losses import PairLogps
mask = torch.ones(1, 1, dtype=torch.bool)
t = lambda value: torch.tensor([[value]])
out = loss_fn(PairLogps(t(-1.0), t(-2.0), mask, mask, t(-1.5), t(-1.5)))
assert abs(out.loss.item() - torch.nn.functional.softplus(torch.tensor(-0.1)).item()) < 1e-6
"""
    assert "torch" in modules_after(code)


# -- the import direction: evaluate, data and losses never import online ------------------------------

# The packages below online, and the neutral modules both sides share.
LOWER = ("evaluate", "data", "losses", "verification.py", "records.py", "stats.py")


def imported_modules(source: str, package: str) -> set[str]:
    """Every module an ``import`` / ``from ... import`` in ``source`` names (relative to ``package`` resolved)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0]
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def online_imports(path: Path) -> list[str]:
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    return sorted(n for n in imported_modules(path.read_text(), package) if n.split(".")[:2] == ["prefopt", "online"])


@pytest.mark.parametrize("part", LOWER)
def test_lower_modules_do_not_import_online(part):
    root = REPO / "prefopt" / part
    files = [root] if root.suffix == ".py" else sorted(root.rglob("*.py"))
    assert files and all(path.is_file() for path in files)
    upward = {str(path.relative_to(REPO)): online_imports(path) for path in files}
    assert {path: names for path, names in upward.items() if names} == {}


def test_the_import_scan_sees_every_form_of_upward_import():
    found = imported_modules(
        "import prefopt.online\nfrom prefopt.online.verifier import Truncated\n"
        "def f():\n    from ..online import types\n    from . import accuracy\n",
        "prefopt.evaluate",
    )
    assert {"prefopt.online", "prefopt.online.verifier", "prefopt.online.types", "prefopt.evaluate.accuracy"} <= found


def test_evaluate_accuracy_loads_no_online_module():
    code = """
import sys
import prefopt.evaluate.accuracy
online = sorted(n for n in sys.modules if n == "prefopt.online" or n.startswith("prefopt.online."))
assert online == [], online
"""
    modules_after(code)

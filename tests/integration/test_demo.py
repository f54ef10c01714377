"""``clusterinval demo`` end to end, as a user runs it: its own cluster, both APIs, verified."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from clusterinval.cli.demo import build_dataset


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    env = {**os.environ, "CLUSTERINVAL_HOME": str(tmp_path), "COLUMNS": "160"}
    env.pop("CLUSTERINVAL_URL", None)
    proc = subprocess.run(
        [sys.executable, "-m", "clusterinval.cli.main", "demo", "--metrics-port", "0"],
        capture_output=True, text=True, timeout=240, env=env, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "every matched key is gone and everything else is intact" in out
    assert "matched keys left behind: 0" in out
    assert "other keys missing: 0 of" in out
    assert "WRONG" not in out and "failed" not in out
    for call in ("invalidate_catalog_cache(", "invalidate_user_cache(", "invalidate_cluster_cache(",
                 "invalidate_cache_by_patterns(", "invalidate_rule('user'", "models_bulk"):
        assert call in out
    assert "cluster stopped" in out
    assert "metrics at http://127.0.0.1:" in out


def test_dataset_is_guide_shaped_and_large() -> None:
    data = build_dataset()
    assert len(data.keys) > 20_000
    assert len(set(data.keys)) == len(data.keys)
    for prefix in ("catalog:model:", "catalog:models:", "user:", "project:", "projects:list:",
                   "clusters:list:", "cluster:", "models:list:", "endpoint:"):
        assert any(k.startswith(prefix) for k in data.keys), prefix

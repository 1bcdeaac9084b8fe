"""scripts/swarm.sh against a stand-in for the docker command: the engine's answers that a real
swarm gives only now and then, made to happen every time."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from app.settings import PROJECT_ROOT

# The docker CLI as far as `swarm.sh down` uses it, for a stack whose services are gone but whose
# network a task still held when `docker stack rm` tried to remove it. Every call is noted.
FAKE_DOCKER = """#!/bin/bash
echo "$*" >> "$STATE/calls"
case "$1 $2" in
    "info --format") echo "active true" ;;
    "stack rm")
        echo "Removing network fus_default" >&2
        echo "Failed to remove network n1: Error response from daemon: rpc error:" \\
            "code = FailedPrecondition desc = network n1 is in use by task t1" >&2
        exit 1 ;;
    "network ls") [ ! -f "$STATE/network" ] || cat "$STATE/network" ;;
    "network rm") rm -f "$STATE/network" ;;
esac
exit 0
"""


def test_swarm_down_removes_the_network_a_task_still_held_when_the_stack_was_removed(tmp_path: Path) -> None:
    """Seen once in CI: `docker stack rm` removed the services, then failed to remove the network,
    "in use by task"; swarm.sh stopped there (set -e) and the stack's network stayed. It now waits
    for the tasks to go and removes the network itself."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(0o755)
    (tmp_path / "network").write_text("n1\n")
    result = subprocess.run(
        [str(PROJECT_ROOT / "scripts" / "swarm.sh"), "down"],
        env={
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "STATE": str(tmp_path),
            "STACK_NAME": "fus",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "network").exists()
    calls = (tmp_path / "calls").read_text().splitlines()
    assert "stack rm fus" in calls and "network rm n1" in calls
    assert "removed fus" in result.stderr

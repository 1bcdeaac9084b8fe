"""The launcher's entry point: ``python -m app.serve [COMMAND]`` (the commands: app/launcher/cli.py)."""

from app.launcher.cli import main

if __name__ == "__main__":
    main()

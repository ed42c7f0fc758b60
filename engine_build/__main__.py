"""`python -m engine_build`: see engine_build/cli.py."""
from engine_build.cli import main

raise SystemExit(main())
